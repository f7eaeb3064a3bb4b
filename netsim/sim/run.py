"""Run a scenario end to end: simulate, then write tables and the manifest into the run directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from netsim.plots import save_sample_grids
from netsim.results import build_manifest, latency_percentiles, queue_lengths, write_json, write_table
from netsim.scenario import Scenario
from netsim.sim.engine import Simulation


@dataclass
class RunResult:
    run_dir: Path
    hops: pd.DataFrame
    frames: pd.DataFrame
    manifest: dict


def resolve_run_dir(scenario: Scenario, output_dir: str | Path | None = None) -> Path:
    return Path(output_dir) if output_dir else Path(scenario.output_dir.format(name=scenario.name))


def run_scenario(scenario: Scenario, output_dir: str | Path | None = None,
                 progress: Callable[[int], None] | None = None, write: bool = True) -> RunResult:
    run_dir = resolve_run_dir(scenario, output_dir)
    sim = Simulation(scenario, progress=progress)
    hop_rows, frame_rows = sim.run()
    hops = pd.DataFrame(hop_rows).sort_values(["flow", "frame", "hop"], kind="stable").reset_index(drop=True)
    frames = pd.DataFrame(frame_rows).sort_values(["flow", "frame"], kind="stable").reset_index(drop=True)
    manifest = build_manifest(
        scenario, device=str(sim.device), codecs=sim.codec_names, weights_sha256=sim.weights,
        lpips=None if sim.lpips is None else {"source": sim.lpips.source, "sha256": sim.lpips.sha256},
        notes=sim.notes, routes={f.id: f.route for f in sim.flows},
        frames=len(frames), sim_end_s=sim.env.now)
    if write:
        write_table(hops, run_dir, "hops")
        write_table(frames, run_dir, "frames")
        write_table(queue_lengths(hops), run_dir, "queues")
        write_table(latency_percentiles(frames), run_dir, "latency")
        write_json(manifest, run_dir / "manifest.json")
        if sim.samples:
            sources = {(f.id, k): f.images[k % f.images.shape[0]].cpu()
                       for f in sim.flows for k in range(min(scenario.save_images, f.n_frames))}
            save_sample_grids(sim.samples, sources, run_dir)
    return RunResult(run_dir, hops, frames, manifest)
