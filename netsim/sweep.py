"""Sweeps: expand a scenario's ``sweep:`` grid, run every point, resume, and write one tidy table.

A scenario file declares the grid (validated by ``netsim.scenario.Sweep``)::

    sweep:
      name: snr-seed                 # sweep directory: the scenario's output_dir with {name}
      metrics_at: all                # table rows: every (flow, hop, node) | destination only
      axes:
        snr_db: [0, 10]              # alias of links.*.snr_db (codec: flows.*.codec)
        seed: [1, 2]
        scheme:                      # zip group: these paths vary together
          flows.f0.codec: [uncoded, deepjscc-c10-snr10]
          hash_check.model: [null, dhd-cifar10]

A path addresses a field of the scenario; list items go by index (``links.0.snr_db``), by id for
nodes and flows (``nodes.r1.qf.b``, ``flows.f0.codec``), or all at once with ``*``. The grid is
the Cartesian product of the axes in the order written (first axis slowest); a zip group is one
axis. Every point is validated up front, before anything runs.

Layout of a sweep directory::

    sweep.json                 the grid, every point's id and assignment, versions, git commit
    points/<id>/               a normal run directory (hops, frames, manifest) + done.json
    sweep.parquet, sweep.csv   one row per point x (flow, hop, node): axis values, n, mean and
                               95% CI half-width (1.96 * std / sqrt(n)) of each statistic

A point's id is a short hash of its canonical JSON assignment (``{path: value}``), so it does not
depend on the order or size of the grid. ``done.json`` is written atomically after the point's
tables, so a point is either finished or re-run from scratch: a sweep killed at any moment loses
no finished point, and ``resume=True`` duplicates none. Executors are pluggable through
``EXECUTORS`` (name -> class); they only decide where ``run_point`` runs, while resume, the
markers and the table are shared code here. ``local`` runs points in this process, ``process`` in
a spawn pool, and ``ray`` as Ray tasks (optional extra ``netsim[ray]``): a Ray task runs its
point in a scratch directory on its node and ships the files back, and the driver writes them
into ``points/<id>/`` with ``done.json`` last, so no shared filesystem is needed and a killed
driver leaves nothing half-finished behind.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from netsim.results import atomic_path, git_commit, package_versions, read_table, write_json, write_table
from netsim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

ALIASES = {"snr_db": "links.*.snr_db", "codec": "flows.*.codec"}
"""Friendly axis names -> the dotted paths they stand for."""

STATS = ("psnr", "ms_ssim", "lpips", "hash_bit_agreement", "hash_cosine", "retrieval_ap", "bpp", "latency_s")
"""Per-hop columns summarised in the sweep table as ``<stat>_mean`` and ``<stat>_ci95``."""

DONE = "done.json"
ID_LENGTH = 10


class SweepError(ScenarioError):
    """A sweep that cannot be expanded, started or finished; the message is one line for people."""


# --------------------------------------------------------------------------- grid expansion

@dataclass(frozen=True)
class Axis:
    """One axis of the grid: a single path, or a zip group of paths that take their values together."""

    label: str
    paths: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # rows[i][j]: value i of paths[j]


@dataclass(frozen=True)
class Point:
    index: int
    id: str
    assignment: dict[str, Any]  # path -> value, in axis order
    scenario: dict[str, Any]  # the point's validated scenario, JSON form, no sweep field
    scenario_sha256: str

    @property
    def label(self) -> str:
        return ", ".join(f"{p}={_show(v)}" for p, v in self.assignment.items())


@dataclass
class SweepPlan:
    name: str
    origin: str  # the scenario file (or "<scenario>")
    sweep_dir: Path
    metrics_at: str
    axes: list[Axis]
    points: list[Point]
    base: dict[str, Any]  # the scenario without its sweep, JSON form

    def point_dir(self, point: Point) -> Path:
        return self.sweep_dir / "points" / point.id

    def finished(self) -> list[Point]:
        """Points whose run directory holds a valid ``done.json`` (checked against this plan)."""
        return [p for p in self.points if _done_record(self, p) is not None]

    @property
    def paths(self) -> list[str]:
        return [p for axis in self.axes for p in axis.paths]


def canonical_json(value: Any) -> str:
    """Sorted-key compact JSON with whole floats written as ints (10.0 and 10 are the same point)."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), default=str)


def point_id(assignment: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(assignment).encode()).hexdigest()[:ID_LENGTH]


def load_sweep(path: str | Path, output_dir: str | Path | None = None) -> SweepPlan:
    """Read a scenario file with a ``sweep:`` section and expand it (raises ScenarioError/SweepError)."""
    return expand(load_scenario(path), str(path), output_dir)


def expand(scenario: Scenario, origin: str = "<scenario>", output_dir: str | Path | None = None) -> SweepPlan:
    """The grid of ``scenario.sweep`` as validated points; nothing is run and nothing is written."""
    spec = scenario.sweep
    if spec is None:
        raise SweepError(f"{origin}: sweep: the scenario declares no sweep (add sweep: {{axes: {{snr_db: [0, 10]}}}})")
    base = scenario.model_dump(mode="json")
    base.pop("sweep")
    axes = []
    for key, values in spec.axes.items():
        if isinstance(values, dict):
            axes.append(Axis(key, tuple(values), tuple(zip(*values.values()))))
        else:
            axes.append(Axis(key, (key,), tuple((v,) for v in values)))
    _check_targets(base, axes, origin)

    from netsim.topology import check_routes

    points: list[Point] = []
    seen: dict[str, Point] = {}
    for index, combo in enumerate(itertools.product(*(axis.rows for axis in axes))):
        assignment: dict[str, Any] = {}
        data = copy.deepcopy(base)
        for axis, row in zip(axes, combo):
            for path, value in zip(axis.paths, row):
                assignment[path] = value
                for parent, key in _targets(data, path, f"sweep.axes.{path}", origin):
                    parent[key] = copy.deepcopy(value)
        pid = point_id(assignment)
        label = ", ".join(f"{p}={_show(v)}" for p, v in assignment.items())
        if pid in seen:
            raise SweepError(f"{origin}: sweep.axes: points {seen[pid].label} and {label} are the same "
                             f"(duplicate axis values)")
        try:
            sc = parse_scenario(data, origin)
            check_routes(sc)
        except ScenarioError as err:
            msg = str(err).removeprefix(f"{origin}: ")
            raise SweepError(f"{origin}: sweep point {label}: {msg}") from None
        resolved = sc.model_dump(mode="json")
        resolved.pop("sweep")
        digest = hashlib.sha256(canonical_json({k: v for k, v in resolved.items() if k != "output_dir"}).encode())
        point = Point(index, pid, assignment, resolved, digest.hexdigest())
        seen[pid] = point
        points.append(point)
    name = spec.name or f"{scenario.name}-sweep"
    sweep_dir = Path(output_dir) if output_dir else Path(scenario.output_dir.format(name=name))
    return SweepPlan(name, origin, sweep_dir, spec.metrics_at, axes, points, base)


def _check_targets(base: dict, axes: list[Axis], origin: str) -> None:
    """Every path must resolve in the base scenario, and no two paths may set the same field."""
    base = copy.deepcopy(base)  # resolving fills in left-out sections; keep the caller's intact
    owner: dict[tuple[int, Any], str] = {}
    for axis in axes:
        for path in axis.paths:
            where = f"sweep.axes.{path}" if axis.paths == (axis.label,) else f"sweep.axes.{axis.label}.{path}"
            for parent, key in _targets(base, path, where, origin):
                other = owner.setdefault((id(parent), key), path)
                if other != path:
                    raise SweepError(f"{origin}: {where}: sets the same field as axis {other!r}")


def _targets(data: dict, path: str, where: str, origin: str) -> list[tuple[Any, Any]]:
    """(container, key) pairs that ``path`` addresses in ``data`` (several with ``*`` or an alias)."""
    parts = ALIASES.get(path, path).split(".")
    parents: list[Any] = [data]
    for depth, part in enumerate(parts):
        done = ".".join(parts[:depth]) or "<top>"
        found: list[tuple[Any, Any]] = []
        for cur in parents:
            if isinstance(cur, list):
                keys = range(len(cur)) if part == "*" else [_list_key(cur, part, done, where, origin)]
            elif isinstance(cur, dict):
                if part == "*":
                    raise SweepError(f"{origin}: {where}: {done} is a mapping; * is only for lists")
                if depth == 0 and part not in cur:
                    raise SweepError(f"{origin}: {where}: unknown scenario field {part!r} "
                                     f"(fields: {', '.join(sorted(cur))}; aliases: {', '.join(ALIASES)})")
                keys = [part]
            else:
                raise SweepError(f"{origin}: {where}: {done} is a {type(cur).__name__} value, not a mapping or list")
            found += [(cur, k) for k in keys]
        if depth == len(parts) - 1:
            return found
        parents = []
        for cur, key in found:
            if isinstance(cur, dict) and cur.get(key) is None:
                cur[key] = {}  # optional section left out: filled in, then validated
            parents.append(cur[key])
    return []


def _list_key(items: list, part: str, done: str, where: str, origin: str) -> int:
    try:
        index = int(part)
    except ValueError:
        ids = [item.get("id") for item in items if isinstance(item, dict)]
        if part in ids:
            return ids.index(part)
        shown = ", ".join(str(i) for i in ids if i is not None) or "none"
        raise SweepError(f"{origin}: {where}: {done} has no item with id {part!r} (ids: {shown})") from None
    if not -len(items) <= index < len(items):
        raise SweepError(f"{origin}: {where}: {done} has {len(items)} items, no index {index}")
    return index % len(items)


# --------------------------------------------------------------------------- running one point

@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs to run one point (plain data, picklable)."""

    id: str
    index: int
    label: str
    assignment: dict[str, Any]
    scenario: dict[str, Any]
    scenario_sha256: str
    run_dir: str


@dataclass(frozen=True)
class PointOutcome:
    id: str
    ok: bool
    error: str | None = None  # one line


def run_point(task: PointTask) -> PointOutcome:
    """Run one point into its run directory, then write ``done.json`` (atomically, last).

    Ordinary exceptions come back as a failed outcome (the traceback goes to ``error.txt`` in the
    run directory); KeyboardInterrupt and other BaseExceptions propagate.
    """
    from netsim.data import DataError
    from netsim.sim import run as run_module

    start = time.perf_counter()
    run_dir = Path(task.run_dir)
    try:
        scenario = parse_scenario(task.scenario, f"point {task.id}")
        result = run_module.run_scenario(scenario, run_dir)
    except Exception as err:  # noqa: BLE001 - reported to the sweep, which stops with one line
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, (ScenarioError, DataError)):  # a crash rather than bad input
            msg = f"{type(err).__name__}: {msg} (traceback in {run_dir / 'error.txt'})"
        return PointOutcome(task.id, False, msg)
    wall = time.perf_counter() - start
    (run_dir / "error.txt").unlink(missing_ok=True)
    write_json({
        "point": task.id, "index": task.index, "assignment": task.assignment,
        "scenario_sha256": task.scenario_sha256, "frames": len(result.frames), "wall_s": wall,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, run_dir / DONE)
    return PointOutcome(task.id, True)


def _done_record(plan: SweepPlan, point: Point) -> dict | None:
    """The point's ``done.json`` if it is finished; SweepError if it was run from another scenario."""
    path = plan.point_dir(point) / DONE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("point") != point.id:
        return None
    if record.get("scenario_sha256") != point.scenario_sha256:
        raise SweepError(
            f"{plan.origin}: point {point.id} ({point.label}) in {plan.point_dir(point)} was run from a different "
            f"scenario (the base scenario changed since); choose another --output-dir or delete that directory")
    return record


# --------------------------------------------------------------------------- executors

class Executor:
    """Where points run. ``run`` calls ``on_done(outcome)`` in the calling process as each point ends;
    an exception from ``on_done`` (or KeyboardInterrupt) stops the sweep: points not yet started are
    dropped, points already running may finish (and then count as finished)."""

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise SweepError(f"jobs must be at least 1, got {jobs}")
        self.jobs = jobs

    def run(self, tasks: Sequence[PointTask], on_done: Callable[[PointOutcome], None]) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """One point after another, in this process."""

    def __init__(self, jobs: int = 1):
        super().__init__(jobs)
        if jobs != 1:
            raise SweepError(f"the local executor runs one point at a time (got --jobs {jobs}); "
                             f"use the process executor for parallel points")

    def run(self, tasks: Sequence[PointTask], on_done: Callable[[PointOutcome], None]) -> None:
        for task in tasks:
            on_done(run_point(task))


def _init_worker() -> None:
    """Pool workers share the machine: one intra-op thread each."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


class ProcessExecutor(Executor):
    """``jobs`` worker processes (spawn start method: safe with torch and CUDA)."""

    def run(self, tasks: Sequence[PointTask], on_done: Callable[[PointOutcome], None]) -> None:
        import multiprocessing

        if not tasks:
            return
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)),
                                   mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        try:
            futures = [pool.submit(run_point, task) for task in tasks]
            for future in as_completed(futures):
                on_done(future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


RAY_INSTALL_HINT = "pip install 'netsim[ray]'"
FORWARDED_ENV = ("NETSIM_MODELS", "NETSIM_LPIPS_WEIGHTS")
"""Path variables the Ray driver resolves and hands to its tasks (used where the path exists on the node)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SweepError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


class RayExecutor(Executor):
    """Each point is a Ray task (one CPU); at most ``jobs`` points are in flight at once.

    ``address`` (else ``$RAY_ADDRESS``) connects to a running cluster, whose nodes need netsim
    installed (and the models and data where the scenario names them: the driver's resolved
    ``$NETSIM_MODELS`` / ``$NETSIM_LPIPS_WEIGHTS`` are used on nodes where those paths exist).
    Without one, a local Ray instance with ``jobs`` CPUs is started and shut down at the end. A
    Ray instance already initialised in this process is used as it is and left running.

    A task runs its point in a scratch directory on its node and returns the files; the driver
    writes them into the point's run directory, ``done.json`` last (``_write_point_files``).
    """

    def __init__(self, jobs: int = 1, address: str | None = None):
        super().__init__(jobs)
        self.ray = _import_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def run(self, tasks: Sequence[PointTask], on_done: Callable[[PointOutcome], None]) -> None:
        if not tasks:
            return
        ray = self.ray
        owned = not ray.is_initialized()
        if owned:
            self._init()
        pending: dict[Any, PointTask] = {}
        try:
            remote = ray.remote(num_cpus=1)(run_point_shipped)
            env = _resolved_env()
            queue = list(tasks)
            while queue or pending:
                while queue and len(pending) < self.jobs:
                    task = queue.pop(0)
                    pending[remote.remote(task, env)] = task
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    outcome, files = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # the task never ran run_point (lost node, no netsim there)
                    outcome, files = PointOutcome(task.id, False, f"Ray: {_ray_error_line(err)}"), {}
                _write_point_files(outcome, files, Path(task.run_dir))
                on_done(outcome)
        except BaseException:
            refs = list(pending)  # their results would never be written: stop them
            for ref in refs:  # a KeyboardInterrupt in the task: it removes its scratch directory
                with suppress(Exception):  # already finished or gone
                    ray.cancel(ref)
            with suppress(Exception):
                ray.wait(refs, num_returns=len(refs), timeout=10)
            raise
        finally:
            if owned:
                ray.shutdown()

    def _init(self) -> None:
        import logging

        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address:
                self.ray.init(address=self.address, **quiet)
            else:  # "local": always a fresh instance, never one a `ray start` left on this machine
                self.ray.init(address="local", num_cpus=self.jobs, include_dashboard=False, **quiet)
        except Exception as err:  # noqa: BLE001 - connection refused, bad address, ...
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepError(f"cannot start or reach {where}: {line}") from None


def run_point_shipped(task: PointTask, env: dict[str, str] | None = None) -> tuple[PointOutcome, dict[str, bytes]]:
    """``run_point`` in a scratch directory on this node; returns the outcome and the run
    directory's files (relative POSIX path -> bytes) for the driver to write. Runs in Ray workers."""
    for key, value in (env or {}).items():
        if os.path.exists(value):  # the driver's path is visible here (same machine, shared filesystem)
            os.environ[key] = value
    _init_worker()
    with tempfile.TemporaryDirectory(prefix=f"netsim-point-{task.id}-") as scratch:
        run_dir = Path(scratch) / task.id
        outcome = run_point(replace(task, run_dir=str(run_dir)))
        if outcome.error:
            outcome = replace(outcome, error=outcome.error.replace(str(run_dir), task.run_dir))
        files = {p.relative_to(run_dir).as_posix(): p.read_bytes()
                 for p in sorted(run_dir.rglob("*")) if p.is_file()}
    return outcome, files


def _write_point_files(outcome: PointOutcome, files: dict[str, bytes], run_dir: Path) -> None:
    """Write a shipped point into ``run_dir`` as ``run_point`` would have: a finished point's files
    (replacing what an unfinished earlier attempt left), each atomically, ``done.json`` last; a
    failed point's ``error.txt`` only."""
    if outcome.ok and DONE not in files:
        raise SweepError(f"point {outcome.id}: the worker sent no {DONE}")
    if outcome.ok and run_dir.exists():
        shutil.rmtree(run_dir)  # not finished (resume skipped it otherwise): stale or partial files
    names = sorted(files, key=lambda name: name == DONE) if outcome.ok else [n for n in files if n == "error.txt"]
    for name in names:
        target = run_dir / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise SweepError(f"point {outcome.id}: the worker sent a file outside its run directory: {name}")
        with atomic_path(target) as tmp:
            tmp.write_bytes(files[name])


def _resolved_env() -> dict[str, str]:
    """The driver's model and weight locations as absolute paths, for ``run_point_shipped``."""
    from netsim.nn.zoo import models_dir

    env = {"NETSIM_MODELS": str(models_dir().resolve())}
    for key in FORWARDED_ENV:
        if os.environ.get(key):
            env[key] = str(Path(os.path.expanduser(os.environ[key])).resolve())
    return env


def _ray_error_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(err)):
        err = cause
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "process": ProcessExecutor, "ray": RayExecutor}
"""Executor registry: name -> class taking ``jobs`` (and its own keyword options, e.g. ray's ``address``)."""


def make_executor(name: str, jobs: int = 1, **options: Any) -> Executor:
    """The executor registered as ``name``; options it does not take are a SweepError."""
    if name not in EXECUTORS:
        raise SweepError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
    cls = EXECUTORS[name]
    import inspect

    params = inspect.signature(cls.__init__).parameters
    for key in options:
        if key not in params or key in ("self", "jobs"):
            raise SweepError(f"the {name} executor takes no {key} option")
    return cls(jobs, **options)


# --------------------------------------------------------------------------- the sweep

@dataclass
class SweepResult:
    sweep_dir: Path
    table: pd.DataFrame
    table_path: Path  # sweep.parquet (sweep.csv beside it)
    ran: list[str] = field(default_factory=list)  # point ids run now
    skipped: list[str] = field(default_factory=list)  # point ids already finished


def run_sweep(plan: SweepPlan, executor: str | Executor = "local", jobs: int = 1, resume: bool = False,
              on_point: Callable[[Point, PointOutcome], None] | None = None) -> SweepResult:
    """Run the points of ``plan`` not yet finished, then write ``sweep.{parquet,csv}`` and ``sweep.json``.

    Without ``resume``, a sweep directory that already holds finished points of this grid is refused.
    ``on_point(point, outcome)`` is called after each point finishes (progress bars, tests). A point
    that fails stops the sweep with a SweepError naming it; finished points stay finished.
    """
    if isinstance(executor, str):
        executor = make_executor(executor, jobs)
    with _lock(plan.sweep_dir):
        finished = {p.id for p in plan.finished()}
        if finished and not resume:
            raise SweepError(
                f"{plan.sweep_dir}: {len(finished)} of {len(plan.points)} points are already finished; pass "
                f"--resume to run only the rest, or choose another --output-dir")
        write_json(_sweep_record(plan, complete=False), plan.sweep_dir / "sweep.json")
        pending = [p for p in plan.points if p.id not in finished]
        by_id = {p.id: p for p in pending}
        ran: list[str] = []

        def done(outcome: PointOutcome) -> None:
            point = by_id[outcome.id]
            if not outcome.ok:
                raise SweepError(f"{plan.origin}: point {point.id} ({point.label}) failed: {outcome.error}")
            ran.append(point.id)
            if on_point is not None:
                on_point(point, outcome)

        tasks = [PointTask(p.id, p.index, p.label, p.assignment, p.scenario, p.scenario_sha256,
                           str(plan.point_dir(p))) for p in pending]
        executor.run(tasks, done)
        missing = [p.label for p in plan.points if _done_record(plan, p) is None]
        if missing:
            raise SweepError(f"{plan.sweep_dir}: {len(missing)} points did not finish (first: {missing[0]})")
        table = sweep_table(plan)
        write_table(table, plan.sweep_dir, "sweep")
        write_json(_sweep_record(plan, complete=True), plan.sweep_dir / "sweep.json")
    ran_now = set(ran)
    return SweepResult(plan.sweep_dir, table, plan.sweep_dir / "sweep.parquet",
                       [p.id for p in plan.points if p.id in ran_now],
                       [p.id for p in plan.points if p.id in finished])


def _sweep_record(plan: SweepPlan, complete: bool) -> dict[str, Any]:
    return {
        "name": plan.name, "scenario_file": plan.origin, "metrics_at": plan.metrics_at,
        "axes": [{"label": a.label, "paths": list(a.paths), "values": [list(r) for r in a.rows]} for a in plan.axes],
        "points": [{"id": p.id, "index": p.index, "assignment": p.assignment,
                    "dir": f"points/{p.id}", "scenario_sha256": p.scenario_sha256} for p in plan.points],
        "complete": complete, "table": "sweep.parquet" if complete else None,
        "scenario": plan.base, "versions": package_versions(), "git_commit": git_commit(),
    }


@contextmanager
def _lock(sweep_dir: Path) -> Iterator[None]:
    """One sweep process per directory (an OS file lock: released even when the process is killed)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(sweep_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"{sweep_dir}: another sweep is running in this directory") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the table

def summarise_hops(hops: pd.DataFrame, metrics_at: str = "all") -> pd.DataFrame:
    """One row per (flow, hop, node): role, mode, n frames, and ``<stat>_mean`` / ``<stat>_ci95``.

    The CI half-width is the normal approximation 1.96 * std / sqrt(n) over the frames where the
    statistic is defined (NaN when fewer than two are).
    """
    df = hops.assign(latency_s=hops["done_s"] - hops["created_s"])
    if metrics_at == "destination":
        df = df[df["role"] == "destination"]
    groups = df.groupby(["flow", "hop", "node"], sort=True)
    out = groups.agg(role=("role", "first"), mode=("mode", "first"), n=("frame", "size"))
    for stat in STATS:
        col = groups[stat] if stat in df else None
        if col is None:
            out[f"{stat}_mean"] = math.nan
            out[f"{stat}_ci95"] = math.nan
            continue
        count = col.count()
        out[f"{stat}_mean"] = col.mean()
        out[f"{stat}_ci95"] = (1.96 * col.std(ddof=1) / count.pow(0.5)).where(count >= 2)
    return out.reset_index()


def sweep_table(plan: SweepPlan) -> pd.DataFrame:
    """The tidy sweep table from the finished points' run directories, in grid order."""
    paths = plan.paths
    cells = {path: _column_kind([p.assignment[path] for p in plan.points]) for path in paths}
    parts = []
    for point in plan.points:
        summary = summarise_hops(read_table(plan.point_dir(point), "hops"), plan.metrics_at)
        summary.insert(0, "point", point.id)
        for i, path in enumerate(paths):
            summary.insert(1 + i, path, [cells[path](point.assignment[path])] * len(summary))
        parts.append(summary)
    table = pd.concat(parts, ignore_index=True)
    ordered = ["point", *paths, *[c for c in table.columns if c not in paths and c != "point"]]
    return table[ordered]


def _column_kind(values: list[Any]) -> Callable[[Any], Any]:
    """How an axis's values appear in the table: as they are when all numbers (or all bools),
    else as text (strings and null as they are, anything else as compact JSON)."""
    if all(isinstance(v, bool) for v in values):
        return bool
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return (lambda v: v) if all(isinstance(v, int) for v in values) else float
    return lambda v: v if v is None or isinstance(v, str) else canonical_json(v)


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _show(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)
