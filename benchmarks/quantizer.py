"""Throughput of the QF vector quantiser against scikit-learn's KMeans.predict.

For (N_Q, b) = (2, 2) (16 centres) and (4, 5/4) (32 centres) a codebook is fitted with
``VectorQuantizer.fit`` on Gaussian channel outputs (fixed seed).  The same codebook
is put into a scikit-learn ``KMeans`` object, and on the same ~1,000,000 blocks we time

* ours:    ``VectorQuantizer.quantize`` + ``VectorQuantizer.dequantize`` (complex in, complex
           out) with the library default ``cpu_threads=1`` for the chunk loop, and again
           ("ours_mt") with ``cpu_threads=None``, i.e. on torch's intra-op threads
* sklearn: ``KMeans.predict`` only (labels; no reconstruction)

in alternating blocks of repetitions (so that load from other processes hits both
alike; each block starts with an untimed warm-up), reporting the median.  Each thread count is applied to both: torch via
``torch.set_num_threads`` and scikit-learn's OpenMP via ``threadpoolctl``.

Run:  python benchmarks/quantizer.py [--blocks 1000000] [--reps 5] [--rounds 3] [--threads 1 2]
      [--chunk-rows 1024 4096 ...] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_info, threadpool_limits

from netsim.phy.quantizer import VectorQuantizer

PAIRS = [(2, "2"), (4, "5/4")]


def _sklearn_with_centres(centres: np.ndarray, seed: int) -> KMeans:
    """A fitted KMeans whose cluster_centers_ are exactly ``centres``."""
    K = centres.shape[0]
    km = KMeans(n_clusters=K, n_init=1, max_iter=1, random_state=seed)
    km.fit(centres)  # K points, K clusters: only to initialise the fitted state
    km.cluster_centers_ = np.ascontiguousarray(centres.copy())
    return km


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=1_000_000, help="blocks per measurement")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per round (median reported)")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="thread counts to measure (default: 1 and torch's default, as-is)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating blocks of repetitions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-rows", type=int, nargs="*", default=None,
                    help="also sweep these chunk_rows values for ours")
    ap.add_argument("--gpu", action="store_true", help="also time ours on CUDA (if available)")
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    print(f"torch {torch.__version__}, torch default threads (as-is) = {default_threads}, "
          f"os.cpu_count() = {os.cpu_count()}, load average = {os.getloadavg()}")
    print("OpenMP/BLAS pools:", ", ".join(f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()))
    print(f"thread counts measured (torch and sklearn alike): {threads}")

    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for n_q, b in PAIRS:
        # --- codebook, fitted on held-out Gaussian "channel outputs" --------------
        train = torch.randn(400, 500 * n_q, dtype=torch.complex64, generator=g)  # 400k blocks
        t0 = time.perf_counter()
        vq = VectorQuantizer.fit(train, n_q, b, seed=args.seed)  # subsamples 200k blocks
        fit_s = time.perf_counter() - t0
        km = _sklearn_with_centres(vq.centres.numpy(), args.seed)

        # --- test blocks: B images x 1000 blocks each -----------------------------
        B = max(1, args.blocks // 1000)
        y = torch.randn(B, 1000 * n_q // 2, dtype=torch.complex64, generator=g)
        n_blocks = B * 1000
        X = torch.view_as_real(y).reshape(-1, n_q).numpy()  # same blocks, float32 view
        shape = y.shape[1:]

        def ours():  # library default: chunk loop single-threaded (cpu_threads=1)
            return vq.dequantize(vq.quantize(y), shape)

        def ours_mt():  # chunk loop on torch's current intra-op threads
            return vq.dequantize(vq.quantize(y, cpu_threads=None), shape, cpu_threads=None)

        def theirs():
            return km.predict(X)

        for t in threads:
            with threadpool_limits(limits=t):
                torch.set_num_threads(t)
                agree = float(np.mean(vq.quantize(y).reshape(-1).numpy() == km.predict(X)))
                times = {f: [] for f in (ours, ours_mt, theirs)}
                for _ in range(args.rounds):  # alternate blocks of repetitions
                    for f, ts in times.items():
                        f()  # untimed warm-up (also lets the other OpenMP pool go idle)
                        ts += [_time(f) for _ in range(args.reps)]
                med = {f.__name__: statistics.median(ts) for f, ts in times.items()}
                rows.append((f"({n_q}, {b})", vq.n_codewords, str(t), n_blocks, med["ours"],
                             med["ours_mt"], med["theirs"], agree, fit_s))

                for cr in args.chunk_rows or []:  # optional sweep of our chunk size
                    f = lambda: vq.dequantize(vq.quantize(y, chunk_rows=cr), shape)  # noqa: E731
                    f()
                    tc = statistics.median(_time(f) for _ in range(args.reps))
                    print(f"  chunk sweep ({n_q}, {b}) threads={t} chunk_rows={cr}: "
                          f"{tc * 1e3:.1f} ms ({med['theirs'] / tc:.2f} x sklearn)")
        torch.set_num_threads(default_threads)

        if args.gpu and torch.cuda.is_available():  # ours on the accelerator (no sklearn there)
            yg = y.cuda()
            fg = lambda: vq.dequantize(vq.quantize(yg), shape)  # noqa: E731
            fg()
            torch.cuda.synchronize()
            tg = []
            for _ in range(args.reps * args.rounds):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fg()
                torch.cuda.synchronize()
                tg.append(time.perf_counter() - t0)
            agree_g = float((vq.quantize(yg).cpu().reshape(-1).numpy() == km.predict(X)).mean())
            nan = float("nan")
            rows.append((f"({n_q}, {b})", vq.n_codewords, "cuda", n_blocks, statistics.median(tg),
                         nan, nan, agree_g, fit_s))

    hdr = (f"{'(N_Q, b)':>10} {'K':>4} {'thr':>4} {'blocks':>9} {'ours ms':>8} {'Mblk/s':>7} "
           f"{'sk ms':>8} {'Mblk/s':>7} {'ours/sk':>8} | {'ours_mt ms':>10} {'mt/sk':>6} "
           f"{'agree':>7} {'fit s':>6}")
    print()
    print("ours    = quantize + dequantize, library default (chunk loop on 1 intra-op thread)")
    print("ours_mt = the same with cpu_threads=None (on torch's `thr` intra-op threads)")
    print("sk      = KMeans.predict only, on `thr` OpenMP threads (threadpoolctl)")
    print(f"median of {args.rounds} x {args.reps} repetitions in alternating blocks; "
          f"thr = torch.set_num_threads / sklearn thread count")
    print(hdr)
    print("-" * len(hdr))
    for pair, K, t, n, mo, mmt, ms, agree, fit_s in rows:
        print(f"{pair:>10} {K:>4} {t:>4} {n:>9} {mo * 1e3:>8.1f} {n / mo / 1e6:>7.1f} "
              f"{ms * 1e3:>8.1f} {n / ms / 1e6:>7.1f} {ms / mo:>8.2f} | {mmt * 1e3:>10.1f} "
              f"{ms / mmt:>6.2f} {agree:>7.4f} {fit_s:>6.1f}")
    print()
    print("ours/sk, mt/sk = throughput ratio (sklearn time / our time); target >= 1.0")


if __name__ == "__main__":
    main()
