"""Tests for netsim.metrics: exact values on hand-made inputs, LPIPS with the shared weights."""
import os
from pathlib import Path

import lpips
import numpy as np
import pytest
import pytorch_msssim
import torch

from netsim.metrics import (LpipsMetric, LpipsUnavailable, bit_agreement, find_lpips_backbone,
                            hamming_distance, hash_bits, hash_cosine, mean_average_precision,
                            ms_ssim, ms_ssim_config, pack_hash_bits, psnr)
from netsim.metrics import lpips_metric

SHARED = Path(os.environ.get("NETSIM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LPIPS_NPZ = SHARED / "weights" / "lpips_alexnet.npz"


def _images(b=2, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _noisy(S, sigma, seed=1):
    noise = torch.randn(S.shape, generator=torch.Generator().manual_seed(seed))
    return (S + sigma * noise).clamp(0, 1)


# --- PSNR / MS-SSIM -------------------------------------------------------------------------

def test_psnr_known_mse_and_identical():
    S = _images() * 0.8
    out = psnr(S, S + 0.1)  # MSE = 0.01 -> 20 dB
    assert out.shape == (2,) and torch.allclose(out, torch.full((2,), 20.0), atol=1e-4)
    assert torch.equal(psnr(S, S), torch.full((2,), 100.0))


def test_psnr_per_image():
    S = torch.zeros(2, 3, 4, 4)
    S_hat = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)])
    assert torch.allclose(psnr(S, S_hat), torch.tensor([20.0, 40.0]), atol=1e-4)


def test_ms_ssim_config_rule():
    assert ms_ssim_config(256, 256) == dict(win_size=11, levels=5,
                                            weights=[0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    cfg = ms_ssim_config(32, 32)
    assert (cfg["win_size"], cfg["levels"]) == (3, 4)
    w = np.array([0.0448, 0.2856, 0.3001, 0.2363])
    assert np.allclose(cfg["weights"], w / w.sum()) and abs(sum(cfg["weights"]) - 1) < 1e-12
    assert (ms_ssim_config(160, 400)["win_size"], ms_ssim_config(161, 400)["win_size"]) == (3, 11)
    assert ms_ssim_config(4, 4)["levels"] == 1 and ms_ssim_config(5, 5)["levels"] == 2
    assert ms_ssim_config(2, 8) == dict(win_size=1, levels=1, weights=[1.0])


def test_ms_ssim_identical_and_decreasing_with_noise():
    S = _images()
    assert torch.allclose(ms_ssim(S, S), torch.ones(2), atol=1e-6)
    values = [ms_ssim(S, _noisy(S, s)) for s in (0.02, 0.1, 0.3)]
    assert values[0].shape == (2,)
    assert bool((values[0] > values[1]).all() and (values[1] > values[2]).all())


def test_ms_ssim_standard_case_matches_pytorch_msssim():
    S = _images(b=2, h=176, w=176)
    S_hat = _noisy(S, 0.1)
    ref = pytorch_msssim.ms_ssim(S, S_hat, data_range=1, size_average=False)
    assert torch.allclose(ms_ssim(S, S_hat), ref, atol=1e-6)


# --- LPIPS ----------------------------------------------------------------------------------

@pytest.fixture
def no_lpips_config(monkeypatch, tmp_path):
    monkeypatch.delenv(lpips_metric.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def test_lpips_unavailable_raises_with_message(no_lpips_config):
    with pytest.raises(LpipsUnavailable, match=r"NETSIM_LPIPS_WEIGHTS.*alexnet-owt"):
        LpipsMetric.load()
    with pytest.raises(LpipsUnavailable, match="missing.npz"):
        LpipsMetric.load(no_lpips_config / "missing.npz")


def test_lpips_malformed_file_raises(no_lpips_config):
    bad = no_lpips_config / "bad.npz"
    np.savez(bad, **{"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
    with pytest.raises(LpipsUnavailable, match=r"bad\.npz.*features\.0\.bias"):
        LpipsMetric.load(bad)


def test_find_lpips_backbone_order(no_lpips_config, monkeypatch):
    ckpt = no_lpips_config / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    assert find_lpips_backbone() is None
    env_file = no_lpips_config / "env.npz"
    env_file.touch()
    monkeypatch.setenv(lpips_metric.ENV_VAR, str(env_file))
    assert find_lpips_backbone() == env_file
    explicit = no_lpips_config / "explicit.npz"
    explicit.touch()
    assert find_lpips_backbone(explicit) == explicit
    # torch's cache comes first
    (ckpt / "alexnet-owt-0123abcd.pth").touch()
    assert find_lpips_backbone(explicit) == ckpt / "alexnet-owt-0123abcd.pth"
    (ckpt / "alexnet-owt-7be5be79.pth").touch()
    assert find_lpips_backbone(explicit) == ckpt / "alexnet-owt-7be5be79.pth"


needs_weights = pytest.mark.skipif(not LPIPS_NPZ.is_file(), reason=f"{LPIPS_NPZ} absent")


@needs_weights
def test_lpips_env_var_discovery(no_lpips_config, monkeypatch):
    monkeypatch.setenv(lpips_metric.ENV_VAR, str(LPIPS_NPZ))
    metric = LpipsMetric.load()
    assert metric.source == str(LPIPS_NPZ) and len(metric.sha256) == 64
    assert LpipsMetric.load(LPIPS_NPZ) is metric  # cached per (path, device)


@needs_weights
def test_lpips_values_with_shared_weights():
    metric = LpipsMetric.load(LPIPS_NPZ)
    S = _images(b=2, h=64, w=64)
    same = metric(S, S)
    assert same.shape == (2,) and float(same.abs().max()) < 1e-6
    low, high = metric(S, _noisy(S, 0.05)), metric(S, _noisy(S, 0.3))
    assert bool((low > 1e-3).all() and (high > low).all())


@needs_weights
def test_lpips_npz_lins_equal_wheel_lins():
    wheel = torch.load(lpips_metric.WHEEL_LINS, map_location="cpu", weights_only=True)
    with np.load(LPIPS_NPZ, allow_pickle=False) as z:
        for key in lpips_metric.LIN_KEYS:
            assert np.array_equal(z[key], wheel[key].numpy()), key
    model = LpipsMetric.load(LPIPS_NPZ).model
    assert isinstance(model, lpips.LPIPS) and not model.training
    with np.load(LPIPS_NPZ, allow_pickle=False) as z:
        conv5 = getattr(model.net.slice5, "10")  # torchvision features.10 (last conv)
        assert np.array_equal(conv5.weight.numpy(), z["features.10.weight"])


# --- hashing --------------------------------------------------------------------------------

H_REF = torch.tensor([[0.9, -0.2, 0.3, -0.7, 0.1, 0.5, -0.4, 0.8],
                      [-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5]])
H = torch.tensor([[0.8, 0.3, 0.2, -0.6, -0.1, 0.4, -0.3, 0.9],
                  [0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5]])


def test_hash_bits_distance_agreement_cosine():
    assert hash_bits(H_REF)[0].tolist() == [1, 0, 1, 0, 1, 1, 0, 1]
    d = hamming_distance(H_REF, H)
    assert d.dtype == torch.long and d.tolist() == [2, 8]
    assert torch.allclose(bit_agreement(H_REF, H), torch.tensor([0.75, 0.0]))
    assert torch.equal(hamming_distance(hash_bits(H_REF), H), d)
    cos = hash_cosine(H_REF, H)
    assert torch.allclose(cos[1], torch.tensor(-1.0))
    assert torch.allclose(cos[0], (H_REF[0] @ H[0]) / (H_REF[0].norm() * H[0].norm()))


def test_pack_hash_bits():
    packed = pack_hash_bits(H_REF)
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0b10101101], [0b00001111]]
    h = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(pack_hash_bits(h).numpy(), np.packbits((h > 0).numpy(), axis=1))
    assert pack_hash_bits(h).shape == (3, 8)


# --- retrieval mAP --------------------------------------------------------------------------

# Two 2-bit queries, five database codes. Query 0 = (+,+): distances [0,1,1,2,0] -> ranking
# (stable) db 0, 4, 1, 2, 3. Query 1 = (-,-): distances [2,1,1,0,2] -> ranking 3, 1, 2, 0, 4.
Q_CODES = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
DB_CODES = torch.tensor([[0.9, 0.9], [0.9, -0.9], [-0.9, 0.9], [-0.9, -0.9], [0.2, 0.3]])


def test_map_int_labels_hand_computed():
    q_lab, db_lab = torch.tensor([0, 1]), torch.tensor([0, 1, 0, 1, 1])
    # q0 relevant {0, 2}: ranked 0,4,1,2,3 -> hits at 1, 4 -> AP = (1/1 + 2/4)/2 = 0.75
    # q1 relevant {1, 3, 4}: ranked 3,1,2,0,4 -> hits at 1, 2, 5 -> AP = (1 + 1 + 3/5)/3
    expected = (0.75 + (2 + 0.6) / 3) / 2
    assert mean_average_precision(Q_CODES, q_lab, DB_CODES, db_lab) == pytest.approx(expected)
    # top-3: q0 hits at 1 -> 1; q1 hits at 1, 2 -> 1
    assert mean_average_precision(Q_CODES, q_lab, DB_CODES, db_lab, topk=3) == pytest.approx(1.0)
    # top-1 with q0 relevant only to db 2 (rank 4): q0 contributes 0
    assert mean_average_precision(Q_CODES, q_lab, DB_CODES, torch.tensor([1, 1, 0, 1, 1]),
                                  topk=1) == pytest.approx(0.5)


def test_map_multi_hot_labels_hand_computed():
    q_lab = torch.tensor([[1, 0, 0], [0, 1, 1]])
    db_lab = torch.tensor([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 1]])
    # q0 relevant {1, 3, 4}: ranked 0,4,1,2,3 -> hits at 2, 3, 5 -> AP = (1/2 + 2/3 + 3/5)/3
    # q1 relevant {0, 1, 4}: ranked 3,1,2,0,4 -> hits at 2, 4, 5 -> AP = (1/2 + 2/4 + 3/5)/3
    expected = ((0.5 + 2 / 3 + 0.6) / 3 + (0.5 + 0.5 + 0.6) / 3) / 2
    got = mean_average_precision(hash_bits(Q_CODES), q_lab, DB_CODES, db_lab, topk=None)
    assert got == pytest.approx(expected)


def test_map_perfect_codes():
    labels = torch.arange(4).repeat(5)
    codes = torch.tensor([[1.0, 1, -1, -1], [1, -1, 1, -1], [-1, 1, 1, -1], [-1, -1, -1, 1]])
    assert mean_average_precision(codes[labels], labels, codes[labels], labels,
                                  topk=7) == pytest.approx(1.0)
