"""Quantize-and-forward (QF) vector quantiser for DeepJSCC channel outputs.

Paper (multi-hop DeepJSCC-DHD, section 2.2): the relay views the channel output
``y`` (``k`` complex symbols per image) as ``2k`` reals, partitions them into
``2k / N_Q`` blocks of ``N_Q`` consecutive reals and quantises each block with
``N_Q * b`` bits, i.e. to one of ``2**(N_Q * b)`` K-means centres fitted on channel
outputs of the validation set.  The rate is ``I = 2 k b / (H W)`` bits per pixel.

Layout convention: for one image the reals are
``torch.view_as_real(y).reshape(B, -1)``, i.e. ``Re(y_0), Im(y_0), Re(y_1), ...``
in row-major order of ``symbol_shape``; block ``j`` holds reals
``j*N_Q ... j*N_Q + N_Q - 1``.  Bit packing is MSB first, index after index,
concatenated per image and zero padded to whole bytes.

Paper pairs ``(N_Q, b)``: (4, 3/4), (2, 1), (4, 5/4), (2, 3/2), (2, 2).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Sequence, Union

import numpy as np
import torch

__all__ = [
    "PAPER_QF_PAIRS",
    "MAX_BITS_PER_BLOCK",
    "VectorQuantizer",
    "parse_b",
    "bits_per_block",
    "to_blocks",
]

BLike = Union[float, int, Fraction, str]

#: The five (N_Q, b) quantisation levels of the paper, in increasing rate.
PAPER_QF_PAIRS: tuple[tuple[int, Fraction], ...] = (
    (4, Fraction(3, 4)),
    (2, Fraction(1)),
    (4, Fraction(5, 4)),
    (2, Fraction(3, 2)),
    (2, Fraction(2)),
)

#: Largest supported ``N_Q * b``: a codebook of 2**16 centres is already far beyond
#: what K-means can fit, and it keeps the quantiser's float keys (< 2**17) exact.
MAX_BITS_PER_BLOCK = 16

# Target number of score-matrix entries (K x rows) per chunk in ``quantize``: on CPU
# small enough for the chunk's scores and keys to stay in L2 (tuned with
# benchmarks/quantizer.py); on accelerators large, to amortise kernel launches.
_CHUNK_ELEMS = 1 << 18
_CHUNK_ELEMS_ACCEL = 1 << 24
# ``quantize`` uses several CPU threads only with at least this many chunks per thread, so
# that the work shared out outweighs starting the threads (benchmarks/quantizer.py).
_MIN_CHUNKS_PER_THREAD = 8


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def parse_b(b: BLike) -> Fraction:
    """Parse the per-real bit budget ``b`` (float, int, Fraction or "p/q" string)."""
    if isinstance(b, bool):
        raise ValueError(f"b must be a number, got bool {b!r}")
    try:
        if isinstance(b, Fraction):
            fb = b
        elif isinstance(b, int):
            fb = Fraction(b)
        elif isinstance(b, str):
            fb = Fraction(b.strip())
        elif isinstance(b, (float, np.floating)):
            if not math.isfinite(float(b)):
                raise ValueError("not finite")
            fb = Fraction(float(b)).limit_denominator(1 << 16)
            if abs(float(fb) - float(b)) > 1e-9 * max(1.0, abs(float(b))):
                raise ValueError("not representable as a simple fraction")
        elif isinstance(b, np.integer):
            fb = Fraction(int(b))
        else:
            raise TypeError
    except (ValueError, ZeroDivisionError, TypeError) as exc:
        raise ValueError(
            f"b must be a positive number given as float, int, Fraction or a 'p/q' string; "
            f"got {b!r}"
        ) from exc
    if fb <= 0:
        raise ValueError(f"b must be positive, got b={fb}")
    return fb


def bits_per_block(n_q: int, b: BLike) -> int:
    """Validate ``(n_q, b)`` and return ``N_Q * b`` (must be a positive integer)."""
    if isinstance(n_q, bool) or not isinstance(n_q, (int, np.integer)):
        raise ValueError(f"n_q must be a positive integer, got {n_q!r}")
    n_q = int(n_q)
    if n_q < 1:
        raise ValueError(f"n_q must be a positive integer, got n_q={n_q}")
    fb = parse_b(b)
    nb = n_q * fb
    if nb.denominator != 1:
        raise ValueError(
            f"n_q * b must be a positive integer number of bits per block; "
            f"got n_q={n_q}, b={fb} -> n_q*b={nb}"
        )
    nbits = int(nb)
    if not 1 <= nbits <= MAX_BITS_PER_BLOCK:
        raise ValueError(
            f"n_q * b = {nbits} bits per block is outside the supported range "
            f"1..{MAX_BITS_PER_BLOCK} (codebook of 2**{nbits} centres)"
        )
    return nbits


def _check_n_reals(n_reals: int, n_q: int) -> int:
    if n_reals % n_q != 0:
        raise ValueError(
            f"2k = {n_reals} real values per image is not divisible by N_Q = {n_q}; "
            f"cannot split the channel output into blocks of N_Q reals"
        )
    return n_reals // n_q


def _as_reals(y: torch.Tensor) -> torch.Tensor:
    """[B, *symbol_shape] complex -> [B, 2k] real (interleaved Re, Im)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"channel outputs must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() < 2:
        raise ValueError(
            f"channel outputs must have shape [B, *symbol_shape] (at least 2-D), got {tuple(y.shape)}"
        )
    if not y.is_complex():
        raise ValueError(f"channel outputs must be a complex tensor, got dtype {y.dtype}")
    n_reals = 2 * math.prod(y.shape[1:])
    return torch.view_as_real(y.resolve_conj()).reshape(y.shape[0], n_reals)


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (no-op for None or no change)."""
    prev = torch.get_num_threads()
    if n is None or int(n) == prev:
        yield
        return
    if int(n) < 1:
        raise ValueError(f"cpu_threads must be a positive integer or None, got {n}")
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def to_blocks(y: torch.Tensor, n_q: int) -> torch.Tensor:
    """Complex channel outputs [B, *symbol_shape] -> real blocks [B, 2k/n_q, n_q]."""
    r = _as_reals(y)
    nblk = _check_n_reals(r.shape[1], n_q)
    return r.reshape(r.shape[0], nblk, n_q)


# ----------------------------------------------------------------------------
# quantiser
# ----------------------------------------------------------------------------
class VectorQuantizer:
    """Codebook of ``2**(n_q*b)`` centres in R^{n_q} with nearest-centre quantisation.

    Parameters
    ----------
    n_q : number of real values per block (N_Q >= 1).
    b : bits per real value; ``n_q * b`` must be a positive integer.
    centres : float tensor [2**(n_q*b), n_q] (stored as float32).
    """

    def __init__(self, n_q: int, b: BLike, centres: torch.Tensor | np.ndarray):
        self.bits_per_block: int = bits_per_block(n_q, b)
        self.n_q: int = int(n_q)
        self._b: Fraction = parse_b(b)
        if isinstance(centres, np.ndarray):
            centres = torch.from_numpy(np.ascontiguousarray(centres))
        if not isinstance(centres, torch.Tensor):
            raise TypeError(f"centres must be a torch.Tensor, got {type(centres).__name__}")
        if centres.is_complex() or not (centres.is_floating_point()):
            raise ValueError(f"centres must be a real floating tensor, got dtype {centres.dtype}")
        expected = (self.n_codewords, self.n_q)
        if tuple(centres.shape) != expected:
            raise ValueError(
                f"centres must have shape [2**(n_q*b), n_q] = {list(expected)} for "
                f"n_q={self.n_q}, b={self._b}; got {list(centres.shape)}"
            )
        # own copy (offset 0, not aliased with the caller's tensor)
        centres = centres.detach().to(dtype=torch.float32, copy=True).contiguous()
        if not torch.isfinite(centres).all():
            raise ValueError("centres must be finite")
        self.centres: torch.Tensor = centres
        self._cache: dict[tuple, object] = {}
        self._cache_sig: tuple = ()

    # -- properties --------------------------------------------------------
    @property
    def b(self) -> float:
        """Bits per real value as a float (see :attr:`fraction_b` for the exact value)."""
        return float(self._b)

    @property
    def fraction_b(self) -> Fraction:
        """Bits per real value as an exact :class:`fractions.Fraction`."""
        return self._b

    @property
    def n_codewords(self) -> int:
        return 1 << self.bits_per_block

    def __repr__(self) -> str:
        return (
            f"VectorQuantizer(n_q={self.n_q}, b={self._b}, bits_per_block={self.bits_per_block}, "
            f"n_codewords={self.n_codewords})"
        )

    # -- rate accounting ---------------------------------------------------
    def n_blocks(self, k: int) -> int:
        """Number of blocks for ``k`` complex symbols per image (2k / N_Q)."""
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be a positive number of complex symbols, got {k}")
        return _check_n_reals(2 * k, self.n_q)

    def bits_per_image(self, k: int) -> int:
        """Bits per image = 2k * b = (2k / N_Q) * (N_Q * b)."""
        return self.n_blocks(k) * self.bits_per_block

    def bpp(self, k: int, H: int, W: int) -> float:
        """Rate I = 2 k b / (H W) bits per pixel (the paper's rate)."""
        if H < 1 or W < 1:
            raise ValueError(f"image size must be positive, got H={H}, W={W}")
        return self.bits_per_image(k) / (H * W)

    # -- fitting -----------------------------------------------------------
    @classmethod
    def fit(
        cls,
        y_samples: torch.Tensor | Sequence[torch.Tensor],
        n_q: int,
        b: BLike,
        seed: int = 0,
        max_samples: int = 200_000,
        n_init: int = 3,
        max_iter: int = 300,
    ) -> "VectorQuantizer":
        """Fit ``2**(n_q*b)`` K-means centres on blocks of the channel outputs.

        ``y_samples`` is a complex tensor [B, *symbol_shape] or a sequence of such
        tensors (e.g. one per validation batch).  If there are more than
        ``max_samples`` blocks, a subset is drawn without replacement with
        ``numpy.random.default_rng(seed)``; K-means uses ``random_state=seed`` and runs
        single-threaded, so the centres are bit-for-bit deterministic given the seed.
        """
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        nbits = bits_per_block(n_q, b)
        n_clusters = 1 << nbits
        if isinstance(y_samples, torch.Tensor):
            y_samples = [y_samples]
        parts = [to_blocks(y, int(n_q)).reshape(-1, int(n_q)) for y in y_samples]
        if not parts:
            raise ValueError("fit needs at least one tensor of channel outputs")
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in parts) else torch.float32
        X = torch.cat([p.detach().to("cpu", dtype) for p in parts], dim=0)
        n = X.shape[0]
        if n < n_clusters:
            raise ValueError(
                f"fit needs at least 2**(n_q*b) = {n_clusters} blocks to fit {n_clusters} "
                f"centres, got only {n} blocks (n_q={n_q}, b={parse_b(b)})"
            )
        if max_samples < n_clusters:
            raise ValueError(
                f"max_samples={max_samples} is smaller than the number of centres {n_clusters}"
            )
        if n > max_samples:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(n, size=max_samples, replace=False))
            X = X[torch.from_numpy(idx)]
        Xn = np.ascontiguousarray(X.numpy())
        if not np.isfinite(Xn).all():
            raise ValueError("channel outputs contain non-finite values")
        km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
        # scikit-learn's multi-threaded Lloyd iterations add per-thread partial sums in
        # completion order, so centres can differ in the last bits between runs; one
        # thread makes the fit bit-for-bit reproducible.
        with threadpool_limits(limits=1):
            km.fit(Xn)
        return cls(n_q, b, torch.from_numpy(np.asarray(km.cluster_centers_, dtype=np.float32)))

    # -- quantise / dequantise ---------------------------------------------
    def _cached(self, key):
        """Derived-tensor cache, dropped whenever ``self.centres`` is replaced or edited."""
        sig = (id(self.centres), self.centres._version)
        if sig != self._cache_sig:
            self._cache.clear()
            self._cache_sig = sig
        return self._cache.get(key)

    def _centres_on(self, device: torch.device, dtype: torch.dtype):
        """(-2 * centres [K, n_q], ||centres||^2 [K, 1], arange(K) [K, 1]) on ``device`` in
        ``dtype`` (cached)."""
        key = (str(device), dtype)
        hit = self._cached(key)
        if hit is None:
            c = self.centres.to(device=device, dtype=dtype)
            hit = (
                (-2.0 * c).contiguous(),
                (c * c).sum(dim=1, keepdim=True).contiguous(),
                torch.arange(self.n_codewords, dtype=dtype, device=device).unsqueeze(1),
            )
            self._cache[key] = hit
        return hit

    def _plain_centres_on(self, device: torch.device) -> torch.Tensor:
        """float32 centres on ``device`` (cached), as a 1-D table of one scalar per centre
        when a row of n_q float32 is 4, 8 or 16 bytes (a gather of scalars is much faster
        than an embedding lookup of short rows), else as [K, n_q]."""
        key = (str(device), "plain")
        hit = self._cached(key)
        if hit is None:
            c = self.centres.to(device=device).contiguous()
            as_scalar = {1: torch.int32, 2: torch.int64, 4: torch.complex128}.get(self.n_q)
            hit = c.view(as_scalar).reshape(-1) if as_scalar is not None else c
            self._cache[key] = hit
        return hit

    def _default_chunk_rows(self, device: torch.device) -> int:
        elems = _CHUNK_ELEMS if device.type == "cpu" else _CHUNK_ELEMS_ACCEL
        return max(256, elems // self.n_codewords)

    def quantize_blocks(
        self,
        blocks: torch.Tensor,
        chunk_rows: int | None = None,
        cpu_threads: int | None = None,
    ) -> torch.Tensor:
        """Nearest-centre indices (int64 [n]) for real blocks [n, n_q].

        ``argmin_j ||a - c_j||^2 = argmin_j (||c_j||^2 - 2 a.c_j)`` (``||a||^2`` is the same
        for every j).  Per chunk of rows the scores are one ``addmm`` laid out [K, rows]; the
        minimum over j is a value reduction (``amin``) and the index is recovered exactly as
        ``amin_j (j + K * [score_j > min])``, i.e. the lowest j attaining the minimum score
        (``torch.argmin`` tie-breaking) without the slow small-dim arg-reduction.
        Rows containing NaN get an unspecified index.

        ``chunk_rows``: rows per chunk (default: K * rows ~ 2**18 on CPU so a chunk's work
        buffer stays in L2, ~2**24 on accelerators).  ``cpu_threads``: most CPU threads for
        the chunk loop (default ``None``: ``torch.get_num_threads()``, the project's thread
        setting), used only with at least 8 chunks per thread.  Each thread takes chunks in
        turn and runs its ops on one intra-op thread (torch releases the GIL inside its
        kernels); torch's own OpenMP intra-op parallelism is never used here, as its
        fork/join per small, cache-resident op costs more than it gains and stalls badly
        when other processes hold the cores.  torch's thread count is restored afterwards.
        """
        if not isinstance(blocks, torch.Tensor) or blocks.dim() != 2 or blocks.shape[1] != self.n_q:
            raise ValueError(
                f"blocks must be a tensor of shape [n, {self.n_q}], got "
                f"{list(blocks.shape) if isinstance(blocks, torch.Tensor) else type(blocks).__name__}"
            )
        if blocks.is_complex():
            raise ValueError("blocks must be real; use quantize() for complex channel outputs")
        if cpu_threads is not None and int(cpu_threads) < 1:
            raise ValueError(f"cpu_threads must be a positive integer or None, got {cpu_threads}")
        dtype = torch.float64 if blocks.dtype == torch.float64 else torch.float32
        dev = blocks.device
        on_cpu = dev.type == "cpu"
        K = self.n_codewords
        n = blocks.shape[0]
        if n == 0:
            return torch.empty(0, dtype=torch.int64, device=dev)
        n_threads = (torch.get_num_threads() if cpu_threads is None else int(cpu_threads)) if on_cpu else 1
        with torch.no_grad(), _intra_op_threads(1 if on_cpu else None):
            a = blocks.detach().to(dtype)
            cm2, c2, jcol = self._centres_on(dev, dtype)
            if chunk_rows is None:
                chunk_rows = self._default_chunk_rows(dev)
            chunk_rows = max(1, min(int(chunk_rows), n))
            out = torch.empty(n, dtype=torch.int64, device=dev)

            def run(starts) -> None:
                # One [K, rows] work buffer per thread, overwritten in place: scores -> flags
                # -> keys.  Keys are small integers (< 2K <= 2**17), exact in float32; staying
                # in float keeps every pass on the fast vectorised float kernels.  Only
                # chunk-sized temporaries, so a call allocates little beyond its result.
                work = torch.empty(K, chunk_rows, dtype=dtype, device=dev)
                best = torch.empty(chunk_rows, dtype=dtype, device=dev)
                kmin = torch.empty(chunk_rows, dtype=dtype, device=dev)
                for s in starts:
                    e = min(s + chunk_rows, n)
                    d, mn, km = work[:, : e - s], best[: e - s], kmin[: e - s]
                    torch.addmm(c2, cm2, a[s:e].t(), out=d)  # [K, m] scores ||c||^2 - 2 c.a
                    torch.amin(d, dim=0, out=mn)            # [m] minimum score
                    torch.gt(d, mn, out=d)                  # 0. where minimal, else 1.
                    torch.add(jcol, d, alpha=K, out=d)      # key j + K * [not minimal]
                    torch.amin(d, dim=0, out=km)            # lowest minimal j (as float)
                    out[s:e].copy_(km)

            starts = range(0, n, chunk_rows)
            n_threads = max(1, min(n_threads, len(starts) // _MIN_CHUNKS_PER_THREAD))
            if n_threads == 1:
                run(starts)
                return out
            pending, lock = iter(starts), threading.Lock()

            def take():  # chunk starts, handed out one at a time to whichever thread asks
                while True:
                    with lock:
                        s = next(pending, None)
                    if s is None:
                        return
                    yield s

            def helper() -> None:
                with _intra_op_threads(1):  # a fresh thread may have another default
                    run(take())

            with ThreadPoolExecutor(n_threads - 1) as pool:
                helpers = [pool.submit(helper) for _ in range(n_threads - 1)]
                run(take())
                for h in helpers:
                    h.result()
            return out

    def quantize(
        self, y: torch.Tensor, chunk_rows: int | None = None, cpu_threads: int | None = None
    ) -> torch.Tensor:
        """Channel outputs (complex [B, *symbol_shape]) -> indices int64 [B, 2k/N_Q].

        Nearest centre per block of N_Q consecutive reals of ``view_as_real(y)`` (see
        :meth:`quantize_blocks` for the method and the two tuning arguments)."""
        blocks = to_blocks(y, self.n_q)
        B, nblk, _ = blocks.shape
        flat = blocks.reshape(B * nblk, self.n_q)
        return self.quantize_blocks(flat, chunk_rows, cpu_threads).reshape(B, nblk)

    def dequantize_blocks(self, indices: torch.Tensor, cpu_threads: int | None = 1) -> torch.Tensor:
        """Indices (any shape) -> centres float32 [*indices.shape, n_q].

        One memory-bound gather, run on ``cpu_threads`` torch intra-op threads on CPU
        (restored afterwards; ``None`` keeps torch's current setting).  The default 1 is
        deliberate: on a loaded machine OpenMP's fork/join made the gather about 3x slower
        on 2 threads than on 1 (benchmarks/quantizer.py)."""
        with _intra_op_threads(cpu_threads if indices.device.type == "cpu" else None):
            self._check_indices(indices)
            table = self._plain_centres_on(indices.device)
            flat = indices.reshape(-1).to(torch.int64)
            rows = torch.index_select(table, 0, flat)
        if table.dim() == 1:  # one scalar (4/8/16 bytes) per centre row
            rows = rows.view(torch.float32)
        return rows.reshape(*indices.shape, self.n_q)

    def dequantize(
        self,
        indices: torch.Tensor,
        symbol_shape: Sequence[int] | torch.Size,
        cpu_threads: int | None = 1,
    ) -> torch.Tensor:
        """Indices int64 [B, n_blocks] -> reconstructed channel outputs complex64 [B, *symbol_shape]."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 2:
            raise ValueError("indices must be a tensor of shape [B, n_blocks]")
        symbol_shape = tuple(int(s) for s in symbol_shape)
        k = math.prod(symbol_shape)
        B, nblk = indices.shape
        if 2 * k != nblk * self.n_q:
            raise ValueError(
                f"symbol_shape {list(symbol_shape)} has k={k} complex symbols = {2 * k} reals, but "
                f"{nblk} blocks of N_Q={self.n_q} give {nblk * self.n_q} reals"
            )
        reals = self.dequantize_blocks(indices, cpu_threads)  # [B, nblk, n_q] float32
        return torch.view_as_complex(reals.reshape(B, *symbol_shape, 2))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Quantise then dequantise (the relay's effect on y)."""
        return self.dequantize(self.quantize(y), y.shape[1:])

    def _check_indices(self, indices: torch.Tensor) -> None:
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.is_complex() \
                or indices.dtype == torch.bool:
            raise ValueError("indices must be an integer tensor")
        if indices.numel():
            lo, hi = torch.aminmax(indices)
            ok = int(lo) >= 0 and int(hi) < self.n_codewords
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"indices must lie in [0, {self.n_codewords}) for a codebook of {self.n_codewords} centres"
            )

    # -- bit packing ---------------------------------------------------------
    def pack_bits(self, indices: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pack indices [B, n_blocks] as N_Q*b bits each, MSB first, per image.

        Returns ``(packed, n_bits)`` with ``packed`` uint8 [B, ceil(n_bits/8)] (zero padded)
        and ``n_bits = n_blocks * N_Q * b`` the number of payload bits per image.
        """
        if indices.dim() != 2:
            raise ValueError(f"indices must have shape [B, n_blocks], got {list(indices.shape)}")
        self._check_indices(indices)
        B, nblk = indices.shape
        nb = self.bits_per_block
        n_bits = nblk * nb
        n_bytes = (n_bits + 7) // 8
        dev = indices.device
        shifts = torch.arange(nb - 1, -1, -1, device=dev, dtype=torch.int32)
        bits = ((indices.to(torch.int32).unsqueeze(-1) >> shifts) & 1).to(torch.uint8)
        bits = bits.reshape(B, n_bits)
        pad = n_bytes * 8 - n_bits
        if pad:
            bits = torch.cat([bits, torch.zeros(B, pad, dtype=torch.uint8, device=dev)], dim=1)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=dev)
        packed = (bits.reshape(B, n_bytes, 8) * weights).sum(dim=-1, dtype=torch.int32).to(torch.uint8)
        return packed, n_bits

    def unpack_bits(self, packed: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Exact inverse of :meth:`pack_bits`: uint8 [B, n_bytes] -> int64 indices [B, n_blocks]."""
        if packed.dtype != torch.uint8 or packed.dim() != 2:
            raise ValueError(
                f"packed must be a uint8 tensor [B, n_bytes], got dtype {packed.dtype} shape {list(packed.shape)}"
            )
        n_blocks = int(n_blocks)
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be non-negative, got {n_blocks}")
        nb = self.bits_per_block
        n_bits = n_blocks * nb
        n_bytes = (n_bits + 7) // 8
        B = packed.shape[0]
        if packed.shape[1] != n_bytes:
            raise ValueError(
                f"{n_blocks} blocks of {nb} bits need {n_bytes} bytes per image, got {packed.shape[1]}"
            )
        dev = packed.device
        bshift = torch.arange(7, -1, -1, device=dev, dtype=torch.uint8)
        bits = ((packed.unsqueeze(-1) >> bshift) & 1).reshape(B, n_bytes * 8)[:, :n_bits]
        shifts = torch.arange(nb - 1, -1, -1, device=dev, dtype=torch.int32)
        vals = (bits.reshape(B, n_blocks, nb).to(torch.int32) << shifts).sum(dim=-1, dtype=torch.int64)
        return vals

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to safetensors: tensor ``centres``; metadata ``n_q`` and ``b`` ("p/q")."""
        from safetensors.torch import save_file

        save_file(
            {"centres": self.centres.detach().cpu().contiguous()},
            os.fspath(path),
            metadata={"n_q": str(self.n_q), "b": str(self._b), "format": "netsim.VectorQuantizer"},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorQuantizer":
        """Load a codebook saved by :meth:`save` (safetensors only)."""
        from safetensors import safe_open

        path = os.fspath(path)
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                keys = set(f.keys())
                if "centres" not in keys:
                    raise ValueError(
                        f"{path}: no 'centres' tensor in safetensors file (keys: {sorted(keys)})"
                    )
                centres = f.get_tensor("centres")
        except (ValueError, FileNotFoundError):
            raise
        except Exception as exc:  # safetensors raises SafetensorError / OSError
            raise ValueError(f"{path}: not a readable safetensors codebook ({exc})") from exc
        if "n_q" not in meta or "b" not in meta:
            raise ValueError(f"{path}: safetensors metadata must contain 'n_q' and 'b', got {meta}")
        try:
            n_q = int(meta["n_q"])
        except ValueError as exc:
            raise ValueError(f"{path}: metadata n_q={meta['n_q']!r} is not an integer") from exc
        nbits = bits_per_block(n_q, meta["b"])
        expected = [1 << nbits, n_q]
        if list(centres.shape) != expected:
            raise ValueError(
                f"{path}: centres have shape {list(centres.shape)}, expected [2**(n_q*b), n_q] = {expected} "
                f"for n_q={n_q}, b={meta['b']}"
            )
        return cls(n_q, meta["b"], centres)
