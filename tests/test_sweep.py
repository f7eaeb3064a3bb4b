"""Sweeps: grid expansion and ids, end-to-end runs, kill + resume, executors, one-line errors."""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from conftest import chain
from netsim.cli import main
from netsim.results import read_table
from netsim.scenario import ScenarioError, parse_scenario
from netsim.sim import run as run_module
from netsim.sweep import (EXECUTORS, LocalExecutor, SweepError, canonical_json, expand, load_sweep, point_id,
                          run_sweep)

UNTRAINED = {"untrained": "deepjscc", "config": {"c_out": 8, "size": "small"}, "seed": 3}


def sweep_data(axes=None, codec="uncoded", size=8, **sweep) -> dict:
    data = chain(["df"], size=size, count=2)
    data["flows"][0]["codec"] = codec
    data["sweep"] = {"axes": axes if axes is not None else {"snr_db": [0, 20], "seed": [1, 2]}, **sweep}
    return data


def write(tmp_path, data, name="sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, ["sweep", *map(str, args)])


@pytest.fixture
def counted(monkeypatch):
    """Count (and optionally interrupt) the point runs that really happen."""
    calls: list[str] = []
    real = run_module.run_scenario
    state = {"kill_at": None}

    def fake(scenario, output_dir=None, *args, **kw):
        calls.append(str(output_dir))
        if state["kill_at"] is not None and len(calls) == state["kill_at"]:
            raise KeyboardInterrupt  # as if Ctrl-C (or SIGKILL) hit mid-point: no done.json
        return real(scenario, output_dir, *args, **kw)

    monkeypatch.setattr(run_module, "run_scenario", fake)
    return calls, state


# ------------------------------------------------------------------ expansion

def test_grid_order_ids_and_paths_are_stable(tmp_path):
    path = write(tmp_path, sweep_data())
    plan = load_sweep(path, tmp_path / "out")
    assert [p.assignment for p in plan.points] == [
        {"snr_db": 0, "seed": 1}, {"snr_db": 0, "seed": 2}, {"snr_db": 20, "seed": 1}, {"snr_db": 20, "seed": 2}]
    ids = [p.id for p in plan.points]
    assert len(set(ids)) == 4 and all(len(i) == 10 for i in ids)
    assert ids == [point_id(p.assignment) for p in plan.points]
    assert point_id({"snr_db": 0, "seed": 1}) == point_id({"seed": 1, "snr_db": 0.0})  # order, 0 vs 0.0
    assert ids[0] == point_id({"snr_db": 0, "seed": 1}) == "4a9b63dbe1"  # frozen: resume across versions
    assert [plan.point_dir(p) for p in plan.points] == [tmp_path / "out" / "points" / i for i in ids]
    # the same points keep their ids in a bigger grid or with the axes swapped
    bigger = load_sweep(write(tmp_path, sweep_data({"seed": [1, 2, 3], "snr_db": [0, 20]}), "b.yaml"))
    assert set(ids) < {p.id for p in bigger.points}
    # each point is the base scenario with the axis fields replaced (alias: every link)
    p = plan.points[2]
    assert p.scenario["seed"] == 1 and {link["snr_db"] for link in p.scenario["links"]} == {20}
    assert "sweep" not in p.scenario
    assert plan.name == "test-sweep" and plan.metrics_at == "all"
    assert not (tmp_path / "out").exists()  # expanding writes nothing


def test_paths_by_index_id_star_and_zip(tmp_path):
    data = sweep_data({
        "links.1.snr_db": [3],
        "nodes.r1.mode": ["af", "df"],
        "links.*.delay_s": [0.5],
        "flows.f0.workload.images.count": [1],
        "scheme": {"codec": ["uncoded", UNTRAINED], "hash_check.threshold_bits": [4, 9]},
    })
    plan = expand(parse_scenario(data), "x.yaml")
    assert len(plan.points) == 4
    sc = plan.points[-1].scenario
    assert [link["snr_db"] for link in sc["links"]] == [10.0, 3.0]
    assert [link["delay_s"] for link in sc["links"]] == [0.5, 0.5]
    assert sc["nodes"][1]["mode"] == "df" and sc["flows"][0]["workload"]["images"]["count"] == 1
    assert sc["flows"][0]["codec"]["untrained"] == "deepjscc" and sc["hash_check"]["threshold_bits"] == 9
    assert plan.points[0].scenario["hash_check"]["threshold_bits"] == 4  # zipped: varies with the codec
    assert plan.paths == ["links.1.snr_db", "nodes.r1.mode", "links.*.delay_s", "flows.f0.workload.images.count",
                          "codec", "hash_check.threshold_bits"]


BAD_AXES = [
    ("unknown field", {"snr": [1, 2]}, "sweep.axes.snr: unknown scenario field 'snr'"),
    ("node id", {"nodes.r9.mode": ["df"]}, "sweep.axes.nodes.r9.mode: nodes has no item with id 'r9'"),
    ("index", {"links.5.snr_db": [1]}, "sweep.axes.links.5.snr_db: links has 2 items"),
    ("nested unknown", {"hash_check.modle": ["x"]}, "hash_check.modle"),
    ("value out of range", {"links.0.snr_db": [0, -100]}, "sweep point links.0.snr_db=-100: links.0.snr_db"),
    ("bad relay mode", {"nodes.r1.mode": ["df", "cf"]}, "sweep point nodes.r1.mode=cf: nodes.1.mode"),
    ("same field twice", {"snr_db": [1], "links.0.snr_db": [2]}, "same field as axis 'snr_db'"),
    ("duplicate values", {"seed": [1, 1.0]}, "are the same"),
    ("not a list", {"seed": 3}, "sweep.axes.seed: expected a list"),
    ("empty", {"seed": []}, "sweep.axes.seed: needs at least one value"),
    ("zip lengths", {"z": {"seed": [1, 2], "snr_db": [0]}}, "sweep.axes.z: zip group lists differ"),
    ("output_dir", {"output_dir": ["a", "b"]}, "output_dir cannot be swept"),
    ("bad path", {"links..snr_db": [1]}, "not a dotted field path"),
]


@pytest.mark.parametrize("label,axes,needle", BAD_AXES, ids=[b[0] for b in BAD_AXES])
def test_bad_axis_exits_2_with_one_line_naming_it(tmp_path, label, axes, needle):
    path = write(tmp_path, sweep_data(axes))
    result = invoke(path, "-o", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.output
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_no_sweep_section_and_bad_executor(tmp_path):
    data = sweep_data()
    data.pop("sweep")
    result = invoke(write(tmp_path, data), "--dry-run")
    assert result.exit_code == 2 and "declares no sweep" in result.output
    result = invoke(write(tmp_path, sweep_data()), "--executor", "slurm")
    assert result.exit_code == 2 and "unknown executor 'slurm'" in result.output
    result = invoke(write(tmp_path, sweep_data()), "-o", tmp_path / "o", "--executor", "local", "--jobs", "2")
    assert result.exit_code == 2 and "one point at a time" in result.output
    with pytest.raises(ScenarioError, match="sweep.metrics_at"):
        parse_scenario(sweep_data(metrics_at="relays"))


# ------------------------------------------------------------------ running

def test_sweep_end_to_end_cli(tmp_path, counted):
    calls, _ = counted
    path, out = write(tmp_path, sweep_data()), tmp_path / "out"
    result = invoke(path, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert f"table: {out / 'sweep.parquet'}" in result.output and "4 run, 0 already finished" in result.output
    assert len(calls) == 4
    table = read_table(out, "sweep")
    assert table.equals(pd.read_parquet(out / "sweep.parquet"))
    assert len(pd.read_csv(out / "sweep.csv")) == len(table) == 4 * 3  # 4 points x (src, r1, dst)
    assert list(table.columns[:8]) == ["point", "snr_db", "seed", "flow", "hop", "node", "role", "mode"]
    for stat in ("psnr", "ms_ssim", "lpips", "hash_bit_agreement", "latency_s"):
        assert {f"{stat}_mean", f"{stat}_ci95"} <= set(table.columns)
    assert (table["n"] == 2).all()
    dst = table[table["node"] == "dst"].set_index(["snr_db", "seed"])
    assert (dst.loc[(20, 1), "psnr_mean"] > dst.loc[(0, 1), "psnr_mean"] + 10)
    assert (dst["psnr_ci95"] > 0).all() and (dst["latency_s_mean"] > 0).all()
    # the CI is the normal approximation over the point's frames
    point = dst.loc[(0, 2), "point"]
    hops = read_table(out / "points" / point, "hops")
    psnr = hops.loc[hops["node"] == "dst", "psnr"]
    assert dst.loc[(0, 2), "psnr_ci95"] == pytest.approx(1.96 * psnr.std(ddof=1) / len(psnr) ** 0.5)
    record = json.loads((out / "sweep.json").read_text())
    assert record["complete"] and [p["id"] for p in record["points"]] == list(dict.fromkeys(table["point"]))
    assert record["versions"]["netsim"] and record["axes"][0] == {"label": "snr_db", "paths": ["snr_db"],
                                                                   "values": [[0], [20]]}
    for p in record["points"]:
        done = json.loads((out / p["dir"] / "done.json").read_text())
        assert done["point"] == p["id"] and (out / p["dir"] / "manifest.json").exists()

    # a second start without --resume is refused; --resume with everything done runs nothing
    again = invoke(path, "-o", out, "-q")
    assert again.exit_code == 2 and "4 of 4 points are already finished; pass --resume" in again.output
    again = invoke(path, "-o", out, "-q", "--resume")
    assert again.exit_code == 0 and "0 run, 4 already finished" in again.output and len(calls) == 4
    dry = invoke(path, "-o", out, "--dry-run")
    assert dry.exit_code == 0 and dry.output.count(" done ") == 4 and "4 points (4 finished)" in dry.output


def test_kill_midway_then_resume_runs_only_the_missing_points(tmp_path, counted):
    calls, state = counted
    path = write(tmp_path, sweep_data())
    whole = invoke(path, "-o", tmp_path / "whole", "-q")
    assert whole.exit_code == 0, whole.output
    calls.clear()

    out = tmp_path / "out"
    state["kill_at"] = 3
    killed = invoke(path, "-o", out, "-q")
    assert killed.exit_code == 130 and "continue with --resume" in killed.output
    plan = load_sweep(path, out)
    done = plan.finished()
    assert [p.index for p in done] == [0, 1] and not (out / "sweep.parquet").exists()
    third = plan.point_dir(plan.points[2])
    third.mkdir(parents=True, exist_ok=True)
    (third / "hops.csv").write_text("half a tab")  # a point killed while writing: no done.json
    stamps = {p.id: (plan.point_dir(p) / "done.json").stat().st_mtime_ns for p in done}

    state["kill_at"] = None
    calls.clear()
    time.sleep(0.01)
    resumed = invoke(path, "-o", out, "-q", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "2 run, 2 already finished" in resumed.output
    assert sorted(calls) == sorted(str(plan.point_dir(p)) for p in plan.points[2:])
    assert stamps == {p.id: (plan.point_dir(p) / "done.json").stat().st_mtime_ns for p in done}
    pd.testing.assert_frame_equal(read_table(out, "sweep"), read_table(tmp_path / "whole", "sweep"))


def test_untrained_deepjscc_interrupted_by_hook_then_resumed(tmp_path, counted):
    calls, _ = counted
    plan = load_sweep(write(tmp_path, sweep_data(codec=UNTRAINED, size=16)), tmp_path / "out")
    whole = run_sweep(load_sweep(write(tmp_path, sweep_data(codec=UNTRAINED, size=16)), tmp_path / "whole"))
    assert len(whole.ran) == 4 and whole.table.query("hop > 0")["psnr_mean"].notna().all()
    calls.clear()

    def stop_after_first(point, outcome):
        assert outcome.ok
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, on_point=stop_after_first)
    assert len(calls) == 1 and [p.index for p in plan.finished()] == [0]
    result = run_sweep(plan, resume=True)
    assert result.skipped == [plan.points[0].id] and result.ran == [p.id for p in plan.points[1:]]
    assert len(calls) == 4
    pd.testing.assert_frame_equal(result.table, whole.table)


def test_custom_executor_from_registry_and_destination_rows(tmp_path, monkeypatch):
    class Backwards(LocalExecutor):  # stands for a later executor (e.g. Ray): only where points run
        def run(self, tasks, on_done):
            super().run(list(reversed(tasks)), on_done)

    monkeypatch.setitem(EXECUTORS, "backwards", Backwards)
    path = write(tmp_path, sweep_data(metrics_at="destination"))
    result = invoke(path, "-o", tmp_path / "b", "-q", "--executor", "backwards")
    assert result.exit_code == 0, result.output
    plain = run_sweep(load_sweep(path, tmp_path / "a"))
    table = read_table(tmp_path / "b", "sweep")
    assert list(table["node"]) == ["dst"] * 4
    pd.testing.assert_frame_equal(table, plain.table)


def test_resume_refuses_points_from_a_changed_scenario(tmp_path):
    data = sweep_data({"seed": [1]})
    out = tmp_path / "out"
    assert invoke(write(tmp_path, data), "-o", out, "-q").exit_code == 0
    data["flows"][0]["workload"]["images"]["count"] = 1
    result = invoke(write(tmp_path, data), "-o", out, "-q", "--resume")
    assert result.exit_code == 2 and "was run from a different scenario" in result.output


def test_failing_point_stops_with_one_line(tmp_path):
    data = sweep_data({"codec": ["uncoded", "no-such-model"]})
    result = invoke(write(tmp_path, data), "-o", tmp_path / "out", "-q")
    assert result.exit_code == 2, result.output
    assert "codec=no-such-model) failed:" in result.output and "Traceback" not in result.output
    assert [p.index for p in load_sweep(write(tmp_path, data), tmp_path / "out").finished()] == [0]


def test_process_pool_matches_local(tmp_path):
    path = write(tmp_path, sweep_data())
    local = run_sweep(load_sweep(path, tmp_path / "local"))
    result = invoke(path, "-o", tmp_path / "pool", "-q", "--jobs", "2")
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_table(tmp_path / "pool", "sweep"), local.table)


def test_canonical_json_is_order_and_float_insensitive():
    assert canonical_json({"b": 1.0, "a": [2.0, {"y": 1, "x": 0.5}]}) == '{"a":[2,{"x":0.5,"y":1}],"b":1}'
    with pytest.raises(SweepError, match="declares no sweep"):
        data = sweep_data()
        data.pop("sweep")
        expand(parse_scenario(data))
