"""Separation reference line: capacity, best codec encoding under a bit budget, the CLI."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from netsim.metrics import psnr as psnr_metric
from netsim.phy.separation import (CodecUnavailable, RateSearch, available_codecs, best_under_budget,
                                   capacity_bits, check_codec, separation_curve)
from netsim.train.datasets import skimage_dataset

CODECS = available_codecs()
FAST = [c for c in CODECS if c != "avif"]  # AVIF encodes are ~10 ms each: fewer checks


@pytest.fixture(scope="module")
def photo64() -> torch.Tensor:
    """float [3,64,64] in [0,1]: the first bundled skimage photo resized to 64x64."""
    return skimage_dataset(64).images[0].float() / 255.0


@pytest.fixture(scope="module")
def crop32() -> np.ndarray:
    """uint8 [32,32,3]: a crop of the astronaut photo at full resolution."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[100:132, 200:232, :3])


def test_capacity_bits_exact():
    assert capacity_bits(512, 0.0) == 512.0  # log2(1 + 1) = 1
    assert capacity_bits(1, 10 * math.log10(15)) == pytest.approx(4.0, rel=1e-12)
    assert capacity_bits(100, 10 * math.log10(3)) == pytest.approx(200.0, rel=1e-12)
    assert capacity_bits(2048, 20.0) == pytest.approx(2048 * math.log2(101.0), rel=1e-12)
    assert capacity_bits(0, 20.0) == 0.0
    with pytest.raises(ValueError):
        capacity_bits(-1, 0.0)


def test_jpeg_and_webp_available():
    assert {"jpeg", "webp"} <= set(CODECS)


@pytest.mark.parametrize("which", ["photo64", "crop32"])
@pytest.mark.parametrize("codec", CODECS)
def test_larger_budget_never_lowers_psnr(codec, which, request):
    """The curve's path: one RateSearch per image serves increasing budgets (bisection)."""
    image = request.getfixturevalue(which)
    search = RateSearch(image, codec)
    prev = -math.inf
    for b in np.geomspace(300 * 8, 12000 * 8, 12 if codec == "avif" else 30):
        p, bits, q = search.best(b)
        assert bits <= b
        assert p >= prev - 1e-12, f"{codec}: PSNR fell from {prev:.3f} to {p:.3f} at budget {b:.0f}"
        prev = p
    assert prev > 30.0  # the largest budget affords a good encoding


@pytest.mark.parametrize("which", ["photo64", "crop32"])
@pytest.mark.parametrize("codec", FAST)
def test_exhaustive_independent_calls_monotone_and_bound_bisection(codec, which, request):
    """Independent calls: exhaustive is exactly monotone; bisection never beats it, rarely trails."""
    image = request.getfixturevalue(which)
    prev, gaps = -math.inf, []
    for b in np.geomspace(250 * 8, 6000 * 8, 8):
        exact = best_under_budget(image, codec, b, exhaustive=True)
        assert exact.psnr_db >= prev
        prev = exact.psnr_db
        quick = best_under_budget(image, codec, b)
        assert quick.bits_used <= b and quick.psnr_db <= exact.psnr_db + 1e-12
        gaps.append(exact.psnr_db - quick.psnr_db)
    assert np.mean(gaps) < 0.25


def test_shared_search_reuses_encodes(photo64):
    search = RateSearch(photo64, "jpeg")
    for b in np.linspace(3000, 60000, 25):
        search.best(b)
    assert search.encodes < 2 * 100  # fewer than a full scan of both subsamplings


@pytest.mark.parametrize("codec", CODECS)
def test_budget_below_smallest_encoding_gives_grey_fallback(codec, crop32):
    grey = -10 * math.log10(np.mean((crop32 / 255.0 - 0.5) ** 2))
    for budget in (0, 8, 100):
        e = best_under_budget(crop32, codec, budget)
        assert (e.bits_used, e.quality, e.subsampling) == (0, None, None)
        assert not e.fits
        assert e.psnr_db == pytest.approx(grey, abs=1e-9)


@pytest.mark.parametrize("codec", CODECS)
def test_psnr_matches_independent_decode(codec, photo64):
    e = best_under_budget(photo64, codec, 9000)
    assert e.fits and e.codec == codec
    # re-encode independently with Pillow at the reported settings
    u8 = (photo64 * 255).round().byte().permute(1, 2, 0).numpy()
    fmt, opts = {"jpeg": ("JPEG", {"optimize": True}), "webp": ("WEBP", {"method": 6}),
                 "avif": ("AVIF", {})}[codec]
    if e.subsampling is not None:
        opts["subsampling"] = e.subsampling
    if codec == "avif":
        from netsim.phy.separation import AVIF_SPEED

        opts["speed"] = AVIF_SPEED
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, fmt, quality=e.quality, **opts)
    data = buf.getvalue()
    assert 8 * len(data) == e.bits_used <= 9000
    dec = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy())
    S_hat = dec.permute(2, 0, 1).float().div(255.0)[None]
    assert e.psnr_db == pytest.approx(float(psnr_metric(photo64[None], S_hat)[0]), abs=1e-4)


def test_unknown_and_unavailable_codecs_raise(monkeypatch, crop32):
    with pytest.raises(CodecUnavailable, match="unknown codec 'bpg'.*known: jpeg, webp, avif"):
        best_under_budget(crop32, "bpg", 1e5)
    assert check_codec("JPG") == "jpeg"
    from PIL import features

    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name in ("avif", "webp") else real(name))
    with pytest.raises(CodecUnavailable, match="'avif' is unavailable.*libavif"):
        best_under_budget(crop32, "avif", 1e5)
    with pytest.raises(CodecUnavailable, match="'webp' is unavailable.*libwebp"):
        separation_curve(torch.zeros(1, 3, 8, 8), 10, [0.0], ["webp"])
    assert isinstance(CodecUnavailable("x"), ValueError)  # the CLI turns it into exit code 2


def test_separation_curve_table():
    S = skimage_dataset(32).images[:3].float() / 255.0
    df = separation_curve(S, 512, [20, -10, 5], ["jpeg", "webp"])
    assert list(df.columns[:9]) == ["codec", "snr_db", "k", "rho", "budget_bits", "bpp_budget", "psnr_mean",
                                    "psnr_ci95", "fit_fraction"]
    assert len(df) == 6 and (df["images"] == 3).all()
    for _, g in df.groupby("codec"):
        assert list(g["snr_db"]) == [-10.0, 5.0, 20.0]
        assert g["psnr_mean"].is_monotonic_increasing
        assert g["budget_bits"].tolist() == pytest.approx([capacity_bits(512, s) for s in (-10, 5, 20)])
    assert df["bpp_budget"].tolist() == pytest.approx((df["budget_bits"] / 1024).tolist())
    assert df["rho"].eq(512 / 3072).all()
    assert df["fit_fraction"].between(0, 1).all()
    low = df[df["snr_db"] == -10]  # 512 * log2(1.1) = 70 bits: nothing fits
    assert (low["fit_fraction"] == 0).all() and (low["bits_used_mean"] == 0).all()


def test_cli_separation(tmp_path):
    from netsim.cli import main

    out = tmp_path / "sep.csv"
    r = CliRunner().invoke(main, ["eval", "separation", "--dataset", "skimage", "--limit", "2",
                                  "--snrs", "0,20", "--codecs", "jpeg,webp", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 4 and (df["k"] == 512).all() and (df["images"] == 2).all()  # rho 1/6 of 3x32x32
    assert set(df["codec"]) == {"jpeg", "webp"}

    r = CliRunner().invoke(main, ["eval", "separation", "--dataset", "skimage", "--limit", "2", "--k", "100",
                                  "--snrs", "10", "--codecs", "jpeg", "-q", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out)["k"].tolist() == [100]

    r = CliRunner().invoke(main, ["eval", "separation", "--dataset", "skimage", "--limit", "2",
                                  "--codecs", "jpeg,bpg", "-q"])
    assert r.exit_code == 2 and "unknown codec 'bpg'" in r.output
