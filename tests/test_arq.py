"""Hash checks judged against ground truth: the `retrieved` column and the ROC table."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import chain
from netsim.results import hash_check_roc, read_table
from netsim.scenario import parse_scenario
from netsim.sim import run_scenario
from netsim.sim.engine import retrieved_right_class


def _bits(rows: list[str]) -> torch.Tensor:
    """Hashes whose sign bits are the given 0/1 strings (as +-0.5 values)."""
    return torch.tensor([[0.5 if c == "1" else -0.5 for c in r] for r in rows])


def test_retrieved_needs_a_strictly_nearest_own_image_when_unlabelled():
    database = _bits(["0000", "0011", "1111"])
    labels = torch.arange(3)  # unlabelled: each image its own class
    h = _bits(["0001",  # own 0: distance 1, others 1 and 3 -> a tie, not retrieved
               "0011",  # own 1: exact
               "0111",  # own 2: distance 1, image 1 also at 1 -> tie
               "1110",  # own 2: distance 1, image 1 at 3
               "0000"])  # own 2: distance 4, image 0 at 0 -> wrong image
    assert retrieved_right_class(h, database, labels, [0, 1, 2, 2, 2]) == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_retrieved_asks_for_the_right_class():
    database = _bits(["0000", "0001", "1111", "1110"])
    labels = torch.tensor([0, 0, 1, 1])
    h = _bits(["0011",  # own 0 (class 0): nearest of class 0 at 1, of class 1 at 2 -> right
               "0001",  # own 0: exactly image 1, same class -> right
               "0111",  # own 2 (class 1): class 1 at 1, class 0 at 2 -> right
               "0011"])  # own 3 (class 1): class 1 at 2, class 0 at 1 -> wrong
    assert retrieved_right_class(h, database, labels, [0, 0, 2, 3]) == [1.0, 1.0, 1.0, 0.0]


def test_retrieved_is_nan_for_a_single_class_flow():
    out = retrieved_right_class(_bits(["01", "10"]), _bits(["01", "11"]), torch.tensor([4, 4]), [0, 1])
    assert len(out) == 2 and all(math.isnan(v) for v in out)


def test_roc_counts_by_hand():
    hops = pd.DataFrame({
        "hop": [1, 1, 1, 1, 2, 0],
        "snr_db": [5.0, 5.0, 5.0, 5.0, 5.0, math.nan],
        "hash_hamming": [0.0, 2.0, 3.0, 5.0, 1.0, math.nan],
        "retrieved": [1.0, 1.0, 0.0, 0.0, 1.0, math.nan],
    })
    roc = hash_check_roc(hops, n_bits=6)
    assert len(roc) == 2 * 7  # hops 1 and 2 (the source row has no check), thresholds 0..6
    hop1 = roc[roc["hop"] == 1].set_index("threshold_bits")
    assert (hop1["retrieved"] == 2).all() and (hop1["not_retrieved"] == 2).all()
    # t=0 accepts {0}; t=2 accepts {0,2}; t=3 adds the bad 3; t=5 adds the bad 5
    assert hop1["false_reject_rate"].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert hop1["false_accept_rate"].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    hop2 = roc[roc["hop"] == 2]
    assert hop2["false_accept_rate"].isna().all()  # no bad receptions to accept
    assert hop2["false_reject_rate"].tolist() == [1.0] + [0.0] * 6


@pytest.fixture
def dhd_hasher():
    from netsim.nn.zoo import models_dir

    card = models_dir() / "dhd-cifar10-64.json"
    if not card.is_file():
        pytest.skip("bundled DHD hasher missing")
    return str(card)


def test_runs_write_the_hash_roc(dhd_hasher, tmp_path):
    data = chain(["df", "df"], snr_db=0.0, size=32, count=6)
    data["hash_check"] = {"model": dhd_hasher, "threshold_bits": 10}
    result = run_scenario(parse_scenario(data), tmp_path)
    hops = result.hops[result.hops["hop"] > 0]
    assert set(hops["retrieved"].unique()) <= {0.0, 1.0}
    roc = read_table(tmp_path, "hash_roc")
    assert sorted(roc["hop"].unique()) == [1, 2, 3]
    for _, curve in roc.groupby("hop"):
        far, frr = curve["false_accept_rate"].to_numpy(), curve["false_reject_rate"].to_numpy()
        ok = ~np.isnan(far)
        assert (np.diff(far[ok]) >= 0).all() and (np.diff(frr[~np.isnan(frr)]) <= 0).all()
        assert curve["threshold_bits"].max() == 64
    # the rates at the scenario's threshold match the verdicts of the hop records
    at = roc[roc["threshold_bits"] == 10].set_index("hop")
    for hop, group in hops.groupby("hop"):
        ok = group["retrieved"] > 0.5
        if ok.any():
            rejected_ok = (group["hash_verdict"][ok] == "mismatch").mean()
            assert at.loc[hop, "false_reject_rate"] == pytest.approx(rejected_ok)
