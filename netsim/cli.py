"""The ``netsim`` command line. Every command is a thin call into the library."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from netsim.scenario import ScenarioError, load_scenario

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _load(path: str, device: str | None = None):
    overrides = {"device": device} if device else None
    try:
        return load_scenario(path, overrides)
    except ScenarioError as err:
        _fail(str(err))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netsim")
def main() -> None:
    """netsim: multi-hop semantic image transmission, simulated."""
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"


@main.command()
@click.argument("scenario_file", type=click.Path(dir_okay=False))
def validate(scenario_file: str) -> None:
    """Check a scenario file; exit 2 with one line naming the field if it is wrong."""
    from netsim.topology import check_routes

    sc = _load(scenario_file)
    try:
        routes = check_routes(sc)
    except ScenarioError as err:
        _fail(f"{scenario_file}: {err}")
    click.echo(f"ok: {scenario_file}: {len(sc.nodes)} nodes, {len(sc.links)} links, {len(sc.flows)} flows")
    for flow, route in zip(sc.flows, routes):
        click.echo(f"  {flow.id}: {' -> '.join(route)}")


@main.command()
def schema() -> None:
    """Print the scenario JSON schema (for editor completion and validation)."""
    from netsim.scenario import scenario_json_schema

    click.echo(json.dumps(scenario_json_schema(), indent=2))


@main.command()
@click.argument("scenario_file", type=click.Path(dir_okay=False))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), help="run directory (default: from scenario)")
@click.option("--device", help="override the scenario's device: auto, cpu, cuda, cuda:N")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar or summary")
@click.option("--csv/--no-csv", default=True, show_default=True,
              help="CSV copies of the hops, frames and queues tables (--no-csv: parquet only, for big runs)")
@click.option("--threads", type=click.IntRange(1),
              help="torch CPU threads (default: all cores; 1 is faster for small images or a shared CPU)")
def run(scenario_file: str, output_dir: str | None, device: str | None, quiet: bool, csv: bool,
        threads: int | None) -> None:
    """Simulate a scenario and write per-hop and per-frame results.

    Records stream to the run directory as the simulation runs, so memory stays flat however
    many frames a scenario sends."""
    from tqdm import tqdm

    from netsim.data import DataError
    from netsim.sim import run_scenario

    if threads:
        import torch

        torch.set_num_threads(threads)
    sc = _load(scenario_file, device)
    total = sum(f.workload.frames or f.workload.images.count for f in sc.flows)
    with tqdm(total=total, unit="frame", disable=quiet, desc=sc.name, file=sys.stderr) as bar:
        try:
            result = run_scenario(sc, output_dir, progress=bar.update, csv=csv)
        except (ScenarioError, DataError) as err:
            msg = str(err)
            _fail(msg if msg.startswith(scenario_file) else f"{scenario_file}: {msg}")
    if not quiet:
        _print_summary(result)
    click.echo(f"results: {result.run_dir}")


@main.command()
@click.argument("scenario_file", type=click.Path(dir_okay=False))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False),
              help="sweep directory (default: the scenario's output_dir with the sweep's name)")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True, help="points run at once")
@click.option("--resume", is_flag=True, help="skip points already finished in the sweep directory")
@click.option("--executor", help="local (in process) | process (process pool) | ray (Ray tasks); "
                                 "default: local for --jobs 1, process for more, ray with --address")
@click.option("--address", help="Ray cluster to run on (ray executor; default $RAY_ADDRESS, else a local Ray instance)")
@click.option("--dry-run", is_flag=True, help="list the grid's points and their status; run nothing")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def sweep(scenario_file: str, output_dir: str | None, jobs: int, resume: bool, executor: str | None,
          address: str | None, dry_run: bool, quiet: bool) -> None:
    """Run every point of the scenario's sweep grid and write one table (sweep.parquet / .csv)."""
    from tqdm import tqdm

    from netsim.sweep import EXECUTORS, SweepError, load_sweep, make_executor, run_sweep

    executor = executor or ("ray" if address else "local" if jobs == 1 else "process")
    if executor not in EXECUTORS:
        _fail(f"--executor: unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if address and executor != "ray":
        _fail(f"--address: only for --executor ray (got --executor {executor})")
    plan = None
    try:
        if not dry_run:
            executor = make_executor(executor, jobs, **({"address": address} if address else {}))
        plan = load_sweep(scenario_file, output_dir)
        if dry_run:
            finished = {p.id for p in plan.finished()}
            click.echo(f"sweep {plan.name}: {len(plan.points)} points ({len(finished)} finished) in {plan.sweep_dir}")
            for p in plan.points:
                click.echo(f"  {p.id}  {'done   ' if p.id in finished else 'pending'}  {p.label}")
            return
        total = len(plan.points) - len(plan.finished()) if resume else len(plan.points)
        with tqdm(total=total, unit="point", disable=quiet, desc=plan.name, file=sys.stderr) as bar:
            result = run_sweep(plan, executor, jobs, resume, on_point=lambda *_: bar.update())
    except (ScenarioError, SweepError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        if plan is not None:
            click.echo(f"interrupted: finished points are kept in {plan.sweep_dir}; continue with --resume",
                       err=True)
        sys.exit(130)
    click.echo(f"{len(plan.points)} points: {len(result.ran)} run, {len(result.skipped)} already finished")
    click.echo(f"table: {result.table_path}")


def _rich_table(df, title: str, headers: dict[str, str] | None = None):
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column((headers or {}).get(col, col), justify="right")
    for row in df.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return table


def _print_summary(result) -> None:
    from rich.console import Console

    from netsim.results import HOP_SUMMARY_COLUMNS, hop_summary, latency_percentiles
    from netsim.sim.run import LATENCY_COLUMNS

    console = Console(width=120)
    measured = [c for c in HOP_SUMMARY_COLUMNS if c != "latency_s"]  # hop_summary derives latency_s
    hops = result.columns("hops", ["flow", "hop", "node", "frame", "created_s", "done_s", *measured])
    console.print(_rich_table(hop_summary(hops), f"per-hop means ({result.manifest['frames']} frames)",
                              HOP_SUMMARY_COLUMNS))
    console.print(_rich_table(latency_percentiles(result.columns("frames", LATENCY_COLUMNS)),
                              "end-to-end latency of delivered frames [s]"))
    for note in result.manifest["notes"]:
        click.echo(f"note: {note}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False), help="figure directory (default: RUN_DIR/figures)")
def plot(run_dir: str, output: str | None) -> None:
    """Draw per-hop PSNR, MS-SSIM, LPIPS, hash agreement and latency, queue lengths over time and
    per-flow latency percentiles (PNG and SVG)."""
    from netsim.plots import plot_run

    if not (Path(run_dir) / "hops.csv").exists() and not (Path(run_dir) / "hops.parquet").exists():
        _fail(f"{run_dir}: no hops table (is this a netsim run directory?)")
    for path in plot_run(run_dir, output):
        click.echo(path)


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="zoo directory (default: models/)")
def models(directory: str | None) -> None:
    """List the model zoo."""
    from netsim.nn.zoo import CheckpointError, list_models

    try:
        cards = list_models(directory)
    except CheckpointError as err:
        _fail(str(err))
    if not cards:
        click.echo("no models")
    for card in cards:
        metrics = card.get("metrics") or {}
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        click.echo(f"{card['name']:32s} {card['arch']:18s} {shown}")


@main.command()
@click.argument("kind", type=click.Choice(["paper-df", "paper-qf", "arq"]))
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False), required=True, help="results directory")
@click.option("--cell", "cells", multiple=True,
              help="paper grids: also keep the hop records of the point using this codec or codebook (file stem)")
def report(kind: str, sweep_dir: str, output: str, cells: tuple[str, ...]) -> None:
    """Tables and figures of a finished sweep: the paper's DF grid (Fig. 2; also the Kodak sweep) or
    QF grid (Fig. 3) with a cell-by-cell check of its claims, or a semantic-ARQ sweep (ROC of the
    hash check, retries against threshold)."""
    from netsim import arq, paper

    if not (Path(sweep_dir) / "points").is_dir():
        _fail(f"{sweep_dir}: not a sweep directory (run `netsim sweep FILE` first)")
    try:
        paths = arq.report(sweep_dir, output) if kind == "arq" else paper.report(sweep_dir, kind[-2:], output, cells)
    except (arq.ArqReportError, paper.ReportError) as err:
        _fail(f"{sweep_dir}: {err}")
    for path in paths:
        click.echo(path)


from netsim.train.commands import eval_group, train_group  # noqa: E402

main.add_command(train_group, "train")
main.add_command(eval_group, "eval")


if __name__ == "__main__":
    main()
