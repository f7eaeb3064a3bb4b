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


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> list[Path]:
    """Per-hop means with 95% CIs, one line per flow; hop 0 is the source."""
    run_dir = Path(run_dir)
    out = Path(output) if output else run_dir / "figures"
    hops = read_table(run_dir, "hops")
    hops = hops.assign(latency_s=hops["done_s"] - hops["created_s"])
    fig, axes = plt.subplots(1, len(PER_HOP_PANELS), figsize=(4.2 * len(PER_HOP_PANELS), 3.4))
    for ax, (col, label) in zip(axes, PER_HOP_PANELS):
        data = hops if col == "latency_s" else hops[hops["hop"] > 0]
        drawn = False
        for flow, g in data.groupby("flow", sort=True):
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
    axes[0].legend(title="flow", fontsize=8)
    fig.suptitle(f"{run_dir.name}: per-hop metrics (mean, 95% CI)")
    return save_figure(fig, out / "per_hop") + plot_queues(run_dir, out)


def plot_queues(run_dir: Path, out: Path) -> list[Path]:
    """Queue lengths over time at every node that queued anything (radio and inbox)."""
    from netsim.results import queue_lengths

    queues = queue_lengths(read_table(run_dir, "hops"))
    busy = queues.groupby(["queue", "node"])["length"].max()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharex=True)
    for ax, queue in zip(axes, ("radio", "inbox")):
        for node in sorted(n for (q, n), peak in busy.items() if q == queue and peak > 0):
            g = queues[(queues["queue"] == queue) & (queues["node"] == node)]
            ax.step(g["time_s"], g["length"], where="post", label=node)
        ax.set_title(f"{queue} queue (frames waiting)", fontsize=10)
        ax.set_xlabel("simulated time [s]")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no queueing", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(f"{run_dir.name}: queue lengths")
    return save_figure(fig, out / "queues")


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
