"""Full-reference image quality: PSNR and MS-SSIM, one value per image.

Images are float tensors ``[B, 3, H, W]`` with values in ``[0, 1]`` (peak 1). Every function
returns a float tensor ``[B]`` on the input device; no clipping is applied to ``S_hat``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import Tensor

MSE_FLOOR = 1e-10
"""MSE is clamped here, so identical images give PSNR = -10 log10(1e-10) = 100 dB."""

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Standard per-scale exponents of MS-SSIM (Wang, Simoncelli, Bovik 2003), finest scale first."""


def _check_pair(S: Tensor, S_hat: Tensor) -> None:
    if S.dim() != 4 or S.shape != S_hat.shape:
        raise ValueError(f"expected two [B,C,H,W] tensors of equal shape, got {tuple(S.shape)} "
                         f"and {tuple(S_hat.shape)}")


def psnr(S: Tensor, S_hat: Tensor) -> Tensor:
    """PSNR in dB, ``-10 log10(||S - S_hat||^2 / (CHW))``, peak 1.

    S, S_hat: float ``[B, C, H, W]`` in [0, 1]. Returns float ``[B]``. The per-image MSE is
    clamped at ``MSE_FLOOR`` (1e-10), so identical images give exactly 100 dB instead of inf.
    """
    _check_pair(S, S_hat)
    mse = (S - S_hat).pow(2).flatten(1).mean(1).clamp_min(MSE_FLOOR)
    return -10.0 * torch.log10(mse)


def ms_ssim_config(H: int, W: int) -> dict:
    """The MS-SSIM variant used for ``H x W`` images: ``dict(win_size, levels, weights)``.

    Rule: ``win_size = 11`` if ``min(H, W) > 160`` else 3; ``levels`` is the largest L <= 5 with
    ``min(H, W) > (win_size - 1) * 2**(L - 1)``; ``weights`` are the first L standard weights
    renormalised to sum 1 when L < 5 (with 5 levels the published weights are kept as they are,
    although they sum to 1.0001, so that case is exactly standard MS-SSIM). So 256x256 gives the
    standard (11, 5) and 32x32 CIFAR gives (3, 4). Images with a side of 1 or 2 pixels, where
    not even L = 1 fits a 3-pixel window, fall back to plain SSIM with a 1-pixel window.
    """
    side = min(H, W)
    if side < 1:
        raise ValueError(f"image size {H}x{W} is empty")
    if side <= 2:
        return dict(win_size=1, levels=1, weights=[1.0])
    win_size = 11 if side > 160 else 3
    levels = max(L for L in range(1, 6) if side > (win_size - 1) * 2 ** (L - 1))
    weights = list(MS_SSIM_WEIGHTS[:levels])
    if levels < 5:
        weights = [w / sum(weights) for w in weights]
    return dict(win_size=win_size, levels=levels, weights=weights)


def ms_ssim(S: Tensor, S_hat: Tensor) -> Tensor:
    """MS-SSIM (data_range 1, Gaussian window sigma 1.5) with the variant of ``ms_ssim_config``.

    S, S_hat: float ``[B, C, H, W]`` in [0, 1]. Returns float ``[B]`` (mean over channels).
    Uses pytorch_msssim's single-scale kernel; for the standard 5-scale case the result equals
    ``pytorch_msssim.ms_ssim``, whose own size check assumes 5 scales and so cannot serve the
    reduced variants. As in that package, contrast terms and the last SSIM are clamped at 0
    (so the 1-level fallback is SSIM clamped at 0).
    """
    _check_pair(S, S_hat)
    cfg = ms_ssim_config(S.shape[-2], S.shape[-1])
    win = _fspecial_gauss_1d(cfg["win_size"], 1.5).repeat(S.shape[1], 1, 1, 1)
    weights = S.new_tensor(cfg["weights"]).view(-1, 1, 1)
    X, Y, terms = S, S_hat, []
    for level in range(cfg["levels"]):
        ssim_c, cs_c = _ssim(X, Y, data_range=1.0, win=win, size_average=False)
        if level < cfg["levels"] - 1:
            terms.append(torch.relu(cs_c))
            pad = [s % 2 for s in X.shape[2:]]
            X = F.avg_pool2d(X, kernel_size=2, padding=pad)
            Y = F.avg_pool2d(Y, kernel_size=2, padding=pad)
    terms.append(torch.relu(ssim_c))
    return torch.prod(torch.stack(terms) ** weights, dim=0).mean(1)
