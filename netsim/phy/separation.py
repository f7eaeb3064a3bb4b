"""Separation baselines: the best PSNR a separate source/channel scheme could reach at capacity.

The reference line of the paper's figures answers: if the ``k`` complex channel symbols of an
image were spent on an ideal (capacity-achieving) channel code, the link would carry
``C = k * log2(1 + SNR)`` error-free bits; what is the best PSNR a real image codec reaches when
its file has to fit in ``C`` bits?

    S (float [3,H,W] in [0,1]) --> uint8 --> Pillow encoder (JPEG / WebP / AVIF, quality q)
        --> bytes: fits if 8 * len(bytes) <= k log2(1 + SNR) --> decoder --> S_hat
    PSNR = -10 log10(||S - S_hat||^2 / (CHW))   (peak 1; MSE floored as in netsim.metrics)

It is an upper bound on practical separation (no finite-length channel code reaches capacity and
there is no cliff effect here: below capacity the bits are perfect, above it nothing is sent).

Conventions (they decide the numbers, so they are spelled out):

* **Headers count.** The size is the complete byte stream exactly as Pillow writes it (JPEG:
  JFIF APP0, quantisation and optimised Huffman tables, markers; WebP: RIFF container; AVIF: the
  ISOBMFF/HEIF container with its ``ftyp``/``meta`` boxes). That is what a receiver that knows
  nothing but "this is a JPEG" would need. For tiny images the headers dominate (a 64x64 JPEG
  is never below ~400 bytes), which is part of why separation falls off a cliff on CIFAR-sized
  images.
* **Search.** For each codec the quality parameter is searched by bisection (file size is
  monotone in quality in practice) for the largest quality that fits, then the ``NEIGHBOURS``
  qualities on each side are tried as well (size and PSNR are not strictly monotone); the answer
  is the highest-PSNR encoding among all that were tried and fit. On tiny images PSNR wiggles by
  a few tenths of a dB between neighbouring qualities, so bisection can miss the exact optimum:
  on the skimage photos at 32x32 and 64x64 over 150 budgets the shortfall averaged < 0.002 dB
  (worst single case 0.7 dB, WebP). ``exhaustive=True`` encodes every quality instead and
  returns the exact optimum over the quality grid (2-4x more encodes for a whole curve). Chroma subsampling is searched
  too where the codec offers it (JPEG and AVIF: 4:2:0 and 4:4:4; 4:4:4 wins at high rates; lossy
  WebP is 4:2:0 only). Encoder effort: JPEG ``optimize=True`` (optimal Huffman tables), WebP
  ``method=6`` (slowest, smallest), AVIF (libaom) ``speed=AVIF_SPEED``.
* **Nothing fits.** When even the lowest quality exceeds the budget the receiver has nothing:
  it outputs the constant mid-grey image 0.5 (it knows only the image size), ``bits_used = 0``
  and ``quality = None``. (Sending the mean colour would cost 24 bits, which at -15 dB and
  rho = 1/6 on CIFAR (k = 512 -> 23 bits) does not fit either, so it is not assumed.)
* The image is rounded to uint8 before encoding (CIFAR, Kodak and the skimage photos already are
  uint8, so this loses nothing there); PSNR is measured against the image as given.

Codec support is checked at run time (``PIL.features``): WebP and AVIF writing depend on how
Pillow was built (AVIF: Pillow >= 11.3 with libavif and an AV1 encoder); an unavailable codec
raises ``CodecUnavailable`` naming what is missing.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from netsim.results import ci95_half_width

__all__ = ["CODECS", "NEIGHBOURS", "AVIF_SPEED", "CodecUnavailable", "Encoding", "capacity_bits",
           "available_codecs", "check_codec", "best_under_budget", "RateSearch", "separation_curve"]

CODECS = ("jpeg", "webp", "avif")
"""Codec names understood here (lower case)."""

NEIGHBOURS = 2
"""Qualities tried on each side of the bisection's answer."""

AVIF_SPEED = 6
"""libaom speed (0 slowest/best .. 10 fastest); 6 is Pillow's default. Speed 0 is ~20x slower
for about 1% smaller files on 64x64 images."""

MSE_FLOOR = 1e-10  # same floor as netsim.metrics.quality: identical images give 100 dB

# Pillow format, quality range, subsampling variants (Pillow's spelling), fixed save options.
_SPEC = {
    "jpeg": ("JPEG", (1, 100), ("4:2:0", "4:4:4"), {"optimize": True}),
    "webp": ("WEBP", (0, 100), (None,), {"method": 6}),
    "avif": ("AVIF", (0, 100), ("4:2:0", "4:4:4"), {"speed": AVIF_SPEED}),
}


class CodecUnavailable(ValueError):
    """An unknown codec name, or one this Pillow build cannot write."""


@dataclass(frozen=True)
class Encoding:
    """The chosen encoding of one image; behaves as the tuple ``(psnr_db, bits_used, quality)``.

    ``quality`` and ``subsampling`` are None when nothing fits (mid-grey fallback, 0 bits).
    """

    psnr_db: float
    bits_used: int
    quality: int | None
    subsampling: str | None = None
    codec: str | None = None

    def __iter__(self) -> Iterator:
        return iter((self.psnr_db, self.bits_used, self.quality))

    def __getitem__(self, i):
        return (self.psnr_db, self.bits_used, self.quality)[i]

    def __len__(self) -> int:
        return 3

    @property
    def fits(self) -> bool:
        return self.quality is not None


def capacity_bits(k: int, snr_db: float) -> float:
    """AWGN capacity of ``k`` complex channel uses at ``snr_db``: ``k * log2(1 + 10^(SNR/10))`` bits."""
    if k < 0:
        raise ValueError(f"k must be >= 0 channel symbols, got {k}")
    return float(k) * math.log2(1.0 + 10.0 ** (float(snr_db) / 10.0))


def available_codecs() -> list[str]:
    """The codecs of ``CODECS`` this Pillow build can write."""
    return [c for c in CODECS if _why_unavailable(c) is None]


def _why_unavailable(codec: str) -> str | None:
    import PIL
    from PIL import features

    if codec == "jpeg":
        ok = features.check("jpg")
    elif codec == "webp":
        ok = features.check("webp")
    elif codec == "avif":
        ok = bool(features.check("avif")) if "avif" in features.modules else False
        if ok:
            from PIL import _avif

            ok = any(_avif.encoder_codec_available(c) for c in ("aom", "rav1e", "svt"))
            if not ok:
                return "Pillow's libavif has no AV1 encoder (aom, rav1e or svt)"
    else:
        return None
    if not ok:
        lib = {"jpeg": "libjpeg", "webp": "libwebp", "avif": "libavif (Pillow >= 11.3)"}[codec]
        return f"this Pillow {PIL.__version__} was built without {lib}"
    return None


def check_codec(codec: str) -> str:
    """Normalise ``codec`` (case-insensitive) or raise ``CodecUnavailable`` saying why."""
    name = str(codec).strip().lower()
    if name == "jpg":
        name = "jpeg"
    if name not in CODECS:
        raise CodecUnavailable(f"unknown codec {codec!r}; known: {', '.join(CODECS)} "
                               f"(available here: {', '.join(available_codecs()) or 'none'})")
    why = _why_unavailable(name)
    if why is not None:
        raise CodecUnavailable(f"codec {name!r} is unavailable: {why}")
    return name


def _to_uint8_hwc(image) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H,W,3] to encode, float64 [H,W,3] reference in [0,1]) from either input form."""
    if hasattr(image, "detach"):  # torch tensor [3,H,W] float in [0,1]
        t = image.detach().cpu()
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a float tensor [3,H,W], got shape {tuple(t.shape)}")
        ref = t.double().permute(1, 2, 0).numpy()
        if t.dtype.is_floating_point:
            u8 = np.clip(np.rint(ref * 255.0), 0, 255).astype(np.uint8)
        else:
            u8 = ref.astype(np.uint8)
            ref = u8 / 255.0
        return u8, ref
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected a uint8 array [H,W,3], got shape {a.shape}")
    if a.dtype == np.uint8:
        return a, a.astype(np.float64) / 255.0
    ref = a.astype(np.float64)
    return np.clip(np.rint(ref * 255.0), 0, 255).astype(np.uint8), ref


def _psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mse = max(float(np.mean((ref - out) ** 2)), MSE_FLOOR)
    return -10.0 * math.log10(mse)


class RateSearch:
    """The rate-distortion trials of one image under one codec, cached across budgets.

    ``best(budget_bits)`` returns the best ``Encoding`` that fits; asking for several budgets on
    one ``RateSearch`` reuses earlier encodes, and its answers never decrease as the budget
    grows (the best over every trial so far that fits is returned). ``exhaustive=True`` tries
    every quality of every subsampling variant once (the exact optimum over the grid).
    """

    def __init__(self, image, codec: str, exhaustive: bool = False):
        self.codec = check_codec(codec)
        self.exhaustive = bool(exhaustive)
        self._u8, self._ref = _to_uint8_hwc(image)
        self._fmt, (self.q_min, self.q_max), self._variants, self._opts = _SPEC[self.codec]
        self._trials: dict[tuple[str | None, int], tuple[int, float]] = {}
        self.fallback_psnr = _psnr(self._ref, np.full_like(self._ref, 0.5))

    def encode(self, quality: int, subsampling: str | None = None) -> bytes:
        """The complete file Pillow writes for this image at ``quality``."""
        from PIL import Image

        opts = dict(self._opts)
        if subsampling is not None:
            opts["subsampling"] = subsampling
        buf = io.BytesIO()
        Image.fromarray(self._u8, "RGB").save(buf, self._fmt, quality=int(quality), **opts)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """float64 [H,W,3] in [0,1]."""
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0

    def trial(self, quality: int, subsampling: str | None = None) -> tuple[int, float]:
        """(size in bits, PSNR in dB) at ``quality`` (cached)."""
        key = (subsampling, int(quality))
        if key not in self._trials:
            data = self.encode(quality, subsampling)
            self._trials[key] = (8 * len(data), _psnr(self._ref, self.decode(data)))
        return self._trials[key]

    @property
    def encodes(self) -> int:
        """How many encodes were run so far."""
        return len(self._trials)

    def _search(self, budget: float, sub: str | None) -> None:
        """Bisection for the largest quality whose size fits (assuming monotone size), then
        the neighbours; every encode lands in the cache."""
        lo, hi = self.q_min, self.q_max
        if self.trial(lo, sub)[0] > budget:
            best = lo - 1
        elif self.trial(hi, sub)[0] <= budget:
            best = hi
        else:  # size(lo) fits, size(hi) does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self.trial(mid, sub)[0] <= budget:
                    lo = mid
                else:
                    hi = mid
            best = lo
        for q in range(best - NEIGHBOURS, best + NEIGHBOURS + 1):
            if self.q_min <= q <= self.q_max:
                self.trial(q, sub)

    def best(self, budget_bits: float) -> Encoding:
        """Highest-PSNR tried encoding with ``8 * len(file) <= budget_bits``, or the fallback."""
        budget = float(budget_bits)
        for sub in self._variants:
            if self.exhaustive:
                for q in range(self.q_min, self.q_max + 1):
                    self.trial(q, sub)
            else:
                self._search(budget, sub)
        fit = [(psnr, -bits, q, sub) for (sub, q), (bits, psnr) in self._trials.items() if bits <= budget]
        if not fit:
            return Encoding(self.fallback_psnr, 0, None, None, self.codec)
        psnr, neg_bits, q, sub = max(fit, key=lambda t: (t[0], t[1], t[2]))
        return Encoding(psnr, -neg_bits, q, sub, self.codec)


def best_under_budget(image, codec: str, budget_bits: float, exhaustive: bool = False) -> Encoding:
    """The highest-PSNR encoding of ``image`` with ``codec`` whose whole file fits in ``budget_bits``.

    image: uint8 ``[H,W,3]`` array or float tensor ``[3,H,W]`` in [0,1]. codec: "jpeg", "webp" or
    "avif". Returns an ``Encoding`` that unpacks as ``(psnr_db, bits_used, quality)``; when no
    quality fits: (PSNR of mid-grey 0.5, 0, None). ``exhaustive``: encode every quality instead of
    bisecting (exact optimum; then a larger budget provably never gives a lower PSNR). See the
    module docstring for the conventions.
    """
    return RateSearch(image, codec, exhaustive).best(budget_bits)


def separation_curve(images, k_per_image: int, snrs: Iterable[float], codecs: Sequence[str] = ("jpeg", "webp"),
                     exhaustive: bool = False, progress: bool = False):
    """The separation reference line: per codec and SNR, the mean over ``images`` of the best PSNR
    reachable with ``capacity_bits(k_per_image, snr)`` bits.

    images: float tensor ``[N,3,H,W]`` in [0,1] (or uint8). Returns a pandas DataFrame, one row per
    (codec, snr_db), columns: codec, snr_db, k, rho, budget_bits, bpp_budget (budget / (H W)),
    psnr_mean, psnr_ci95 (1.96 std / sqrt(N); NaN for one image), fit_fraction (images for which
    some encoding fitted), bits_used_mean (0 for those that did not), bpp_used_mean, images,
    headers ("counted"), search ("bisection" or "exhaustive"). PSNR of images that did not fit
    is the mid-grey fallback's. One ``RateSearch`` per image and codec serves all SNRs, so each
    image's PSNR never decreases with the SNR.
    """
    import pandas as pd
    from tqdm import tqdm

    codecs = [check_codec(c) for c in codecs]
    snrs = sorted(float(s) for s in snrs)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N,3,H,W], got shape {tuple(images.shape)}")
    n, _, H, W = images.shape
    if n == 0:
        raise ValueError("no images")
    k = int(k_per_image)
    budgets = {s: capacity_bits(k, s) for s in snrs}
    psnr = {(c, s): np.empty(n) for c in codecs for s in snrs}
    bits = {(c, s): np.empty(n) for c in codecs for s in snrs}
    for c in codecs:
        for i in tqdm(range(n), desc=f"separation {c}", leave=False, disable=not progress):
            search = RateSearch(images[i], c, exhaustive)
            for s in snrs:  # increasing budgets: each search reuses the earlier encodes
                e = search.best(budgets[s])
                psnr[c, s][i], bits[c, s][i] = e.psnr_db, e.bits_used
    rows = []
    for c in codecs:
        for s in snrs:
            p, b = psnr[c, s], bits[c, s]
            rows.append({"codec": c, "snr_db": s, "k": k, "rho": k / (3 * H * W), "budget_bits": budgets[s],
                         "bpp_budget": budgets[s] / (H * W), "psnr_mean": float(p.mean()),
                         "psnr_ci95": ci95_half_width(p), "fit_fraction": float((b > 0).mean()),
                         "bits_used_mean": float(b.mean()), "bpp_used_mean": float(b.mean()) / (H * W),
                         "images": n, "headers": "counted",
                         "search": "exhaustive" if exhaustive else "bisection"})
    return pd.DataFrame(rows)
