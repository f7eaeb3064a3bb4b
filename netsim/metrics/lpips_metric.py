"""LPIPS v0.1 (AlexNet trunk) with weights found on disk; never computed with random weights.

The ``lpips`` package downloads its AlexNet trunk through torchvision on first use. Offline, the
trunk comes from a file instead, found by ``find_lpips_backbone``; the calibration (``lin``)
layers come from the ``lpips`` wheel, or from the file when it carries them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import lpips
import numpy as np
import torch
from torch import Tensor, nn

from netsim.results import sha256_file

ENV_VAR = "NETSIM_LPIPS_WEIGHTS"
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"
BACKBONE_KEYS = tuple(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
LIN_KEYS = tuple(f"lin{i}.model.1.weight" for i in range(5))
WHEEL_LINS = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"

_CACHE: dict[tuple[str, str], "LpipsMetric"] = {}


class LpipsUnavailable(RuntimeError):
    """No usable LPIPS weights: LPIPS must be reported as unavailable, not approximated."""


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_lpips_backbone(explicit: str | Path | None = None) -> Path | None:
    """Path of the AlexNet trunk weights (``.npz`` or torchvision ``.pth``), or None.

    Looks, in order (as issue 2 specifies), at torch's hub cache
    ``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`` (then any ``alexnet-owt-*.pth``
    there: what ``lpips`` downloads on a connected machine), then ``explicit`` (the scenario's
    ``lpips_weights``), then the environment variable ``NETSIM_LPIPS_WEIGHTS``. A path given by
    the argument or the variable that is not a file raises LpipsUnavailable instead of being
    skipped silently. The source used is recorded in each run's manifest.
    """
    ckpt = _hub_checkpoints()
    candidates = [ckpt / TORCHVISION_FILE, *sorted(ckpt.glob("alexnet-owt-*.pth"))]
    cached = next((p for p in candidates if p.is_file()), None)
    if cached is not None:
        return cached
    for origin, value in (("argument", explicit), (f"${ENV_VAR}", os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise LpipsUnavailable(f"LPIPS weights {path} (given by {origin}) is not a file")
            return path
    return None


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """All arrays of an ``.npz`` (no pickles) or a ``.pth`` state dict (weights_only)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k]) for k in z.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is reported the same way, with its name
        raise LpipsUnavailable(f"cannot read LPIPS weights {path}: {e}") from e
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"LPIPS weights {path} is not a state dict")
    return state


def _copy_into(model: nn.Module, state: dict[str, Tensor], keys: tuple[str, ...],
               names: dict[str, str], path: Path) -> None:
    """Copy ``state[k]`` into the parameter ``names[k]`` of ``model`` for every k in ``keys``."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise LpipsUnavailable(f"LPIPS weights {path} lack {', '.join(missing)}")
    params = model.state_dict()
    for k in keys:
        target = params[names.get(k, k)]
        if state[k].shape != target.shape:
            raise LpipsUnavailable(f"LPIPS weights {path}: {k} has shape {tuple(state[k].shape)}, "
                                   f"expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(state[k])


def _build(path: Path) -> lpips.LPIPS:
    """lpips' AlexNet LPIPS with the wheel's calibration and the trunk (+ lins) of ``path``."""
    state = _read_tensors(path)
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` API
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    wheel = torch.load(WHEEL_LINS, map_location="cpu", weights_only=True)
    _copy_into(model, wheel, LIN_KEYS, {}, WHEEL_LINS)
    trunk = {f"features.{name}.{p}": f"net.slice{s}.{name}.{p}"
             for s in range(1, 6)
             for name, layer in getattr(model.net, f"slice{s}").named_children()
             if isinstance(layer, nn.Conv2d) for p in ("weight", "bias")}
    _copy_into(model, state, BACKBONE_KEYS, trunk, path)
    if any(k in state for k in LIN_KEYS):
        _copy_into(model, state, LIN_KEYS, {}, path)
    return model


class LpipsMetric(nn.Module):
    """LPIPS distance per image; build with ``LpipsMetric.load``.

    Attributes: ``source`` (str, path of the trunk weights), ``sha256`` (hex digest of that
    file). Parameters are frozen and the network always stays in eval mode (no dropout);
    gradients still flow to the inputs, so callers choose ``torch.no_grad()`` or not.
    """

    def __init__(self, model: lpips.LPIPS, source: Path, sha256: str):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.source = str(source)
        self.sha256 = sha256
        self.eval()

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | torch.device = "cpu"
             ) -> "LpipsMetric":
        """Load (once per resolved path and device; later calls return the cached instance).

        weights: trunk file, else found by ``find_lpips_backbone``. Raises LpipsUnavailable
        when no file is found or the file is unreadable or lacks a layer.
        """
        path = find_lpips_backbone(weights)
        if path is None:
            raise LpipsUnavailable(
                f"LPIPS unavailable: no weights argument, ${ENV_VAR} unset, and no "
                f"{TORCHVISION_FILE} (or alexnet-owt-*.pth) in {_hub_checkpoints()}")
        key = (str(path.resolve()), str(torch.device(device)))
        if key not in _CACHE:
            _CACHE[key] = cls(_build(path), path, sha256_file(path)).to(device)
        return _CACHE[key]

    def train(self, mode: bool = True) -> "LpipsMetric":
        """A metric has no training mode: the wrapped network stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, S: Tensor, S_hat: Tensor) -> Tensor:
        """S, S_hat: float ``[B, 3, H, W]`` in [0, 1]. Returns float ``[B]`` (0 = identical)."""
        return self.model(S * 2 - 1, S_hat * 2 - 1).flatten()
