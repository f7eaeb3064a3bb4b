"""Training losses: DHD (paper eq. 2-5) and the DeepJSCC objectives (eq. 8).

Defaults follow the DHD reference implementation (Jang et al. 2022, main_DHD.py): tau = 0.2,
lambda_SdH = 0.1, lambda_bce-Q = 0.1, Gaussian estimator std sigma_g = 0.5. One deliberate
difference: the bce-Q loss uses log2 as written in the multi-hop paper's eq. 3, whereas the
reference code uses the natural log (a factor 1/ln 2 ~ 1.44 on that term).
Hashes h are float [B, N_H]; losses return scalar tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sdh_loss", "bce_q_loss", "hash_proxy_loss", "dhd_loss", "freeze", "jscc_dhd_loss",
           "JSCC_LOSSES", "jscc_loss"]

TAU = 0.2
LAMBDA_SDH = 0.1
LAMBDA_BCE = 0.1
SIGMA_G = 0.5
LAMBDA_JSCC = 0.06


def sdh_loss(h_T: Tensor, h_S: Tensor) -> Tensor:
    """Eq. 2: mean over the batch of 1 - cos(h_T, h_S); 0 for identical, 2 for opposite hashes.

    No detach here: callers decide where gradients go (``dhd_loss`` detaches the teacher).
    """
    return (1 - F.cosine_similarity(h_T, h_S, dim=-1)).mean()


def bce_q_loss(h: Tensor, sigma_g: float = SIGMA_G, eps: float = 1e-6) -> Tensor:
    """Eq. 3: H_b(b+, g+) + H_b(b-, g-) in bits, mean over bits and batch.

    g± = exp(-(h - (±1))^2 / (2 sigma_g^2)) (Gaussian likelihoods at ±1, clamped to
    [eps, 1-eps]); labels b+ = (sign(h)+1)/2, b- = 1 - b+ (no gradient through the labels).
    Decreases towards 0 as |h| -> 1.
    """
    g_pos = torch.exp(-(h - 1) ** 2 / (2 * sigma_g**2)).clamp(eps, 1 - eps)
    g_neg = torch.exp(-(h + 1) ** 2 / (2 * sigma_g**2)).clamp(eps, 1 - eps)
    b_pos = (torch.sign(h.detach()) + 1) / 2

    def h_b(u: Tensor, v: Tensor) -> Tensor:
        return -u * torch.log2(v) - (1 - u) * torch.log2(1 - v)

    return (h_b(b_pos, g_pos) + h_b(1 - b_pos, g_neg)).mean()


def hash_proxy_loss(h_T: Tensor, proxies: Tensor, labels: Tensor, tau: float = TAU) -> Tensor:
    """Eq. 4: cross-entropy H(c/||c||_1, softmax(cos(P, h_T)/tau)), mean over the batch.

    proxies: float [n_classes, N_H]; labels: int class ids [B] or multi-hot [B, n_classes].
    """
    if labels.ndim == 1:
        labels = F.one_hot(labels.long(), proxies.shape[0])
    target = labels.float()
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1e-12)
    logits = F.normalize(h_T, dim=-1) @ F.normalize(proxies, dim=-1).T / tau
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def dhd_loss(h_T: Tensor, h_S: Tensor, proxies: Tensor, labels: Tensor, tau: float = TAU,
             lambda_sdh: float = LAMBDA_SDH, lambda_bce: float = LAMBDA_BCE,
             sigma_g: float = SIGMA_G) -> Tensor:
    """Eq. 5: L_HP(h_T) + lambda_sdh L_SdH(h_T.detach(), h_S) + lambda_bce L_bce-Q(h_T).

    h_T: hash of the weakly augmented view (teacher), h_S: strongly augmented view (student).
    """
    return (hash_proxy_loss(h_T, proxies, labels, tau)
            + lambda_sdh * sdh_loss(h_T.detach(), h_S)
            + lambda_bce * bce_q_loss(h_T, sigma_g))


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad False on every parameter and eval mode (in place); gradients still flow
    through the module to its inputs."""
    module.requires_grad_(False)
    return module.eval()


def jscc_dhd_loss(S: Tensor, S_hat: Tensor, hasher: nn.Module, lam: float = LAMBDA_JSCC) -> Tensor:
    """Eq. 8: MSE(S, S_hat) + lam * (1 - cos(H*(S), H*(S_hat))), mean over the batch.

    S, S_hat: float [B,C,H,W] in [0,1]. ``hasher`` is frozen in place (see ``freeze``) on every
    call; H*(S) is computed without a graph, H*(S_hat) keeps it so gradients reach S_hat.
    """
    freeze(hasher)
    with torch.no_grad():
        h = hasher(S)
    return F.mse_loss(S_hat, S) + lam * sdh_loss(h, hasher(S_hat))


def _mse(S: Tensor, S_hat: Tensor) -> Tensor:
    return F.mse_loss(S_hat, S)


JSCC_LOSSES = ("mse", "mse+dhd")


def jscc_loss(name: str, hasher: nn.Module | None = None,
              lam: float = LAMBDA_JSCC) -> Callable[[Tensor, Tensor], Tensor]:
    """The DeepJSCC training objective ``loss(S, S_hat)`` by name: "mse" (baseline) or
    "mse+dhd" (eq. 8; needs ``hasher``, which is frozen here)."""
    if name == "mse":
        return _mse
    if name == "mse+dhd":
        if hasher is None:
            raise ValueError("loss 'mse+dhd' needs a trained DHD hasher")
        freeze(hasher)
        return lambda S, S_hat: jscc_dhd_loss(S, S_hat, hasher, lam)
    raise ValueError(f"unknown JSCC loss {name!r}; known: {', '.join(JSCC_LOSSES)}")
