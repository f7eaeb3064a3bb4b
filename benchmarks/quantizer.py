"""Throughput of the QF vector quantiser against scikit-learn's KMeans.predict.

For each of the paper's (N_Q, b) pairs a codebook is fitted with ``VectorQuantizer.fit`` on
Gaussian channel outputs (fixed seed) and copied into a scikit-learn ``KMeans`` object.  On
the same ~1,000,000 blocks (one float32 array: our complex input and, viewed as
[n, N_Q] C-contiguous float32, scikit-learn's) both do the relay's work, nearest centre
then reconstruction:

* ours: ``VectorQuantizer.quantize`` + ``VectorQuantizer.dequantize`` (complex in, complex
  out; the stages the simulation engine runs at a QF relay) with the library defaults, i.e.
  quantise on up to ``torch.get_num_threads()`` threads, gather on one
* sk:   ``KMeans.predict`` + ``np.take(cluster_centers_, labels, axis=0)``
* pred: ``KMeans.predict`` alone (labels only: less work than ours; a stricter reference)

For every thread count ``thr`` torch gets ``torch.set_num_threads(thr)`` and scikit-learn's
OpenMP pool ``threadpoolctl.threadpool_limits(thr)``; the KMeans object is created inside
that limit, since ``predict`` runs on the thread count recorded at fit time.  Before timing,
the labels must agree (any difference must be a float32 near-tie, checked in float64) and
the reconstructions must be the chosen centres.

Timing: ``--rounds`` rounds; in each, every function runs one untimed warm-up (which also
lets the previous function's OpenMP threads go idle) and then ``--reps`` timed calls, in an
order rotated from round to round.  Per round the ratio is sk median / ours median (a
throughput ratio, paired in time so load from other processes hits both alike); the table
shows the median over rounds.  Target: ours/sk >= 1.0 at every pair and thread count.

Run:  python benchmarks/quantizer.py [--blocks 1000000] [--reps 5] [--rounds 5] [--threads 1 2]
      [--pairs 2/2 4/5/4] [--chunk-rows 1024 4096 ...] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from fractions import Fraction

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_info, threadpool_limits

from netsim.phy.quantizer import PAPER_QF_PAIRS, VectorQuantizer


def _sklearn_with_centres(centres: np.ndarray, seed: int) -> KMeans:
    """A fitted KMeans whose cluster_centers_ are exactly ``centres`` (created under the
    caller's threadpool limit, which ``predict`` then uses)."""
    K = centres.shape[0]
    km = KMeans(n_clusters=K, n_init=1, max_iter=1, random_state=seed)
    km.fit(centres)  # K points, K clusters: only to initialise the fitted state
    km.cluster_centers_ = np.ascontiguousarray(centres.copy())
    return km


def _check_same(X: np.ndarray, C: np.ndarray, ours_idx: np.ndarray, sk_idx: np.ndarray) -> int:
    """Assert the labels agree except at float32 near-ties; return the number of those."""
    diff = np.flatnonzero(ours_idx != sk_idx)
    if diff.size:
        x = X[diff].astype(np.float64)
        c = C.astype(np.float64)
        d_ours = ((x - c[ours_idx[diff]]) ** 2).sum(1)
        d_sk = ((x - c[sk_idx[diff]]) ** 2).sum(1)
        scale = (x * x).sum(1) + (c * c).sum(1).max()
        worst = float(np.max(np.abs(d_ours - d_sk) / scale))
        assert worst < 1e-5, f"{diff.size} labels differ, not only near-ties (worst rel. gap {worst:.2e})"
        assert diff.size <= max(2, X.shape[0] // 10_000), f"{diff.size} labels differ"
    return int(diff.size)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _parse_pair(s: str) -> tuple[int, Fraction]:
    n_q, b = s.split("/", 1)
    return int(n_q), Fraction(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=1_000_000, help="blocks per measurement")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per function and round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (median of per-round ratios)")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="thread counts to measure (default: 1 and torch's default)")
    ap.add_argument("--pairs", type=_parse_pair, nargs="*", default=None,
                    help="(N_Q, b) pairs as N_Q/b, e.g. 2/2 4/5/4 (default: the paper's five)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-rows", type=int, nargs="*", default=None,
                    help="also time ours with these chunk_rows values")
    ap.add_argument("--gpu", action="store_true", help="also time ours on CUDA (if available)")
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    pairs = args.pairs or list(PAPER_QF_PAIRS)
    print(f"torch {torch.__version__}, torch default threads = {default_threads}, "
          f"os.cpu_count() = {os.cpu_count()}, load average = {os.getloadavg()}")
    print("OpenMP/BLAS pools:", ", ".join(f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()))
    print(f"thread counts (torch and sklearn alike): {threads}; {args.rounds} rounds x {args.reps} reps")

    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for n_q, b in pairs:
        # --- codebook, fitted on held-out Gaussian "channel outputs" --------------
        train = torch.randn(400, 500 * n_q, dtype=torch.complex64, generator=g)  # 400k blocks
        t0 = time.perf_counter()
        vq = VectorQuantizer.fit(train, n_q, b, seed=args.seed)  # subsamples 200k blocks
        fit_s = time.perf_counter() - t0
        C = vq.centres.numpy()

        # --- test blocks: B images x 1000 blocks each; X is a view of y's memory ------
        B = max(1, args.blocks // 1000)
        y = torch.randn(B, 1000 * n_q // 2, dtype=torch.complex64, generator=g)
        n_blocks = B * 1000
        X = torch.view_as_real(y).reshape(-1, n_q).numpy()
        assert X.dtype == np.float32 and X.flags.c_contiguous and np.shares_memory(X, y.numpy())
        shape = y.shape[1:]

        for t in threads:
            with threadpool_limits(limits=t):
                torch.set_num_threads(t)
                km = _sklearn_with_centres(C, args.seed)
                assert km._n_threads == t, (km._n_threads, t)  # predict's OpenMP thread count

                def ours(cr=None):  # library defaults, as the engine calls it
                    return vq.dequantize(vq.quantize(y, chunk_rows=cr), shape)

                def sk():
                    return np.take(km.cluster_centers_, km.predict(X), axis=0)

                def pred():
                    return km.predict(X)

                # --- same results ------------------------------------------------------
                idx = vq.quantize(y).reshape(-1).numpy()
                ties = _check_same(X, C, idx, km.predict(X))
                rec = torch.view_as_real(ours()).reshape(-1, n_q).numpy()
                assert np.array_equal(rec, C[idx]) and np.array_equal(sk(), C[km.predict(X)])

                fns = {"ours": ours, "sk": sk, "pred": pred}
                for cr in args.chunk_rows or []:
                    fns[f"ours@{cr}"] = lambda cr=cr: ours(cr)
                times = {k: [] for k in fns}
                ratios = {k: [] for k in fns}
                for r in range(args.rounds):
                    order = list(fns)[r % len(fns):] + list(fns)[: r % len(fns)]
                    for k in order:
                        fns[k]()  # untimed warm-up
                        times[k].append([_time(fns[k]) for _ in range(args.reps)])
                    for k in fns:
                        ratios[k].append(statistics.median(times[k][-1]))
                med = {k: statistics.median(x for ts in times[k] for x in ts) for k in fns}
                rat = {k: statistics.median(s / o for s, o in zip(ratios["sk"], ratios[k])) for k in fns}
                rat_pred = statistics.median(p / o for p, o in zip(ratios["pred"], ratios["ours"]))
                rows.append((f"({n_q}, {b})", vq.n_codewords, str(t), n_blocks, med["ours"], med["sk"],
                             med["pred"], rat["ours"], rat_pred, ties, fit_s))
                for cr in args.chunk_rows or []:
                    k = f"ours@{cr}"
                    print(f"  chunk_rows ({n_q}, {b}) thr={t} chunk_rows={cr}: {med[k] * 1e3:.1f} ms, "
                          f"ours/sk {rat[k]:.2f} (default chunk_rows: {rat['ours']:.2f})")
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
            ties_g = _check_same(X, C, vq.quantize(yg).cpu().reshape(-1).numpy(), km.predict(X))
            nan = float("nan")
            rows.append((f"({n_q}, {b})", vq.n_codewords, "cuda", n_blocks, statistics.median(tg),
                         nan, nan, nan, nan, ties_g, fit_s))

    hdr = (f"{'(N_Q, b)':>10} {'K':>4} {'thr':>4} {'blocks':>9} {'ours ms':>8} {'Mblk/s':>7} "
           f"{'sk ms':>7} {'pred ms':>7} {'ours/sk':>8} {'ours/pred':>9} {'ties':>5} {'fit s':>6}")
    print()
    print("ours = quantize + dequantize (library defaults);  sk = KMeans.predict + centre lookup;  "
          "pred = KMeans.predict only")
    print("ours/sk, ours/pred = throughput ratio (median over rounds of paired time ratios); "
          "target ours/sk >= 1.0")
    print(hdr)
    print("-" * len(hdr))
    for pair, K, t, n, mo, ms, mp, r_sk, r_pred, ties, fit_s in rows:
        print(f"{pair:>10} {K:>4} {t:>4} {n:>9} {mo * 1e3:>8.1f} {n / mo / 1e6:>7.1f} "
              f"{ms * 1e3:>7.1f} {mp * 1e3:>7.1f} {r_sk:>8.2f} {r_pred:>9.2f} {ties:>5} {fit_s:>6.1f}")
    print("ties: labels that differ from sklearn's, all float32 near-ties (checked in float64)")


if __name__ == "__main__":
    main()
