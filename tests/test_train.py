"""Training pipeline: tiny DHD / DeepJSCC trainings, resume, config and NaN errors, pickle-free
checkpoints, QF codebooks, splits, augmentations, and the CLI in-process."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file

from netsim.cli import main
from netsim.nn.zoo import CheckpointError, load_model
from netsim.phy.quantizer import VectorQuantizer
from netsim.train import loops
from netsim.train.checkpoint import CHECKPOINT_JSON, read_checkpoint_meta
from netsim.train.datasets import (DataSpec, load_cifar10, load_data, load_split, make_split, save_split,
                                   skimage_dataset, strong_augment, weak_augment)
from netsim.train.loops import TrainingDiverged, fit_codebooks, train_dhd, train_jscc


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSIM_CACHE", str(tmp_path / "cache"))


SKI = dict(dataset="skimage", crop=32, progress=False)


def jscc(tmp_path, name="c", **kw):
    args = dict(name=name, size="small", c_out=8, epochs=2, batch_size=4, steps_per_epoch=2, lr=1e-3,
                checkpoint_dir=tmp_path / "runs" / name, models_dir=tmp_path / "zoo", device="cpu",
                progress=False, use_lpips=False)
    args.update(kw)
    return train_jscc(DataSpec(**SKI), **args)


# ------------------------------------------------------------------------------ data

def test_make_split_is_seeded_disjoint_and_round_trips(tmp_path):
    s = make_split(60000, {"train": 9450, "val": 1050, "test": 2100}, seed=0)
    assert [len(v) for v in s.values()] == [9450, 1050, 2100]
    assert not (set(s["train"]) & set(s["val"])) and not (set(s["val"]) & set(s["test"]))
    assert s == make_split(60000, {"train": 9450, "val": 1050, "test": 2100}, seed=0)
    assert s != make_split(60000, {"train": 9450, "val": 1050, "test": 2100}, seed=1)
    save_split(s, tmp_path / "split.json", seed=0)
    assert load_split(tmp_path / "split.json") == s
    with pytest.raises(ValueError):
        make_split(10, {"a": 6, "b": 5}, 0)


def test_augmentations_are_seeded_batched_and_in_range():
    S = skimage_dataset(32).batch(torch.arange(9))[0]
    for aug in (weak_augment, strong_augment):
        a = aug(S, torch.Generator().manual_seed(3))
        b = aug(S, torch.Generator().manual_seed(3))
        c = aug(S, torch.Generator().manual_seed(4))
        assert a.shape == S.shape and torch.equal(a, b) and not torch.equal(a, c)
        assert a.min() >= 0 and a.max() <= 1
    state = torch.random.get_rng_state()
    weak_augment(S, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


@pytest.fixture
def mini_cifar(shared, tmp_path) -> Path:
    """An ImageFolder tree of 20 CIFAR-10 JPEGs (train: 2 classes x 5, test: 2 x 5) in tmp."""
    src = shared / "data" / "cifar10"
    if not (src / "train").is_dir():
        pytest.skip("no CIFAR-10 copy in shared/data")
    root = tmp_path / "cifar"
    for split in ("train", "test"):
        for cls in ("airplane", "cat"):
            files = sorted((src / split / cls).iterdir())[:5]
            (root / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, root / split / cls / f.name)
    return root


def test_cifar_imagefolder_is_decoded_once_and_cached(mini_cifar, tmp_path):
    ds = load_cifar10(mini_cifar, "train", progress=False)
    assert ds.images.shape == (10, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0] * 5 + [1] * 5
    cached = list((tmp_path / "cache").glob("cifar10-train-*.npy"))
    assert len(cached) == 1
    again = load_cifar10(mini_cifar, "train", progress=False)
    assert torch.equal(ds.images, again.images)
    parts = load_data(DataSpec(path=str(mini_cifar), val_size=2, progress=False))
    assert [len(parts[p]) for p in ("train", "val", "test")] == [8, 2, 10]


def test_jscc_trains_on_twenty_cifar_images(mini_cifar, tmp_path):
    card = train_jscc(DataSpec(path=str(mini_cifar), val_size=2, progress=False), name="cif", size="small",
                      c_out=16, epochs=1, batch_size=4, steps_per_epoch=1, checkpoint_dir=tmp_path / "r",
                      models_dir=tmp_path / "zoo", device="cpu", progress=False, use_lpips=False)
    assert card["data"]["format"] == "jpg" and "JPEG" in card["data"]["note"]
    assert card["rho"] == pytest.approx(1 / 6)


# ------------------------------------------------------------------------------ training

def test_jscc_tiny_training_saves_a_loadable_card(tmp_path):
    card = jscc(tmp_path, relays=1)
    model, saved = load_model("c", directory=tmp_path / "zoo")
    assert saved["arch"] == "deepjscc-multihop" and saved["config"]["n_hops"] == 2
    for key in ("data", "snr_db", "loss", "epochs", "seed", "batch_size", "lr", "command", "metrics"):
        assert key in saved
    assert saved["epochs"] == 2 and len(saved["history"]) == 2
    assert 0 < saved["metrics"]["test_psnr"] < 60
    assert card["card_path"].endswith("c.json")


def test_dhd_tiny_training_reports_map(tmp_path):
    card = train_dhd(DataSpec(**SKI), name="h", n_bits=16, epochs=1, batch_size=9, steps_per_epoch=2,
                     checkpoint_dir=tmp_path / "runs" / "h", models_dir=tmp_path / "zoo", device="cpu",
                     progress=False)
    assert 0 <= card["metrics"]["map@1000"] <= 1
    model, saved = load_model("h", directory=tmp_path / "zoo")
    assert saved["config"]["n_classes"] == 9 and model(torch.rand(2, 3, 32, 32)).shape == (2, 16)


def test_mse_dhd_loss_uses_frozen_hasher_and_reports_agreement(tmp_path):
    train_dhd(DataSpec(**SKI), name="h", n_bits=16, epochs=1, batch_size=9, steps_per_epoch=1,
              checkpoint_dir=tmp_path / "runs" / "h", models_dir=tmp_path / "zoo", device="cpu", progress=False)
    sha = json.loads((tmp_path / "zoo" / "h.json").read_text())["sha256"]
    card = jscc(tmp_path, loss="mse+dhd", hasher="h", epochs=1)
    assert card["hasher"] == {"name": "h", "sha256": sha} and card["lambda"] == 0.06
    assert 0 <= card["metrics"]["test_hash_bit_agreement"] <= 1
    assert json.loads((tmp_path / "zoo" / "h.json").read_text())["sha256"] == sha  # hasher untouched


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    jscc(tmp_path, name="full", epochs=2)
    jscc(tmp_path, name="part", epochs=1)
    assert read_checkpoint_meta(tmp_path / "runs" / "part")["epoch"] == 1
    jscc(tmp_path, name="part", epochs=2, resume=True, checkpoint_dir=tmp_path / "runs" / "part")
    a = load_file(tmp_path / "zoo" / "full.safetensors")
    b = load_file(tmp_path / "zoo" / "part.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = json.loads((tmp_path / "zoo" / "full.json").read_text())
    cb = json.loads((tmp_path / "zoo" / "part.json").read_text())
    assert [h["loss"] for h in ca["history"]] == [h["loss"] for h in cb["history"]]
    assert ca["metrics"] == cb["metrics"]


def test_checkpoint_with_another_config_is_refused(tmp_path):
    jscc(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="lr=0.001 in the checkpoint, 0.01 requested"):
        jscc(tmp_path, epochs=2, resume=True, lr=1e-2)
    with pytest.raises(CheckpointError, match="already there"):
        jscc(tmp_path, epochs=2)  # no --resume: never overwrite silently
    with pytest.raises(CheckpointError, match="no checkpoint"):
        jscc(tmp_path, name="other", epochs=1, resume=True)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    jscc(tmp_path, epochs=1)

    def nan_loss(name, hasher=None, lam=0.06):
        return lambda S, S_hat: F.mse_loss(S_hat, S) * float("nan")

    monkeypatch.setattr(loops, "jscc_loss", nan_loss)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 1"):
        jscc(tmp_path, epochs=3, resume=True)
    assert read_checkpoint_meta(tmp_path / "runs" / "c")["epoch"] == 1


def test_huge_learning_rate_is_reported_not_saved(tmp_path):
    with pytest.raises(TrainingDiverged, match="loss is (nan|inf)"):
        jscc(tmp_path, lr=1e30, epochs=3, steps_per_epoch=3)
    assert not (tmp_path / "zoo" / "c.json").exists()


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_pickle_checkpoint_is_rejected_without_running(tmp_path):
    import hashlib

    jscc(tmp_path, epochs=1)
    d = tmp_path / "runs" / "c"
    marker = tmp_path / "pwned"
    meta = json.loads((d / CHECKPOINT_JSON).read_text())
    weights = d / meta["weights"]
    weights.write_bytes(pickle.dumps(_Evil(marker)))  # a pickle under the checkpoint's name
    with pytest.raises(CheckpointError, match="sha256"):
        jscc(tmp_path, epochs=2, resume=True)
    meta["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # forge the digest too
    (d / CHECKPOINT_JSON).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        jscc(tmp_path, epochs=2, resume=True)
    (d / CHECKPOINT_JSON).write_bytes(pickle.dumps(_Evil(marker)))  # and the JSON itself
    with pytest.raises(CheckpointError, match="not a netsim checkpoint"):
        jscc(tmp_path, epochs=2, resume=True)
    assert not marker.exists()


def test_fit_codebooks_writes_loadable_codebooks(tmp_path):
    jscc(tmp_path, epochs=1, c_out=16)
    paths = fit_codebooks("c", DataSpec(**SKI), 10.0, [(2, 1), (4, "3/4")], models_dir=tmp_path / "zoo",
                          device="cpu", progress=False)
    assert [p.name for p in paths] == ["c-qf-2x1.safetensors", "c-qf-4x0.75.safetensors"]
    vq = VectorQuantizer.load(paths[1])
    assert (vq.n_q, vq.bits_per_block) == (4, 3)
    card = json.loads(paths[1].with_suffix(".json").read_text())
    assert card["arch"] == "qf-codebook" and card["metrics"]["bpp"] == pytest.approx(0.75)
    y = torch.randn(2, 8, 8, 8, dtype=torch.complex64)
    assert vq.dequantize(vq.quantize(y), (8, 8, 8)).shape == y.shape


# ------------------------------------------------------------------------------ CLI

def test_cli_train_eval_round_trip(tmp_path):
    r = CliRunner()
    common = ["--dataset", "skimage", "--models-dir", str(tmp_path / "zoo"), "-q"]
    res = r.invoke(main, ["train", "jscc", *common, "--name", "cli", "--size", "small", "--epochs", "1",
                          "--batch-size", "4", "--steps-per-epoch", "1",
                          "--checkpoint-dir", str(tmp_path / "ck")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "zoo" / "cli.json").read_text())
    assert "train jscc" in card["command"] and "--c-out 16" in card["command"]
    res = r.invoke(main, ["eval", "codec", "cli", *common, "--snrs", "0,10", "--no-lpips", "-o",
                          str(tmp_path / "ev.csv")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "ev.csv").read_text().splitlines()
    assert len(lines) == 5 and "uncoded" in lines[2]
    res = r.invoke(main, ["train", "dhd", *common, "--name", "hh", "--bits", "8", "--epochs", "1",
                          "--batch-size", "9", "--steps-per-epoch", "1", "--checkpoint-dir", str(tmp_path / "ck2")])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["eval", "hasher", "hh", *common])
    assert res.exit_code == 0 and "map@1000" in json.loads(res.output.strip().splitlines()[-1])
    res = r.invoke(main, ["train", "codebook", *common, "--model", "cli", "--pair", "2x1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "zoo" / "cli-qf-2x1.safetensors").is_file()


@pytest.mark.parametrize("args, message", [
    (["train", "jscc", "--name", "x", "--data", "/nonexistent/cifar"], "CIFAR-10 folder not found"),
    (["train", "jscc", "--name", "x", "--dataset", "folder"], "needs --data"),
    (["train", "jscc", "--name", "x", "--dataset", "skimage", "--loss", "mse+dhd"], "needs a DHD hasher"),
    (["train", "jscc", "--name", "x", "--dataset", "skimage", "--c-out", "7"], "must be even"),
    (["eval", "codec", "missing", "--dataset", "skimage"], "not found"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("NETSIM_CIFAR10", raising=False)
    res = CliRunner().invoke(main, [*args, "--models-dir", str(tmp_path / "zoo"), "-q"])
    assert res.exit_code == 2, res.output
    err = res.output.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1] and "Traceback" not in res.output


def test_jscc_init_starts_from_a_zoo_codec(tmp_path):
    first = jscc(tmp_path, name="a", relays=1)
    # lr so small that the second run cannot move far from where it starts
    jscc(tmp_path, name="b", relays=1, init=first["card_path"], lr=1e-9, epochs=1, steps_per_epoch=1)
    a, _ = load_model("a", directory=tmp_path / "zoo")
    b, card = load_model("b", directory=tmp_path / "zoo")
    assert card["init"]["name"] == "a"
    for (key, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(wa, wb, atol=1e-6), key
    with pytest.raises(ValueError, match="cannot start"):
        jscc(tmp_path, name="c2", relays=2, init=first["card_path"])
