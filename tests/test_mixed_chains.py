"""Mixed relay chains: QF, DF and AF relays in one route (issue 5, item 4)."""
from __future__ import annotations

import math

import pytest

from conftest import chain
from netsim.scenario import parse_scenario
from netsim.sim import run_scenario


@pytest.fixture(scope="module")
def mixed_hops(tmp_path_factory):
    """src -(noisy)-> qf -(bits, error-free)-> df -(noisy)-> af -(noisy)-> dst, uncoded 16x16 images."""
    data = chain(["qf", "df", "af"], snr_db=5.0, size=16, count=4)
    data["nodes"][1]["qf"] = {"n_q": 2, "b": 1, "fit_images": 8}
    hops = run_scenario(parse_scenario(data), tmp_path_factory.mktemp("mixed")).hops
    return {node: rows.sort_values("frame").reset_index(drop=True) for node, rows in hops.groupby("node")}


def test_a_qf_relay_hands_bits_to_the_df_relay_after_it(mixed_hops):
    qf, df = mixed_hops["r1"], mixed_hops["r2"]
    assert (qf["holds"] == "symbols").all() and (qf["channel_symbols"] == 384).all()
    # the QF -> DF link carries N_Q * b bits per N_Q reals: 2k b = 768 bits, 3 bpp for 16x16
    assert (df["holds"] == "bits").all() and (df["channel_symbols"] == 0).all()
    assert (df["payload_bits"] == 768).all() and (df["bpp"] == 3.0).all()
    # no noise on the bit pipe: the DF relay decodes the dequantised symbols, which lose a little
    # against the QF relay's unquantised probe decode, and the effective SNR is unchanged
    assert (df["snr_eff_db"] == qf["snr_eff_db"]).all()
    assert (df["psnr"] < qf["psnr"]).all() and (qf["psnr"] - df["psnr"] < 3.0).all()


def test_df_restarts_the_noise_and_af_accumulates_it(mixed_hops):
    af, dst = mixed_hops["r3"], mixed_hops["dst"]
    assert af["snr_eff_db"].to_numpy() == pytest.approx(5.0)  # a fresh encode after the DF relay
    s = 10 ** -0.5  # sigma^2 per hop at 5 dB; AF gain a^2 = 1 / (1 + s)
    expected = 10 * math.log10(1 / (s + s * (1 + s)))
    assert dst["snr_eff_db"].to_numpy() == pytest.approx(expected, abs=0.2)
    assert (dst["psnr"] < af["psnr"]).all()
