"""Sweeps on Ray: same table as a local sweep, resume across executors, kill + resume, missing Ray.

Ray is optional (``pip install 'netsim[ray]'``); without it only the missing-Ray test runs.
Each test that runs points starts its own local Ray instance (2 CPUs) and checks that it is gone
afterwards, so no Ray process outlives a test.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from netsim.results import read_table
from netsim.sweep import EXECUTORS, RayExecutor, SweepError, load_sweep, make_executor, run_sweep
from test_sweep import UNTRAINED, invoke, sweep_data, write


@pytest.fixture
def ray(monkeypatch):
    """The ray module, with no cluster address in the environment (tests start local instances)."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    yield ray
    if ray.is_initialized():  # a test that failed half-way: never leave an instance running
        ray.shutdown()


def untrained_grid(tmp_path) -> str:
    """The 2 x 2 (snr_db x seed) grid of test_sweep, with a tiny untrained DeepJSCC codec."""
    return write(tmp_path, sweep_data(codec=UNTRAINED, size=16))


def test_ray_sweep_table_is_identical_to_local(tmp_path, ray):
    path = untrained_grid(tmp_path)
    local = run_sweep(load_sweep(path, tmp_path / "local"))

    result = invoke(path, "-o", tmp_path / "ray", "-q", "--executor", "ray", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert "4 run, 0 already finished" in result.output
    assert not ray.is_initialized()  # the executor started its own instance and shut it down

    table = read_table(tmp_path / "ray", "sweep")
    # The table has no wall-clock column (latency_s is simulated time), so nothing is excluded;
    # rows are sorted by point, flow, hop, node in case row order ever depends on finish order.
    keys = ["point", "flow", "hop", "node"]
    pd.testing.assert_frame_equal(table.sort_values(keys).reset_index(drop=True),
                                  local.table.sort_values(keys).reset_index(drop=True), check_exact=True)
    assert table.query("hop > 0")["psnr_mean"].notna().all()
    plan = load_sweep(path, tmp_path / "ray")
    for point in plan.points:  # the driver wrote the same run directory a local run writes
        ray_dir, local_dir = plan.point_dir(point), tmp_path / "local" / "points" / point.id
        assert sorted(p.name for p in ray_dir.iterdir()) == sorted(p.name for p in local_dir.iterdir())
        pd.testing.assert_frame_equal(read_table(ray_dir, "hops"), read_table(local_dir, "hops"), check_exact=True)


def test_ray_resume_skips_finished_points_and_failures_stop(tmp_path, ray):
    """On a Ray instance already running in this process (used as is, left running)."""
    path = write(tmp_path, sweep_data())
    whole = run_sweep(load_sweep(path, tmp_path / "whole"))
    plan = load_sweep(path, tmp_path / "out")

    def stop_after_first(point, outcome):
        raise KeyboardInterrupt  # Ctrl-C right after the first point was written

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, "ray", jobs=2, on_point=stop_after_first)
    assert ray.is_initialized()
    first = plan.finished()
    assert len(first) == 1 and not (tmp_path / "out" / "sweep.parquet").exists()
    stamp = (plan.point_dir(first[0]) / "done.json").stat().st_mtime_ns
    pending = [p for p in plan.points if p.id != first[0].id]
    partial = plan.point_dir(pending[0])
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "hops.csv").write_text("half a tab")  # a point killed while writing: no done.json
    (partial / "stale.txt").write_text("left by a killed attempt")

    with pytest.raises(SweepError, match="already finished; pass --resume"):
        run_sweep(plan, "ray", jobs=2)
    time.sleep(0.01)
    result = run_sweep(plan, "ray", jobs=2, resume=True)
    assert result.skipped == [first[0].id] and result.ran == [p.id for p in pending]
    assert (plan.point_dir(first[0]) / "done.json").stat().st_mtime_ns == stamp  # not run again
    assert not (partial / "stale.txt").exists() and len(pd.read_csv(partial / "hops.csv")) == 6
    pd.testing.assert_frame_equal(result.table, whole.table, check_exact=True)
    again = run_sweep(plan, "local", resume=True)  # a local resume over a Ray sweep: nothing to run
    assert again.ran == [] and len(again.skipped) == 4

    # a failing point stops the sweep with one line naming it (no scratch path); the others stay
    bad = load_sweep(write(tmp_path, sweep_data({"codec": ["uncoded", "no-such-model"]}), "bad.yaml"),
                     tmp_path / "bad")
    with pytest.raises(SweepError) as err:
        run_sweep(bad, "ray", jobs=1)
    message = str(err.value)
    assert "codec=no-such-model) failed:" in message and "\n" not in message and "netsim-point-" not in message
    assert [p.index for p in bad.finished()] == [0]
    assert (bad.point_dir(bad.points[1]) / "error.txt").exists()
    assert ray.is_initialized()
    ray.shutdown()


def test_missing_ray_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write(tmp_path, sweep_data())
    result = invoke(path, "-o", tmp_path / "out", "--executor", "ray")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: the ray executor needs Ray, which is not installed: "
                                     "pip install 'netsim[ray]'")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SweepError, match=r"pip install 'netsim\[ray\]'"):
        run_sweep(load_sweep(path, tmp_path / "out"), "ray")
    assert "ray" in EXECUTORS  # registered even without Ray; only using it needs it


def test_address_option_checks(tmp_path, monkeypatch):
    path = write(tmp_path, sweep_data())
    result = invoke(path, "--executor", "process", "--address", "auto")
    assert result.exit_code == 2 and "--address: only for --executor ray" in result.output
    with pytest.raises(SweepError, match="the local executor takes no address option"):
        make_executor("local", 1, address="auto")
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert RayExecutor(2).address == "10.0.0.1:6379"
    assert RayExecutor(2, address="ray://head:10001").address == "ray://head:10001"


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.slow
def test_sigkill_ray_sweep_then_resume(tmp_path, ray):
    """SIGKILL the driver after its first point: nothing lost, nothing half-written, no Ray left.

    Ray's raylet, GCS and workers die with the driver at once; its per-node agents notice within
    about a minute. Slow (~2 min) because of that wait."""
    path = untrained_grid(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "netsim.cli", "sweep", path, "-o", str(out), "-q", "--executor", "ray", "-j", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True)  # its own session: Ray's daemons included
    plan = load_sweep(path, out)
    try:
        deadline = time.time() + 120
        while not plan.finished() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert plan.finished(), "no point finished in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = plan.finished()
        assert 1 <= len(done) < 4 and not (out / "sweep.parquet").exists()
        deadline = time.time() + 120
        while _session_pids(proc.pid) and time.time() < deadline:
            time.sleep(2)
        assert _session_pids(proc.pid) == [], "Ray processes outlived the killed driver"
    finally:
        for pid in _session_pids(proc.pid):  # only what this test started
            os.kill(pid, signal.SIGKILL)
    result = run_sweep(plan, "ray", jobs=2, resume=True)
    assert sorted(result.skipped) == sorted(p.id for p in done) and len(result.ran) == 4 - len(done)
    whole = run_sweep(load_sweep(path, tmp_path / "whole"))
    pd.testing.assert_frame_equal(result.table, whole.table, check_exact=True)
    assert not ray.is_initialized()
