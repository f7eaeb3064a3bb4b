"""``netsim train {dhd,jscc,codebook}`` and ``netsim eval {codec,hasher}``: thin click wrappers
around ``netsim.train.loops`` and ``netsim.train.evaluate``. Heavy imports stay inside the
command functions so that ``netsim --help`` stays fast."""
from __future__ import annotations

import functools
import json
import shlex
import sys

import click

EXIT_BAD_INPUT = 2
_BOOKKEEPING = {"resume", "quiet", "device", "workers", "checkpoint_dir", "output", "threads"}


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _command_line(ctx: click.Context) -> str:
    """The command with every training option spelled out (defaults included), for model cards."""
    words = ctx.command_path.split()
    words += [str(ctx.params[p.name]) for p in ctx.command.params if isinstance(p, click.Argument)]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in _BOOKKEEPING:
            continue
        value = ctx.params.get(param.name)
        if value is None or value == () or (param.is_flag and not value):
            continue
        opt = max(param.opts, key=len)
        if param.is_flag:
            words.append(opt)
        elif isinstance(value, tuple):
            for v in value:
                words += [opt, str(v)]
        else:
            words += [opt, str(value)]
    return shlex.join(words)


def _errors(fn):
    """Turn the library's input errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from netsim.data import DataError
        from netsim.nn.registry import UnknownModelError
        from netsim.nn.zoo import CheckpointError, ModelNotFound
        from netsim.train.loops import TrainingDiverged

        try:
            return fn(*args, **kwargs)
        except (DataError, CheckpointError, ModelNotFound, TrainingDiverged, UnknownModelError,
                ValueError) as err:
            _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:
            _fail("interrupted; the last completed epoch's checkpoint is kept (continue with --resume)")

    return wrapper


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available on this machine")
    return device


def data_options(fn):
    """--data, --dataset, --limit, --val-size, --split, --split-seed, --crop, --test-data, --workers."""
    opts = [
        click.option("--data", "data_path", envvar="NETSIM_CIFAR10", type=click.Path(),
                     help="dataset root: CIFAR-10 (ImageFolder tree or torchvision cifar-10-batches-py) "
                          "or a folder of images [env NETSIM_CIFAR10]"),
        click.option("--dataset", type=click.Choice(["cifar10", "folder", "skimage"]), default="cifar10",
                     show_default=True, help="cifar10, a folder of images (random crops), or the "
                                             "scikit-image photos"),
        click.option("--limit", type=click.IntRange(1), help="use at most N images per part (smoke tests)"),
        click.option("--val-size", type=click.IntRange(0), default=1000, show_default=True,
                     help="training images held out for validation (0: validate on the test split)"),
        click.option("--split", "split_file", type=click.Path(dir_okay=False),
                     help="JSON split file (train/val/test index lists over CIFAR train+test)"),
        click.option("--split-seed", type=int, default=0, show_default=True, help="seed of the held-out split"),
        click.option("--crop", type=click.IntRange(4), default=32, show_default=True,
                     help="crop size for folder / skimage images"),
        click.option("--test-data", type=click.Path(file_okay=False),
                     help="folder dataset: separate folder of test images"),
        click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
                     help="threads decoding images (0: all cores for the one-off CIFAR decode)"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _spec(p: dict, quiet: bool):
    from netsim.train.datasets import DataSpec

    if p["dataset"] != "skimage" and not p["data_path"]:
        _fail(f"--dataset {p['dataset']} needs --data PATH (or $NETSIM_CIFAR10)")
    return DataSpec(dataset=p["dataset"], path=p["data_path"], val_size=p["val_size"], split=p["split_file"],
                    split_seed=p["split_seed"], limit=p["limit"], crop=p["crop"], test_path=p["test_data"],
                    workers=p["workers"], progress=not quiet)


def run_options(fn):
    """Options shared by the training commands."""
    opts = [
        click.option("--name", required=True, help="zoo name of the trained model"),
        click.option("--epochs", type=click.IntRange(1), default=100, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True),
        click.option("--steps-per-epoch", type=click.IntRange(1), help="cap batches per epoch (smoke tests)"),
        click.option("--models-dir", type=click.Path(file_okay=False), help="zoo directory (default: models/)"),
        click.option("--checkpoint-dir", type=click.Path(file_okay=False),
                     help="checkpoint directory (default: runs/train/NAME)"),
        click.option("--resume", is_flag=True, help="continue from the checkpoint in --checkpoint-dir"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N"),
        click.option("--threads", type=click.IntRange(1),
                     help="torch CPU threads (default: all cores; use 1 per run when runs share the CPU)"),
        click.option("--quiet", "-q", is_flag=True, help="no progress bars"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _summary(card: dict) -> None:
    metrics = card.get("metrics") or {}
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    click.echo(f"saved {card.get('card_path')}: {shown}")


@click.group("train", context_settings={"help_option_names": ["-h", "--help"]})
def train_group() -> None:
    """Train DHD hashers, DeepJSCC codecs and QF codebooks into the model zoo."""


@train_group.command("split")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--train", "n_train", type=click.IntRange(1), default=9450, show_default=True,
              help="training images, drawn from the CIFAR-10 training set")
@click.option("--val", "n_val", type=click.IntRange(0), default=1050, show_default=True,
              help="validation images, drawn from the CIFAR-10 training set")
@click.option("--test", "n_test", type=click.IntRange(0), default=2100, show_default=True,
              help="test images, drawn from the CIFAR-10 test set")
@click.option("--seed", type=int, default=0, show_default=True)
@_errors
def train_split_cmd(output: str, n_train: int, n_val: int, n_test: int, seed: int) -> None:
    """Write a CIFAR-10 split file for --split (defaults: the multi-hop paper's 9,450 / 1,050 / 2,100).

    Train and validation come from the 50,000 training images, test from the 10,000 test images
    (indices 50,000 onwards), so a hasher trained on the CIFAR-10 training set never saw a test
    query."""
    from netsim.train.datasets import make_split, save_split

    if n_train + n_val > 50_000 or n_test > 10_000:
        _fail(f"CIFAR-10 has 50,000 training and 10,000 test images; asked for "
              f"{n_train} + {n_val} and {n_test}")
    split = make_split(50_000, {"train": n_train, "val": n_val}, seed)
    split["test"] = [50_000 + i for i in make_split(10_000, {"test": n_test}, seed)["test"]]
    save_split(split, output, dataset="cifar10", seed=seed, command=_command_line(click.get_current_context()),
               sizes={k: len(v) for k, v in split.items()}, test_from="cifar10 test set (indices 50000+)")
    click.echo(f"wrote {output}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))


@train_group.command("dhd")
@data_options
@run_options
@click.option("--backbone", type=click.Choice(["small-cnn", "resnet18", "resnet50"]), default="small-cnn",
              show_default=True)
@click.option("--bits", "n_bits", type=click.IntRange(1), default=64, show_default=True, help="hash length N_H")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate (1e-3 suits the small CNN trained from scratch)")
@click.option("--lr-gamma", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="learning rate factor per epoch")
@click.option("--topk", type=click.IntRange(1), default=1000, show_default=True, help="mAP@k of the card")
@_errors
def train_dhd_cmd(**p) -> None:
    """Train a DHD hasher (weak-augmentation teacher, strong-augmentation student); the card gets
    retrieval mAP@1000 (test queries against the training images)."""
    from netsim.train.loops import train_dhd

    ctx = click.get_current_context()
    _threads(p["threads"])
    card = train_dhd(
        _spec(p, p["quiet"]), name=p["name"], backbone=p["backbone"], n_bits=p["n_bits"],
        temperature=p["temperature"], epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
        lr_gamma=p["lr_gamma"], weight_decay=p["weight_decay"], seed=p["seed"],
        steps_per_epoch=p["steps_per_epoch"], checkpoint_dir=p["checkpoint_dir"], resume=p["resume"],
        models_dir=p["models_dir"], device=_device(p["device"]), progress=not p["quiet"],
        command=_command_line(ctx), topk=p["topk"])
    _summary(card)


@train_group.command("jscc")
@data_options
@run_options
@click.option("--snr", "snr_db", type=float, default=10.0, show_default=True, help="training SNR in dB (every hop)")
@click.option("--relays", type=click.IntRange(0), default=0, show_default=True,
              help="r relays: r+1 DF hops trained end to end")
@click.option("--size", type=click.Choice(["small", "base", "paper"]), default="base", show_default=True)
@click.option("--c-out", type=click.IntRange(2), default=16, show_default=True,
              help="bottleneck channels (rho = c_out/96: 16 -> 1/6, 32 -> 1/3)")
@click.option("--loss", type=click.Choice(["mse", "mse+dhd"]), default="mse", show_default=True)
@click.option("--lam", type=click.FloatRange(0), default=0.06, show_default=True, help="lambda of mse+dhd")
@click.option("--hasher", help="zoo name of the frozen DHD hasher (loss mse+dhd; also measured)")
@click.option("--init", help="start from this zoo codec (same architecture) instead of random weights")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate (paper: 1e-4)")
@click.option("--lr-gamma", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="learning rate factor per epoch (paper: 0.95)")
@_errors
def train_jscc_cmd(**p) -> None:
    """Train a DeepJSCC codec (r = 0) or a DF multi-hop codec (r >= 1) at one SNR."""
    from netsim.train.loops import train_jscc

    ctx = click.get_current_context()
    _threads(p["threads"])
    if p["c_out"] % 2:
        _fail(f"--c-out must be even, got {p['c_out']}")
    card = train_jscc(
        _spec(p, p["quiet"]), name=p["name"], snr_db=p["snr_db"], relays=p["relays"], size=p["size"],
        c_out=p["c_out"], loss=p["loss"], lam=p["lam"], hasher=p["hasher"], epochs=p["epochs"],
        batch_size=p["batch_size"], lr=p["lr"], lr_gamma=p["lr_gamma"], weight_decay=p["weight_decay"],
        seed=p["seed"], steps_per_epoch=p["steps_per_epoch"], checkpoint_dir=p["checkpoint_dir"],
        resume=p["resume"], models_dir=p["models_dir"], device=_device(p["device"]),
        progress=not p["quiet"], command=_command_line(ctx), init=p["init"])
    _summary(card)


def _parse_pair(text: str) -> tuple[int, str]:
    try:
        n_q, b = text.lower().split("x", 1)
        from netsim.phy.quantizer import bits_per_block

        bits_per_block(int(n_q), b)
        return int(n_q), b
    except ValueError as err:
        raise click.BadParameter(f"{text!r}: expected N_QxB such as 2x1 or 4x3/4 ({err})") from None


@train_group.command("codebook")
@data_options
@click.option("--model", "model_name", required=True, help="zoo name of the DeepJSCC codec")
@click.option("--snr", "snr_db", type=float, default=10.0, show_default=True, help="SNR of the channel outputs")
@click.option("--pair", "pairs", multiple=True, help="N_QxB, repeatable (default: the paper's five pairs)")
@click.option("--name", help="codebook name prefix (default: the codec's name)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-samples", type=click.IntRange(1), default=200_000, show_default=True,
              help="blocks used by K-means")
@click.option("--models-dir", type=click.Path(file_okay=False), help="zoo directory (default: models/)")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@_errors
def train_codebook_cmd(**p) -> None:
    """Fit QF K-means codebooks on channel outputs of the validation images."""
    from netsim.train.loops import fit_codebooks

    ctx = click.get_current_context()
    pairs = [_parse_pair(t) for t in p["pairs"]] or None
    paths = fit_codebooks(p["model_name"], _spec(p, p["quiet"]), p["snr_db"], pairs, name=p["name"],
                          seed=p["seed"], models_dir=p["models_dir"], device=_device(p["device"]),
                          max_samples=p["max_samples"], progress=not p["quiet"], command=_command_line(ctx))
    for path in paths:
        click.echo(str(path))


@click.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Measure zoo models: codec quality across SNRs, hasher retrieval mAP."""


def _write_table(df, path: str) -> None:
    """An evaluation table as CSV, or JSON records when the name ends in .json (atomic)."""
    from netsim.results import atomic_path

    with atomic_path(path) as tmp:
        if str(path).endswith(".json"):
            tmp.write_text(df.to_json(orient="records", indent=1))
        else:
            df.to_csv(tmp, index=False)
    click.echo(f"wrote {path}")


@eval_group.command("codec")
@data_options
@click.argument("model_name")
@click.option("--snrs", default="0,5,10,15,20", show_default=True, help="comma-separated test SNRs in dB")
@click.option("--seed", type=int, default=0, show_default=True, help="noise seed")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--hasher", help="zoo DHD hasher: also measure hash bit agreement")
@click.option("--no-lpips", is_flag=True, help="skip LPIPS")
@click.option("--no-baseline", is_flag=True, help="skip the uncoded analog baseline")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the table as CSV (or .json)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="draw PSNR / MS-SSIM / LPIPS against SNR (PATH.png and PATH.svg)")
@click.option("--models-dir", type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@_errors
def eval_codec_cmd(**p) -> None:
    """PSNR / MS-SSIM / LPIPS of a codec on the test images over test SNRs, beside the uncoded baseline."""
    from netsim.train.evaluate import eval_codec

    try:
        snrs = [float(s) for s in p["snrs"].split(",") if s.strip()]
    except ValueError:
        _fail(f"--snrs {p['snrs']!r}: expected comma-separated numbers")
    df = eval_codec(p["model_name"], _spec(p, p["quiet"]), snrs, seed=p["seed"], batch_size=p["batch_size"],
                    device=_device(p["device"]), models_dir=p["models_dir"], use_lpips=not p["no_lpips"],
                    baseline=not p["no_baseline"], hasher=p["hasher"], progress=not p["quiet"])
    if df.attrs.get("lpips") not in (None, "ok") and not p["no_lpips"]:
        click.echo(f"warning: {df.attrs['lpips']} (LPIPS column is NaN)", err=True)
    click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if p["output"]:
        _write_table(df, p["output"])
    if p["plot_path"]:
        from netsim.plots import plot_snr_curves

        for path in plot_snr_curves(df, p["plot_path"]):
            click.echo(f"wrote {path}")


@eval_group.command("hasher")
@data_options
@click.argument("model_name")
@click.option("--topk", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=512, show_default=True)
@click.option("--models-dir", type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@_errors
def eval_hasher_cmd(**p) -> None:
    """Retrieval mAP@k of a DHD hasher: test queries against the training images, Hamming ranking."""
    from netsim.train.evaluate import eval_hasher

    r = eval_hasher(p["model_name"], _spec(p, p["quiet"]), topk=p["topk"], batch_size=p["batch_size"],
                    device=_device(p["device"]), models_dir=p["models_dir"], progress=not p["quiet"])
    click.echo(json.dumps(r))


@eval_group.command("separation")
@data_options
@click.option("--rho", default="1/6", show_default=True,
              help="bandwidth ratio k / (3 H W); k = rho * 3 * H * W channel symbols per image")
@click.option("--k", "k", type=click.IntRange(1), help="complex channel symbols per image (overrides --rho)")
@click.option("--snrs", default="-15,-10,-5,0,5,10,15,20", show_default=True,
              help="comma-separated SNRs in dB")
@click.option("--codecs", help="comma-separated: jpeg, webp, avif (default: those this Pillow can write)")
@click.option("--exhaustive", is_flag=True,
              help="encode every quality (exact optimum) instead of bisecting; 2-4x slower")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the table as CSV (or .json)")
@click.option("--quiet", "-q", is_flag=True)
@_errors
def eval_separation_cmd(**p) -> None:
    """The separation reference line: best PSNR of a real image codec whose file (headers
    included) fits in the capacity k log2(1 + SNR) bits, on the test images, per codec and SNR."""
    from fractions import Fraction

    import torch

    from netsim.phy.separation import available_codecs, check_codec, separation_curve
    from netsim.train.datasets import load_data

    try:
        snrs = [float(s) for s in p["snrs"].split(",") if s.strip()]
    except ValueError:
        _fail(f"--snrs {p['snrs']!r}: expected comma-separated numbers")
    if not snrs:
        _fail("--snrs: no SNR given")
    if p["codecs"]:
        codecs = [check_codec(c) for c in p["codecs"].split(",") if c.strip()]
        if not codecs:
            _fail("--codecs: no codec given")
    else:
        codecs = available_codecs()
    ds = load_data(_spec(p, p["quiet"]), ("test",))["test"]
    S = ds.batch(torch.arange(len(ds)))[0]
    H, W = S.shape[-2:]
    if p["k"]:
        k = p["k"]
    else:
        try:
            rho = Fraction(p["rho"].strip())
        except (ValueError, ZeroDivisionError):
            _fail(f"--rho {p['rho']!r}: expected a number or a fraction such as 1/6")
        if rho <= 0:
            _fail(f"--rho must be positive, got {p['rho']}")
        exact = rho * 3 * H * W
        k = max(1, round(exact))
        if k != exact and not p["quiet"]:
            click.echo(f"note: rho {p['rho']} x 3x{H}x{W} = {float(exact):g} symbols, rounded to k = {k}", err=True)
    df = separation_curve(S, k, snrs, codecs, exhaustive=p["exhaustive"], progress=not p["quiet"])
    click.echo(df.drop(columns=["headers", "search"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if p["output"]:
        _write_table(df, p["output"])
