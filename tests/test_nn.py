"""netsim.nn (registry, DeepJSCC, DHD, zoo) and netsim.train.losses, on tiny CPU inputs."""

import hashlib
import json
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from netsim.nn import (DHD, CheckpointError, DeepJSCC, DeepJSCCMultiHop, ModelNotFound,
                       UnknownModelError, build_model, list_models, load_model,
                       registered_models, save_model)
from netsim.phy.channel import awgn_sampled as _awgn
from netsim.train.losses import (bce_q_loss, dhd_loss, hash_proxy_loss, jscc_dhd_loss, jscc_loss,
                                 sdh_loss)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def images(b=2, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- registry

def test_registry_names_and_unknown():
    assert {"deepjscc", "deepjscc-multihop", "dhd"} <= set(registered_models())
    with pytest.raises(UnknownModelError) as e:
        build_model("no-such-model")
    assert isinstance(e.value, KeyError)
    msg = str(e.value)
    assert "\n" not in msg and "no-such-model" in msg and "deepjscc-multihop" in msg


@pytest.mark.parametrize("arch,config", [
    ("deepjscc", {"c_out": 8}),
    ("deepjscc-multihop", {"n_hops": 2, "c_out": 8}),
    ("dhd", {"n_bits": 16, "n_classes": 5}),
])
def test_config_rebuilds_model(arch, config):
    m = build_model(arch, **config)
    assert m.arch == arch
    cfg = json.loads(json.dumps(m.config))
    m2 = build_model(arch, **cfg)
    assert m2.config == m.config
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in m2.state_dict().items()}


# ---------------------------------------------------------------- DeepJSCC

@pytest.mark.parametrize("h,w", [(32, 32), (48, 64)])
def test_small_shapes(h, w):
    m = DeepJSCC(c_out=12, size="small")
    assert 100_000 <= sum(p.numel() for p in m.parameters()) <= 300_000
    S = images(2, h, w)
    x = m.encode(S)
    assert x.dtype == torch.complex64 and x.shape == (2, *m.symbol_shape(h, w)) == (2, 6, h // 4, w // 4)
    S_hat = m(S, 5.0, generator=gen())
    assert S_hat.shape == S.shape and S_hat.min() >= 0 and S_hat.max() <= 1
    assert m.decode(x, snr_db=3.0).shape == S.shape


def test_size_not_divisible_by_4_and_bad_config():
    m = DeepJSCC(c_out=8)
    with pytest.raises(ValueError):
        m.symbol_shape(30, 32)
    with pytest.raises(ValueError):
        m.encode(images(1, 30, 32))
    with pytest.raises(ValueError):
        DeepJSCC(c_out=7)
    with pytest.raises(ValueError):
        DeepJSCC(size="huge")


def test_paper_size_rho_and_shapes():
    m = DeepJSCC(c_out=32, size="paper")
    assert m.rho == pytest.approx(1 / 3)
    assert m.symbol_shape(32, 32) == (16, 8, 8)
    assert math.prod(m.symbol_shape(256, 256)) == 65_536 == m.rho * 3 * 256 * 256
    with torch.no_grad():
        x = m.encode(images(1))
        S_hat = m.decode(x)
    assert x.shape == (1, 16, 8, 8) and S_hat.shape == (1, 3, 32, 32)
    assert 0 <= S_hat.min() and S_hat.max() <= 1


def test_power_normalisation_exact_per_image():
    m = DeepJSCC(c_out=8)
    S = images(3)
    S[1] *= 0.01  # very different raw encoder power per image
    x = m.encode(S)
    k = math.prod(x.shape[1:])
    power = (x.abs() ** 2).sum(dim=(1, 2, 3)) / k
    torch.testing.assert_close(power, torch.ones(3), atol=1e-5, rtol=0)


def test_awgn_noise_power_and_determinism():
    x = torch.zeros(4, 16, 32, 32, dtype=torch.complex64)
    n = _awgn(x, 10.0, gen(1))  # sigma^2 = 0.1, real and imaginary each 0.05
    assert n.real.var().item() == pytest.approx(0.05, rel=0.03)
    assert n.imag.var().item() == pytest.approx(0.05, rel=0.03)
    assert (n.abs() ** 2).mean().item() == pytest.approx(0.1, rel=0.03)
    torch.testing.assert_close(n, _awgn(x, 10.0, gen(1)), rtol=0, atol=0)
    per_image = _awgn(x, torch.tensor([0.0, 0.0, 20.0, 20.0]), gen(2))
    p = (per_image.abs() ** 2).mean(dim=(1, 2, 3))
    assert p[0].item() == pytest.approx(1.0, rel=0.05) and p[3].item() == pytest.approx(0.01, rel=0.05)


def test_forward_uses_generator():
    m = DeepJSCC(c_out=8)
    S = images()
    a, b, c = m(S, 0.0, gen(1)), m(S, 0.0, gen(1)), m(S, 0.0, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- multi-hop

def test_multihop_shapes_and_distinct_pairs():
    m = DeepJSCCMultiHop(n_hops=3, c_out=8)
    S = images()
    outs = m.forward_all(S, 5.0, generator=gen())
    assert len(outs) == 3 and all(o.shape == S.shape for o in outs)
    torch.testing.assert_close(m(S, 5.0, generator=gen()), outs[-1], rtol=0, atol=0)
    pairs = [m.pair(i) for i in range(3)]
    assert all(isinstance(p, DeepJSCC) for p in pairs)
    assert len({id(p) for p in pairs}) == 3
    w = [p.encoder[0].weight for p in pairs]
    assert w[0].data_ptr() != w[1].data_ptr() and not torch.equal(w[0], w[1])
    with pytest.raises(IndexError):
        m.pair(3)
    assert len(m.forward_all(S, [0.0, 5.0, 10.0], gen())) == 3
    with pytest.raises(ValueError):
        m.forward_all(S, [0.0, 5.0], gen())


def test_multihop_is_chained_pairs():
    m = DeepJSCCMultiHop(n_hops=2, c_out=8)
    S = images()
    g = gen(3)
    manual = m.pair(1)(m.pair(0)(S, 2.0, g), 2.0, g)
    torch.testing.assert_close(m(S, 2.0, gen(3)), manual, rtol=0, atol=0)


# ---------------------------------------------------------------- DHD

def test_dhd_small_cnn_output():
    m = DHD(backbone="small-cnn", n_bits=64, n_classes=10)
    h = m(images(4))
    assert h.shape == (4, 64) and h.abs().max() < 1
    assert m.P.shape == (10, 64) and m.temperature == 0.2
    assert "mean" not in m.state_dict()  # normalisation constants are not weights


def test_dhd_resnet18_and_bad_backbone():
    m = DHD(backbone="resnet18", n_bits=16, n_classes=3).eval()
    with torch.no_grad():
        h = m(images(2))
    assert h.shape == (2, 16) and h.abs().max() < 1 and m.n_features == 512
    with pytest.raises(ValueError):
        DHD(backbone="vgg")


# ---------------------------------------------------------------- losses

def test_sdh_loss_values():
    h = torch.tensor([[0.5, -0.2, 0.9], [0.1, 0.3, -0.7]])
    assert sdh_loss(h, h).item() == pytest.approx(0.0, abs=1e-6)
    assert sdh_loss(h, -h).item() == pytest.approx(2.0, abs=1e-6)
    assert sdh_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)


def test_hash_proxy_loss_matches_cross_entropy():
    g = gen(4)
    h, P = torch.randn(5, 8, generator=g).tanh(), torch.randn(3, 8, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0])
    logits = F.normalize(h, dim=1) @ F.normalize(P, dim=1).T / 0.2
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(hash_proxy_loss(h, P, labels, 0.2), expected)
    multi = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0]])
    logp = F.log_softmax(logits, dim=1)
    manual = -torch.stack([(multi[i] * logp[i]).sum() / multi[i].sum() for i in range(5)]).mean()
    torch.testing.assert_close(hash_proxy_loss(h, P, multi, 0.2), manual)


def test_bce_q_loss_decreases_towards_binary():
    values = [bce_q_loss(torch.full((2, 4), v)).item() for v in (0.1, 0.4, 0.7, 0.95, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 1e-3  # floor from g- = exp(-8) at h = 1
    assert bce_q_loss(torch.full((2, 4), -0.4)).item() == pytest.approx(values[1])
    # hand value at h = 0.5, sigma_g = 0.5: g+ = exp(-0.5), g- = exp(-4.5)
    gp, gn = math.exp(-0.5), math.exp(-4.5)
    manual = -math.log2(gp) - math.log2(1 - gn)
    assert bce_q_loss(torch.tensor([[0.5]])).item() == pytest.approx(manual, rel=1e-5)


def test_dhd_loss_combines_terms_and_detaches_teacher():
    g = gen(5)
    h_T = torch.randn(4, 8, generator=g).tanh().requires_grad_()
    h_S = torch.randn(4, 8, generator=g).tanh().requires_grad_()
    P, labels = torch.randn(3, 8, generator=g), torch.tensor([0, 1, 2, 0])
    total = dhd_loss(h_T, h_S, P, labels, lambda_sdh=0.3, lambda_bce=0.7)
    parts = hash_proxy_loss(h_T, P, labels) + 0.3 * sdh_loss(h_T, h_S) + 0.7 * bce_q_loss(h_T)
    torch.testing.assert_close(total, parts)
    only_sdh = dhd_loss(h_T, h_S, P, labels, lambda_sdh=1.0, lambda_bce=0.0) - hash_proxy_loss(h_T, P, labels)
    gT, gS = torch.autograd.grad(only_sdh, [h_T, h_S], allow_unused=True)
    assert gS.abs().sum() > 0 and (gT is None or gT.abs().sum() < 1e-6)


def test_jscc_dhd_loss_frozen_hasher_gradient_flows():
    hasher = DHD(n_bits=16, n_classes=3).train()
    S = images(2)
    S_hat = (S + 0.1 * torch.randn(S.shape, generator=gen(6))).clamp(0, 1).requires_grad_()
    loss = jscc_dhd_loss(S, S_hat, hasher, lam=0.06)
    loss.backward()
    assert not hasher.training and not any(p.requires_grad for p in hasher.parameters())
    assert all(p.grad is None for p in hasher.parameters())
    assert S_hat.grad is not None and S_hat.grad.abs().sum() > 0
    with torch.no_grad():
        expected = F.mse_loss(S_hat, S) + 0.06 * sdh_loss(hasher(S), hasher(S_hat))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert jscc_dhd_loss(S, S.clone(), hasher).item() == pytest.approx(0.0, abs=1e-6)


def test_jscc_loss_by_name():
    S, S_hat = images(2, seed=1), images(2, seed=2)
    assert jscc_loss("mse")(S, S_hat).item() == pytest.approx(F.mse_loss(S_hat, S).item())
    hasher = DHD(n_bits=16, n_classes=3)
    fn = jscc_loss("mse+dhd", hasher=hasher, lam=0.5)
    assert fn(S, S_hat).item() == pytest.approx(jscc_dhd_loss(S, S_hat, hasher, 0.5).item(), rel=1e-6)
    with pytest.raises(ValueError):
        jscc_loss("mse+dhd")
    with pytest.raises(ValueError, match="mse\\+dhd"):
        jscc_loss("lpips")


# ---------------------------------------------------------------- zoo

def test_save_load_round_trip(tmp_path, monkeypatch):
    m = DeepJSCCMultiHop(n_hops=2, c_out=8)
    card_path = save_model(m, "mh-test", {"snr_db": 5.0, "loss": "mse", "epochs": 1}, directory=tmp_path)
    assert card_path == tmp_path / "mh-test.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mh-test.json", "mh-test.safetensors"]
    card = json.loads(card_path.read_text())
    assert card["arch"] == "deepjscc-multihop" and card["config"] == m.config and len(card["sha256"]) == 64
    S = images()
    expected = m.eval()(S, 5.0, gen())
    for ref in (card_path, tmp_path / "mh-test.safetensors", str(card_path)):
        m2, card2 = load_model(ref)
        assert not m2.training and card2 == card
        torch.testing.assert_close(m2(S, 5.0, gen()), expected, rtol=0, atol=0)
    monkeypatch.setenv("NETSIM_MODELS", str(tmp_path))
    assert load_model("mh-test")[1]["snr_db"] == 5.0
    assert [c["name"] for c in list_models()] == ["mh-test"]
    with pytest.raises(ModelNotFound, match=str(tmp_path)):
        load_model("absent")
    with pytest.raises(ValueError):
        save_model(m, "bad", {"sha256": "x"}, directory=tmp_path)


def test_sha_mismatch_raises(tmp_path):
    save_model(DeepJSCC(c_out=8), "m", {}, directory=tmp_path)
    f = tmp_path / "m.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="m.safetensors.*sha256"):
        load_model(tmp_path / "m.json")


def test_shape_mismatch_raises(tmp_path):
    card_path = save_model(DeepJSCC(c_out=8), "m", {}, directory=tmp_path)
    card = json.loads(card_path.read_text())
    card["config"]["c_out"] = 16  # weights (sha still valid) no longer fit the card
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as e:
        load_model(card_path)
    msg = str(e.value)
    assert "m.safetensors" in msg and "decoder.0.weight" in msg and "shape" in msg and "\n" not in msg


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_rejected_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.safetensors"
    f.write_bytes(pickle.dumps({"encoder.0.weight": _Exploit(marker)}))
    card = {"name": "evil", "arch": "deepjscc", "config": {"c_out": 8},
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}  # sha matches: reach the parser
    (tmp_path / "evil.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        load_model(f)
    assert not marker.exists()


def test_half_precision_weights_load_back_as_float32(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("dhd", backbone="small-cnn", n_bits=64, n_classes=10).eval()
    full = save_model(model, "full", directory=tmp_path)
    half = save_model(model, "half", directory=tmp_path, half=True)
    assert half.with_suffix(".safetensors").stat().st_size < 0.6 * full.with_suffix(".safetensors").stat().st_size
    loaded, card = load_model("half", directory=tmp_path)
    assert card["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)
    # float16 tensors under a card that does not declare them are a mismatch, not a silent cast
    data = json.loads(half.read_text())
    del data["weights_dtype"]
    half.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="dtype"):
        load_model("half", directory=tmp_path)


def test_list_models_skips_json_that_is_not_a_card(tmp_path):
    from click.testing import CliRunner

    from netsim.cli import main

    model = build_model("dhd", backbone="small-cnn", n_bits=8, n_classes=2)
    save_model(model, "h", directory=tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"meta": {}, "indices": {"train": [0]}}))
    assert [c["name"] for c in list_models(tmp_path)] == ["h"]
    (tmp_path / "broken.json").write_text(json.dumps({"arch": "dhd"}))
    result = CliRunner().invoke(main, ["models", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "broken.json" in result.output
