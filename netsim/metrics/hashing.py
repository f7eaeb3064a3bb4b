"""Agreement between deep-hash (DHD) fingerprints, one value per image.

A hash ``h`` is a float tensor ``[B, N_H]`` in (-1, 1) (tanh output); its bits are
``b = sign(h) > 0``. Functions taking hashes also accept bool bit tensors ``[B, N_H]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hash_bits(h: Tensor) -> Tensor:
    """Bits of a hash: bool ``[B, N_H]``, True where ``h > 0``; bool input is returned as is."""
    return h if h.dtype == torch.bool else h > 0


def hamming_distance(h_ref: Tensor, h: Tensor) -> Tensor:
    """Number of differing bits: long ``[B]``, for hashes or bits ``[B, N_H]``."""
    return (hash_bits(h_ref) != hash_bits(h)).sum(-1)


def bit_agreement(h_ref: Tensor, h: Tensor) -> Tensor:
    """Fraction of equal bits in [0, 1]: float ``[B]``, for hashes or bits ``[B, N_H]``."""
    return (hash_bits(h_ref) == hash_bits(h)).float().mean(-1)


def hash_cosine(h_ref: Tensor, h: Tensor) -> Tensor:
    """Cosine similarity of the continuous hashes: float ``[B]``, inputs float ``[B, N_H]``."""
    return F.cosine_similarity(h_ref, h, dim=-1)


def pack_hash_bits(h: Tensor) -> Tensor:
    """Bits packed 8 per byte, first bit in the most significant place (like ``np.packbits``).

    h: hashes or bits ``[B, N_H]``. Returns uint8 ``[B, ceil(N_H / 8)]``: the side information a
    source sends (N_H = 64 gives 8 bytes); a last partial byte is padded with zero bits.
    """
    bits = hash_bits(h)
    pad = -bits.shape[-1] % 8
    bits = F.pad(bits.to(torch.uint8), (0, pad)).view(bits.shape[0], -1, 8)
    place = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=h.device)
    return (bits * place).sum(-1, dtype=torch.uint8)
