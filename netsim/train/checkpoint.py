"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds

* ``epoch-NNNN.safetensors``: ``model/<state-dict key>``, ``optim/<param index>/<state key>``
  (Adam's ``exp_avg``, ``exp_avg_sq``, ``step``) and ``rng/<name>`` (torch.Generator states);
* ``checkpoint.json``: format, kind, the training config, completed ``epoch`` and ``step``, the
  tensor file's name and sha256, the optimiser's param groups and non-tensor state, the LR
  scheduler's state, the per-epoch history.

The JSON is written last and atomically (temporary file + rename), so it always names a complete
tensor file: a crash mid-save leaves the previous checkpoint in force. Older tensor files are
removed after the JSON points at the new one. Loading reads JSON and safetensors only.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from netsim.nn.zoo import CheckpointError
from netsim.results import atomic_path, sha256_file

__all__ = ["FORMAT", "CHECKPOINT_JSON", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta",
           "config_mismatch"]

FORMAT = "netsim-train-checkpoint"
VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return None  # callables (e.g. lr lambdas) and other objects are not stored


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(val)
    meta = {"param_groups": _jsonable(sd["param_groups"]), "scalars": scalars,
            "class": type(opt).__name__}
    return tensors, meta


def _unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                         where: str) -> None:
    if meta.get("class") != type(opt).__name__:
        raise CheckpointError(f"{where}: optimiser {meta.get('class')!r} != {type(opt).__name__!r}")
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if not name.startswith("optim/"):
            continue
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{where}: optimiser state does not fit the model ({err})") from None


def save_checkpoint(directory: str | os.PathLike, *, kind: str, config: dict, epoch: int, step: int,
                    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    generators: dict[str, torch.Generator], history: list[dict],
                    extra: dict | None = None) -> Path:
    """Write epoch ``epoch``'s checkpoint into ``directory``; return the JSON's path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    for name, g in generators.items():
        tensors[f"rng/{name}"] = g.get_state().cpu().contiguous()
    weights = d / f"epoch-{epoch:04d}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "kind": kind, "epoch": str(epoch)})
    meta = {
        "format": FORMAT, "version": VERSION, "kind": kind, "config": config,
        "epoch": epoch, "step": step, "weights": weights.name, "sha256": sha256_file(weights),
        "optimizer": opt_meta, "scheduler": _jsonable(scheduler.state_dict()),
        "rng": sorted(generators), "history": _jsonable(history), **(extra or {}),
    }
    path = d / CHECKPOINT_JSON
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    for old in d.glob("epoch-*.safetensors"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint_meta(directory: str | os.PathLike) -> dict | None:
    """The checkpoint's JSON (None if the directory has no checkpoint); CheckpointError if unreadable."""
    path = Path(directory) / CHECKPOINT_JSON
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a netsim checkpoint (unreadable JSON: {str(err)[:80]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a netsim training checkpoint (format != {FORMAT!r})")
    for key in ("kind", "config", "epoch", "step", "weights", "sha256", "optimizer", "scheduler"):
        if key not in meta:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return meta


def config_mismatch(saved: dict, requested: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences between two training configs (keys in ``ignore`` skipped)."""
    out = []
    for key in sorted(set(saved) | set(requested)):
        if key in ignore:
            continue
        a, b = saved.get(key, "<unset>"), requested.get(key, "<unset>")
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append(f"{key}={a!r} in the checkpoint, {b!r} requested")
    return out


def load_checkpoint(directory: str | os.PathLike, *, kind: str, config: dict, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    generators: dict[str, torch.Generator], ignore: tuple[str, ...] = ()) -> dict:
    """Restore model, optimiser, scheduler and generators in place; return the checkpoint's JSON.

    Raises CheckpointError when there is no checkpoint, it is corrupt or tampered with, or its
    kind or config differ from the requested ones (keys in ``ignore`` may differ).
    """
    d = Path(directory)
    meta = read_checkpoint_meta(d)
    if meta is None:
        raise CheckpointError(f"{d}: no checkpoint to resume from ({CHECKPOINT_JSON} missing)")
    where = str(d / CHECKPOINT_JSON)
    if meta["kind"] != kind:
        raise CheckpointError(f"{where}: a {meta['kind']!r} checkpoint cannot resume {kind!r} training")
    diff = config_mismatch(meta["config"], config, ignore)
    if diff:
        raise CheckpointError(f"{where}: checkpoint does not fit the requested config: {'; '.join(diff)} "
                              f"(use the same options or a fresh --checkpoint-dir)")
    name = Path(str(meta["weights"])).name
    weights = d / name
    if not name.endswith(".safetensors") or not weights.is_file():
        raise CheckpointError(f"{where}: tensor file {meta['weights']!r} is missing")
    if sha256_file(weights) != meta["sha256"]:
        raise CheckpointError(f"{weights}: sha256 does not match {CHECKPOINT_JSON} (corrupt or replaced file)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({str(err)[:80]})") from None
    state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{weights}: model tensors do not fit the requested architecture")
    model.load_state_dict(state)
    _unflatten_optimizer(optimizer, tensors, meta["optimizer"], where)
    sched = {k: v for k, v in meta["scheduler"].items() if v is not None or k != "lr_lambdas"}
    sched.pop("lr_lambdas", None)
    scheduler.load_state_dict({**scheduler.state_dict(), **sched})
    for gname, g in generators.items():
        key = f"rng/{gname}"
        if key not in tensors:
            raise CheckpointError(f"{weights}: no state for generator {gname!r}")
        g.set_state(tensors[key].to(torch.uint8))
    return meta
