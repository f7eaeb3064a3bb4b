"""The committed paper results are what the code computes: one DF cell and one QF cell are re-run on
the first images of the test split and compared image by image with the committed hop records,
and the committed sweep tables are checked against those records."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from netsim.scenario import parse_scenario
from netsim.sim import run_scenario

COMPARED = ("psnr", "ms_ssim", "lpips", "hash_bit_agreement", "hash_cosine", "retrieval_ap", "bpp")
CELLS = {
    "paper-df": "cell-djscc-df-r0-snrm5-msedhd",
    "paper-qf": "cell-djscc-df-r0-snrm5-mse-qf-2x1",
}


def _cell(kind: str) -> tuple[dict, pd.DataFrame]:
    stem = REPO / "results" / kind / CELLS[kind]
    if not stem.with_suffix(".json").is_file():
        pytest.skip(f"{stem}.json not committed")
    point = json.loads(stem.with_suffix(".json").read_text())
    return point, pd.read_parquet(stem.with_suffix(".parquet"))


def _scenario(kind: str, assignment: dict, count: int, shared: Path, monkeypatch) -> dict:
    monkeypatch.setenv("NETSIM_CIFAR10", str(shared / "data" / "cifar10"))
    monkeypatch.setenv("NETSIM_LPIPS_WEIGHTS", str(shared / "weights" / "lpips_alexnet.npz"))
    monkeypatch.chdir(REPO)  # the scenario names models and the split by repository paths
    data = yaml.safe_load((REPO / "scenarios" / f"{kind}.yaml").read_text())
    data.pop("sweep")
    for path, value in assignment.items():
        if path == "snr_db":
            for link in data["links"]:
                link["snr_db"] = value
            continue
        target = data
        *parents, last = path.split(".")
        for part in parents:
            target = next(x for x in target if x.get("id") == part) if isinstance(target, list) else target[part]
        target[last] = value
    data["flows"][0]["workload"]["images"]["count"] = count
    return data


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_a_committed_cell_reproduces_image_by_image(kind, shared, monkeypatch, tmp_path):
    point, committed = _cell(kind)
    weights = (REPO / point["assignment"]["flows.cifar.codec"]).with_suffix(".safetensors")
    if not weights.is_file():
        pytest.skip(f"{weights} not in this checkout")
    count = 48
    data = _scenario(kind, point["assignment"], count, shared, monkeypatch)
    hops = run_scenario(parse_scenario(data, kind), tmp_path).hops
    links = int(hops["hop"].max())  # 1 for the DF r = 0 cell, 2 through the QF relay
    mine = hops[hops["hop"] > 0].set_index(["frame", "hop"]).sort_index()
    theirs = committed[(committed["hop"] > 0) & (committed["frame"] < count)].set_index(["frame", "hop"]).sort_index()
    assert len(mine) == len(theirs) == count * links
    for col in COMPARED:
        pd.testing.assert_series_equal(mine[col], theirs[col], check_exact=False, rtol=1e-4, atol=1e-4,
                                       obj=f"{kind} {col}")


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_the_sweep_table_holds_the_cell_means(kind):
    point, committed = _cell(kind)
    table = pd.read_csv(REPO / "results" / kind / "sweep.csv")
    rows = table[table["point"] == point["point"]].set_index("hop")
    for hop, group in committed[committed["hop"] > 0].groupby("hop"):
        for col in COMPARED:
            if group[col].notna().any():
                assert rows.loc[hop, f"{col}_mean"] == pytest.approx(group[col].mean(), rel=1e-5), (hop, col)
