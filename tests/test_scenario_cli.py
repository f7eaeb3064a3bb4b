"""Scenario validation errors and the CLI, in-process with click's CliRunner."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from conftest import chain
from netsim.cli import main


def write(tmp_path, data, name="s.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def mutate(fn):
    data = chain(["df"])
    fn(data)
    return data


MALFORMED = [
    ("unknown top-level field", mutate(lambda d: d.update(nodez=[])), "nodez"),
    ("missing nodes", mutate(lambda d: d.pop("nodes")), "nodes"),
    ("bad role", mutate(lambda d: d["nodes"][0].update(role="sink")), "nodes.0.role"),
    ("relay without mode", mutate(lambda d: d["nodes"][1].pop("mode")), "nodes.1"),
    ("mode on a source", mutate(lambda d: d["nodes"][0].update(mode="df")), "nodes.0"),
    ("unknown relay mode", mutate(lambda d: d["nodes"][1].update(mode="cf")), "nodes.1.mode"),
    ("link to unknown node", mutate(lambda d: d["links"][0].update(dst="nowhere")), "links.0.dst"),
    ("negative symbol rate", mutate(lambda d: d["links"][0].update(symbol_rate=-1)), "links.0.symbol_rate"),
    ("snr not a number", mutate(lambda d: d["links"][1].update(snr_db="ten")), "links.1.snr_db"),
    ("self-loop", mutate(lambda d: d["links"][0].update(dst="src")), "links.0"),
    ("duplicate node id", mutate(lambda d: d["nodes"].append({"id": "r1", "role": "relay", "mode": "df"})),
     "nodes.3.id"),
    ("flow source is a relay", mutate(lambda d: d["flows"][0].update(source="r1")), "flows.0.source"),
    ("periodic without interval",
     mutate(lambda d: d["flows"][0]["workload"].update(arrivals={"kind": "periodic"})), "flows.0.workload.arrivals"),
    ("image size not /4", mutate(lambda d: d["flows"][0]["workload"]["images"].update(size=30)),
     "flows.0.workload.images"),
    ("qf bits not whole", mutate(lambda d: d["nodes"][1].update(mode="qf", qf={"n_q": 2, "b": "3/4"})),
     "nodes.1.qf"),
    ("bad device", mutate(lambda d: d.update(device="gpu")), "device"),
    ("unknown metric", mutate(lambda d: d.update(metrics=["fid"])), "metrics.0"),
    ("negative delay", mutate(lambda d: d["links"][0].update(delay_s=-0.1)), "links.0.delay_s"),
    ("zero max_batch", mutate(lambda d: d.update(max_batch=0)), "max_batch"),
    ("route through missing link", mutate(lambda d: d["flows"][0].update(route=["src", "dst"])), "flows.0.route"),
    ("unreachable destination", mutate(lambda d: d["links"].pop()), "unreachable"),
    ("top level is a list", "- 1\n- 2\n", "<top>"),
    ("invalid yaml", "nodes: [\n  - {id: a\n", "invalid YAML"),
    ("python object tag", "!!python/object/apply:os.system ['touch /tmp/netsim-pwned']\n", "invalid YAML"),
]


@pytest.mark.parametrize("label,data,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_scenario_one_line_exit_2(tmp_path, label, data, field):
    path = write(tmp_path, data)
    result = CliRunner().invoke(main, ["validate", path])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}: ")
    assert field in lines[0]
    assert "Traceback" not in result.output


def test_yaml_object_construction_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n")
    CliRunner().invoke(main, ["validate", path])
    assert not marker.exists()


def test_missing_file_and_unknown_codec(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "file not found" in result.output
    data = chain(["df"])
    data["flows"][0]["codec"] = "no-such-model"
    result = CliRunner().invoke(main, ["run", "-q", write(tmp_path, data)])
    assert result.exit_code == 2, result.output
    assert "flows.0.codec" in result.output and "Traceback" not in result.output


def test_validate_ok_prints_routes(tmp_path):
    result = CliRunner().invoke(main, ["validate", write(tmp_path, chain(["df", "af"]))])
    assert result.exit_code == 0
    assert "src -> r1 -> r2 -> dst" in result.output


def test_schema_is_json():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "nodes" in schema["properties"] and "flows" in schema["required"]


def test_run_then_plot(tmp_path):
    data = chain(["df"], count=3, output_dir=str(tmp_path / "run"))
    result = CliRunner().invoke(main, ["run", write(tmp_path, data)])
    assert result.exit_code == 0, result.output
    assert "per-hop means" in result.output
    run_dir = tmp_path / "run"
    for name in ("hops.parquet", "hops.csv", "frames.parquet", "frames.csv", "manifest.json"):
        assert (run_dir / name).is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["versions"]["torch"]
    assert manifest["routes"] == {"f0": ["src", "r1", "dst"]}
    assert not list(run_dir.glob(".*.tmp"))
    result = CliRunner().invoke(main, ["plot", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "figures" / "per_hop.png").stat().st_size > 0
    assert (run_dir / "figures" / "per_hop.svg").stat().st_size > 0


def test_plot_rejects_non_run_dir(tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "no hops table" in result.output


def test_models_lists_zoo(tmp_path):
    result = CliRunner().invoke(main, ["models", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "no models" in result.output
