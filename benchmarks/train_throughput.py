"""DeepJSCC training throughput: netsim's training step against a plain PyTorch loop.

Both sides train the same architecture (same init), batch (default 64 images of 32x32) and loss
(MSE) through one AWGN hop at 10 dB:

* netsim: exactly what ``netsim.train.loops.train_jscc`` runs per step: a batch from the
  in-memory uint8 dataset (``TensorImages.batch``), ``train_step`` with ``jscc_loss("mse")``,
  and the per-step finite-loss check (``float(loss)``);
* plain: a preloaded float batch, ``model(S, snr, g)``, ``F.mse_loss``, ``zero_grad``,
  ``backward``, ``step``.

Repeats are interleaved (netsim, plain, netsim, ...) so that drifting machine load hits both
alike; the median images/s of each side is reported with the ratio netsim / plain (target >= 0.95).
The machine should otherwise be idle: on a shared CPU, other processes dominate the spread.

    python benchmarks/train_throughput.py [--size base] [--batch-size 64] [--repeats 7] [--steps 10]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from netsim.nn.registry import build_model
from netsim.train.datasets import TensorImages
from netsim.train.loops import train_step
from netsim.train.losses import jscc_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", choices=["small", "base", "paper"])
    ap.add_argument("--c-out", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="training steps per repeat")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    B, H = args.batch_size, args.image_size
    snr = 10.0

    def make():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            m = build_model("deepjscc", c_out=args.c_out, size=args.size).to(dev).train()
        return m, torch.optim.Adam(m.parameters(), lr=1e-4)

    data_gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(4 * B, 256), 3, H, H), dtype=torch.uint8, generator=data_gen)
    ds = TensorImages(images)
    S_plain = images[:B].float().div(255).to(dev)

    net_model, net_opt = make()
    plain_model, plain_opt = make()
    loss_fn = jscc_loss("mse")
    g_net = torch.Generator(device=dev).manual_seed(1)
    g_plain = torch.Generator(device=dev).manual_seed(1)
    order = torch.Generator().manual_seed(2)

    def run_netsim() -> None:
        for _ in range(args.steps):
            idx = torch.randperm(len(ds), generator=order)[:B]
            S, _ = ds.batch(idx, order, dev)
            loss = train_step(net_model, net_opt, loss_fn, S, snr, g_net)
            if not torch.isfinite(torch.tensor(float(loss))):
                raise RuntimeError("non-finite loss")

    def run_plain() -> None:
        for _ in range(args.steps):
            S_hat = plain_model(S_plain, snr, g_plain)
            loss = F.mse_loss(S_hat, S_plain)
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()

    def timed(fn) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * B / (time.perf_counter() - t)

    run_netsim()  # warm-up
    run_plain()
    rates: dict[str, list[float]] = {"netsim": [], "plain": []}
    for r in range(args.repeats):
        pairs = [("netsim", run_netsim), ("plain", run_plain)]
        if r % 2:
            pairs.reverse()
        for name, fn in pairs:
            rates[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in rates.items()}
    params = sum(p.numel() for p in net_model.parameters())
    print(f"DeepJSCC size={args.size} c_out={args.c_out} ({params / 1e6:.2f}M params), batch {B}x3x{H}x{H}, "
          f"mse, {args.device}, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats "
          f"of {args.steps} steps")
    for k in ("netsim", "plain"):
        spread = f"{min(rates[k]):.0f}..{max(rates[k]):.0f}"
        print(f"  {k:7s} median {med[k]:8.1f} images/s   (range {spread})")
    ratio = med["netsim"] / med["plain"]
    print(f"ratio netsim/plain: {ratio:.3f}  (target >= 0.95: {'ok' if ratio >= 0.95 else 'BELOW'})")


if __name__ == "__main__":
    main()
