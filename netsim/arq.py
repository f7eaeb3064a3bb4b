"""Semantic ARQ report: how well hash checks judge receptions, and what retries cost.

Input: a finished sweep over link SNR and ``hash_check.threshold_bits`` with the ``retransmit``
policy (``scenarios/network-arq.yaml``). Points whose threshold is the hash length never resend,
so their hop records give clean ROC curves (every reception checked once against the ground truth
``retrieved``); the other points give the trade-off between retries (airtime, latency) and what
reaches the destination.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from netsim.results import atomic_path, read_table


class ArqReportError(ValueError):
    """The sweep is not an ARQ sweep (no threshold or SNR axis, or no finished points)."""


def _points(sweep_dir: Path) -> list[tuple[dict, Path]]:
    out = []
    for done in sorted((sweep_dir / "points").glob("*/done.json")):
        out.append((json.loads(done.read_text())["assignment"], done.parent))
    if not out:
        raise ArqReportError(f"{sweep_dir}: no finished points")
    return out


def _axis(assignment: dict, suffix: str) -> float:
    for key, value in assignment.items():
        if key == suffix or key.endswith("." + suffix):
            return float(value)
    raise ArqReportError(f"sweep point {assignment} has no {suffix} axis")


def arq_tables(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trade-off table: one row per SNR x threshold, ROC table: hop x SNR x threshold)."""
    sweep_dir = Path(sweep_dir)
    rows, rocs = [], []
    for assignment, point in _points(sweep_dir):
        snr, threshold = _axis(assignment, "snr_db"), int(_axis(assignment, "threshold_bits"))
        hops, frames = read_table(point, "hops"), read_table(point, "frames")
        received = hops[hops["hop"] > 0]
        roc = read_table(point, "hash_roc")
        if threshold >= roc["threshold_bits"].max():  # never resends: every reception checked once
            rocs.append(roc.assign(snr_db=snr))
        airtime = received.groupby(["flow", "frame"])["airtime_s"].sum()
        delivered = frames[frames["outcome"] == "delivered"]
        rows.append({
            "snr_db": snr, "threshold_bits": threshold, "frames": len(frames),
            "transmissions_per_frame": len(received) / len(frames),
            "retransmissions_per_frame": frames["retransmissions"].mean(),
            "airtime_per_frame_s": airtime.mean(),
            "latency_mean_s": delivered["latency_s"].mean(),
            "latency_p90_s": delivered["latency_s"].quantile(0.9),
            "destination_retrieved": delivered["retrieved"].mean(),
            "destination_hash_bit_agreement": delivered["hash_bit_agreement"].mean(),
            "destination_psnr": delivered["psnr"].mean(),
            "checks_failed_at_destination": (delivered["hash_verdict"] == "mismatch").mean(),
        })
    trade = pd.DataFrame(rows).sort_values(["snr_db", "threshold_bits"]).reset_index(drop=True)
    roc = (pd.concat(rocs, ignore_index=True).sort_values(["snr_db", "hop", "threshold_bits"])
           .reset_index(drop=True) if rocs else pd.DataFrame())
    return trade, roc


def plot_roc(roc: pd.DataFrame, stem: Path) -> list[Path]:
    """ROC of the hash check per hop: detection of bad receptions (1 - false accept) against false
    rejects of good ones, one curve per hop and SNR, the thresholds marked every 4 bits."""
    import matplotlib.pyplot as plt

    from netsim.plots import save_figure

    hops = sorted(roc["hop"].unique())
    fig, axes = plt.subplots(1, len(hops), figsize=(4.6 * len(hops), 4.0), squeeze=False)
    for ax, hop in zip(axes[0], hops):
        for snr, g in roc[roc["hop"] == hop].groupby("snr_db"):
            g = g.sort_values("threshold_bits")
            line, = ax.plot(g["false_reject_rate"], 1 - g["false_accept_rate"], marker=".", markersize=3,
                            label=f"{snr:g} dB (bad: {int(g['not_retrieved'].iloc[0])}, "
                                  f"good: {int(g['retrieved'].iloc[0])})")
            marks = g[g["threshold_bits"] % 4 == 0]
            ax.scatter(marks["false_reject_rate"], 1 - marks["false_accept_rate"], s=10, color=line.get_color())
        ax.plot([0, 1], [1, 0], color="grey", linewidth=0.6, linestyle=":")
        ax.set_xlabel("false-reject rate (good reception resent)")
        ax.set_ylabel("1 - false-accept rate (bad reception caught)")
        ax.set_title(f"hop {hop}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("hash check against ground truth (the reconstruction retrieves its own class)")
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_tradeoff(trade: pd.DataFrame, stem: Path) -> list[Path]:
    """What retries buy and cost, against the Hamming threshold, one line per SNR."""
    import matplotlib.pyplot as plt

    from netsim.plots import save_figure

    panels = (("retransmissions_per_frame", "retransmissions per frame"),
              ("airtime_per_frame_s", "airtime per frame [s]"),
              ("latency_p90_s", "p90 latency [s]"),
              ("destination_retrieved", "destination: right class retrieved"),
              ("destination_hash_bit_agreement", "destination hash agreement"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.5))
    for ax, (col, label) in zip(axes, panels):
        for snr, g in trade.groupby("snr_db"):
            ax.plot(g["threshold_bits"], g[col], marker="o", label=f"{snr:g} dB")
        ax.set_xlabel("threshold [bits] (max tries fixed)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("semantic ARQ: retries against the hash-check threshold")
    fig.tight_layout()
    return save_figure(fig, stem)


def report(sweep_dir: str | Path, output: str | Path) -> list[Path]:
    """Write arq.csv, roc.csv and the two figures."""
    trade, roc = arq_tables(sweep_dir)
    if roc.empty:
        raise ArqReportError(f"{sweep_dir}: no point with threshold_bits = the hash length (needed for the ROC)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("arq", trade), ("roc", roc)):
        path = out / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
        written.append(path)
    return written + plot_roc(roc, out / "arq-roc") + plot_tradeoff(trade, out / "arq-tradeoff")
