"""Channels, power normalisation and the counter-based noise generator.

Noise must not depend on how frames are batched or ordered (DESIGN: "noise for a frame at a hop
comes from a generator derived from (seed, frame, hop)"). Seeding one ``torch.Generator`` per frame
costs a Python call and a kernel launch per frame, so instead the noise is a pure function of
(key, element index), computed for a whole batch in one vectorised pass on any device:

    key (3 x 32 bit, from seed/flow/frame/hop)  --+
    element counter j ---------------------------+--> murmur3-style mixing rounds
                                                        --> two uniforms --> Box-Muller --> CN(0, s^2)

All integer arithmetic stays below 2^63 (32-bit lanes in int64, multiplications split in 16-bit
halves), so it is exact and identical on CPU and GPU.
"""
from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1


def snr_to_noise_var(snr_db: float) -> float:
    """sigma^2 = 10^(-SNR/10) for unit average signal power."""
    return 10.0 ** (-snr_db / 10.0)


def power_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale each image's symbols to unit average power: (1/k)||x||^2 = 1.

    x: complex [B, *symbol_shape]. Returns the same shape and dtype.
    """
    k = x[0].numel()
    power = x.abs().square().flatten(1).sum(1) / k
    return x * torch.rsqrt(power.clamp_min(1e-12)).view(-1, *([1] * (x.dim() - 1)))


def awgn_sampled(x: torch.Tensor, snr_db, generator: torch.Generator | None = None) -> torch.Tensor:
    """y = x + n with n from torch's generator (training: fast, not keyed per frame).

    x: complex [B, ...]; snr_db: float or tensor [B] (one SNR per image). torch.randn with a complex
    dtype draws real and imaginary parts each with variance 1/2, i.e. CN(0, 1).
    """
    snr = torch.as_tensor(snr_db, dtype=torch.float32, device=x.device)
    if snr.ndim == 1:
        snr = snr.reshape(-1, *([1] * (x.ndim - 1)))
    sigma = torch.pow(10.0, -snr / 20.0)
    return x + sigma * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def noise_key(seed: int, *ids: int) -> tuple[int, int, int]:
    """Three 32-bit words identifying one noise stream, e.g. noise_key(seed, flow, frame, hop)."""
    z = _splitmix64(seed & _MASK64)
    for i in ids:
        z = _splitmix64(z ^ (i & _MASK64))
    z2 = _splitmix64(z)
    return z & _MASK32, z >> 32, z2 & _MASK32


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _to_unit(h: torch.Tensor) -> torch.Tensor:
    """Top 24 bits of a 32-bit word -> float32 uniform in (0, 1)."""
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def complex_normal(keys: torch.Tensor, shape: tuple[int, ...], device: torch.device | str,
                   stream: int = 0) -> torch.Tensor:
    """Standard complex Gaussian CN(0, 1) samples, complex64 [B, *shape], one stream per key row.

    keys: int64 [B, 3] (see ``noise_key``). Element j of row b depends only on (keys[b], j, stream);
    stream 0 is the noise, stream 1 the fading coefficient of the same frame and hop.
    """
    keys = keys.to(device)
    if stream:
        keys = keys ^ torch.tensor([0, 0, _splitmix64(stream) & _MASK32], device=device)
    counter = torch.arange(math.prod(shape), device=device, dtype=torch.int64).unsqueeze(0)
    h1 = _fmix32(_fmix32(counter ^ keys[:, 0:1]) ^ keys[:, 1:2])
    h2 = _fmix32(h1 ^ keys[:, 2:3])
    radius = torch.sqrt(-torch.log(_to_unit(h1)))  # |n|^2 ~ Exp(1) for CN(0, 1)
    angle = (2.0 * math.pi) * _to_unit(h2)
    return torch.polar(radius, angle).view(-1, *shape)


def keys_tensor(keys: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.tensor(keys, dtype=torch.int64)


def awgn(x: torch.Tensor, snr_db: float, keys: torch.Tensor) -> torch.Tensor:
    """y = x + n, n ~ CN(0, sigma^2 I), sigma^2 = 10^(-snr_db/10) (unit signal power assumed).

    x: complex [B, *symbol_shape]; keys: int64 [B, 3], one noise stream per image.
    """
    sigma = math.sqrt(snr_to_noise_var(snr_db))
    noise = complex_normal(keys, tuple(x.shape[1:]), x.device)
    return x + sigma * noise.to(x.dtype)


def rayleigh_gain(keys: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Block-fading coefficients h ~ CN(0, 1), complex64 [B]: one per image (frame and hop)."""
    return complex_normal(keys, (1,), device, stream=1)[:, 0]


def transmit(channel: str, x: torch.Tensor, snr_db: float, keys: torch.Tensor,
             csi: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Send x [B, *shape] over a link; returns (y, noise variance added per image [B]).

    ``awgn``: y = x + n. ``rayleigh``: block fading, y = h x + n with one h ~ CN(0, 1) per image;
    with receiver CSI the receiver equalises (y / h = x + n / h, noise sigma^2 / |h|^2), without it
    the decoder gets h x + n as it is.
    """
    sigma2 = snr_to_noise_var(snr_db)
    if channel == "awgn":
        return awgn(x, snr_db, keys), torch.full((x.shape[0],), sigma2)
    if channel != "rayleigh":
        raise ValueError(f"unknown channel {channel!r} (awgn, rayleigh)")
    h = rayleigh_gain(keys, x.device).view(-1, *([1] * (x.dim() - 1)))
    y = awgn(h * x, snr_db, keys)
    if not csi:
        return y, torch.full((x.shape[0],), sigma2)
    gain2 = h.abs().square().flatten().clamp_min(1e-12)
    return y / h, (sigma2 / gain2).cpu()
