"""Run a scenario end to end: simulate, then write tables and the manifest into the run directory.

With ``write`` (the default) hop records, frame records and queue lengths over time stream to the
``hops`` / ``frames`` / ``queues`` tables in the run directory while the simulation runs
(netsim.sim.records), so memory does not grow with the number of frames. The small derived
tables (per-flow latency percentiles, the hash check's ROC) are then computed from only the
columns they need, read back from parquet. Rows of the streamed tables are in the order the
records completed (queues: by time); ``RunResult.hops`` / ``.frames`` load them on first use,
sorted by (flow, frame, hop) / (flow, frame).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from netsim.plots import save_sample_grids
from netsim.results import build_manifest, hash_check_roc, latency_percentiles, write_json, write_table
from netsim.scenario import Scenario
from netsim.sim.engine import SCHEMAS, Simulation
from netsim.sim.records import FLUSH_ROWS, MemorySink, StreamingSink, read_columns

SORT_KEYS = {"hops": ["flow", "frame", "hop"], "frames": ["flow", "frame"]}
LATENCY_COLUMNS = ["flow", "outcome", "latency_s"]
ROC_COLUMNS = ["hop", "snr_db", "hash_hamming", "retrieved"]


def _sorted(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df.sort_values(SORT_KEYS[name], kind="stable").reset_index(drop=True)


class RunResult:
    """A finished run: its directory, manifest and the ``hops`` / ``frames`` tables.

    The tables are DataFrames sorted by (flow, frame, hop) / (flow, frame). A written run reads
    them from the run directory on first access (a large run's hops table is big: ``columns()``
    reads only some columns)."""

    def __init__(self, run_dir: Path, hops: pd.DataFrame | None = None, frames: pd.DataFrame | None = None,
                 manifest: dict | None = None):
        self.run_dir, self.manifest = Path(run_dir), manifest or {}
        self._tables = {"hops": hops, "frames": frames}

    def _table(self, name: str) -> pd.DataFrame:
        if self._tables[name] is None:
            self._tables[name] = _sorted(read_columns(self.run_dir / f"{name}.parquet"), name)
        return self._tables[name]

    @property
    def hops(self) -> pd.DataFrame:
        return self._table("hops")

    @property
    def frames(self) -> pd.DataFrame:
        return self._table("frames")

    def columns(self, name: str, columns: list[str]) -> pd.DataFrame:
        """Some columns of the ``hops`` or ``frames`` table (in file order, not sorted)."""
        if self._tables[name] is not None:
            return self._tables[name][columns]
        return read_columns(self.run_dir / f"{name}.parquet", columns)

    def __repr__(self) -> str:
        return f"RunResult(run_dir={str(self.run_dir)!r}, frames={self.manifest.get('frames')})"


def resolve_run_dir(scenario: Scenario, output_dir: str | Path | None = None) -> Path:
    return Path(output_dir) if output_dir else Path(scenario.output_dir.format(name=scenario.name))


def run_scenario(scenario: Scenario, output_dir: str | Path | None = None,
                 progress: Callable[[int], None] | None = None, write: bool = True, csv: bool = True,
                 flush_rows: int = FLUSH_ROWS) -> RunResult:
    """Simulate ``scenario``; with ``write``, stream its records into the run directory and add the
    derived tables, sample grids and manifest.json. ``csv=False`` writes the hops, frames and queues
    tables as parquet only (the small latency and hash_roc tables always get a CSV copy too)."""
    run_dir = resolve_run_dir(scenario, output_dir)
    sink = StreamingSink(run_dir, SCHEMAS, csv=csv, flush_rows=flush_rows) if write else None
    sim = Simulation(scenario, progress=progress, sink=sink)
    try:
        sim.run()
        sim.sink.close()
    except BaseException:
        sim.sink.abort()
        raise
    manifest = build_manifest(
        scenario, device=str(sim.device), codecs=sim.codec_names, weights_sha256=sim.weights,
        lpips=None if sim.lpips is None else {"source": sim.lpips.source, "sha256": sim.lpips.sha256},
        notes=sim.notes, routes={f.id: f.route for f in sim.flows},
        frames=sim.sink.count("frames"), sim_end_s=sim.env.now)
    if not write:
        assert isinstance(sim.sink, MemorySink)
        return RunResult(run_dir, _sorted(sim.sink.table("hops"), "hops"), _sorted(sim.sink.table("frames"), "frames"),
                         manifest)
    write_table(latency_percentiles(read_columns(run_dir / "frames.parquet", LATENCY_COLUMNS)), run_dir, "latency")
    if sim.hasher is not None:
        write_table(hash_check_roc(read_columns(run_dir / "hops.parquet", ROC_COLUMNS), sim.flows[0].hashes.shape[1]),
                    run_dir, "hash_roc")
    write_json(manifest, run_dir / "manifest.json")
    if sim.samples:
        sources = {(f.id, k): f.images[k % f.images.shape[0]].cpu()
                   for f in sim.flows for k in range(min(scenario.save_images, f.n_frames))}
        save_sample_grids(sim.samples, sources, run_dir)
    return RunResult(run_dir, manifest=manifest)
