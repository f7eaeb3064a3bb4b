"""Event rate: frames per second through a 10-hop AF chain (uncoded codec), netsim against a
minimal SimPy pipeline doing the same events and the same tensor work; and, with --memory, the
peak memory of the 50-node mesh scenario at 1,000 and 10,000 frames.

Workload: source -> 9 AF relays -> destination, 32x32 images sent uncoded (1,536 complex symbols +
64 bits of side information per frame), Poisson arrivals at 500 frames/s, links at 1e6 symbols/s
and 10 us propagation delay, 0.2 ms of simulated compute per frame at every node. Links are
loaded to about 78 %, so frames queue at the radios (FIFO). ``max_batch: 1`` makes netsim do
the per-frame tensor work the minimal pipeline does (batching would only help netsim).

The minimal pipeline is what one would write by hand: a Store per node inbox and per link, a
process per node (compute, then hand the frame to its link) and per link transmitter (FIFO:
airtime, then deliver after the propagation delay). Its tensor work is netsim's: the uncoded
encoder at the source; per hop the channel (netsim.phy.channel.transmit, same counter-based noise
keys) on the same symbol tensors; AF power normalisation at relays; the LMMSE decoder at the
destination with the effective SNR. Both run the same arrival times (netsim's generator), and
the script checks that every frame's end-to-end latency and received symbols agree.

netsim's time covers ``Simulation.run()`` and closing its record sink, records streamed to disk
(parquet + CSV, as ``netsim run`` writes them); building the Simulation (image loading) is set-up.
Repeats are interleaved (netsim, minimal, netsim, ...); the ratio is the median of the paired
ratios of frames per second (netsim / minimal), target >= 0.5.

    python benchmarks/event_rate.py [--frames 1000] [--repeats 5] [--threads 1]
    python benchmarks/event_rate.py --memory [--contrast] [--memory-repeats 3]
                                    [--scenarios scenarios/network-mesh-1k.yaml scenarios/network-mesh.yaml]

--memory runs ``netsim run --no-csv -q --threads 1`` on each scenario (into a temporary directory)
as the only child of a small wrapper process, which reports that child's peak resident set size
(resource.getrusage(RUSAGE_CHILDREN).ru_maxrss) and its wall time; rounds are interleaved and
the median peak of each case is reported, then the ratio of the medians (run-to-run noise of the
peak is about 10 MiB here). --contrast adds the same runs through ``run_scenario(write=False)``,
which keeps every record in memory (a MemorySink, as every run did before streaming), to show
what streaming saves.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simpy
import torch

from netsim.phy.channel import keys_tensor, noise_key, transmit
from netsim.scenario import parse_scenario
from netsim.sim import Simulation
from netsim.sim.codecs import UncodedCodec
from netsim.sim.engine import SCHEMAS
from netsim.sim.records import StreamingSink

HOPS, SEED, SIZE, SNR_DB = 10, 0, 32, 20.0
SYMBOL_RATE, DELAY_S, PER_IMAGE_S, RATE_HZ = 1e6, 1e-5, 2e-4, 500.0
BIT_RATE = 1e6  # side information (64 bits: mean and scale)
REPO = Path(__file__).resolve().parents[1]
MESH = [REPO / "scenarios" / "network-mesh-1k.yaml", REPO / "scenarios" / "network-mesh.yaml"]


def chain_scenario(frames: int):
    ids = ["src"] + [f"r{i}" for i in range(1, HOPS)] + ["dst"]
    return parse_scenario({
        "name": "event-rate", "seed": SEED, "device": "cpu", "metrics": [], "max_batch": 1,
        "compute": {"model": "fixed", "per_image_s": PER_IMAGE_S, "per_batch_s": 0.0},
        "nodes": [{"id": "src", "role": "source"}] + [{"id": r, "role": "relay", "mode": "af"} for r in ids[1:-1]]
        + [{"id": "dst", "role": "destination"}],
        "links": [{"src": a, "dst": b, "snr_db": SNR_DB, "symbol_rate": SYMBOL_RATE, "bit_rate": BIT_RATE,
                   "delay_s": DELAY_S} for a, b in zip(ids, ids[1:])],
        "flows": [{"id": "f", "source": "src", "destination": "dst", "codec": "uncoded",
                   "workload": {"images": {"source": "skimage", "size": SIZE, "count": 8}, "frames": frames,
                                "arrivals": {"kind": "poisson", "rate_hz": RATE_HZ}}}],
    })


def run_netsim(sc, directory: Path) -> tuple[float, Simulation]:
    sim = Simulation(sc, sink=StreamingSink(directory, SCHEMAS))  # set-up: not timed
    t0 = time.perf_counter()
    sim.run()
    sim.sink.close()
    return time.perf_counter() - t0, sim


@torch.no_grad()
def run_minimal(images: torch.Tensor, frames: int) -> tuple[float, dict[int, float], dict[int, float]]:
    """The hand-written pipeline; returns (seconds, latency and effective SNR at the destination per frame)."""
    t0 = time.perf_counter()
    env = simpy.Environment()
    codec = UncodedCodec()
    inbox = [simpy.Store(env) for _ in range(HOPS + 1)]  # node j's inbox
    link = [simpy.Store(env) for _ in range(HOPS)]  # link j: node j -> node j + 1, FIFO
    latency: dict[int, float] = {}
    snr_eff: dict[int, float] = {}

    def arrivals():
        rng = np.random.default_rng([SEED, 0, 1])  # netsim's arrival stream for flow 0
        for k in range(frames):
            if k:
                yield env.timeout(rng.exponential(1.0 / RATE_HZ))
            # frame: [index, created, payload, side, signal power, noise power]
            inbox[0].put([k, env.now, None, None, 1.0, 0.0])

    def node(j: int):
        while True:
            frame = yield inbox[j].get()
            yield env.timeout(PER_IMAGE_S)
            k = frame[0]
            if j == 0:
                frame[2], frame[3] = codec.encode(images[k % images.shape[0]][None])
            elif j < HOPS:  # AF: rescale y to unit power; signal and noise scale alike
                y = frame[2]
                power = y.abs().square().flatten(1).mean(1)
                frame[2] = y * power.rsqrt().view(-1, 1)
                p = power.item()
                frame[4], frame[5] = frame[4] / p, frame[5] / p
            else:
                y = frame[2] / math.sqrt(frame[4])
                snr_eff[k] = 10.0 * math.log10(frame[4] / frame[5])
                codec.decode(y, frame[3], torch.tensor([snr_eff[k]]).clamp(max=100.0), (3, SIZE, SIZE))
                latency[k] = env.now - frame[1]
                continue
            link[j].put(frame)

    def transmitter(j: int):
        airtime = (SIZE * SIZE * 3 // 2) / SYMBOL_RATE + 64 / BIT_RATE
        while True:
            frame = yield link[j].get()
            y, noise = transmit("awgn", frame[2], SNR_DB, keys_tensor([noise_key(SEED, 0, frame[0], j)]))
            frame[2], frame[5] = y, frame[5] + noise.item()
            yield env.timeout(airtime)
            env.timeout(DELAY_S).callbacks.append(lambda _e, f=frame, to=inbox[j + 1]: to.put(f))

    env.process(arrivals())
    for j in range(HOPS + 1):
        env.process(node(j))
    for j in range(HOPS):
        env.process(transmitter(j))
    env.run()
    return time.perf_counter() - t0, latency, snr_eff


def check_same_events(directory: Path, latency: dict[int, float], snr_eff: dict[int, float]) -> None:
    """Every frame's end-to-end latency (event times) and effective SNR at the destination (noise
    realisations and AF gains) agree between netsim and the minimal pipeline."""
    import pandas as pd

    frames = pd.read_parquet(directory / "frames.parquet").set_index("frame").sort_index()
    assert len(frames) == len(latency), (len(frames), len(latency))
    assert np.allclose(frames["latency_s"].to_numpy(), [latency[k] for k in frames.index], rtol=0, atol=1e-9), \
        "latencies differ"
    hops = pd.read_parquet(directory / "hops.parquet", columns=["hop", "snr_eff_db", "frame"])
    dst = hops[hops["hop"] == HOPS].set_index("frame").sort_index()
    assert np.allclose(dst["snr_eff_db"].to_numpy(), [snr_eff[k] for k in dst.index], rtol=1e-6, atol=0), \
        "effective SNRs differ"


def event_rate(args) -> None:
    sc = chain_scenario(args.frames)
    netsim_fps, minimal_fps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            seconds, sim = run_netsim(sc, Path(tmp) / f"run{r}")
            netsim_fps.append(args.frames / seconds)
            images = sim.flows[0].images
            seconds, latency, snr_eff = run_minimal(images, args.frames)
            minimal_fps.append(args.frames / seconds)
            if r == 0:
                check_same_events(Path(tmp) / "run0", latency, snr_eff)
    n, m = statistics.median(netsim_fps), statistics.median(minimal_fps)
    paired = statistics.median(a / b for a, b in zip(netsim_fps, minimal_fps))
    print(f"threads={torch.get_num_threads()} frames={args.frames} hops={HOPS} repeats={args.repeats} "
          f"(same events: every frame's latency and effective SNR agree)")
    print(f"netsim   : {n:8.1f} frames/s  (runs: {', '.join(f'{x:.1f}' for x in netsim_fps)})")
    print(f"minimal  : {m:8.1f} frames/s  (runs: {', '.join(f'{x:.1f}' for x in minimal_fps)})")
    print(f"ratio netsim/minimal = {paired:.3f} (median of paired ratios; ratio of medians {n / m:.3f})  "
          f"target >= 0.5")


CONTRAST = """
import sys
from netsim.scenario import load_scenario
from netsim.sim import run_scenario
import torch
torch.set_num_threads(1)
run_scenario(load_scenario(sys.argv[1]), write=False)  # every record kept in memory (MemorySink)
"""


def memory(args) -> None:
    # RUSAGE_CHILDREN is a high-water mark over all of a process's children: a fresh wrapper per
    # measurement makes it the peak of exactly one run.
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)")
    netsim = [sys.executable, "-m", "netsim.cli"]
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.memory_repeats):  # interleaved: every case once per round
            for i, path in enumerate(args.scenarios):
                cases = [("streamed", netsim + ["run", str(path), "-o", os.path.join(tmp, f"{r}-{i}"), "--no-csv",
                                                "-q", "--threads", "1"])]
                if args.contrast:
                    cases.append(("in memory", [sys.executable, "-c", CONTRAST, str(path)]))
                for label, cmd in cases:
                    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True,
                                         text=True)
                    peak, wall = map(float, out.stdout.split())
                    runs.setdefault((label, str(path)), []).append((peak, wall))
                    print(f"round {r + 1}: {label:9s} {Path(path).name:24s} {_frames(path):6d} frames  "
                          f"peak RSS {peak:7.1f} MiB  wall {wall:6.1f} s", flush=True)
    print(f"medians of {args.memory_repeats} runs:")
    median = {key: statistics.median(p for p, _ in v) for key, v in runs.items()}
    for (label, path), v in runs.items():
        print(f"  {label:9s} {Path(path).name:24s} {_frames(path):6d} frames  peak RSS {median[label, path]:7.1f} MiB  "
              f"(runs: {', '.join(f'{p:.1f}' for p, _ in v)})  wall {statistics.median(w for _, w in v):6.1f} s")
    for label in dict.fromkeys(label for label, _ in runs):
        paths = [p for lab, p in runs if lab == label]
        if len(paths) >= 2:
            small, big = median[label, paths[0]], median[label, paths[-1]]
            print(f"{label}: peak at {_frames(paths[-1])} frames / peak at {_frames(paths[0])} frames = "
                  f"{big / small:.3f} ({big - small:+.1f} MiB)")


def _frames(path) -> int:
    from netsim.scenario import load_scenario

    sc = load_scenario(path)
    return sum(f.workload.frames or f.workload.images.count for f in sc.flows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--memory", action="store_true", help="peak memory of the mesh scenarios instead")
    ap.add_argument("--scenarios", nargs="+", default=[str(p) for p in MESH], help="--memory: scenario files")
    ap.add_argument("--contrast", action="store_true", help="--memory: also run with every record in memory")
    ap.add_argument("--memory-repeats", type=int, default=3, help="--memory: rounds (median peak reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        memory(args)
    else:
        event_rate(args)


if __name__ == "__main__":
    main()
