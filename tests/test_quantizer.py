"""Tests for the quantize-and-forward vector quantiser (netsim.phy.quantizer)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from netsim.phy.quantizer import PAPER_QF_PAIRS, VectorQuantizer, parse_b

PAIRS = [(4, Fraction(3, 4)), (2, Fraction(1)), (4, Fraction(5, 4)), (2, Fraction(3, 2)), (2, Fraction(2))]


def _random_vq(n_q, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = 2 ** int(n_q * Fraction(b))
    return VectorQuantizer(n_q, b, torch.randn(K, n_q, generator=g))


def _complex(B, *shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, *shape, dtype=torch.complex64, generator=g)


def test_paper_pairs_constant():
    assert list(PAPER_QF_PAIRS) == PAIRS


# --------------------------------------------------------------------- bit accounting
# k = 8*8*8 = 512: C_out = 16 -> (16/2) x (32/4) x (32/4) complex symbols for a 32x32 image;
# 2k = 1024 reals, so on 32x32 = 1024 pixels bpp == b exactly.
# k = 3*32*32/2 = 1536: "uncoded" (rho = 1/2), 2k = 3072 reals -> bpp == 3b.
@pytest.mark.parametrize(
    "n_q,b,blocks_512,bits_512,bits_1536",
    [
        (4, "3/4", 256, 768, 2304),
        (2, "1", 512, 1024, 3072),
        (4, "5/4", 256, 1280, 3840),
        (2, "3/2", 512, 1536, 4608),
        (2, "2", 512, 2048, 6144),
    ],
)
def test_bit_accounting(n_q, b, blocks_512, bits_512, bits_1536):
    vq = _random_vq(n_q, b)
    fb = Fraction(b)
    assert vq.fraction_b == fb and vq.b == float(fb)
    assert vq.bits_per_block == n_q * fb
    assert vq.n_codewords == 2 ** int(n_q * fb) == vq.centres.shape[0]
    assert vq.n_blocks(512) == blocks_512
    assert vq.bits_per_image(512) == bits_512
    assert isinstance(vq.bits_per_image(512), int)
    assert vq.bits_per_image(1536) == bits_1536
    # paper's rate I = 2 k b / (H W)
    assert vq.bpp(512, 32, 32) == pytest.approx(float(fb))
    assert vq.bpp(1536, 32, 32) == pytest.approx(3 * float(fb))
    assert vq.bpp(512, 32, 32) == pytest.approx(2 * 512 * float(fb) / (32 * 32))
    # the packed payload really has that many bits
    idx = torch.zeros(2, vq.n_blocks(512), dtype=torch.int64)
    packed, n_bits = vq.pack_bits(idx)
    assert n_bits == bits_512 and packed.shape == (2, (bits_512 + 7) // 8)


@pytest.mark.parametrize("b", [0.75, Fraction(3, 4), "3/4", " 3/4 ", "0.75"])
def test_b_forms_equivalent(b):
    vq = _random_vq(4, b)
    assert vq.fraction_b == Fraction(3, 4)
    assert vq.bits_per_block == 3


def test_paper_rate_k65536():
    # the paper's Fig.: k = 65536 with (2, 2) gives bpp = 4 on 256x256 images
    vq = _random_vq(2, 2)
    assert vq.bpp(65536, 256, 256) == pytest.approx(4.0)


# --------------------------------------------------------------------- bit packing
@pytest.mark.parametrize("n_q,b", PAIRS)
@pytest.mark.parametrize("n_blocks", [1, 3, 7, 8, 13])
def test_pack_unpack_roundtrip(n_q, b, n_blocks):
    vq = _random_vq(n_q, b)
    g = torch.Generator().manual_seed(n_blocks)
    idx = torch.randint(0, vq.n_codewords, (3, n_blocks), generator=g)
    packed, n_bits = vq.pack_bits(idx)
    assert packed.dtype == torch.uint8
    assert n_bits == n_blocks * vq.bits_per_block
    assert packed.shape == (3, (n_bits + 7) // 8)
    assert torch.equal(vq.unpack_bits(packed, n_blocks), idx)
    # reference: numpy MSB-first bit string per image, padded with zeros
    nb = vq.bits_per_block
    for i in range(3):
        bits = [(int(v) >> (nb - 1 - t)) & 1 for v in idx[i] for t in range(nb)]
        ref = np.packbits(np.array(bits, dtype=np.uint8))
        assert np.array_equal(packed[i].numpy(), ref)


def test_pack_bits_known_values():
    vq = _random_vq(2, 1)  # 2 bits per index
    packed, n_bits = vq.pack_bits(torch.tensor([[1, 2, 3]]))
    assert n_bits == 6 and packed.tolist() == [[0b01101100]]
    vq = _random_vq(4, "5/4")  # 5 bits per index
    packed, n_bits = vq.pack_bits(torch.tensor([[31, 0, 1]]))
    # 11111 00000 00001 + 1 zero pad bit -> 11111000 00000010
    assert n_bits == 15 and packed.tolist() == [[0xF8, 0x02]]
    assert vq.unpack_bits(packed, 3).tolist() == [[31, 0, 1]]


def test_pack_unpack_errors():
    vq = _random_vq(2, 1)
    with pytest.raises(ValueError, match="indices must lie in"):
        vq.pack_bits(torch.tensor([[4]]))
    with pytest.raises(ValueError, match="indices must lie in"):
        vq.pack_bits(torch.tensor([[-1]]))
    with pytest.raises(ValueError, match="bytes"):
        vq.unpack_bits(torch.zeros(1, 2, dtype=torch.uint8), 3)  # 3*2 bits -> 1 byte
    with pytest.raises(ValueError, match="uint8"):
        vq.unpack_bits(torch.zeros(1, 1, dtype=torch.int64), 3)


# --------------------------------------------------------------------- quantise / dequantise
@pytest.mark.parametrize("n_q,b", PAIRS)
def test_quantize_nearest_matches_bruteforce(n_q, b):
    vq = _random_vq(n_q, b, seed=1)
    y = _complex(5, 4, 6, 6, seed=2) * 1.3  # k = 144 -> 288 reals
    idx = vq.quantize(y)
    n_blocks = 288 // n_q
    assert idx.dtype == torch.int64 and idx.shape == (5, n_blocks)
    blocks = torch.view_as_real(y).reshape(5, -1).reshape(-1, n_q).double().numpy()
    C = vq.centres.double().numpy()
    D = ((blocks[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    ref = D.argmin(1)
    got = idx.reshape(-1).numpy()
    chosen = D[np.arange(len(got)), got]
    # every chosen centre is (up to float32 rounding) at the minimum distance ...
    assert np.all(chosen <= D.min(1) + 1e-5)
    # ... and the index agrees with brute force except at float32 near-ties
    assert (got != ref).sum() <= 1
    # chunking does not change the result (ragged last chunk included)
    assert torch.equal(vq.quantize(y, chunk_rows=7), idx)
    assert torch.equal(vq.quantize(y, chunk_rows=1), idx)


def _bruteforce_check(blocks, centres, got):
    """``got`` equals the float64 brute-force argmin of squared distances, except where the
    two choices are a float32 near-tie (their float64 distances agree to 1e-5 relative)."""
    x, c = blocks.double(), centres.double()
    D = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    ref = D.argmin(1)
    rows = torch.arange(len(got))
    gap = (D[rows, got] - D[rows, ref]) / ((x * x).sum(1) + (c * c).sum(1).max())
    assert torch.all(gap[got != ref] < 1e-5)
    assert (got != ref).sum() <= 2


@pytest.fixture
def pools_started(monkeypatch):
    """Counts the thread pools quantize_blocks starts (i.e. runs of the multi-thread path)."""
    import netsim.phy.quantizer as q

    started = []

    class Spy(q.ThreadPoolExecutor):
        def __init__(self, n, *a, **kw):
            started.append(n)
            super().__init__(n, *a, **kw)

    monkeypatch.setattr(q, "ThreadPoolExecutor", Spy)
    return started


@pytest.mark.parametrize("n_q,b", PAIRS)
def test_chunked_and_threaded_match_bruteforce(n_q, b, pools_started):
    vq = _random_vq(n_q, b, seed=21)
    g = torch.Generator().manual_seed(22)
    n = 10_007  # prime: never a multiple of the chunk size
    blocks = torch.randn(n, n_q, generator=g) * 1.5
    default = vq.quantize_blocks(blocks, cpu_threads=1)
    assert default.dtype == torch.int64 and default.shape == (n,)
    _bruteforce_check(blocks, vq.centres, default)
    for chunk_rows in (97, 1000, 3 * n):  # 104 chunks (ragged last), 11, 1
        one = vq.quantize_blocks(blocks, chunk_rows=chunk_rows, cpu_threads=1)
        _bruteforce_check(blocks, vq.centres, one)
        for threads in (2, 3, None):  # chunks shared out among threads: the same result
            assert torch.equal(vq.quantize_blocks(blocks, chunk_rows, cpu_threads=threads), one)
    assert pools_started[:2] == [1, 2]  # 2 and 3 threads on the 104 chunks, then too few chunks
    # float64 blocks take the same path in float64
    _bruteforce_check(blocks, vq.centres, vq.quantize_blocks(blocks.double(), 97, cpu_threads=2))


def test_threaded_ties_and_thread_count_restored(pools_started):
    centres = torch.tensor([[1.0, 0.0], [2.0, 2.0], [-1.0, 0.0], [1.0, 0.0]])
    vq = VectorQuantizer(2, 1, centres)
    blocks = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]).repeat(1001, 1)
    before = torch.get_num_threads()
    got = vq.quantize_blocks(blocks, chunk_rows=64, cpu_threads=2)
    assert pools_started == [1] and torch.get_num_threads() == before
    assert torch.equal(got, torch.tensor([0, 0, 2]).repeat(1001))  # lowest index on ties
    y = _complex(4, 300, seed=23)
    assert torch.equal(vq.quantize(y, chunk_rows=50, cpu_threads=2), vq.quantize(y, chunk_rows=50, cpu_threads=1))
    with pytest.raises(ValueError, match="cpu_threads"):
        vq.quantize_blocks(blocks, cpu_threads=0)


def test_quantize_block_layout():
    # y_0 = 1+2j, y_1 = 3+4j -> reals [1, 2, 3, 4]; with N_Q = 2 blocks are (1,2) and (3,4)
    centres = torch.tensor([[3.0, 4.0], [1.0, 2.0], [0.0, 0.0], [-5.0, -5.0]])
    vq = VectorQuantizer(2, 1, centres)
    y = torch.tensor([[1 + 2j, 3 + 4j]], dtype=torch.complex64)
    assert vq.quantize(y).tolist() == [[1, 0]]
    # with N_Q = 4 the whole image is one block (1, 2, 3, 4)
    c4 = torch.zeros(8, 4)
    c4[5] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    c4[6] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    vq4 = VectorQuantizer(4, "3/4", c4)
    assert vq4.quantize(y).tolist() == [[5]]


def test_quantize_ties_go_to_lowest_index():
    centres = torch.tensor([[1.0, 0.0], [2.0, 2.0], [-1.0, 0.0], [1.0, 0.0]])
    vq = VectorQuantizer(2, 1, centres)
    # 0 is equidistant from centres 0 and 2 (and 3 == 0): argmin -> 0
    # (1, 0) equals centres 0 and 3: -> 0; (-1, 0) -> 2
    y = torch.tensor([[0j, 1 + 0j, -1 + 0j]], dtype=torch.complex64)
    assert vq.quantize(y).tolist() == [[0, 0, 2]]
    # reversed duplicate order: the lowest index still wins
    vq2 = VectorQuantizer(2, 1, centres.flip(0))  # [(1,0), (-1,0), (2,2), (1,0)]
    assert vq2.quantize(y).tolist() == [[0, 0, 1]]


@pytest.mark.parametrize("n_q,b", PAIRS)
def test_dequantize_inverts_on_centres(n_q, b):
    vq = _random_vq(n_q, b, seed=3)
    symbol_shape = (2, 4, 4)  # k = 32 -> 64 reals
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(0, vq.n_codewords, (3, 64 // n_q), generator=g)
    y_hat = vq.dequantize(idx, symbol_shape)
    assert y_hat.dtype == torch.complex64 and y_hat.shape == (3, *symbol_shape)
    reals = torch.view_as_real(y_hat).reshape(3, -1, n_q)
    assert torch.equal(reals, vq.centres[idx])
    assert torch.equal(vq.quantize(y_hat), idx)
    assert torch.equal(vq(y_hat), y_hat)


def test_dequantize_shape_errors():
    vq = _random_vq(2, 1)
    idx = torch.zeros(1, 8, dtype=torch.int64)  # 16 reals = 8 complex
    assert vq.dequantize(idx, (2, 4)).shape == (1, 2, 4)
    with pytest.raises(ValueError, match="complex symbols"):
        vq.dequantize(idx, (3, 3))
    with pytest.raises(ValueError, match="indices must lie in"):
        vq.dequantize(torch.full((1, 8), 4), (2, 4))


def test_distortion_decreases_with_rate():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(64, 256, dtype=torch.complex64, generator=g)  # 32768 reals
    test = torch.randn(64, 256, dtype=torch.complex64, generator=g)
    mses = []
    for n_q, b in PAIRS:  # increasing b
        vq = VectorQuantizer.fit(train, n_q, b, seed=0, n_init=1)
        y_hat = vq.dequantize(vq.quantize(test), test.shape[1:])
        mses.append(float(torch.mean(torch.abs(test - y_hat) ** 2)) / 2)  # per real
    assert all(a > b for a, b in zip(mses, mses[1:])), mses
    # sanity against the Gaussian distortion-rate bound D(R) = var * 2^(-2R) per real
    # (complex randn: var = 1/2 per real part); a small K-means VQ sits within 3 dB of it
    for (n_q, b), mse in zip(PAIRS, mses):
        bound = 0.5 * 2.0 ** (-2 * float(b))
        assert bound < mse < 2.0 * bound, (n_q, b, mse, bound)


# --------------------------------------------------------------------- fitting
def test_fit_deterministic_and_subsampled():
    y = _complex(40, 500, seed=5)  # 40000 reals -> 20000 blocks of 2
    a = VectorQuantizer.fit(y, 2, "3/2", seed=7, max_samples=3000, n_init=1)
    b = VectorQuantizer.fit(y, 2, "3/2", seed=7, max_samples=3000, n_init=1)
    assert a.centres.shape == (8, 2) and a.centres.dtype == torch.float32
    assert torch.equal(a.centres, b.centres)
    c = VectorQuantizer.fit(y, 2, "3/2", seed=8, max_samples=3000, n_init=1)
    assert not torch.equal(a.centres, c.centres)
    # a list of batches gives the same blocks as one tensor
    d = VectorQuantizer.fit([y[:15], y[15:]], 2, "3/2", seed=7, max_samples=3000, n_init=1)
    assert torch.equal(a.centres, d.centres)


def test_fit_errors():
    y = _complex(1, 4)  # 8 reals -> 4 blocks of 2
    with pytest.raises(ValueError, match="at least 2\\*\\*\\(n_q\\*b\\) = 16 blocks"):
        VectorQuantizer.fit(y, 2, 2)
    with pytest.raises(ValueError, match="not divisible by N_Q = 4"):
        VectorQuantizer.fit(_complex(10, 3), 4, "3/4")
    with pytest.raises(ValueError, match="integer number of bits"):
        VectorQuantizer.fit(_complex(10, 4), 2, "3/4")


# --------------------------------------------------------------------- persistence
def test_save_load_roundtrip(tmp_path):
    from safetensors import safe_open

    vq = _random_vq(4, "5/4", seed=9)
    path = tmp_path / "cb.safetensors"
    vq.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["n_q"] == "4" and meta["b"] == "5/4"
    back = VectorQuantizer.load(path)
    assert back.n_q == 4 and back.fraction_b == Fraction(5, 4)
    assert torch.equal(back.centres, vq.centres)
    y = _complex(2, 8, 4, seed=10)
    assert torch.equal(back.quantize(y), vq.quantize(y))


def test_load_rejects_bad_files(tmp_path):
    from safetensors.torch import save_file

    bad_shape = tmp_path / "bad_shape.safetensors"
    save_file({"centres": torch.zeros(16, 4)}, str(bad_shape), metadata={"n_q": "4", "b": "5/4"})
    with pytest.raises(ValueError, match=r"expected \[2\*\*\(n_q\*b\), n_q\] = \[32, 4\]"):
        VectorQuantizer.load(bad_shape)
    no_meta = tmp_path / "no_meta.safetensors"
    save_file({"centres": torch.zeros(32, 4)}, str(no_meta))
    with pytest.raises(ValueError, match="metadata"):
        VectorQuantizer.load(no_meta)
    no_tensor = tmp_path / "no_tensor.safetensors"
    save_file({"other": torch.zeros(32, 4)}, str(no_tensor), metadata={"n_q": "4", "b": "5/4"})
    with pytest.raises(ValueError, match="centres"):
        VectorQuantizer.load(no_tensor)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="safetensors"):
        VectorQuantizer.load(junk)


# --------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "n_q,b,match",
    [
        (2, "3/4", "n_q \\* b must be a positive integer"),  # 1.5 bits per block
        (3, 0.5, "n_q \\* b must be a positive integer"),
        (4, "1/3", "n_q \\* b must be a positive integer"),
        (2, 0, "b must be positive"),
        (2, -1, "b must be positive"),
        (2, "abc", "b must be a positive number"),
        (2, float("nan"), "b must be a positive number"),
        (0, 1, "n_q must be a positive integer"),
        (2.0, 1, "n_q must be a positive integer"),
        (2, 16, "outside the supported range"),
    ],
)
def test_invalid_parameters(n_q, b, match):
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(n_q, b, torch.zeros(4, 2))


def test_invalid_centres_and_inputs():
    with pytest.raises(ValueError, match=r"\[2\*\*\(n_q\*b\), n_q\] = \[4, 2\]"):
        VectorQuantizer(2, 1, torch.zeros(8, 2))
    with pytest.raises(ValueError, match="finite"):
        VectorQuantizer(2, 1, torch.full((4, 2), float("inf")))
    vq = _random_vq(4, "3/4")
    with pytest.raises(ValueError, match="not divisible by N_Q = 4"):
        vq.quantize(_complex(2, 3))  # k = 3 -> 6 reals
    with pytest.raises(ValueError, match="not divisible by N_Q = 4"):
        vq.bits_per_image(3)
    with pytest.raises(ValueError, match="complex"):
        vq.quantize(torch.zeros(2, 8))
    assert parse_b("5/4") == Fraction(5, 4)


# --------------------------------------------------------------------- accelerator
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    vq = _random_vq(4, "5/4", seed=11)
    y = _complex(8, 16, 8, 8, seed=12)
    idx_cpu = vq.quantize(y)
    idx_gpu = vq.quantize(y.cuda())
    assert idx_gpu.is_cuda
    assert (idx_gpu.cpu() != idx_cpu).sum() <= 1
    y_hat = vq.dequantize(idx_gpu, y.shape[1:])
    assert y_hat.is_cuda and torch.equal(y_hat.cpu(), vq.dequantize(idx_gpu.cpu(), y.shape[1:]))
    packed, n_bits = vq.pack_bits(idx_gpu)
    assert packed.is_cuda and torch.equal(vq.unpack_bits(packed, idx_gpu.shape[1]), idx_gpu)


def test_centres_are_copied_and_edits_are_seen():
    c = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    vq = VectorQuantizer(2, 1, c)
    c[0] = 100.0  # the caller's tensor is not aliased
    y = torch.tensor([[0.9 + 0.1j]], dtype=torch.complex64)
    assert vq.quantize(y).tolist() == [[0]]
    vq.centres[0] = torch.tensor([50.0, 50.0])  # in-place edit of the codebook is picked up
    assert vq.quantize(y).tolist() == [[2]]
    assert torch.equal(vq.dequantize(torch.tensor([[0]]), (1,)), torch.tensor([[50 + 50j]]))


@pytest.mark.parametrize("n_q,b", [(1, 2), (3, 1), (8, "1/2")])
def test_other_block_sizes_roundtrip(n_q, b):
    # block sizes outside the paper's pairs (other dequantisation table layouts)
    vq = _random_vq(n_q, b, seed=13)
    symbol_shape = (3, 4)  # k = 12 -> 24 reals
    g = torch.Generator().manual_seed(14)
    idx = torch.randint(0, vq.n_codewords, (2, 24 // n_q), generator=g)
    y_hat = vq.dequantize(idx, symbol_shape)
    assert torch.equal(torch.view_as_real(y_hat).reshape(2, -1, n_q), vq.centres[idx])
    assert torch.equal(vq.quantize(y_hat), idx)
    y = _complex(2, *symbol_shape, seed=15)
    blocks = torch.view_as_real(y).reshape(-1, n_q).double()
    ref = torch.cdist(blocks, vq.centres.double()).argmin(1).reshape(2, -1)
    assert torch.equal(vq.quantize(y), ref)
