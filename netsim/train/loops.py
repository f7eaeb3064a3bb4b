"""Training loops: the DHD hasher, DeepJSCC codecs (point to point and DF multi-hop), QF codebooks.

Shared by every loop:

* Seeded: the model is initialised under ``torch.manual_seed(seed)`` inside ``fork_rng`` (the
  global RNG is left as it was); data order (and random crops), channel noise and augmentations
  come from three ``torch.Generator`` objects derived from the seed. Nothing else draws random
  numbers, so a run is a function of its config (on a given device and thread count).
* Adam; learning rate multiplied by ``lr_gamma`` after every epoch (``MultiplicativeLR``).
* A checkpoint after every epoch (``netsim.train.checkpoint``: safetensors + JSON, no pickle):
  ``resume=True`` continues exactly where the last one stopped; a checkpoint whose config does
  not fit the requested one raises ``CheckpointError``; a non-finite loss raises
  ``TrainingDiverged`` naming the epoch and step, leaving the last good checkpoint in place.
* At the end the model goes into the zoo (``netsim.nn.zoo.save_model``) with a card holding the
  architecture config, data and split, SNR, loss, lambda, epochs, seed, batch size, lr, the
  command that trained it and the measured metrics.

``steps_per_epoch`` and ``DataSpec.limit`` shrink a run to seconds (tests, smoke runs).
"""
from __future__ import annotations

import math
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from netsim.data import DataError
from netsim.nn.registry import build_model
from netsim.nn.zoo import CheckpointError, load_model, save_model
from netsim.results import sha256_file
from netsim.nn.zoo import models_dir as zoo_dir
from netsim.train.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from netsim.train.datasets import DataSpec, load_data, strong_augment, weak_augment
from netsim.train.evaluate import measure_codec, resolve_device, retrieval_map
from netsim.train.losses import LAMBDA_BCE, LAMBDA_JSCC, LAMBDA_SDH, dhd_loss, jscc_loss

__all__ = ["TrainingDiverged", "train_step", "dhd_step", "train_jscc", "train_dhd", "fit_codebooks",
           "DEFAULT_RUNS_DIR", "codebook_name"]

DEFAULT_RUNS_DIR = Path("runs") / "train"
_SEED_OFFSETS = {"data": 1_000_003, "noise": 2_000_029, "aug": 3_000_017}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------ steps

def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Tensor, Tensor], Tensor],
               S: Tensor, snr_db, generator: torch.Generator | None) -> Tensor:
    """One DeepJSCC update: S_hat = model(S, snr_db, generator); loss_fn(S, S_hat); Adam step.

    S float [B,C,H,W] in [0,1]. Returns the (detached) scalar loss.
    """
    S_hat = model(S, snr_db, generator)
    loss = loss_fn(S, S_hat)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def dhd_step(model: nn.Module, optimizer: torch.optim.Optimizer, S: Tensor, labels: Tensor,
             generator: torch.Generator, lambda_sdh: float = LAMBDA_SDH,
             lambda_bce: float = LAMBDA_BCE) -> Tensor:
    """One DHD update: teacher = weak view, student = strong view, both hashed in one forward
    pass; loss ``dhd_loss`` with the model's proxies and temperature. Returns the scalar loss."""
    B = S.shape[0]
    views = torch.cat([weak_augment(S, generator), strong_augment(S, generator)])
    h = model(views)
    loss = dhd_loss(h[:B], h[B:], model.P, labels, tau=model.temperature, lambda_sdh=lambda_sdh,
                    lambda_bce=lambda_bce)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# ------------------------------------------------------------------------------ shared machinery

def _seeded_build(arch: str, seed: int, **config) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, **config)


def _generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    return {
        "data": torch.Generator().manual_seed(seed + _SEED_OFFSETS["data"]),
        "noise": torch.Generator(device=device).manual_seed(seed + _SEED_OFFSETS["noise"]),
        "aug": torch.Generator(device=device).manual_seed(seed + _SEED_OFFSETS["aug"]),
    }


def _optimizer(model: nn.Module, lr: float, lr_gamma: float, weight_decay: float):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr,
                           weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lr_lambda=lambda _epoch: lr_gamma)
    return opt, sched


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                   steps_per_epoch: int | None) -> list[Tensor]:
    """A seeded shuffle cut into full batches (the remainder is dropped; a set smaller than one
    batch gives a single batch of all of it)."""
    perm = torch.randperm(n, generator=generator)
    n_batches = max(1, n // batch_size)
    if steps_per_epoch:
        n_batches = min(n_batches, steps_per_epoch)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def _checkpoint_dir(checkpoint_dir, name: str) -> Path:
    return Path(checkpoint_dir) if checkpoint_dir else DEFAULT_RUNS_DIR / name


def _python_command(fn: str, **kwargs) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"python: netsim.train.loops.{fn}({args})"


def _fit(*, kind: str, config: dict, model: nn.Module, optimizer, scheduler, generators: dict,
         train_ds, step: Callable[[Tensor, Tensor], Tensor], validate: Callable[[], dict],
         epochs: int, batch_size: int, steps_per_epoch: int | None, ckdir: Path, resume: bool,
         progress: bool, device: torch.device, on_step: Callable[[int, int], None] | None = None) -> dict:
    """The epoch loop shared by the trainers; returns {"history", "epochs", "steps", "train_time_s"}."""
    from tqdm import tqdm

    history: list[dict] = []
    start, global_step = 0, 0
    existing = read_checkpoint_meta(ckdir)
    if resume:
        meta = load_checkpoint(ckdir, kind=kind, config=config, model=model, optimizer=optimizer,
                               scheduler=scheduler, generators=generators)
        start, global_step, history = int(meta["epoch"]), int(meta["step"]), list(meta.get("history", []))
    elif existing is not None:
        raise CheckpointError(f"{ckdir}: a checkpoint (epoch {existing['epoch']}) is already there; pass "
                              f"--resume to continue it, or remove it / choose another --checkpoint-dir")
    elapsed = sum(h.get("time_s", 0.0) for h in history)
    if device.type != "cpu" and hasattr(train_ds, "to"):
        train_ds = train_ds.to(device)  # the uint8 image cache lives on the accelerator
    n = len(train_ds)
    for epoch in range(start + 1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        batches = _epoch_batches(n, batch_size, generators["data"], steps_per_epoch)
        total, images = 0.0, 0
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(batches, desc=f"{kind} epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for i, idx in enumerate(bar, start=1):
            S, labels = train_ds.batch(idx, generators["data"], device)
            loss = step(S, labels)
            value = float(loss)
            if not math.isfinite(value):
                bar.close()
                last = f"epoch {epoch - 1}" if epoch > 1 else "none"
                raise TrainingDiverged(f"loss is {value} at epoch {epoch}, step {i} (global step "
                                       f"{global_step + 1}); training stopped; last good checkpoint in "
                                       f"{ckdir}: {last}")
            global_step += 1
            total += value * len(idx)
            images += len(idx)
            if on_step is not None:
                on_step(epoch, global_step)
            if i % 10 == 0 or i == len(batches):
                bar.set_postfix(loss=f"{total / images:.4g}", lr=f"{lr:.3g}")
        scheduler.step()
        train_time = time.perf_counter() - t0
        metrics = validate()
        record = {"epoch": epoch, "loss": total / max(images, 1), "lr": lr, "images": images,
                  "time_s": round(train_time, 3), "images_per_s": round(images / max(train_time, 1e-9), 1),
                  **metrics}
        history.append(record)
        elapsed += train_time
        save_checkpoint(ckdir, kind=kind, config=config, epoch=epoch, step=global_step, model=model,
                        optimizer=optimizer, scheduler=scheduler, generators=generators, history=history)
        if progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                              if isinstance(v, float) and k not in ("time_s", "lr"))
            tqdm.write(f"{kind} epoch {epoch}/{epochs}: {shown}, {record['images_per_s']:.0f} img/s")
    return {"history": history, "epochs": max(epochs, start), "steps": global_step,
            "train_time_s": round(elapsed, 2)}


def _as_spec(data) -> DataSpec:
    if isinstance(data, DataSpec):
        return data
    if isinstance(data, dict):
        return DataSpec(**data)
    raise TypeError(f"data must be a DataSpec or a dict of its fields, got {type(data).__name__}")


def _sizes(parts: dict) -> dict:
    return {f"{k}_images": len(v) for k, v in parts.items()}


def _data_card(spec: DataSpec, parts: dict) -> dict:
    card = {**spec.describe(), **_sizes(parts)}
    src = getattr(parts.get("test") or parts.get("train"), "source", {})
    for key in ("layout", "format"):
        if key in src:
            card[key] = src[key]
    if src.get("dataset") == "cifar10" and src.get("format") in ("jpg", "jpeg"):
        card["note"] = ("CIFAR-10 decoded from JPEG files (a lossy re-encode of the original pixels); "
                        "figures are not bit-comparable with the original CIFAR-10 batches")
    return card


# ------------------------------------------------------------------------------ DeepJSCC

def _run_fields(run: dict, seed: int, batch_size: int, lr: float, lr_gamma: float, weight_decay: float,
                dev: torch.device) -> dict:
    """The model-card fields every training run records about how it ran."""
    return {"epochs": run["epochs"], "steps": run["steps"], "seed": seed, "batch_size": batch_size, "lr": lr,
            "lr_gamma": lr_gamma, "weight_decay": weight_decay, "optimizer": "Adam", "device": str(dev),
            "train_time_s": run["train_time_s"]}


def train_jscc(data: DataSpec | dict, *, name: str, snr_db: float = 10.0, relays: int = 0,
               size: str = "base", c_out: int = 16, loss: str = "mse", lam: float = LAMBDA_JSCC,
               hasher: str | None = None, epochs: int = 100, batch_size: int = 64, lr: float = 1e-4,
               lr_gamma: float = 0.95, weight_decay: float = 0.0, seed: int = 0,
               steps_per_epoch: int | None = None, checkpoint_dir: str | os.PathLike | None = None,
               resume: bool = False, models_dir: str | os.PathLike | None = None,
               device: str | torch.device = "auto", progress: bool = True, command: str | None = None,
               eval_batch_size: int = 256, use_lpips: bool = True, init: str | None = None) -> dict:
    """Train a DeepJSCC codec end to end and save it to the zoo as ``name``; return its card.

    ``relays`` r = 0 trains "deepjscc" (one pair); r >= 1 trains "deepjscc-multihop" with
    r+1 pairs through r+1 AWGN hops at ``snr_db`` each, the loss on the destination image only.
    ``loss``: "mse" or "mse+dhd" (needs ``hasher``, a zoo DHD model, kept frozen; weight ``lam``).
    Defaults follow the paper: Adam lr 1e-4, lr *= 0.95 per epoch. Validation PSNR (keyed noise
    at ``snr_db``) after every epoch; card metrics: test PSNR, MS-SSIM, LPIPS (when weights are
    available) and, with a hasher, hash bit agreement, all at the training SNR.
    ``init``: a zoo codec of the same architecture to start from (two-stage training, e.g. `mse`
    first, then `mse+dhd`); without it the weights are drawn from ``seed``.
    """
    spec = _as_spec(data)
    dev = resolve_device(device)
    if relays < 0:
        raise ValueError(f"relays must be >= 0, got {relays}")
    if loss == "mse+dhd" and not hasher:
        raise ValueError("loss 'mse+dhd' needs a DHD hasher from the zoo (--hasher NAME)")
    arch = "deepjscc" if relays == 0 else "deepjscc-multihop"
    model_config = {"c_out": c_out, "size": size, "channels": 3}
    if relays:
        model_config = {"n_hops": relays + 1, **model_config}
    hash_model, hash_card = None, None
    if hasher:
        hash_model, hash_card = load_model(hasher, device=dev, directory=models_dir)
    parts = load_data(spec)
    config = {"arch": arch, "model_config": model_config, "data": spec.describe(), "snr_db": float(snr_db),
              "loss": loss, "lambda": float(lam) if loss == "mse+dhd" else None,
              "hasher": {"name": hash_card["name"], "sha256": hash_card["sha256"]} if hash_card else None,
              "batch_size": batch_size, "lr": lr, "lr_gamma": lr_gamma, "weight_decay": weight_decay,
              "seed": seed, "steps_per_epoch": steps_per_epoch}
    model = _seeded_build(arch, seed, **model_config).to(dev)
    if init:
        start, start_card = load_model(init, device=dev, directory=models_dir)
        if start_card["arch"] != arch or start_card["config"] != model.config:
            raise ValueError(f"--init {init}: a {start_card['arch']} {start_card['config']} cannot start a "
                             f"{arch} {model.config}")
        model.load_state_dict(start.state_dict())
        config["init"] = {"name": start_card["name"], "sha256": start_card["sha256"]}
    optimizer, scheduler = _optimizer(model, lr, lr_gamma, weight_decay)
    gens = _generators(seed, dev)
    loss_fn = jscc_loss(loss, hash_model, lam)

    def step(S: Tensor, _labels: Tensor) -> Tensor:
        return train_step(model, optimizer, loss_fn, S, snr_db, gens["noise"])

    def validate() -> dict:
        r = measure_codec(model, parts["val"], snr_db, seed, eval_batch_size, dev, ms_ssim=False)
        return {"val_psnr": r["psnr"]}

    ckdir = _checkpoint_dir(checkpoint_dir, name)
    run = _fit(kind="jscc", config=config, model=model, optimizer=optimizer, scheduler=scheduler,
               generators=gens, train_ds=parts["train"], step=step, validate=validate, epochs=epochs,
               batch_size=batch_size, steps_per_epoch=steps_per_epoch, ckdir=ckdir, resume=resume,
               progress=progress, device=dev)
    lp = None
    if use_lpips:
        from netsim.train.evaluate import load_lpips

        lp, _ = load_lpips(dev)
    test = measure_codec(model, parts["test"], snr_db, seed, eval_batch_size, dev, hash_model, lp,
                         progress=progress, desc="test")
    metrics = {"test_psnr": test["psnr"], "test_ms_ssim": test["ms_ssim"]}
    if "lpips" in test:
        metrics["test_lpips"] = test["lpips"]
    if "hash_bit_agreement" in test:
        metrics["test_hash_bit_agreement"] = test["hash_bit_agreement"]
    if run["history"]:
        metrics["val_psnr"] = run["history"][-1].get("val_psnr")
    pair = model.pairs[0] if relays else model
    card = {
        "kind": "deepjscc-codec",
        "rho": pair.rho,
        "relays": relays,
        "data": _data_card(spec, parts),
        "snr_db": float(snr_db),
        "loss": loss,
        "lambda": float(lam) if loss == "mse+dhd" else None,
        "hasher": config["hasher"],
        "init": config.get("init"),
        **_run_fields(run, seed, batch_size, lr, lr_gamma, weight_decay, dev),
        "command": command or _python_command(
            "train_jscc", name=name, snr_db=snr_db, relays=relays, size=size, c_out=c_out, loss=loss,
            lam=lam, hasher=hasher, epochs=epochs, batch_size=batch_size, lr=lr, lr_gamma=lr_gamma,
            seed=seed, steps_per_epoch=steps_per_epoch, data=spec.describe()),
        "metrics": metrics,
        "metrics_note": (f"test set at {snr_db:g} dB, channel noise noise_key(seed={seed}, 0, image, hop) "
                         f"from netsim.phy.channel"),
        "history": run["history"],
    }
    path = save_model(model.cpu(), name, card, models_dir)
    model.to(dev)
    return {**card, "card_path": str(path)}


# ------------------------------------------------------------------------------ DHD

def _n_classes(ds) -> int:
    labels = ds.labels
    if labels.dim() != 1 or len(labels) == 0 or int(labels.min()) < 0:
        raise DataError("DHD training needs labelled images (CIFAR-10, the skimage photos, or a folder "
                        "with one subfolder per class)")
    return int(labels.max()) + 1


def train_dhd(data: DataSpec | dict, *, name: str, backbone: str = "small-cnn", n_bits: int = 64,
              temperature: float = 0.2, lambda_sdh: float = LAMBDA_SDH, lambda_bce: float = LAMBDA_BCE,
              epochs: int = 100, batch_size: int = 128, lr: float = 1e-3, lr_gamma: float = 0.98,
              weight_decay: float = 0.0, seed: int = 0, steps_per_epoch: int | None = None,
              checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
              models_dir: str | os.PathLike | None = None, device: str | torch.device = "auto",
              progress: bool = True, command: str | None = None, topk: int = 1000,
              eval_batch_size: int = 512) -> dict:
    """Train a DHD hasher (teacher = weak, student = strong augmentation, ``dhd_loss``) and save it
    to the zoo as ``name``; return its card.

    Adam lr 1e-3 by default: the small CNN is trained from scratch here (the DHD reference uses
    1e-4 for ImageNet-pretrained backbones), with lr *= 0.98 per epoch. Validation after every
    epoch: proxy accuracy (nearest proxy by cosine) on the held-out images. Card metric:
    retrieval mAP@``topk`` (test images as queries, training images as database, Hamming
    ranking of sign(h)).
    """
    from netsim.train.evaluate import _database

    spec = _as_spec(data)
    dev = resolve_device(device)
    parts = load_data(spec)
    n_classes = _n_classes(parts["train"])
    model_config = {"backbone": backbone, "n_bits": n_bits, "n_classes": n_classes,
                    "temperature": temperature}
    config = {"arch": "dhd", "model_config": model_config, "data": spec.describe(),
              "lambda_sdh": lambda_sdh, "lambda_bce": lambda_bce, "batch_size": batch_size, "lr": lr,
              "lr_gamma": lr_gamma, "weight_decay": weight_decay, "seed": seed,
              "steps_per_epoch": steps_per_epoch}
    model = _seeded_build("dhd", seed, **model_config).to(dev)
    optimizer, scheduler = _optimizer(model, lr, lr_gamma, weight_decay)
    gens = _generators(seed, dev)

    def step(S: Tensor, labels: Tensor) -> Tensor:
        return dhd_step(model, optimizer, S, labels, gens["aug"], lambda_sdh, lambda_bce)

    @torch.no_grad()
    def validate() -> dict:
        from netsim.train.evaluate import hash_codes

        h, labels = hash_codes(model, parts["val"], eval_batch_size, dev)
        P = torch.nn.functional.normalize(model.P.detach().float().cpu(), dim=-1)
        pred = (torch.nn.functional.normalize(h, dim=-1) @ P.T).argmax(1)
        ok = labels >= 0
        return {"val_proxy_acc": float((pred[ok] == labels[ok]).float().mean()) if ok.any() else math.nan}

    ckdir = _checkpoint_dir(checkpoint_dir, name)
    run = _fit(kind="dhd", config=config, model=model, optimizer=optimizer, scheduler=scheduler,
               generators=gens, train_ds=parts["train"], step=step, validate=validate, epochs=epochs,
               batch_size=batch_size, steps_per_epoch=steps_per_epoch, ckdir=ckdir, resume=resume,
               progress=progress, device=dev)
    database = _database(spec)
    m = retrieval_map(model, parts["test"], database, topk, eval_batch_size, dev, progress)
    metrics = {f"map@{topk}": m, "queries": len(parts["test"]), "database": len(database)}
    if run["history"]:
        metrics["val_proxy_acc"] = run["history"][-1].get("val_proxy_acc")
    card = {
        "kind": "dhd-hasher",
        "data": _data_card(spec, parts),
        "loss": "dhd",
        "lambda_sdh": lambda_sdh,
        "lambda_bce": lambda_bce,
        "augmentation": {"teacher": "weak: crop (pad 4) + flip",
                         "student": "strong: resized crop (0.5-1) + flip, colour jitter p0.8, "
                                    "grayscale p0.2, erasing p0.25"},
        **_run_fields(run, seed, batch_size, lr, lr_gamma, weight_decay, dev),
        "command": command or _python_command(
            "train_dhd", name=name, backbone=backbone, n_bits=n_bits, epochs=epochs, batch_size=batch_size,
            lr=lr, lr_gamma=lr_gamma, seed=seed, steps_per_epoch=steps_per_epoch, data=spec.describe()),
        "metrics": metrics,
        "metrics_note": f"retrieval mAP@{topk}: test queries against the training images, Hamming ranking",
        "history": run["history"],
    }
    path = save_model(model.cpu(), name, card, models_dir)
    model.to(dev)
    return {**card, "card_path": str(path)}


# ------------------------------------------------------------------------------ QF codebooks

def _b_text(b) -> str:
    f = Fraction(b).limit_denominator(1 << 16) if not isinstance(b, Fraction) else b
    return f"{float(f):g}"


def codebook_name(model_name: str, n_q: int, b) -> str:
    """``<model>-qf-<n_q>x<b>`` with b as a decimal, e.g. ``cifar-qf-4x0.75``."""
    return f"{model_name}-qf-{int(n_q)}x{_b_text(b)}"


@torch.no_grad()
def fit_codebooks(model: nn.Module | str, data, snr_db: float, pairs: Sequence[tuple] | None = None, *,
                  name: str | None = None, seed: int = 0, models_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "auto", batch_size: int = 256, max_samples: int = 200_000,
                  progress: bool = True, command: str | None = None) -> list[Path]:
    """Fit a QF ``VectorQuantizer`` per (N_Q, b) pair on the channel outputs y of the validation
    images: the codec's first encoder (the r = 0 hop), AWGN at ``snr_db`` with noise keys
    ``noise_key(seed, 0, image, 0)``. Saves ``<name>-qf-<nq>x<b>.safetensors`` and a JSON card
    (arch "qf-codebook") for each in the zoo directory; returns the safetensors paths.

    ``model``: a zoo name or a codec module (then ``name`` is required). ``data``: a DataSpec
    (its "val" part is used), a dict of its fields, or a dataset with ``.batch``.
    ``pairs`` default: the paper's five (N_Q, b).
    """
    from tqdm import tqdm

    from netsim.phy.channel import awgn
    from netsim.phy.quantizer import PAPER_QF_PAIRS, VectorQuantizer
    from netsim.results import atomic_path, write_json
    from netsim.train.evaluate import _keys, codec_pairs

    dev = resolve_device(device)
    codec_card = None
    if isinstance(model, (str, os.PathLike)):
        model, codec_card = load_model(model, device=dev, directory=models_dir)
        name = name or codec_card["name"]
    if not name:
        raise ValueError("fit_codebooks needs a name for a codec given as a module")
    if hasattr(data, "batch"):
        ds, data_desc = data, getattr(data, "source", {})
    else:
        spec = _as_spec(data)
        ds, data_desc = load_data(spec, ("val",))["val"], spec.describe()
    pair = codec_pairs(model)[0].to(dev).eval()
    ys = []
    for start in tqdm(range(0, len(ds), batch_size), desc="channel outputs", leave=False, disable=not progress):
        idx = torch.arange(start, min(len(ds), start + batch_size))
        S, _ = ds.batch(idx, None, dev)
        ys.append(awgn(pair.encode(S), snr_db, _keys(seed, idx, 0)).cpu())
    y = torch.cat(ys)
    k = int(y[0].numel())
    H, W = ds.image_size if hasattr(ds, "image_size") else (None, None)
    d = zoo_dir(models_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for n_q, b in tqdm(list(pairs or PAPER_QF_PAIRS), desc="k-means", leave=False, disable=not progress):
        t0 = time.perf_counter()
        vq = VectorQuantizer.fit(y, int(n_q), b, seed=seed, max_samples=max_samples)
        y_q = vq.dequantize(vq.quantize(y), tuple(y.shape[1:]))
        mse = float((torch.view_as_real(y_q) - torch.view_as_real(y)).square().mean())
        cb = codebook_name(name, n_q, vq.fraction_b)
        path = d / f"{cb}.safetensors"
        with atomic_path(path) as tmp:
            vq.save(tmp)
        card = {"name": cb, "arch": "qf-codebook",
                "config": {"n_q": int(n_q), "b": str(vq.fraction_b)},
                "codec": name, "codec_sha256": codec_card["sha256"] if codec_card else None,
                "snr_db": float(snr_db), "seed": seed, "fit_images": len(ds), "fit_blocks": int(y.numel() * 2 // n_q),
                "data": data_desc, "k": k,
                "metrics": {"bpp": vq.bpp(k, H, W) if H else None, "mse_per_real": mse,
                            "fit_time_s": round(time.perf_counter() - t0, 2)},
                "command": command or _python_command("fit_codebooks", model=name, snr_db=snr_db,
                                                      pairs=[(int(a), str(Fraction(c))) for a, c in (pairs or PAPER_QF_PAIRS)],
                                                      seed=seed),
                "load": "netsim.phy.quantizer.VectorQuantizer.load(path)",
                "sha256": sha256_file(path)}
        write_json(card, d / f"{cb}.json")
        paths.append(path)
    return paths

