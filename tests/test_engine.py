"""The SimPy engine: exact event times, noise and power, QF accounting, determinism, batching."""
from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd
import pytest
import torch

from conftest import chain
from netsim.phy.channel import awgn, complex_normal, keys_tensor, noise_key, power_normalize
from netsim.scenario import parse_scenario
from netsim.sim import Simulation, run_scenario
from netsim.sim.codecs import UncodedCodec

UNTRAINED_JSCC = {"untrained": "deepjscc", "config": {"c_out": 8, "size": "small"}, "seed": 3}


def run(data: dict):
    return run_scenario(parse_scenario(data), write=False)


def test_event_times_two_hop_chain_back_to_back():
    # 2 frames of 8x8 RGB, uncoded: k = 96 symbols + 64 side-info bits (mean, rms) per frame.
    data = chain(["df"], size=8, count=2,
                 compute={"model": "fixed", "per_image_s": 1e-3, "per_batch_s": 0.0})
    for link in data["links"]:
        link.update(symbol_rate=1000.0, bit_rate=1000.0, delay_s=0.01)
    hops = run(data).hops.set_index(["frame", "node"])
    air = 96 / 1000 + 64 / 1000  # 0.16 s
    expected = {
        # node: (frame, enqueue, tx_start, tx_end, arrival, start, done)
        ("src", 0): (math.nan, math.nan, math.nan, 0.0, 0.0, 0.002),
        ("src", 1): (math.nan, math.nan, math.nan, 0.0, 0.0, 0.002),
        ("r1", 0): (0.002, 0.002, 0.002 + air, 0.012 + air, 0.012 + air, 0.013 + air),
        # frame 1 queues behind frame 0 at the source's transmitter for one airtime
        ("r1", 1): (0.002, 0.002 + air, 0.002 + 2 * air, 0.012 + 2 * air, 0.012 + 2 * air, 0.013 + 2 * air),
        ("dst", 0): (0.013 + air, 0.013 + air, 0.013 + 2 * air, 0.023 + 2 * air, 0.023 + 2 * air, 0.024 + 2 * air),
        ("dst", 1): (0.013 + 2 * air, 0.013 + 2 * air, 0.013 + 3 * air, 0.023 + 3 * air, 0.023 + 3 * air,
                     0.024 + 3 * air),
    }
    cols = ["enqueue_s", "tx_start_s", "tx_end_s", "arrival_s", "start_s", "done_s"]
    for (node, frame), times in expected.items():
        got = hops.loc[(frame, node), cols].to_numpy(dtype=float)
        assert got == pytest.approx(times, abs=1e-12, nan_ok=True), (node, frame)
    r1 = hops.xs("r1", level="node")
    assert r1["queue_wait_s"].to_list() == pytest.approx([0.0, air], abs=1e-12)
    assert r1["airtime_s"].to_list() == pytest.approx([air, air], abs=1e-12)
    assert r1["channel_symbols"].to_list() == [96, 96]


def test_noise_power_and_measured_snr_two_sided():
    n_img, shape = 64, (8, 8, 8)
    keys = keys_tensor([noise_key(1, 0, f, 0) for f in range(n_img)])
    x = power_normalize(torch.randn(n_img, *shape, dtype=torch.complex64,
                                    generator=torch.Generator().manual_seed(0)))
    assert (x.abs().square().flatten(1).mean(1) - 1).abs().max() < 1e-5
    for snr_db in (-5.0, 0.0, 10.0, 20.0):
        noise = awgn(x, snr_db, keys) - x
        sigma2 = 10 ** (-snr_db / 10)
        power = noise.abs().square().mean().item()
        # 32,768 complex samples: the relative std of the power estimate is 1/sqrt(N) = 0.55 %
        assert 0.98 * sigma2 < power < 1.02 * sigma2
        measured_snr = 10 * math.log10(x.abs().square().mean().item() / power)
        assert snr_db - 0.1 < measured_snr < snr_db + 0.1
        assert abs(noise.real.square().mean().item() - noise.imag.square().mean().item()) < 0.03 * sigma2


def test_noise_is_a_function_of_key_only():
    keys = keys_tensor([noise_key(5, 0, f, 1) for f in range(4)])
    full = complex_normal(keys, (32,), "cpu")
    single = complex_normal(keys[2:3], (32,), "cpu")
    assert torch.equal(full[2:3], single)
    other = complex_normal(keys_tensor([noise_key(5, 0, 2, 2)]), (32,), "cpu")
    assert not torch.equal(single, other)


@pytest.mark.parametrize("codec", ["uncoded", UNTRAINED_JSCC])
def test_unit_average_power_exact_per_image(codec):
    data = chain(["df"], size=16, count=3)
    data["flows"][0]["codec"] = codec
    sim = Simulation(parse_scenario(data))
    x, _ = sim.flows[0].codecs[0].encode(sim.flows[0].images)
    power = x.abs().square().flatten(1).mean(1)
    assert torch.allclose(power, torch.ones_like(power), atol=1e-5)


def test_uncoded_codec_round_trip_noiseless():
    S = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    codec = UncodedCodec()
    x, side = codec.encode(S)
    S_hat = codec.decode(x, side, torch.full((2,), 200.0), (3, 8, 8))
    assert torch.allclose(S_hat, S, atol=1e-5)


@pytest.mark.parametrize("n_q,b", [(4, "3/4"), (2, "1"), (4, "5/4"), (2, "3/2"), (2, "2")])
@pytest.mark.parametrize("codec", ["uncoded", UNTRAINED_JSCC])
def test_qf_bit_accounting(n_q, b, codec):
    data = chain(["qf"], size=16, count=2)
    data["nodes"][1]["qf"] = {"n_q": n_q, "b": b, "fit_images": 8}
    data["flows"][0]["codec"] = codec
    hops = run(data).hops
    dst = hops[hops["node"] == "dst"]
    k = 3 * 16 * 16 // 2 if codec == "uncoded" else 4 * 4 * 4  # c_out=8 -> 4 complex channels at H/4 x W/4
    expected_bpp = float(2 * k * Fraction(b) / (16 * 16))
    assert dst["bpp"].to_list() == pytest.approx([expected_bpp] * 2, rel=0, abs=1e-12)
    assert (dst["payload_bits"] == 2 * k * Fraction(b)).all()
    assert (dst["holds"] == "bits").all() and (dst["channel_symbols"] == 0).all()
    assert dst["psnr"].notna().all()


def test_same_seed_identical_records_and_other_seed_differs():
    data = chain(["df", "af"], size=16, count=3)
    a, b = run(data).hops, run(data).hops
    pd.testing.assert_frame_equal(a, b)
    c = run({**data, "seed": 8}).hops
    assert not a["psnr"].equals(c["psnr"])


@pytest.mark.parametrize("codec", ["uncoded", UNTRAINED_JSCC])
def test_max_batch_does_not_change_per_frame_metrics(codec):
    data = chain(["df", "qf"], size=16, count=6)
    data["nodes"][2]["qf"] = {"n_q": 2, "b": 1, "fit_images": 8}
    data["flows"][0]["codec"] = codec
    data["flows"][0]["workload"]["arrivals"] = {"kind": "all_at_once"}
    # Slow compute makes frames pile up at relays, so max_batch 16 really batches.
    data["compute"] = {"per_image_s": 1.0}
    one = run({**data, "max_batch": 1}).hops.sort_values(["frame", "hop"]).reset_index(drop=True)
    many = run({**data, "max_batch": 16}).hops.sort_values(["frame", "hop"]).reset_index(drop=True)
    assert many["done_s"].to_list() != one["done_s"].to_list()  # timing does depend on batching
    for col in ("psnr", "ms_ssim", "snr_eff_db"):
        assert many[col].to_numpy() == pytest.approx(one[col].to_numpy(), abs=1e-5, nan_ok=True)


def test_af_relay_tracks_effective_snr():
    hops = run(chain(["af"], snr_db=10.0, size=16, count=2)).hops
    dst = hops[hops["node"] == "dst"]
    s1 = s2 = 0.1  # sigma^2 at 10 dB
    # y2 = a (x + n1) + n2 with a^2 ~ 1 / (1 + s1): effective SNR ~ 1 / (s1 + s2 (1 + s1))
    expected = 10 * math.log10(1 / (s1 + s2 * (1 + s1)))
    assert dst["snr_eff_db"].to_numpy() == pytest.approx([expected] * 2, abs=0.15)


def test_hash_columns_unavailable_without_hasher():
    hops = run(chain(["df"])).hops
    assert (hops["hash_verdict"] == "unavailable").all()
    assert hops["hash_bit_agreement"].isna().all()


def test_periodic_and_poisson_arrivals():
    data = chain(["df"], count=4)
    data["flows"][0]["workload"]["arrivals"] = {"kind": "periodic", "interval_s": 0.5}
    frames = run(data).frames
    assert frames["created_s"].to_list() == pytest.approx([0.0, 0.5, 1.0, 1.5])
    data["flows"][0]["workload"]["arrivals"] = {"kind": "poisson", "rate_hz": 10.0}
    created = run(data).frames["created_s"]
    assert created.is_monotonic_increasing and created.iloc[-1] > 0


def test_two_flows_share_a_relay_and_queue():
    data = chain(["df"], count=3)
    data["nodes"].insert(1, {"id": "src2", "role": "source"})
    data["links"].append({"src": "src2", "dst": "r1", "snr_db": 10.0})
    data["flows"].append({"id": "f1", "source": "src2", "destination": "dst",
                          "workload": {"images": {"source": "skimage", "size": 8, "count": 3, "offset": 3}}})
    result = run(data)
    assert set(result.frames["flow"]) == {"f0", "f1"}
    out = result.hops[result.hops["node"] == "dst"]
    assert (out["queue_wait_s"] > 0).any()  # both flows contend for the r1 -> dst transmitter


@pytest.fixture
def random_hasher(tmp_path):
    """A DHD with random weights saved in a temporary zoo: exercises the hash path, not its quality."""
    from netsim.nn import build_model, save_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("dhd", backbone="small-cnn", n_bits=64, n_classes=10)
    return str(save_model(model, "dhd-random", {"note": "untrained, test only"}, directory=tmp_path))


def test_hash_checks_with_a_hasher(random_hasher):
    data = chain(["df"], snr_db=40.0, size=16, count=3)
    data["hash_check"] = {"model": random_hasher, "threshold_bits": 64}
    result = run(data)
    hops = result.hops[result.hops["hop"] > 0]
    assert hops["hash_bit_agreement"].between(0.0, 1.0).all()
    assert (hops["hash_bit_agreement"] > 0.9).all()  # 40 dB: the image barely changes
    assert (hops["hash_verdict"] == "match").all()
    assert (hops["side_info_bits"] == 64 + 64).all()  # hash sign bits + uncoded mean/scale
    assert "dhd-random" in result.manifest["weights_sha256"]


def test_drop_policy_stops_mismatching_frames(random_hasher):
    data = chain(["df"], snr_db=-10.0, size=16, count=4)
    data["hash_check"] = {"model": random_hasher, "threshold_bits": 0, "policy": "drop"}
    result = run(data)
    dropped = result.frames[result.frames["outcome"] == "dropped"]
    assert len(dropped) > 0 and (dropped["final_node"] == "r1").all()
    reached = set(result.hops.loc[result.hops["node"] == "dst", "frame"])
    assert reached.isdisjoint(dropped["frame"])
    assert len(result.frames) == 4  # every frame has an end-to-end row


def test_lpips_column_with_real_weights(lpips_npz):
    data = chain(["df"], snr_db=5.0, size=32, count=2, metrics=["psnr", "lpips"], lpips_weights=str(lpips_npz))
    result = run(data)
    hops = result.hops[result.hops["hop"] > 0]
    assert hops["lpips"].between(0.0, 1.5).all()
    assert result.manifest["lpips"]["source"] == str(lpips_npz)


def test_lpips_unavailable_is_nan_and_noted(tmp_path, monkeypatch):
    monkeypatch.delenv("NETSIM_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.warns(UserWarning, match="LPIPS"):
        result = run(chain(["df"], metrics=["psnr", "lpips"]))
    assert result.hops["lpips"].isna().all()
    assert any("LPIPS" in note for note in result.manifest["notes"])


def test_rayleigh_fading_statistics():
    import scipy.stats

    from netsim.phy.channel import rayleigh_gain

    keys = keys_tensor([noise_key(3, 0, f, 1) for f in range(20000)])
    gain2 = rayleigh_gain(keys, "cpu").abs().square().numpy()
    # |h|^2 ~ Exp(1): mean 1 (std of the mean 1/sqrt(N) = 0.7 %), and a KS test against Exp(1)
    assert 0.97 < gain2.mean() < 1.03
    assert scipy.stats.kstest(gain2, "expon").pvalue > 1e-3
    # the fading stream is not the noise stream of the same key
    noise = complex_normal(keys[:5], (1,), "cpu")[:, 0]
    assert not torch.allclose(noise, rayleigh_gain(keys[:5], "cpu"))


def test_rayleigh_link_with_and_without_csi():
    data = chain(["df"], snr_db=15.0, size=16, count=6)
    for link in data["links"]:
        link["channel"] = "rayleigh"
    with_csi = run(data).hops
    for link in data["links"]:
        link["csi"] = False
    without = run(data).hops
    r1 = with_csi[with_csi["node"] == "r1"]
    assert r1["snr_eff_db"].std() > 1.0  # the effective SNR varies frame by frame
    assert r1["psnr"].mean() > without.loc[without["node"] == "r1", "psnr"].mean()


def test_routing_fewest_hops_and_widest():
    from netsim.topology import check_routes

    # src -> a -> dst is short but has a 0 dB link; src -> b -> c -> dst is longer, 10 dB at worst
    data = chain([], count=1)
    data["nodes"][1:1] = [{"id": n, "role": "relay", "mode": "df"} for n in "abc"]
    data["links"] = [{"src": s, "dst": d, "snr_db": snr} for s, d, snr in
                     [("src", "a", 20), ("a", "dst", 0), ("src", "b", 12), ("b", "c", 10), ("c", "dst", 15)]]
    assert check_routes(parse_scenario(data)) == [["src", "a", "dst"]]
    data["flows"][0]["routing"] = "widest"
    assert check_routes(parse_scenario(data)) == [["src", "b", "c", "dst"]]


def _fork(radio: dict) -> dict:
    """One relay feeding two destinations: its two outgoing links share its radio or not."""
    data = chain(["df"], size=8, count=2, radio=radio, compute={"per_image_s": 0.0})
    data["nodes"].append({"id": "dst2", "role": "destination"})
    data["links"].append({"src": "r1", "dst": "dst2", "snr_db": 10.0})
    data["nodes"].insert(1, {"id": "src2", "role": "source"})
    data["links"].append({"src": "src2", "dst": "r1", "snr_db": 10.0})
    data["flows"].append({"id": "f1", "source": "src2", "destination": "dst2",
                          "workload": {"images": {"source": "skimage", "size": 8, "count": 2}}})
    for link in data["links"]:
        link.update(symbol_rate=1000.0, bit_rate=1000.0)
    return data


def test_one_radio_per_node_serialises_outgoing_links():
    per_link = run(_fork({"per": "link"})).hops
    per_node = run(_fork({"per": "node"})).hops
    out = lambda h: h[h["sender"] == "r1"].sort_values("tx_start_s")  # noqa: E731
    # per link: both links send at once; per node: r1's four frames go out one after another
    assert out(per_link)["queue_wait_s"].max() < out(per_node)["queue_wait_s"].max()
    starts, ends = out(per_node)["tx_start_s"].to_numpy(), out(per_node)["tx_end_s"].to_numpy()
    assert (starts[1:] >= ends[:-1] - 1e-12).all()


def test_half_duplex_relay_cannot_send_while_receiving():
    data = chain(["df"], size=8, count=2, compute={"per_image_s": 1e-3}, radio={"half_duplex": True})
    for link in data["links"]:
        link.update(symbol_rate=1000.0, bit_rate=1000.0, delay_s=0.01)
    hops = run(data).hops.set_index(["frame", "node"])
    air = 0.16
    # frame 0 is ready at r1 at 0.013 + air but r1 is receiving frame 1 until 0.002 + 2 air
    assert hops.loc[(0, "dst"), "tx_start_s"] == pytest.approx(0.002 + 2 * air)
    assert hops.loc[(0, "dst"), "queue_wait_s"] == pytest.approx(2 * air - (0.013 + air) + 0.002)


def test_queue_lengths_and_latency_percentiles():
    from netsim.results import latency_percentiles, queue_lengths

    data = chain(["df"], size=8, count=3)
    for link in data["links"]:
        link.update(symbol_rate=1000.0, bit_rate=1000.0)
    result = run(data)
    queues = queue_lengths(result.hops)
    src_radio = queues[(queues["node"] == "src") & (queues["queue"] == "radio")]
    # three frames handed to the source radio at once: 2 wait, then 1, then none
    assert src_radio["length"].to_list() == [2, 1, 0]
    assert (queues["length"] >= 0).all()
    table = latency_percentiles(result.frames)
    lat = result.frames["latency_s"]
    assert table.loc[0, "p50"] == pytest.approx(lat.median()) and table.loc[0, "max"] == pytest.approx(lat.max())


def test_af_qf_relays_skip_the_probe_when_nothing_is_measured():
    data = chain(["af", "qf"], size=8, count=2, metrics=[])
    data["nodes"][2]["qf"] = {"n_q": 2, "b": 1, "fit_images": 4}
    hops = run(data).hops
    relays = hops[hops["role"] == "relay"]
    assert relays["psnr"].isna().all() and (relays["hash_verdict"] == "unavailable").all()
    assert len(hops[hops["node"] == "dst"]) == 2


def test_retransmit_policy_resends_until_match_or_max_tries(random_hasher):
    data = chain(["df"], snr_db=-5.0, size=16, count=4)
    data["hash_check"] = {"model": random_hasher, "threshold_bits": 3, "policy": "retransmit", "max_tries": 3}
    result = run(data)
    hops, frames = result.hops, result.frames
    assert (frames["outcome"] == "delivered").all() and len(frames) == 4
    resent = hops[hops["retransmit"]]
    assert len(resent) > 0
    assert hops["attempt"].max() <= 2  # at most 3 transmissions per hop
    # a resent frame is received again on the same hop with the next attempt number
    for _, row in resent.iterrows():
        again = hops[(hops["frame"] == row["frame"]) & (hops["node"] == row["node"])
                     & (hops["attempt"] == row["attempt"] + 1)]
        assert len(again) == 1
    assert frames["retransmissions"].sum() == len(resent)
    # retries cost airtime: those frames arrive later than with the record policy
    data["hash_check"]["policy"] = "record"
    plain = run(data).frames.set_index("frame")
    retried = frames[frames["retransmissions"] > 0].set_index("frame")
    assert (retried["latency_s"] > plain.loc[retried.index, "latency_s"]).all()


def test_retransmit_never_needed_matches_record(random_hasher):
    data = chain(["df"], snr_db=20.0, size=16, count=3)
    data["hash_check"] = {"model": random_hasher, "threshold_bits": 64, "policy": "retransmit"}
    a = run(data).hops
    data["hash_check"]["policy"] = "record"
    pd.testing.assert_frame_equal(a, run(data).hops)
