"""Evaluation of trained codecs and hashers.

Channel noise comes from ``netsim.phy.channel``: image ``i`` (its index in the evaluated set) at
hop ``h`` (0-based) gets the stream ``noise_key(seed, 0, i, h)``, so every figure is reproducible
and independent of the batch size, and the codec and the uncoded baseline see the same noise
streams (the symbol counts differ, so not the same samples).
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from netsim.phy.channel import awgn, keys_tensor, noise_key

__all__ = ["codec_pairs", "reconstruct", "measure_codec", "eval_codec", "hash_codes", "eval_hasher",
           "resolve_device", "load_lpips"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def codec_pairs(model: nn.Module) -> list[nn.Module]:
    """The encoder/decoder pairs of a codec, in hop order (one for a point-to-point DeepJSCC)."""
    return list(model.pairs) if hasattr(model, "pairs") else [model]


def _keys(seed: int, index: Tensor, hop: int) -> Tensor:
    return keys_tensor([noise_key(seed, 0, int(i), hop) for i in index.tolist()])


@torch.no_grad()
def reconstruct(model: nn.Module, S: Tensor, snr_db: float, seed: int, index: Tensor,
                hops: int | None = None) -> list[Tensor]:
    """Decode-and-forward S through the codec's pairs at ``snr_db`` on every hop.

    S float [B,3,H,W]; index long [B] (image ids for the noise keys). ``hops``: how many hops to
    run (default: one per pair; a single pair is reused for every hop). Returns the
    reconstruction after each hop, float [B,3,H,W] each.
    """
    pairs = codec_pairs(model)
    n = hops or len(pairs)
    out = []
    for h in range(n):
        pair = pairs[h] if len(pairs) > 1 else pairs[0]
        x = pair.encode(S)
        y = awgn(x, snr_db, _keys(seed, index, h))
        S = pair.decode(y, snr_db)
        out.append(S)
    return out


@torch.no_grad()
def _uncoded(S: Tensor, snr_db: float, seed: int, index: Tensor, hops: int) -> Tensor:
    from netsim.sim.codecs import UncodedCodec

    codec = UncodedCodec()
    shape = tuple(S.shape[1:])
    for h in range(hops):
        x, side = codec.encode(S)
        y = awgn(x, snr_db, _keys(seed, index, h))
        S = codec.decode(y, side, torch.full((len(S),), float(snr_db), device=S.device), shape)
    return S


def load_lpips(device) -> tuple[object | None, str | None]:
    """(LpipsMetric or None, why not). Never substitutes random weights."""
    from netsim.metrics import LpipsMetric, LpipsUnavailable

    try:
        return LpipsMetric.load(device=device), None
    except (LpipsUnavailable, ImportError, OSError) as err:
        return None, str(err)


def _batches(n: int, batch_size: int) -> Iterable[Tensor]:
    for start in range(0, n, batch_size):
        yield torch.arange(start, min(n, start + batch_size))


@torch.no_grad()
def measure_codec(model: nn.Module | None, dataset, snr_db: float, seed: int = 0,
                  batch_size: int = 256, device: str | torch.device = "cpu", hasher: nn.Module | None = None,
                  lpips=None, ms_ssim: bool = True, hops: int | None = None,
                  progress: bool = False, desc: str = "eval") -> dict:
    """Mean PSNR (and MS-SSIM, LPIPS, hash bit agreement when asked) of ``model`` on ``dataset``
    at ``snr_db``; ``model=None`` measures the uncoded analog baseline over ``hops`` hops."""
    from tqdm import tqdm

    from netsim.metrics import bit_agreement
    from netsim.metrics import ms_ssim as ms_ssim_fn
    from netsim.metrics import psnr

    device = torch.device(device)
    if model is not None:
        model.eval()
    sums: dict[str, float] = {}
    n = len(dataset)
    n_hops = hops or (len(codec_pairs(model)) if model is not None else 1)
    for idx in tqdm(list(_batches(n, batch_size)), desc=desc, leave=False, disable=not progress):
        S, _ = dataset.batch(idx, None, device)
        if model is None:
            S_hat = _uncoded(S, snr_db, seed, idx, n_hops)
        else:
            S_hat = reconstruct(model, S, snr_db, seed, idx, hops)[-1]
        vals = {"psnr": psnr(S, S_hat)}
        if ms_ssim:
            vals["ms_ssim"] = ms_ssim_fn(S, S_hat)
        if lpips is not None:
            vals["lpips"] = lpips(S, S_hat)
        if hasher is not None:
            vals["hash_bit_agreement"] = bit_agreement(hasher(S), hasher(S_hat))
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
    return {k: v / n for k, v in sums.items()}


def _as_dataset(data, part: str):
    """``data``: a dataset with ``.batch``, a DataSpec, or a dict of DataSpec fields."""
    from netsim.train.datasets import DataSpec, load_data

    if hasattr(data, "batch"):
        return data
    spec = data if isinstance(data, DataSpec) else DataSpec(**data)
    return load_data(spec, (part,))[part]


def eval_codec(model_name: str, data, snrs: Sequence[float], seed: int = 0, batch_size: int = 256,
               device: str | torch.device = "auto", models_dir: str | os.PathLike | None = None,
               use_lpips: bool = True, baseline: bool = True, hasher: str | None = None,
               progress: bool = True):
    """PSNR / MS-SSIM / LPIPS (NaN when LPIPS weights are unavailable) of a zoo codec on the test
    images of ``data`` for each test SNR, with the uncoded analog baseline (rho = 1/2, LMMSE,
    same number of DF hops) on the same images and SNRs. Returns a pandas DataFrame with columns
    model, codec, rho, hops, snr_db, psnr, ms_ssim, lpips, [hash_bit_agreement], images."""
    import pandas as pd

    from netsim.nn.zoo import load_model

    dev = resolve_device(device)
    model, card = load_model(model_name, device=dev, directory=models_dir)
    ds = _as_dataset(data, "test")
    hash_model = load_model(hasher, device=dev, directory=models_dir)[0] if hasher else None
    lp, why = load_lpips(dev) if use_lpips else (None, "not requested")
    hops = len(codec_pairs(model))
    rho = getattr(codec_pairs(model)[0], "rho", float("nan"))
    rows = []
    for snr in snrs:
        for codec, m in (("neural", model), ("uncoded", None)):
            if m is None and not baseline:
                continue
            r = measure_codec(m, ds, float(snr), seed, batch_size, dev, hash_model, lp, hops=hops,
                              progress=progress, desc=f"{codec} {snr:g} dB")
            rows.append({"model": card["name"] if m is not None else "uncoded", "codec": codec,
                         "rho": rho if m is not None else 0.5, "hops": hops, "snr_db": float(snr),
                         "psnr": r["psnr"], "ms_ssim": r.get("ms_ssim", math.nan),
                         "lpips": r.get("lpips", math.nan),
                         **({"hash_bit_agreement": r["hash_bit_agreement"]} if hash_model is not None else {}),
                         "images": len(ds)})
    df = pd.DataFrame(rows)
    df.attrs["lpips"] = why or "ok"
    return df


@torch.no_grad()
def hash_codes(model: nn.Module, dataset, batch_size: int = 512, device: str | torch.device = "cpu",
               progress: bool = False, desc: str = "hashing") -> tuple[Tensor, Tensor]:
    """(h float [N, N_H] on cpu, labels long [N]) of every image of ``dataset``."""
    from tqdm import tqdm

    model.eval()
    hs, ls = [], []
    for idx in tqdm(list(_batches(len(dataset), batch_size)), desc=desc, leave=False, disable=not progress):
        S, labels = dataset.batch(idx, None, device)
        hs.append(model(S).float().cpu())
        ls.append(labels.cpu())
    return torch.cat(hs), torch.cat(ls)


def retrieval_map(model: nn.Module, queries, database, topk: int = 1000, batch_size: int = 512,
                  device: str | torch.device = "cpu", progress: bool = False) -> float:
    """mAP@topk of Hamming ranking of sign(h): ``queries`` against ``database`` (labelled datasets)."""
    from netsim.metrics import mean_average_precision

    hq, lq = hash_codes(model, queries, batch_size, device, progress, "hashing queries")
    hd, ld = hash_codes(model, database, batch_size, device, progress, "hashing database")
    if (lq < 0).any() or (ld < 0).any():
        raise ValueError("retrieval mAP needs labelled images")
    return mean_average_precision(hq, lq, hd, ld, topk=topk)


def eval_hasher(model_name: str, data, topk: int = 1000, batch_size: int = 512,
                device: str | torch.device = "auto", models_dir: str | os.PathLike | None = None,
                progress: bool = True) -> dict:
    """DHD retrieval mAP@topk: test images as queries against the training images as database."""
    from netsim.nn.zoo import load_model

    dev = resolve_device(device)
    model, card = load_model(model_name, device=dev, directory=models_dir)
    queries = _as_dataset(data, "test")
    database = _database(data)
    m = retrieval_map(model, queries, database, topk, batch_size, dev, progress)
    return {"model": card["name"], f"map@{topk}": m, "queries": len(queries), "database": len(database)}


def _database(data):
    """The retrieval database of ``data``: all its training images (train and val parts)."""
    from netsim.train.datasets import DataSpec, TensorImages, load_data

    if hasattr(data, "batch"):
        return data
    spec = data if isinstance(data, DataSpec) else DataSpec(**data)
    parts = load_data(spec, ("train", "val"))
    if parts["train"] is parts["val"]:
        return parts["train"]
    held_out = getattr(parts["val"], "source", {}).get("part") == "val"  # not the test set
    if held_out and isinstance(parts["train"], TensorImages) and isinstance(parts["val"], TensorImages):
        return TensorImages.concat([parts["train"], parts["val"]], part="train+val")
    return parts["train"]
