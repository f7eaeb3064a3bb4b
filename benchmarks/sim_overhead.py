"""Simulator overhead: a full `netsim` run against a bare torch loop doing the same neural work.

Workload (issue 2): an r = 3 DF chain (4 noisy hops) over 2,048 32x32 images in batches of 64.
Both sides make the same calls on the same batches: per hop, the channel (netsim's counter-based
AWGN, keys included), the hop's decoder, PSNR against the source, and the next hop's encoder.
The codec is an untrained small DeepJSCC (rho = 1/6): only time matters here, not quality.

    python benchmarks/sim_overhead.py [--images 2048] [--batch 64] [--repeats 5] [--threads N]

Prints both wall times (median of the repeats, interleaved) and the ratio netsim / bare loop.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from netsim.metrics import psnr
from netsim.phy.channel import awgn, keys_tensor, noise_key
from netsim.scenario import parse_scenario
from netsim.sim import Simulation

SNR_DB, SEED, HOPS = 5.0, 0, 4
CODEC = {"untrained": "deepjscc-multihop", "config": {"n_hops": HOPS, "c_out": 16, "size": "small"}, "seed": 0}


def scenario(n_images: int, batch: int):
    ids = ["src", "r1", "r2", "r3", "dst"]
    return parse_scenario({
        "name": "sim-overhead", "seed": SEED, "device": "cpu", "metrics": ["psnr"],
        "max_batch": batch,
        # Links fast and the batch window long enough that every node sees full batches.
        "batch_window_s": 1e-3, "compute": {"per_image_s": 0.0},
        "nodes": [{"id": "src", "role": "source"}]
        + [{"id": r, "role": "relay", "mode": "df"} for r in ids[1:-1]]
        + [{"id": "dst", "role": "destination"}],
        "links": [{"src": a, "dst": b, "snr_db": SNR_DB, "symbol_rate": 1e12} for a, b in zip(ids, ids[1:])],
        "flows": [{"id": "f", "source": "src", "destination": "dst", "codec": CODEC,
                   "workload": {"images": {"source": "skimage", "size": 32, "count": 9}, "frames": n_images}}],
    })


def run_netsim(sc) -> tuple[float, Simulation]:
    sim = Simulation(sc)  # model build and image loading are set-up, not simulation
    t0 = time.perf_counter()
    sim.run()
    return time.perf_counter() - t0, sim


@torch.no_grad()
def run_bare(sim: Simulation, n_images: int, batch: int) -> float:
    """The same encoder, channel, decoder and PSNR calls, on the same batches, without the simulator."""
    flow = sim.flows[0]
    pairs = [c.pair for c in flow.codecs]
    t0 = time.perf_counter()
    for start in range(0, n_images, batch):
        frames = range(start, min(start + batch, n_images))
        S = torch.stack([flow.images[f % flow.images.shape[0]] for f in frames])
        x = pairs[0].encode(S)
        for hop in range(HOPS):
            keys = keys_tensor([noise_key(SEED, 0, f, hop) for f in frames])
            S_hat = pairs[hop].decode(awgn(x, SNR_DB, keys), None)
            psnr(S, S_hat).tolist()
            if hop + 1 < HOPS:
                x = pairs[hop + 1].encode(S_hat)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sc = scenario(args.images, args.batch)
    netsim_s, bare_s = [], []
    for _ in range(args.repeats):
        seconds, sim = run_netsim(sc)
        netsim_s.append(seconds)
        bare_s.append(run_bare(sim, args.images, args.batch))
    hops = sim.hop_records
    relay_batches = sum(1 for r in hops if r["node"] == "r1") / max(1, len({r["start_s"] for r in hops if r["node"] == "r1"}))
    n, b = statistics.median(netsim_s), statistics.median(bare_s)
    pair_ratio = statistics.median(x / y for x, y in zip(netsim_s, bare_s))
    print(f"threads={torch.get_num_threads()} images={args.images} batch={args.batch} "
          f"mean frames per r1 batch={relay_batches:.1f}")
    print(f"netsim run   : {n:.3f} s  (runs: {', '.join(f'{s:.3f}' for s in netsim_s)})")
    print(f"bare loop    : {b:.3f} s  (runs: {', '.join(f'{s:.3f}' for s in bare_s)})")
    print(f"ratio netsim/bare = {n / b:.3f} (medians); median of paired ratios = {pair_ratio:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
