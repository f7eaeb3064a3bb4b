"""The model zoo: ``<name>.safetensors`` (weights) + ``<name>.json`` (model card) per model.

Card fields: ``name``, ``arch`` (registry name), ``config`` (kwargs that rebuild the model),
free-form training metadata (data, split, snr_db, loss, lambda, epochs, seed, command, metrics,
...) and ``sha256`` of the safetensors file. A model is rebuilt from its card alone
(``build_model(arch, **config)``); weights are read with safetensors only, never pickle.

Directory: ``directory`` argument, else ``$NETSIM_MODELS``, else the repository's ``models/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import netsim
from netsim.nn.registry import build_model
from netsim.results import atomic_path, sha256_file

__all__ = ["CheckpointError", "ModelNotFound", "models_dir", "save_model", "load_model", "list_models"]

RESERVED = ("name", "arch", "config", "sha256")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint that is corrupt, tampered with, or does not fit its card."""


class ModelNotFound(FileNotFoundError):
    """No card for the requested model where we looked."""


def models_dir(directory: str | os.PathLike | None = None) -> Path:
    """The zoo directory: ``directory``, else $NETSIM_MODELS, else <repo>/models."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get("NETSIM_MODELS")
    return Path(env) if env else Path(netsim.__file__).resolve().parent.parent / "models"


def save_model(model: nn.Module, name: str, card_extra: dict | None = None,
               directory: str | os.PathLike | None = None, half: bool = False) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` atomically; return the card's path.

    ``half`` stores floating-point tensors as float16 (half the file; the card says
    ``"weights_dtype": "float16"`` and loading casts them back to the model's dtype)."""
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r} must match {_NAME.pattern}")
    arch = getattr(type(model), "arch", None)
    if arch is None:
        raise ValueError(f"{type(model).__name__} is not a registered model (see netsim.nn.registry)")
    extra = dict(card_extra or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise ValueError(f"card_extra may not set reserved fields {clash}")
    card = {"name": name, "arch": arch, "config": model.config, **extra}
    if half:
        card["weights_dtype"] = "float16"
    json.dumps(card)  # fail on non-serialisable metadata before writing anything
    d = models_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    weights = d / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"name": name, "arch": arch})
    card["sha256"] = sha256_file(weights)
    card_path = d / f"{name}.json"
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def _card_path(name_or_path: str | os.PathLike, directory) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".json", ".safetensors"):
        candidate = p.with_suffix(".json")
    else:
        candidate = models_dir(directory) / f"{p}.json"
    if not candidate.is_file():
        raise ModelNotFound(f"model {str(name_or_path)!r} not found: no card at {candidate}")
    return candidate


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable model card ({e})") from None
    missing = [k for k in RESERVED if k not in card] if isinstance(card, dict) else list(RESERVED)
    if missing:
        raise CheckpointError(f"{path}: model card lacks {missing}")
    return card


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
               directory: str | os.PathLike | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a model from its card, verify and load its weights; return (model in eval mode, card).

    ``name_or_path``: a zoo name, or a path to the ``.json`` card or the ``.safetensors`` file.
    Raises ModelNotFound, or CheckpointError on a sha256 mismatch, a file that is not
    safetensors, or state-dict keys/shapes/dtypes that differ from the rebuilt model's.
    """
    card_path = _card_path(name_or_path, directory)
    card = _read_card(card_path)
    weights = card_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"{card_path}: weights file {weights.name} is missing")
    sha = sha256_file(weights)
    if sha != card["sha256"]:
        raise CheckpointError(f"{weights}: sha256 {sha[:16]}... does not match the card's "
                              f"{str(card['sha256'])[:16]}...")
    try:
        model = build_model(card["arch"], **card["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path}: cannot rebuild {card['arch']!r}: {e}") from None
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    stored_half = card.get("weights_dtype") == "float16"
    for key in sorted(set(expected) | set(state)):
        if key not in state:
            why = "missing from the file"
        elif key not in expected:
            why = f"unexpected for {card['arch']}"
        elif state[key].shape != expected[key].shape:
            why = f"shape {tuple(state[key].shape)} != model {tuple(expected[key].shape)}"
        elif state[key].dtype != expected[key].dtype and not (
                stored_half and state[key].dtype == torch.float16 and expected[key].is_floating_point()):
            why = f"dtype {state[key].dtype} != model {expected[key].dtype}"
        else:
            continue
        raise CheckpointError(f"{weights}: key {key!r} {why}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card


def list_models(directory: str | os.PathLike | None = None) -> list[dict]:
    """Cards of every model in the zoo directory, sorted by file name ([] if it does not exist).

    JSON files beside them that are not model cards (no ``arch``, e.g. a split file) are skipped;
    a card that names an ``arch`` but lacks a required field raises CheckpointError."""
    d = models_dir(directory)
    cards = []
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable JSON ({e})") from None
        if isinstance(data, dict) and "arch" in data:
            cards.append(_read_card(path))
    return cards
