"""Tables, figures and claim checks for the multi-hop DeepJSCC-DHD paper's grids (Fig. 2 and 3).

Input: the tidy table of `netsim sweep scenarios/paper-df.yaml` or `paper-qf.yaml` (one row per
point x hop with ``<stat>_mean`` / ``<stat>_ci95``). The codec of a point names its scheme
(``...-mse`` baseline, ``...-msedhd`` proposed). Output: ``table.csv`` (one row per cell and
receiving node), ``claims.csv`` (baseline against proposed at the destination, cell by cell),
and the figures drawn like the paper's.
"""
from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path

import pandas as pd

SCHEMES = {"mse": "baseline (mse)", "msedhd": "proposed (mse+dhd)",
           "msedhd-warm": "proposed, started from the mse codec"}
METRICS = ("psnr", "ms_ssim", "lpips", "hash_bit_agreement", "hash_cosine", "retrieval_ap", "bpp")
# What the paper claims for the proposed scheme against the baseline, per destination metric:
# +1 higher, -1 lower. PSNR is claimed to drop "a little": we count a drop of at most
# PSNR_LITTLE_DB as held, a larger one (or a rise) as not.
CLAIMS = (("lpips", -1, "lower LPIPS"), ("hash_bit_agreement", +1, "higher hash agreement"),
          ("retrieval_ap", +1, "higher retrieval mAP"), ("psnr", -1, "a little lower PSNR"))
PSNR_LITTLE_DB = 1.0


class ReportError(ValueError):
    """The sweep table is not one of the paper grids."""


def _scheme(codec: str) -> str:
    m = re.search(r"-(mse|msedhd|msedhd-warm)(\.json)?$", str(codec))
    if not m:
        raise ReportError(f"codec {codec!r} does not end in -mse, -msedhd or -msedhd-warm")
    return m.group(1)


def cell_table(sweep: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One row per (cell, receiving node): snr_db, scheme, relays (df) or n_q/b (qf), hop, role,
    n and the ``<metric>_mean`` / ``<metric>_ci95`` columns."""
    codec_col = next((c for c in sweep.columns if c.endswith(".codec")), None)
    if codec_col is None or "snr_db" not in sweep:
        raise ReportError("the sweep table has no codec or snr_db axis")
    df = sweep[sweep["hop"] > 0].copy()
    df["scheme"] = df[codec_col].map(_scheme)
    keys = ["snr_db", "scheme"]
    if kind == "df":
        route_col = next(c for c in sweep.columns if c.endswith(".route"))
        df["relays"] = df[route_col].map(lambda r: len(route_nodes(r)) - 2)
        keys.append("relays")
    elif kind == "qf":
        df["n_q"] = df["nodes.relay.qf.n_q"].astype(int)
        df["b"] = df["nodes.relay.qf.b"].astype(str)
        keys += ["n_q", "b"]
    else:
        raise ReportError(f"kind must be df or qf, got {kind!r}")
    stats = [c for m in METRICS for c in (f"{m}_mean", f"{m}_ci95") if c in df]
    out = df[keys + ["hop", "node", "role", "n"] + stats]
    order = keys + ["hop"]  # SNR from high to low, as in the paper's legends
    return out.sort_values(order, ascending=[False] + [True] * (len(order) - 1),
                           key=lambda col: col.map(Fraction) if col.name == "b" else col).reset_index(drop=True)


def route_nodes(value) -> list:
    """A route as stored in the sweep table: a list, or its JSON / Python text."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return json.loads(str(value).replace("'", '"'))


def claims(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Baseline against proposed at the destination, per cell. ``held`` says whether the proposed
    scheme moved the metric the way the paper claims; ``significant`` whether the difference is
    larger than the 95% CI of the difference (sqrt of the squared half-widths)."""
    dest = table[table["role"] == "destination"]
    cell = ["snr_db", "relays"] if kind == "df" else ["snr_db", "n_q", "b"]
    rows = []
    for key, g in dest.groupby(cell, sort=False):
        by = {r["scheme"]: r for _, r in g.iterrows()}
        if not {"mse", "msedhd"} <= set(by):
            continue
        base, prop = by["mse"], by["msedhd"]
        for metric, sign, text in CLAIMS:
            b, p = base.get(f"{metric}_mean", math.nan), prop.get(f"{metric}_mean", math.nan)
            if pd.isna(b) or pd.isna(p):
                continue
            half = math.hypot(base.get(f"{metric}_ci95", 0.0) or 0.0, prop.get(f"{metric}_ci95", 0.0) or 0.0)
            diff = p - b
            rows.append({**dict(zip(cell, key if isinstance(key, tuple) else (key,))), "metric": metric,
                         "claim": text, "baseline": b, "proposed": p, "difference": diff, "ci95": half,
                         "held": bool(diff * sign > 0 and (metric != "psnr" or diff >= -PSNR_LITTLE_DB)),
                         "significant": bool(abs(diff) > half)})
    return pd.DataFrame(rows)


def _style(snrs: list[float]) -> dict[float, str]:
    return dict(zip(sorted(snrs, reverse=True), ["-", "--", ":", "-."] * 3))


COLOURS = {"mse": "tab:blue", "msedhd": "tab:red", "msedhd-warm": "tab:green"}
PANELS = (("lpips", "LPIPS (lower is better)"), ("psnr", "PSNR [dB]"),
          ("hash_bit_agreement", "hash bit agreement"), ("retrieval_ap", "retrieval mAP@1000"))


def plot(table: pd.DataFrame, kind: str, stem: Path) -> list[Path]:
    """The paper's figure: destination metrics against relays r (df) or bpp (qf); one line style
    per SNR, one colour per scheme; error bars are 95% CIs."""
    import matplotlib.pyplot as plt

    from netsim.plots import save_figure

    dest = table[table["role"] == "destination"]
    x = "relays" if kind == "df" else "bpp_mean"
    styles = _style(dest["snr_db"].unique().tolist())
    panels = [(m, label) for m, label in PANELS if f"{m}_mean" in dest and dest[f"{m}_mean"].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        for (snr, scheme), g in dest.groupby(["snr_db", "scheme"], sort=False):
            g = g.sort_values(x)
            ax.errorbar(g[x], g[f"{metric}_mean"], yerr=g[f"{metric}_ci95"], linestyle=styles[snr],
                        color=COLOURS[scheme], marker="s" if scheme == "mse" else "o", markersize=4,
                        capsize=2, label=f"{SCHEMES[scheme]}, {snr:g} dB")
        ax.set_xlabel("relays r" if kind == "df" else "bpp at the relay")
        if kind == "df":
            ax.set_xticks(sorted(dest["relays"].unique()))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    title = ("DF relaying: destination quality against relays" if kind == "df"
             else "QF relaying: destination quality against the relay's bits per pixel")
    fig.suptitle(f"{title} ({int(dest['n'].max()):,} images per cell)")
    fig.tight_layout()
    return save_figure(fig, stem)


def claims_markdown(c: pd.DataFrame, kind: str) -> str:
    """The claim checks as a markdown table: one row per cell, one column per claim."""
    cell = ["snr_db", "relays"] if kind == "df" else ["snr_db", "n_q", "b"]
    head = ["SNR (dB)", "r"] if kind == "df" else ["SNR (dB)", "N_Q", "b"]
    metrics = [m for m, _, _ in CLAIMS if m in set(c["metric"])]
    lines = ["| " + " | ".join(head + [f"{m}: baseline -> proposed" for m in metrics]) + " |",
             "|" + "---|" * (len(head) + len(metrics))]
    fmt = {"psnr": "{:.2f}", "lpips": "{:.4f}", "hash_bit_agreement": "{:.3f}", "retrieval_ap": "{:.3f}"}
    for key, g in c.groupby(cell, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in key]
        for m in metrics:
            r = g[g["metric"] == m]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            f = fmt.get(m, "{:.4f}")
            verdict = ("held" if r["held"] else "not held") + ("" if r["significant"] else " (within CI)")
            cells.append(f"{f.format(r['baseline'])} -> {f.format(r['proposed'])}: {verdict}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _find_point(sweep_dir: Path, stem: str) -> Path:
    """The point directory whose assignment names a file with this stem (a codec or codebook)."""
    found = []
    for done in sorted((sweep_dir / "points").glob("*/done.json")):
        values = json.loads(done.read_text())["assignment"].values()
        if any(isinstance(v, str) and Path(v).stem == stem for v in values):
            found.append(done.parent)
    if len(found) != 1:
        raise ReportError(f"--cell {stem}: {len(found)} finished points name it (need exactly one)")
    return found[0]


def report(sweep_dir: str | Path, kind: str, output: str | Path, cells: tuple[str, ...] = ()) -> list[Path]:
    """Write table.csv, claims.csv, claims.md, the figure, the sweep table and manifests (one per
    point, under manifests/) for a finished paper sweep; for each stem in ``cells``, also the hop
    records of the point that uses it (``cell-<stem>.parquet`` and its ``done.json`` as
    ``cell-<stem>.json``), which a test re-runs image by image."""
    from netsim.results import atomic_path, read_table

    sweep_dir, out = Path(sweep_dir), Path(output)
    sweep = read_table(sweep_dir, "sweep")
    out.mkdir(parents=True, exist_ok=True)
    table = cell_table(sweep, kind)
    c = claims(table, kind)
    written = []
    for name, df in (("table", table), ("claims", c), ("sweep", sweep)):
        path = out / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g" if name != "sweep" else None)
        written.append(path)
    path = out / "claims.md"
    with atomic_path(path) as tmp:
        tmp.write_text(claims_markdown(c, kind))
    written.append(path)
    copies = [(sweep_dir / "sweep.json", out / "sweep.json")]
    copies += [(m, out / "manifests" / f"{m.parent.name}.json") for m in sorted(sweep_dir.glob("points/*/manifest.json"))]
    for stem in cells:
        point = _find_point(sweep_dir, stem)
        copies += [(point / "hops.parquet", out / f"cell-{stem}.parquet"), (point / "done.json", out / f"cell-{stem}.json")]
    for src, dst in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(src.read_bytes())
        written.append(dst)
    written += plot(table, kind, out / f"paper-{kind}")
    return written
