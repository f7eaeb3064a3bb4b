"""DeepJSCC encoder/decoder pairs: point to point ("deepjscc") and multi-hop DF ("deepjscc-multihop").

Notation (paper): S in [0,1]^{C x H x W}; x = f(S) in C^k, k = (c_out/2) * (H/4) * (W/4) complex
symbols; y = x + n, n ~ CN(0, sigma^2 I_k), SNR = 10 log10(1/sigma^2) dB; S_hat = d(y).
Bandwidth ratio rho = k / (C*H*W) = c_out / (32*C) channel symbols per pixel, so c_out = 32 and
C = 3 give rho = 1/3 (k = 65,536 for 256x256).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netsim.nn.registry import register_model
from netsim.phy.channel import awgn_sampled, power_normalize

__all__ = ["DeepJSCC", "DeepJSCCMultiHop", "SIZES"]

SIZES = ("small", "base", "paper")
PAPER_WIDTH = 256  # N of Yilmaz et al. 2023: ~22M parameters, ~89 MB float32 (paper: 89.2 MB)


# ---------------------------------------------------------------- building blocks ("paper")

def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


class GDN(nn.Module):
    """Generalised divisive normalisation (Balle et al.): y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

    ``inverse=True`` multiplies instead (IGDN). beta, gamma kept non-negative by abs().
    """

    def __init__(self, ch: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        norm = F.conv2d(x * x, self.gamma.abs().view(c, c, 1, 1), self.beta.abs() + 1e-6)
        return x * norm.sqrt() if self.inverse else x * norm.rsqrt()


class ResidualBlock(nn.Module):
    """conv3-LReLU-conv3-LReLU plus (1x1-projected) identity; stride 2 halves H, W and ends in GDN."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        layers = [_conv3(cin, cout, stride), nn.LeakyReLU(inplace=True), _conv3(cout, cout)]
        layers.append(GDN(cout) if stride == 2 else nn.LeakyReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.skip = nn.Identity() if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResidualBlockUpsample(nn.Module):
    """Sub-pixel conv (x2) - LReLU - conv3 - IGDN, plus a sub-pixel-upsampled identity."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv3(cin, 4 * cout), nn.PixelShuffle(2), nn.LeakyReLU(inplace=True),
            _conv3(cout, cout), GDN(cout, inverse=True),
        )
        self.skip = nn.Sequential(_conv3(cin, 4 * cout), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class AttentionBlock(nn.Module):
    """Simplified attention (Cheng et al. 2020): x + a(x) * sigmoid(b(x)), a, b = 3 bottleneck units."""

    def __init__(self, ch: int):
        super().__init__()

        def unit() -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(ch, ch // 2, 1), nn.ReLU(inplace=True), _conv3(ch // 2, ch // 2),
                nn.ReLU(inplace=True), nn.Conv2d(ch // 2, ch, 1),
            )

        self.a = nn.ModuleList(unit() for _ in range(3))
        self.b = nn.ModuleList(unit() for _ in range(3))
        self.b_out = nn.Conv2d(ch, ch, 1)

    @staticmethod
    def _units(units: nn.ModuleList, x: Tensor) -> Tensor:
        for u in units:
            x = F.relu(x + u(x))
        return x

    def forward(self, x: Tensor) -> Tensor:
        return x + self._units(self.a, x) * torch.sigmoid(self.b_out(self._units(self.b, x)))


def _paper_codec(ch: int, c_out: int, n: int = PAPER_WIDTH) -> tuple[nn.Module, nn.Module]:
    RB, Up, At = ResidualBlock, ResidualBlockUpsample, AttentionBlock
    enc = nn.Sequential(
        RB(ch, n, 2), RB(n, n), RB(n, n), At(n), RB(n, n),
        RB(n, n, 2), RB(n, n), RB(n, c_out), At(c_out),
    )
    dec = nn.Sequential(
        At(c_out), RB(c_out, n), RB(n, n), RB(n, n), Up(n, n),
        At(n), RB(n, n), RB(n, n), RB(n, n), Up(n, ch), nn.Sigmoid(),
    )
    return enc, dec


def _small_codec(ch: int, c_out: int, a: int = 32, b: int = 96) -> tuple[nn.Module, nn.Module]:
    enc = nn.Sequential(
        nn.Conv2d(ch, a, 3, 2, 1), nn.PReLU(a), nn.Conv2d(a, b, 3, 2, 1), nn.PReLU(b),
        _conv3(b, b), nn.PReLU(b), _conv3(b, c_out),
    )
    dec = nn.Sequential(
        _conv3(c_out, b), nn.PReLU(b), _conv3(b, b), nn.PReLU(b),
        nn.ConvTranspose2d(b, a, 3, 2, 1, output_padding=1), nn.PReLU(a),
        nn.ConvTranspose2d(a, ch, 3, 2, 1, output_padding=1), nn.Sigmoid(),
    )
    return enc, dec


class PReLUResBlock(nn.Module):
    """x -> PReLU(x + conv3(PReLU(conv3(x)))): a GDN-free, normalisation-free residual unit ("base")."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(_conv3(ch, ch), nn.PReLU(ch), _conv3(ch, ch))
        self.act = nn.PReLU(ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


def _base_codec(ch: int, c_out: int, a: int = 64, b: int = 128) -> tuple[nn.Module, nn.Module]:
    """Mid-sized CPU-trainable codec, ~1.75M params at c_out = 16.

    ::

        enc: conv5 s2 (C->a) PReLU [H/2] - RB(a) - conv3 s2 (a->b) PReLU [H/4] - RB(b) - RB(b) - conv3 (b->c_out)
        dec: conv3 (c_out->b) PReLU - RB(b) - RB(b) - conv3 (b->4a) shuffle2 PReLU [H/2] - RB(a)
             - conv3 (a->4C) shuffle2 [H] - sigmoid

    RB = ``PReLUResBlock``; upsampling by sub-pixel convolution (PixelShuffle).
    """
    enc = nn.Sequential(
        nn.Conv2d(ch, a, 5, 2, 2), nn.PReLU(a), PReLUResBlock(a),
        _conv3(a, b, 2), nn.PReLU(b), PReLUResBlock(b), PReLUResBlock(b), _conv3(b, c_out),
    )
    dec = nn.Sequential(
        _conv3(c_out, b), nn.PReLU(b), PReLUResBlock(b), PReLUResBlock(b),
        _conv3(b, 4 * a), nn.PixelShuffle(2), nn.PReLU(a), PReLUResBlock(a),
        _conv3(a, 4 * ch), nn.PixelShuffle(2), nn.Sigmoid(),
    )
    return enc, dec


_BUILDERS = {"small": _small_codec, "base": _base_codec, "paper": _paper_codec}


# ---------------------------------------------------------------- codecs

@register_model("deepjscc")
class DeepJSCC(nn.Module):
    """One DeepJSCC encoder/decoder pair (f, d) around a complex AWGN channel.

    ::

        S [B,C,H,W] in [0,1]
          -> encoder (2x stride-2) -> z real [B,c_out,H/4,W/4]
          -> pair channels: x = z[:, :c_out/2] + j z[:, c_out/2:]
          -> power norm: (1/k)||x||^2 = 1 per image     x complex64 [B,c_out/2,H/4,W/4]
          -> AWGN: y = x + n, n ~ CN(0, sigma^2)
          -> unpair: [Re y, Im y] real [B,c_out,H/4,W/4]
          -> decoder (2x upsampling) -> sigmoid -> S_hat [B,C,H,W] in [0,1]

    Config: ``c_out`` (even; real channels at the bottleneck), ``size`` ("small": ~0.28M params,
    a few PReLU convs, CPU-trainable at 32x32; "base": ~1.75M params at c_out = 16, PReLU
    residual blocks of width 64 at H/2 and 128 at H/4 with sub-pixel upsampling, the size of
    the CIFAR-10 zoo models (see ``_base_codec``); "paper": the residual + attention + GDN design of
    Yilmaz et al. 2023 (distributed DeepJSCC, width 256) without device embeddings or SNR
    modules, ~22M params), ``channels`` (image channels C). Fully convolutional: any H, W
    divisible by 4. rho = k/(C*H*W) = c_out/(32*C).
    """

    def __init__(self, c_out: int = 32, size: str = "small", channels: int = 3):
        super().__init__()
        if c_out < 2 or c_out % 2:
            raise ValueError(f"c_out must be an even integer >= 2, got {c_out!r}")
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size!r}")
        self.config = {"c_out": c_out, "size": size, "channels": channels}
        self.c_out, self.channels = c_out, channels
        self.encoder, self.decoder = _BUILDERS[size](channels, c_out)

    @property
    def rho(self) -> float:
        """Bandwidth ratio k/(C*H*W) in complex channel symbols per pixel (independent of H, W)."""
        return self.c_out / (32 * self.channels)

    def symbol_shape(self, H: int, W: int) -> tuple[int, int, int]:
        """Shape (c_out/2, H/4, W/4) of one image's complex channel input x."""
        if H % 4 or W % 4:
            raise ValueError(f"image size {H}x{W} is not divisible by 4")
        return (self.c_out // 2, H // 4, W // 4)

    def encode(self, S: Tensor) -> Tensor:
        """S float [B,C,H,W] in [0,1] -> x complex64 [B,c_out/2,H/4,W/4] with (1/k)||x||^2 = 1 per image."""
        self.symbol_shape(*S.shape[-2:])  # raises ValueError unless H, W divisible by 4
        z = self.encoder(S).float()
        x = torch.complex(*z.chunk(2, dim=1))
        return power_normalize(x)

    def decode(self, y: Tensor, snr_db=None) -> Tensor:
        """y complex [B,c_out/2,H/4,W/4] -> S_hat float [B,C,H,W] in [0,1]. ``snr_db`` is ignored."""
        return self.decoder(torch.cat([y.real, y.imag], dim=1))

    def forward(self, S: Tensor, snr_db, generator: torch.Generator | None = None) -> Tensor:
        """S -> encode -> one AWGN hop at ``snr_db`` (float or tensor [B]) -> decode -> S_hat."""
        return self.decode(awgn_sampled(self.encode(S), snr_db, generator))


@register_model("deepjscc-multihop")
class DeepJSCCMultiHop(nn.Module):
    """Decode-and-forward chain of ``n_hops`` = r+1 independent DeepJSCC pairs, trained end to end.

    ::

        S -> f_1 -> AWGN -> d_1 -> S~_1 -> f_2 -> AWGN -> d_2 -> S~_2 ... -> d_{r+1} -> S_hat

    Config: ``n_hops`` plus the DeepJSCC config (``c_out``, ``size``, ``channels``). Pair i
    (0-based) is ``pair(i)``; its state-dict keys are ``pairs.{i}.encoder...`` / ``pairs.{i}.decoder...``.
    """

    def __init__(self, n_hops: int = 2, c_out: int = 32, size: str = "small", channels: int = 3):
        super().__init__()
        if n_hops < 1:
            raise ValueError(f"n_hops must be >= 1, got {n_hops!r}")
        self.config = {"n_hops": n_hops, "c_out": c_out, "size": size, "channels": channels}
        self.n_hops = n_hops
        self.pairs = nn.ModuleList(DeepJSCC(c_out, size, channels) for _ in range(n_hops))

    def pair(self, i: int) -> DeepJSCC:
        """Hop i's (0-based) encoder/decoder pair."""
        if not 0 <= i < self.n_hops:
            raise IndexError(f"hop {i} out of range for {self.n_hops} hops")
        return self.pairs[i]

    def forward_all(self, S: Tensor, snr_db, generator: torch.Generator | None = None) -> list[Tensor]:
        """Reconstructions [S~_1, ..., S~_r, S_hat], each float [B,C,H,W].

        ``snr_db``: one SNR for every hop (float or tensor [B]) or a sequence of n_hops of them.
        Noise is drawn hop after hop from ``generator``.
        """
        snrs = snr_db if isinstance(snr_db, Sequence) else [snr_db] * self.n_hops
        if len(snrs) != self.n_hops:
            raise ValueError(f"got {len(snrs)} SNRs for {self.n_hops} hops")
        out = []
        for pair, snr in zip(self.pairs, snrs):
            S = pair(S, snr, generator)
            out.append(S)
        return out

    def forward(self, S: Tensor, snr_db, generator: torch.Generator | None = None) -> Tensor:
        """S float [B,C,H,W] -> S_hat at the destination after n_hops noisy hops."""
        return self.forward_all(S, snr_db, generator)[-1]
