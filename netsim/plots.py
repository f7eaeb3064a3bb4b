"""Figures drawn from results tables (matplotlib, PNG and SVG next to the data)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from netsim.results import atomic_path, ci95_half_width, read_table  # noqa: E402

PER_HOP_PANELS = (
    ("psnr", "PSNR [dB]"),
    ("ms_ssim", "MS-SSIM"),
    ("lpips", "LPIPS (lower is better)"),
    ("hash_bit_agreement", "hash bit agreement"),
    ("latency_s", "latency since creation [s]"),
)


def mean_ci95(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (NaN half-width below 2 values)."""
    v = values.dropna()
    return (float(v.mean()) if len(v) else np.nan), ci95_half_width(v)


def save_figure(fig, stem: Path) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _read(run_dir: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """Only ``columns`` of a run's table (parquet preferred; a large run's hops table is big)."""
    if (run_dir / f"{name}.parquet").exists():
        import pyarrow.parquet as pq

        present = set(pq.read_schema(run_dir / f"{name}.parquet").names)
        return pd.read_parquet(run_dir / f"{name}.parquet", columns=[c for c in columns if c in present])
    return pd.read_csv(run_dir / f"{name}.csv", usecols=lambda c: c in columns)


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> list[Path]:
    """Per-hop means with 95% CIs (one line per flow; hop 0 is the source), queue lengths over
    time and per-flow latency percentiles."""
    run_dir = Path(run_dir)
    out = Path(output) if output else run_dir / "figures"
    hops = _read(run_dir, "hops", ["flow", "hop", "created_s", "done_s", *(c for c, _ in PER_HOP_PANELS)])
    hops = hops.assign(latency_s=hops["done_s"] - hops["created_s"])
    # panels of columns the run did not measure at all are left out (PSNR and latency always stay)
    panels = [(c, label) for c, label in PER_HOP_PANELS
              if c in ("psnr", "latency_s") or (c in hops and hops[c].notna().any())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (col, label) in zip(axes, panels):
        data = hops if col == "latency_s" else hops[hops["hop"] > 0]
        drawn = False
        for flow, g in data.groupby("flow", sort=True):
            if col not in g:
                continue
            stats = [(hop, *mean_ci95(rows[col])) for hop, rows in g.groupby("hop", sort=True)]
            hop_idx, mean, half = (np.array(x) for x in zip(*stats))
            if np.all(np.isnan(mean)):
                continue
            ax.errorbar(hop_idx, mean, yerr=half, marker="o", capsize=3, label=str(flow))
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "unavailable", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xlabel("hop")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(title="flow", fontsize=8, ncol=2 if hops["flow"].nunique() > 6 else 1)
    fig.suptitle(f"{run_dir.name}: per-hop metrics (mean, 95% CI)")
    return save_figure(fig, out / "per_hop") + plot_queues(run_dir, out) + plot_latency(run_dir, out)


QUEUE_LINES = 8  # nodes drawn per queue panel: the busiest by time-averaged length
PLOT_STEPS = 4000  # a longer queue series is drawn as its time-averaged length per bin
PLOT_BINS = 200


def time_average(times: np.ndarray, lengths: np.ndarray, start: float, end: float) -> float:
    """Time average over [start, end] of a step function that is 0 before times[0] and holds
    lengths[i] from times[i] to times[i + 1] (the last one to ``end``)."""
    if len(times) == 0 or end <= start:
        return 0.0
    return float(_integral(times, lengths, np.array([end]))[0] / (end - start))


def _integral(times: np.ndarray, lengths: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The integral from -inf to each of ``at`` of the step function of ``time_average``."""
    area = np.concatenate([[0.0], np.cumsum(np.diff(times) * lengths[:-1])])  # at each change time
    j = np.searchsorted(times, at, side="right") - 1
    inside = j >= 0
    out = np.zeros(len(at))
    out[inside] = area[j[inside]] + lengths[j[inside]] * (at[inside] - times[j[inside]])
    return out


def binned_mean(times: np.ndarray, lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-averaged length of the step function in each bin between consecutive ``edges``."""
    return np.diff(_integral(times, lengths, edges)) / np.diff(edges)


def plot_queues(run_dir: Path, out: Path) -> list[Path]:
    """Queue lengths over time at the busiest nodes (radio and inbox; a long run's series as the
    time-averaged length per bin), and each node's time-averaged and peak radio queue length.
    Uses the run's queues table (else rebuilds it from the hops table)."""
    from netsim.results import queue_lengths

    run_dir = Path(run_dir)
    if (run_dir / "queues.parquet").exists() or (run_dir / "queues.csv").exists():
        queues = read_table(run_dir, "queues")
    else:
        queues = queue_lengths(_read(run_dir, "hops", ["hop", "node", "sender", "enqueue_s", "tx_start_s",
                                                       "arrival_s", "start_s"]))
    start = float(queues["time_s"].min()) if len(queues) else 0.0
    end = float(queues["time_s"].max()) if len(queues) else 0.0
    series = {key: (g["time_s"].to_numpy(float), g["length"].to_numpy(float))
              for key, g in queues.groupby(["queue", "node"], sort=True)}
    mean = {key: time_average(t, n, start, end) for key, (t, n) in series.items() if n.max() > 0}
    binned = any(len(t) > PLOT_STEPS for t, _ in series.values())
    edges = np.linspace(start, end, PLOT_BINS + 1) if binned and end > start else None
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    for ax, queue in zip(axes, ("radio", "inbox")):
        busy = sorted((k for k in mean if k[0] == queue), key=lambda k: -mean[k])
        for key in busy[:QUEUE_LINES]:
            t, n = series[key]
            label = f"{key[1]} (mean {mean[key]:.2f})"
            if edges is not None:
                ax.step(edges[:-1], binned_mean(t, n, edges), where="post", label=label, linewidth=0.9)
            else:
                ax.step(t, n, where="post", label=label, linewidth=0.9)
        shown = f", {min(len(busy), QUEUE_LINES)} busiest of {len(busy)} nodes" if busy else ""
        per = f" (mean per {(end - start) / PLOT_BINS * 1e3:.3g} ms)" if edges is not None else ""
        ax.set_title(f"{queue} queue: frames waiting{per}{shown}", fontsize=9)
        ax.set_xlabel("simulated time [s]")
        ax.grid(alpha=0.3)
        if busy:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no queueing", ha="center", va="center", transform=ax.transAxes, color="grey")
    radio = sorted(((n, m) for (q, n), m in mean.items() if q == "radio"), key=lambda x: -x[1])[:20]
    ax = axes[2]
    if radio:
        ax.barh([n for n, _ in radio][::-1], [m for _, m in radio][::-1], color="tab:blue")
        for i, (n, m) in enumerate(radio[::-1]):
            ax.text(m, i, f" peak {series[('radio', n)][1].max():.0f}", va="center", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no queueing", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title("radio queue per node: time-averaged length and peak", fontsize=9)
    ax.set_xlabel("frames waiting (mean over the run)")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{run_dir.name}: queue lengths", fontsize=11)
    return save_figure(fig, out / "queues")


def plot_latency(run_dir: Path, out: Path) -> list[Path]:
    """Per-flow end-to-end latency of delivered frames: mean, p50, p90, p99 and max, and the CDF."""
    from netsim.results import latency_percentiles

    run_dir = Path(run_dir)
    frames = _read(run_dir, "frames", ["flow", "outcome", "latency_s"])
    table = latency_percentiles(frames)
    delivered = frames[frames["outcome"] == "delivered"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    x = np.arange(len(table))
    for col, marker in (("p50", "o"), ("p90", "s"), ("p99", "^"), ("max", "x"), ("mean", "_")):
        left.plot(x, table[col] * 1e3, marker=marker, linestyle="none", label=col, markersize=6)
    left.set_xticks(x, table["flow"].astype(str), rotation=45 if len(table) > 12 else 0)
    left.set_xlabel("flow")
    left.set_ylabel("end-to-end latency [ms]")
    left.set_title("latency percentiles per flow (delivered frames)", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, ncol=5)
    for flow, g in delivered.groupby("flow", sort=True):
        v = np.sort(g["latency_s"].to_numpy()) * 1e3
        right.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=str(flow), linewidth=0.9)
    right.set_xlabel("end-to-end latency [ms]")
    right.set_ylabel("fraction of frames")
    right.set_title("latency CDF per flow", fontsize=10)
    right.grid(alpha=0.3)
    if len(table):
        right.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{run_dir.name}: end-to-end latency ({len(delivered)} delivered of {len(frames)} frames)",
                 fontsize=11)
    return save_figure(fig, out / "latency")


def save_sample_grids(samples: dict, sources: dict, directory: str | Path) -> list[Path]:
    """One PNG per flow: a row per frame, the source image then what each hop held."""
    from PIL import Image

    paths = []
    for flow in sorted({key[0] for key in samples}):
        frames = sorted({key[1] for key in samples if key[0] == flow})
        hops = sorted({key[2] for key in samples if key[0] == flow})
        rows = []
        for frame in frames:
            tiles = [sources[(flow, frame)]] + [samples.get((flow, frame, h), sources[(flow, frame)] * 0) for h in hops]
            rows.append(np.concatenate([(t.permute(1, 2, 0).numpy() * 255).round() for t in tiles], axis=1))
        grid = np.concatenate(rows, axis=0).clip(0, 255).astype(np.uint8)
        path = Path(directory) / f"samples-{flow}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format="png")
        paths.append(path)
    return paths


def plot_snr_curves(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Quality against test SNR, one line per model (``netsim eval codec`` tables)."""
    panels = [(c, label) for c, label in PER_HOP_PANELS[:3] if c in table and table[c].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], panels):
        for model, g in table.groupby("model", sort=False):
            g = g.sort_values("snr_db")
            ax.plot(g["snr_db"], g[col], marker="o", label=str(model),
                    linestyle="--" if model == "uncoded" else "-")
        ax.set_xlabel("test SNR [dB]")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    stem = Path(stem)
    return save_figure(fig, stem.with_suffix("") if stem.suffix in (".png", ".svg") else stem)
