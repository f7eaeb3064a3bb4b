"""Shared fixtures: tiny scenarios built as dicts, and where ../shared lives."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

# Tests run tiny tensors, for which one intra-op thread beats two (no OpenMP hand-off).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NETSIM_SHARED", REPO.parent / "shared"))


def chain(relays: list[str] | None = None, snr_db: float = 10.0, size: int = 8, count: int = 2, **top) -> dict:
    """A source -> relays... -> destination chain scenario as a plain dict (uncoded codec)."""
    relays = ["df"] if relays is None else relays
    ids = ["src"] + [f"r{i + 1}" for i in range(len(relays))] + ["dst"]
    nodes = [{"id": "src", "role": "source"}]
    nodes += [{"id": ids[i + 1], "role": "relay", "mode": m} for i, m in enumerate(relays)]
    nodes += [{"id": "dst", "role": "destination"}]
    links = [{"src": a, "dst": b, "snr_db": snr_db} for a, b in zip(ids, ids[1:])]
    data = {
        "name": "test", "seed": 7, "metrics": ["psnr", "ms_ssim"],
        "nodes": nodes, "links": links,
        "flows": [{"id": "f0", "source": "src", "destination": "dst",
                   "workload": {"images": {"source": "skimage", "size": size, "count": count}}}],
    }
    data.update(copy.deepcopy(top))
    return data


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set NETSIM_SHARED)")
    return SHARED


@pytest.fixture
def lpips_npz(shared) -> Path:
    path = shared / "weights" / "lpips_alexnet.npz"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path
