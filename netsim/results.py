"""Run outputs: tidy tables (parquet + CSV), the run manifest, and atomic writes.

A run directory holds ``hops.{parquet,csv}`` (one row per frame per node it reached, hop 0 being
the source), ``frames.{parquet,csv}`` (one end-to-end row per frame) and ``manifest.json``.
Every file is written to a temporary name in the same directory and renamed into place, so a
crash never leaves a half-written table and never clobbers an earlier complete one.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

PACKAGES = ("netsim", "torch", "numpy", "simpy", "pandas", "pydantic", "lpips", "scikit-learn")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (weights in manifests, model cards and checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_table(df: pd.DataFrame, directory: str | Path, name: str) -> None:
    """``name.parquet`` and ``name.csv`` in ``directory``, each written atomically."""
    directory = Path(directory)
    with atomic_path(directory / f"{name}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(directory / f"{name}.csv") as tmp:
        df.to_csv(tmp, index=False)


def read_table(directory: str | Path, name: str) -> pd.DataFrame:
    directory = Path(directory)
    if (directory / f"{name}.parquet").exists():
        return pd.read_parquet(directory / f"{name}.parquet")
    return pd.read_csv(directory / f"{name}.csv")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout ``path`` lies in (default: this package's), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(scenario: Any, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario.model_dump(mode="json"),
        "seed": scenario.seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        **extra,
    }


HOP_SUMMARY_COLUMNS = {
    "psnr": "PSNR dB", "ms_ssim": "MS-SSIM", "lpips": "LPIPS",
    "hash_bit_agreement": "hash agree", "latency_s": "latency s",
}


def ci95_half_width(values) -> float:
    """Half-width of the normal-approximation 95% CI of a mean: 1.96 std / sqrt(n); NaN below n = 2."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(1.96 * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def hop_summary(hops: pd.DataFrame) -> pd.DataFrame:
    """Mean per (flow, hop, node) of the quality, hash and latency columns."""
    df = hops.assign(latency_s=hops["done_s"] - hops["created_s"])
    cols = [c for c in HOP_SUMMARY_COLUMNS if c in df]
    summary = df.groupby(["flow", "hop", "node"], sort=True).agg(
        frames=("frame", "size"), **{c: (c, "mean") for c in cols})
    return summary.reset_index()


def queue_lengths(hops: pd.DataFrame) -> pd.DataFrame:
    """Queue length over time, rebuilt exactly from the hop records.

    ``radio``: frames waiting for a node's transmitter (from enqueue_s to tx_start_s, counted at
    the sender); ``inbox``: frames waiting for a node's compute (arrival_s to start_s). One row per
    change: node, queue, time_s, length.
    """
    sent = hops[hops["hop"] > 0]
    parts = [("radio", sent["sender"], sent["enqueue_s"], sent["tx_start_s"]),
             ("inbox", hops["node"], hops["arrival_s"], hops["start_s"])]
    events = pd.concat([
        pd.DataFrame({"node": pd.concat([who, who]), "queue": queue,
                      "time_s": pd.concat([join, leave]),
                      "delta": [1] * len(join) + [-1] * len(leave)})
        for queue, who, join, leave in parts], ignore_index=True)
    # at equal times, departures first: a frame served on arrival never waits
    events = events.sort_values(["node", "queue", "time_s", "delta"], kind="stable")
    events["length"] = events.groupby(["node", "queue"])["delta"].cumsum()
    last = events.groupby(["node", "queue", "time_s"], sort=False).tail(1)
    return last.drop(columns="delta").reset_index(drop=True)


def latency_percentiles(frames: pd.DataFrame) -> pd.DataFrame:
    """Per-flow end-to-end latency of delivered frames: mean, p50, p90, p99, max (seconds)."""
    delivered = frames[frames["outcome"] == "delivered"]
    grouped = delivered.groupby("flow")["latency_s"]
    table = grouped.agg(frames="size", mean="mean", max="max")
    for q in (50, 90, 99):
        table[f"p{q}"] = grouped.quantile(q / 100)
    return table[["frames", "mean", "p50", "p90", "p99", "max"]].reset_index()


def hash_check_roc(hops: pd.DataFrame, n_bits: int) -> pd.DataFrame:
    """How well the hash check tells good receptions from bad, per hop and link SNR.

    Ground truth is the ``retrieved`` column (the reconstruction's hash still retrieves its own
    class among the flow's source images; its own image when they are unlabelled). For every threshold t in 0..n_bits the check accepts a
    reception when ``hash_hamming <= t``; the rows give the false-accept rate (accepted, not
    retrieved) over the not-retrieved receptions and the false-reject rate (rejected, retrieved)
    over the retrieved ones. Every transmission attempt counts as one check. Empty when no hop has
    both a hash distance and a ground truth.
    """
    columns = ["hop", "snr_db", "threshold_bits", "retrieved", "not_retrieved", "false_accept_rate",
               "false_reject_rate"]
    checked = hops.dropna(subset=["hash_hamming", "retrieved"])
    rows = []
    thresholds = np.arange(n_bits + 1)
    for (hop, snr), group in checked.groupby(["hop", "snr_db"], dropna=False):
        dist = group["hash_hamming"].to_numpy()[:, None]
        ok = group["retrieved"].to_numpy()[:, None] > 0.5
        accept = dist <= thresholds[None, :]
        n_ok, n_bad = int(ok.sum()), int((~ok).sum())
        far = (accept & ~ok).sum(0) / n_bad if n_bad else np.full(len(thresholds), np.nan)
        frr = (~accept & ok).sum(0) / n_ok if n_ok else np.full(len(thresholds), np.nan)
        rows += [(hop, snr, int(t), n_ok, n_bad, float(a), float(r)) for t, a, r in zip(thresholds, far, frr)]
    return pd.DataFrame(rows, columns=columns)
