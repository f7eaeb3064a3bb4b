"""Fuzzing scenario files (issue 5): hypothesis writes valid and broken scenario files and
``netsim validate FILE`` (in-process, click's CliRunner) must either accept each one or reject it
with exit code 2 and a single line ``error: FILE: field.path: what is wrong``. Any other exception,
a traceback or a second output line fails. The library path the CLI uses (``load_scenario`` then
``check_routes``) is held to the same contract: a Scenario and routes, or one-line ScenarioError.

Three generators, derandomized so that CI sees the same files every time:

* valid documents mirroring the schema: chains of 1-4 df / qf / af relays with extra sources and
  destinations, explicit routes or fewest-hop / widest routing, per-hop codecs, workloads and
  arrivals; generated line / grid / random geometric topologies with roles, modes, link defaults
  and path loss; GraphML / GML topology files written next to the scenario; hash checks, sweeps,
  compute, radio, ... (most of them must validate, or the test could pass on garbage alone);
* the same documents broken structurally (fields dropped, wrong types, NaN / inf / negative
  numbers, unknown keys and enum values, empty lists) and semantically (routes through missing
  nodes, self-loops, unreachable destinations, duplicate ids, conflicting topology fields);
* broken files: lists and scalars at the top, truncated or spliced YAML, garbage and non-UTF-8
  bytes, ``!!python/...`` tags that must not run, PyYAML tags and values its constructors choke on,
  deep nesting, aliases, line breaks inside keys.

Regression tests for every crash the fuzzer found are at the end of the file.
"""
from __future__ import annotations

import copy
import itertools
import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from netsim.cli import main
from netsim.scenario import ScenarioError, load_scenario
from netsim.topology import check_routes

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
GRAPH_PLACEHOLDER = "@GRAPH@"  # a file topology's path, replaced by the written graph file's path
_counter = itertools.count()


# =========================================================================== the property
def check_file(path: Path, marker: Path | None = None) -> str:
    """Validate ``path`` through the CLI and the library; 'ok' or 'error', else the test fails."""
    result = CliRunner().invoke(main, ["validate", str(path)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught exception: hypothesis shows its traceback
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        assert result.output.startswith(f"ok: {path}: "), result.output
        cli = "ok"
    else:
        assert result.exit_code == 2, (result.exit_code, result.output)
        lines = result.output.splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {path}: "), result.output
        assert len(lines[0]) > len(f"error: {path}: "), result.output
        if lines[0].startswith(f"error: {path}: <top>: "):  # no field to name only when the file is no mapping
            assert not isinstance(_yaml_or_none(path), dict), f"a field-less error: {lines[0]}"
        cli = "error"
    try:
        scenario = load_scenario(path)
    except ScenarioError as err:
        _assert_one_line(err, prefix=f"{path}: ")
        lib = "error"
    else:
        try:
            check_routes(scenario)
        except ScenarioError as err:
            _assert_one_line(err)
            lib = "error"
        else:
            lib = "ok"
    assert cli == lib, (cli, lib, result.output)
    if marker is not None:
        assert not marker.exists(), "a YAML tag ran code"
    return cli


def _yaml_or_none(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - whatever the loader makes of it, it is not a mapping
        return None


def _assert_one_line(err: ScenarioError, prefix: str = "") -> None:
    text = str(err)
    assert len(text.splitlines()) == 1, repr(text)
    assert text.startswith(prefix), text


def write_case(base: Path, text: str | bytes, companions: dict[str, str] | None = None) -> Path:
    """A fresh directory under ``base`` with the scenario file (and any graph file it names)."""
    folder = base / f"case{next(_counter)}"
    folder.mkdir()
    for name, content in (companions or {}).items():
        (folder / name).write_text(content, encoding="utf-8")
        placeholder = f"{GRAPH_PLACEHOLDER}/{name}"
        if isinstance(text, str):
            text = text.replace(placeholder, str(folder / name))
        else:
            text = text.replace(placeholder.encode(), str(folder / name).encode())
    path = folder / "scenario.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# =========================================================================== valid documents
MODES = ("df", "qf", "af")
ZOO_NAMES = ("uncoded", "deepjscc-base-c16-snr10", "models/some.safetensors")

snr = st.one_of(st.integers(-50, 100), st.floats(-50, 100, allow_nan=False))
positive_rate = st.one_of(st.integers(1, 10**9), st.floats(1e3, 1e9))


@st.composite
def qf_settings(draw) -> dict:
    n_q = draw(st.integers(1, 4))
    b = Fraction(draw(st.integers(1, 16)), n_q)  # n_q * b: a whole number of bits in 1..16
    style = draw(st.sampled_from(["text", "number"]))
    if b.denominator == 1:
        value: Any = int(b) if style == "number" else str(b)
    elif style == "number" and b.denominator in (2, 4):
        value = float(b)
    else:
        value = f"{b.numerator}/{b.denominator}"
    return draw(st.fixed_dictionaries({"n_q": st.just(n_q), "b": st.just(value)},
                                      optional={"fit_images": st.integers(1, 512)}))


def link_fields() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"snr_db": snr}, optional={
        "symbol_rate": positive_rate, "delay_s": st.floats(0, 0.1), "channel": st.sampled_from(["awgn", "rayleigh"]),
        "csi": st.booleans(), "bit_rate": positive_rate})


@st.composite
def workload(draw) -> dict:
    size = draw(st.one_of(st.sampled_from([4, 8, 16, 32, 64]),
                          st.lists(st.sampled_from([4, 8, 12, 32]), min_size=2, max_size=2)))
    source = draw(st.sampled_from(["skimage", "skimage", "folder", "cifar10"]))
    images: dict[str, Any] = {"source": source, "size": size, "count": draw(st.integers(1, 16))}
    if source != "skimage":
        images["path"] = draw(st.sampled_from(["~/data/cifar", "$DATA/photos", "/tmp/images"]))
        images["split"] = draw(st.sampled_from(["train", "test"]))
    if draw(st.booleans()):
        images["offset"] = draw(st.integers(0, 8))
    arrivals = draw(st.one_of(
        st.just({}), st.just({"kind": "all_at_once"}),
        st.builds(lambda s: {"kind": "periodic", "interval_s": s}, st.floats(1e-4, 1.0)),
        st.builds(lambda r: {"kind": "poisson", "rate_hz": r}, st.floats(0.5, 1e4)),
    ))
    if arrivals and draw(st.booleans()):
        arrivals["start_s"] = draw(st.floats(0, 1))
    out: dict[str, Any] = {"images": images}
    if arrivals:
        out["arrivals"] = arrivals
    if draw(st.booleans()):
        out["frames"] = draw(st.integers(1, 64))
    return out


def codec(hops: int | None) -> st.SearchStrategy:
    one = st.one_of(st.sampled_from(ZOO_NAMES),
                    st.fixed_dictionaries({"untrained": st.just("deepjscc")},
                                          optional={"config": st.just({"c": 8}), "seed": st.integers(0, 9)}))
    if hops is None:
        return one
    return st.one_of(one, st.lists(one, min_size=hops, max_size=hops))


@st.composite
def top_level(draw, node_ids: list[str]) -> dict:
    """The optional scenario fields around nodes, links and flows."""
    optional = {
        "description": st.text(max_size=30),
        "seed": st.integers(0, 2**63),
        "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
        "output_dir": st.sampled_from(["runs/{name}", "/tmp/out", "runs/x"]),
        "hash_check": st.fixed_dictionaries({}, optional={
            "model": st.one_of(st.none(), st.just("dhd-cifar10-64")), "threshold_bits": st.integers(0, 64),
            "policy": st.sampled_from(["record", "drop", "retransmit"]), "max_tries": st.integers(1, 64)}),
        "metrics": st.lists(st.sampled_from(["psnr", "ms_ssim", "lpips"]), max_size=3, unique=True),
        "lpips_weights": st.sampled_from(["weights/lpips.npz", "~/lpips.pth"]),
        "compute": st.fixed_dictionaries({}, optional={
            "model": st.sampled_from(["fixed", "measured"]), "per_image_s": st.floats(0, 0.1),
            "per_batch_s": st.floats(0, 0.1)}),
        "radio": st.fixed_dictionaries({}, optional={"per": st.sampled_from(["node", "link"]),
                                                     "half_duplex": st.booleans()}),
        "max_batch": st.integers(1, 4096),
        "batch_window_s": st.floats(0, 1),
        "save_images": st.integers(0, 64),
        "sweep": sweep_section(node_ids),
    }
    out = {"name": draw(st.from_regex(r"[A-Za-z0-9_.\-]{1,16}", fullmatch=True))}
    out.update(draw(st.fixed_dictionaries({}, optional=optional)))
    return out


@st.composite
def sweep_section(draw, node_ids: list[str]) -> dict:
    choices = {
        "snr_db": st.lists(snr, min_size=1, max_size=3),
        "seed": st.lists(st.integers(0, 9), min_size=1, max_size=3),
        "codec": st.lists(st.just("uncoded"), min_size=1, max_size=2),
        "links.*.delay_s": st.lists(st.floats(0, 0.01), min_size=1, max_size=2),
        f"nodes.{node_ids[0]}.role": st.lists(st.just("source"), min_size=1, max_size=1),
        "flows.0.workload.frames": st.lists(st.integers(1, 9), min_size=1, max_size=3),
        "scheme": st.integers(1, 3).flatmap(lambda n: st.fixed_dictionaries({
            "flows.0.codec": st.lists(st.just("uncoded"), min_size=n, max_size=n),
            "hash_check.model": st.lists(st.sampled_from([None, "dhd-cifar10-64"]), min_size=n, max_size=n)})),
    }
    keys = draw(st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=3, unique=True))
    out: dict[str, Any] = {"axes": {k: draw(choices[k]) for k in keys}}
    if draw(st.booleans()):
        out["name"] = draw(st.sampled_from(["grid-a", "b_2", "s.1"]))
    if draw(st.booleans()):
        out["metrics_at"] = draw(st.sampled_from(["all", "destination"]))
    return out


@st.composite
def chain_document(draw) -> tuple[dict, dict]:
    """Written-out nodes and links: extra sources -> chain of relays -> extra destinations."""
    modes = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=4))
    relays = [f"r{i + 1}" for i in range(len(modes))]
    sources = ["src"] + [f"s{i}" for i in range(draw(st.integers(0, 2)))]
    dests = ["dst"] + [f"d{i}" for i in range(draw(st.integers(0, 2)))]
    nodes: list[dict[str, Any]] = [{"id": s, "role": "source"} for s in sources]
    for r, m in zip(relays, modes):
        node: dict[str, Any] = {"id": r, "role": "relay", "mode": m}
        if m == "qf" and draw(st.booleans()):
            node["qf"] = draw(qf_settings())
        if draw(st.booleans()):
            node["position"] = [draw(st.floats(-1e3, 1e3)), draw(st.floats(-1e3, 1e3))]
        nodes.append(node)
    nodes += [{"id": d, "role": "destination"} for d in dests]
    nodes = draw(st.permutations(nodes))
    pairs = [(s, relays[0]) for s in sources] + list(itertools.pairwise(relays)) + [(relays[-1], d) for d in dests]
    links = []
    for a, b in pairs:
        link = {"src": a, "dst": b, **draw(link_fields())}
        if a in relays and b in relays and draw(st.booleans()):
            link["bidirectional"] = True
        links.append(link)
    links = draw(st.permutations(links))
    flows = []
    for i in range(draw(st.integers(1, 3))):
        s, d = draw(st.sampled_from(sources)), draw(st.sampled_from(dests))
        flow: dict[str, Any] = {"id": f"f{i}", "source": s, "destination": d}
        how = draw(st.sampled_from(["route", "fewest_hops", "widest", "default"]))
        if how == "route":
            flow["route"] = [s, *relays, d]
        elif how != "default":
            flow["routing"] = how
        if draw(st.booleans()):
            flow["codec"] = draw(codec(len(relays) + 1))
        if draw(st.booleans()):
            flow["workload"] = draw(workload())
        flows.append(flow)
    doc = {**draw(top_level([n["id"] for n in nodes])), "nodes": nodes, "links": links, "flows": flows}
    return doc, {}


@st.composite
def generated_topology_document(draw) -> tuple[dict, dict]:
    """topology: line, grid or random_geometric, with roles, modes, link defaults, path loss."""
    kind = draw(st.sampled_from(["line", "grid", "random_geometric"]))
    topo: dict[str, Any] = {"kind": kind}
    if kind == "line":
        n = draw(st.integers(2, 12))
        topo["n"] = n
        ids = [f"n{i}" for i in range(n)]
        pairs = [(ids[0], ids[-1])]
        if draw(st.booleans()):
            topo["spacing_m"] = draw(st.floats(1, 100))
    elif kind == "grid":
        rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        if rows * cols < 2:
            cols = 2
        topo["rows"], topo["cols"] = rows, cols
        ids = [f"r{i}c{j}" for i in range(rows) for j in range(cols)]
        pairs = [("r0c0", f"r{rows - 1}c{cols - 1}")]
        if rows > 1 and cols > 1:
            pairs.append((f"r{rows - 1}c0", f"r0c{cols - 1}"))
        if draw(st.booleans()):
            topo["spacing_m"] = draw(st.floats(1, 60))
    else:
        n = draw(st.integers(3, 16))
        topo["n"] = n
        topo["radius_m"] = draw(st.floats(40, 150))
        ids = [f"n{i}" for i in range(n)]
        pairs = [(ids[0], ids[1])]
        if draw(st.booleans()):
            topo["area_m"] = draw(st.floats(50, 100))
        if draw(st.booleans()):
            topo["seed"] = draw(st.integers(0, 2**32))
    if draw(st.booleans()):
        pairs = [pairs[0]]
    topo["roles"] = {"sources": [s for s, _ in pairs], "destinations": [d for _, d in pairs]}
    relays = [i for i in ids if i not in {x for p in pairs for x in p}]
    if draw(st.booleans()):
        topo["relay_mode"] = draw(st.sampled_from(MODES))
    if relays and draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(relays), max_size=3, unique=True))
        topo["modes"] = {r: draw(st.sampled_from(MODES)) for r in chosen}
    if draw(st.booleans()):
        topo["qf"] = draw(qf_settings())
    if draw(st.booleans()):
        topo["link_defaults"] = draw(st.fixed_dictionaries({}, optional={
            "snr_db": snr, "symbol_rate": positive_rate, "delay_s": st.floats(0, 0.01),
            "channel": st.sampled_from(["awgn", "rayleigh"]), "csi": st.booleans(), "bit_rate": positive_rate}))
    if draw(st.booleans()):
        topo["path_loss"] = draw(st.fixed_dictionaries({}, optional={
            "tx_power_dbm": st.floats(0, 30), "noise_floor_dbm": st.floats(-100, -80),
            "exponent": st.floats(2, 4), "ref_distance_m": st.floats(0.5, 2), "ref_loss_db": st.floats(30, 45),
            "min_snr_db": st.floats(-50, 0)}))
    flows = []
    for i in range(draw(st.integers(1, 3))):
        s, d = draw(st.sampled_from(pairs))
        flow: dict[str, Any] = {"id": f"flow{i}", "source": s, "destination": d}
        if draw(st.booleans()):
            flow["routing"] = draw(st.sampled_from(["fewest_hops", "widest"]))
        if draw(st.booleans()):
            flow["codec"] = draw(codec(None))
        if draw(st.booleans()):
            flow["workload"] = draw(workload())
        flows.append(flow)
    return {**draw(top_level(ids)), "topology": topo, "flows": flows}, {}


@st.composite
def file_topology_document(draw) -> tuple[dict, dict]:
    """topology: kind file, a GraphML or GML file written next to the scenario."""
    n_relays = draw(st.integers(1, 4))
    directed = draw(st.booleans())
    graph = nx.DiGraph() if directed else nx.Graph()
    ids = ["a", *[f"m{i}" for i in range(n_relays)], "z"]
    with_roles = draw(st.booleans())
    for i, node in enumerate(ids):
        attrs: dict[str, Any] = {"x": float(i * draw(st.integers(5, 30))), "y": 0.0}
        if node not in ("a", "z") and draw(st.booleans()):
            attrs["mode"] = draw(st.sampled_from(MODES))
        if with_roles and node in ("a", "z"):
            attrs["role"] = "source" if node == "a" else "destination"
        graph.add_node(node, **attrs)
    for a, b in itertools.pairwise(ids):
        graph.add_edge(a, b, **draw(st.fixed_dictionaries({}, optional={"snr_db": st.floats(-10, 40)})))
    suffix = draw(st.sampled_from([".graphml", ".xml", ".gml"]))
    if suffix == ".gml":
        text = "\n".join(nx.generate_gml(graph))
    else:
        text = "\n".join(nx.generate_graphml(graph))
    name = f"net{suffix}"
    topo: dict[str, Any] = {"kind": "file", "path": f"{GRAPH_PLACEHOLDER}/{name}"}
    if not with_roles or draw(st.booleans()):
        topo["roles"] = {"sources": ["a"], "destinations": ["z"]}
    if draw(st.booleans()):
        topo["relay_mode"] = draw(st.sampled_from(MODES))
    flows = [{"id": "only", "source": "a", "destination": "z"}]
    return {**draw(top_level(ids)), "topology": topo, "flows": flows}, {name: text}


def valid_documents() -> st.SearchStrategy[tuple[dict, dict]]:
    return st.one_of(chain_document(), generated_topology_document(), file_topology_document())


# =========================================================================== broken documents
JUNK_STRINGS = ["", " ", "x", "df", "qf", "af", "cf", "source", "relay", "sink", "awgn", "rician", "3/4", "1/0",
                "nan", "inf", "-inf", "1e999999999", "0x10", "ghost", "../../etc/passwd", "a\nb", "tab\there",
                "\u2028", "{name}", "$HOME", "~", "é", "null", "true", "- 1", "*", "links.0", "%s%s%n"]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.sampled_from([0, -1, 2**63, -(2**70), 10**30]),
              st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(JUNK_STRINGS), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(JUNK_STRINGS), st.integers(-3, 3)), inner,
                                            max_size=3)),
    max_leaves=6)
UNKNOWN_KEYS = ["nodez", "colour", "snr", "Mode", "extra", "a\nb", "", 0, 1.5, True, None]


def paths_in(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indices) to a value inside ``doc``."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_in(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_in(v, (*prefix, i))
    return out


def get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def generic_mutation(draw, doc: dict, under: tuple = ()) -> str:
    path = draw(st.sampled_from(paths_in(get(doc, under), under)))
    target = get(doc, path)
    op = draw(st.sampled_from(["delete", "replace", "replace", "unknown_key", "empty", "wrap", "stringify",
                               "duplicate"]))
    if not path:
        op = "unknown_key" if op in ("delete", "duplicate") else op
    parent = get(doc, path[:-1]) if path else None
    if op == "delete":
        del parent[path[-1]]
    elif op == "replace" or (op == "unknown_key" and not isinstance(target, dict)):
        value = draw(junk)
        if path:
            parent[path[-1]] = value
        else:
            doc.clear()
            doc["nodes"] = value
        op = "replace"
    elif op == "unknown_key":
        target[draw(st.sampled_from(UNKNOWN_KEYS))] = draw(junk)
    elif op == "empty":
        if isinstance(target, (dict, list)):
            target.clear()
        elif path:
            parent[path[-1]] = draw(st.sampled_from([[], {}, ""]))
    elif op == "wrap" and path:
        parent[path[-1]] = [target]
    elif op == "stringify" and path:
        parent[path[-1]] = str(target)
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(target))
    return f"{op} at {'.'.join(map(str, path)) or '<top>'}"


def _flows(doc: dict) -> list[dict]:
    flows = doc.get("flows")
    return flows if isinstance(flows, list) and flows else [{}]


SEMANTIC: dict[str, Callable[[dict, Any], None]] = {
    "route through a missing node": lambda d, f: f.update(route=[f.get("source"), "ghost", f.get("destination")]),
    "empty route": lambda d, f: f.update(route=[]),
    "route of one node": lambda d, f: f.update(route=[f.get("source")]),
    "route backwards": lambda d, f: f.update(route=[f.get("destination"), f.get("source")]),
    "route visits a node twice": lambda d, f: f.update(route=[f.get("source"), f.get("source"),
                                                              f.get("destination")]),
    "flow from a missing node": lambda d, f: f.update(source="nowhere"),
    "flow to itself": lambda d, f: f.update(destination=f.get("source")),
    "duplicate flow id": lambda d, f: d.setdefault("flows", []).append(copy.deepcopy(f)),
    "no flows": lambda d, f: d.update(flows=[]),
    "flows missing": lambda d, f: d.pop("flows", None),
    "codec list of wrong length": lambda d, f: f.update(codec=["uncoded"] * 9),
    "bad arrivals": lambda d, f: f.update(workload={"arrivals": {"kind": "periodic", "rate_hz": 1}}),
    "image size not /4": lambda d, f: f.update(workload={"images": {"size": [6, 4]}}),
    "qf bits not whole": lambda d, f: d.setdefault("nodes", [{}]).append(
        {"id": "q", "role": "relay", "mode": "qf", "qf": {"n_q": 3, "b": "1/2"}}),
    "qf b with a huge exponent": lambda d, f: d.setdefault("nodes", [{}]).append(
        {"id": "q", "role": "relay", "mode": "qf", "qf": {"n_q": 1, "b": "1e999999999"}}),
    "qf b of 1/0": lambda d, f: d.setdefault("nodes", [{}]).append(
        {"id": "q", "role": "relay", "mode": "qf", "qf": {"b": "1/0"}}),
    "sweep of output_dir": lambda d, f: d.update(sweep={"axes": {"output_dir": ["a", "b"]}}),
    "sweep zip group of unequal lists": lambda d, f: d.update(sweep={"axes": {"g": {"seed": [1], "snr_db": [1, 2]}}}),
    "sweep zip group with a number key": lambda d, f: d.update(sweep={"axes": {"g": {1: [1], "seed": [2]}}}),
    "sweep zip group with a null key": lambda d, f: d.update(sweep={"axes": {"g": {None: [1]}}}),
    "sweep path with a line break": lambda d, f: d.update(sweep={"axes": {"links.0\n.snr_db": [1]}}),
    "sweep axes empty": lambda d, f: d.update(sweep={"axes": {}}),
    "unknown key with a line break": lambda d, f: d.update({"bad\nkey": 1}),
    "unknown key with a unicode line separator": lambda d, f: d.update({"bad\u2028key": 1}),
    "both topology and nodes": lambda d, f: d.update(topology={"kind": "line", "n": 3,
                                                               "roles": {"sources": ["n0"], "destinations": ["n2"]}},
                                                     nodes=[{"id": "a", "role": "source"}]),
}
SEMANTIC_NODES: dict[str, Callable[[list, list], None]] = {
    "self-loop": lambda nodes, links: links[0].update(dst=links[0].get("src")),
    "link to a missing node": lambda nodes, links: links[-1].update(dst="ghost"),
    "duplicate node id": lambda nodes, links: nodes.append(copy.deepcopy(nodes[-1])),
    "duplicate link": lambda nodes, links: links.append(copy.deepcopy(links[0])),
    "bidirectional duplicate": lambda nodes, links: links.append(
        {"src": links[0].get("dst"), "dst": links[0].get("src"), "snr_db": 1, "bidirectional": True}),
    "disconnected destination": lambda nodes, links: links.__setitem__(
        slice(None), [link for link in links if link.get("dst") != "dst"]),
    "no links": lambda nodes, links: links.clear(),
    "one node": lambda nodes, links: nodes.__setitem__(slice(1, None), []),
    "relay without a mode": lambda nodes, links: nodes.append({"id": "lonely", "role": "relay"}),
    "mode on a source": lambda nodes, links: nodes[0].update(mode="df"),
    "qf settings on a df relay": lambda nodes, links: nodes.append(
        {"id": "w", "role": "relay", "mode": "df", "qf": {"n_q": 2}}),
    "position of three numbers": lambda nodes, links: nodes[0].update(position=[1, 2, 3]),
    "position with NaN": lambda nodes, links: nodes[0].update(position=[math.nan, 0]),
    "NaN snr": lambda nodes, links: links[0].update(snr_db=math.nan),
    "infinite snr": lambda nodes, links: links[0].update(snr_db=math.inf),
    "negative delay": lambda nodes, links: links[0].update(delay_s=-1e-3),
    "zero symbol rate": lambda nodes, links: links[0].update(symbol_rate=0),
    "infinite bit rate": lambda nodes, links: links[0].update(bit_rate=math.inf),
    "intermediate destination": lambda nodes, links: nodes.append({"id": "dst2", "role": "destination"}),
}
SEMANTIC_TOPOLOGY: dict[str, Callable[[dict], None]] = {
    "unknown kind": lambda t: t.update(kind="ring"),
    "kind changed": lambda t: t.update(kind={"line": "grid", "grid": "random_geometric"}.get(t.get("kind"), "line")),
    "field of another kind": lambda t: t.update(radius_m=10.0),
    "line of one node": lambda t: t.update(n=1),
    "huge n": lambda t: t.update(n=10**9),
    "grid 1x1": lambda t: t.update(kind="grid", rows=1, cols=1),
    "grid too big": lambda t: t.update(kind="grid", rows=1000, cols=1000),
    "source that is not a node": lambda t: t.setdefault("roles", {}).update(sources=["ghost"]),
    "source is also destination": lambda t: t.setdefault("roles", {}).update(
        destinations=list((t.get("roles") or {}).get("sources") or ["n0"])),
    "no roles": lambda t: t.pop("roles", None),
    "empty roles": lambda t: t.update(roles={"sources": [], "destinations": []}),
    "mode for a missing node": lambda t: t.update(modes={"ghost": "df"}),
    "mode for a source": lambda t: t.update(modes={s: "qf" for s in (t.get("roles") or {}).get("sources", ["n0"])}),
    "tiny radius": lambda t: t.update(kind="random_geometric", n=5, radius_m=1e-9, rows=None, cols=None),
    "min snr drops every link": lambda t: t.setdefault("path_loss", {}).update(min_snr_db=100),
    "infinite spacing": lambda t: t.update(spacing_m=math.inf),
    "huge spacing": lambda t: t.update(spacing_m=1e300),
    "tiny spacing": lambda t: t.update(spacing_m=1e-300),
    "infinite area": lambda t: t.update(area_m=math.inf),
    "huge radius": lambda t: t.update(radius_m=1e300),
    "infinite reference distance": lambda t: t.setdefault("path_loss", {}).update(ref_distance_m=math.inf),
    "huge reference distance": lambda t: t.setdefault("path_loss", {}).update(ref_distance_m=1e308),
    "NaN tx power": lambda t: t.setdefault("path_loss", {}).update(tx_power_dbm=math.nan),
    "infinite noise floor": lambda t: t.setdefault("path_loss", {}).update(noise_floor_dbm=math.inf),
    "-inf noise floor": lambda t: t.setdefault("path_loss", {}).update(noise_floor_dbm=-math.inf),
    "loud transmitter": lambda t: t.setdefault("path_loss", {}).update(tx_power_dbm=1e6),
    "silent transmitter": lambda t: t.setdefault("path_loss", {}).update(tx_power_dbm=-1e6),
    "graph file missing": lambda t: t.update(kind="file", path="/nonexistent/graph.gml", n=None, rows=None,
                                             cols=None, radius_m=None, spacing_m=None, area_m=None, seed=None),
    "graph file of unknown format": lambda t: t.update(kind="file", path="net.csv"),
    "graph path with a line break": lambda t: t.update(kind="file", path="a\nb.gml"),
}


@st.composite
def semantic_mutation(draw, doc: dict) -> str | None:
    flow = draw(st.sampled_from(_flows(doc)))
    nodes, links, topo = doc.get("nodes"), doc.get("links"), doc.get("topology")
    kinds = list(SEMANTIC)
    if isinstance(nodes, list) and nodes and isinstance(links, list) and links:
        kinds += [f"nodes: {k}" for k in SEMANTIC_NODES]
    if isinstance(topo, dict):
        kinds += [f"topology: {k}" for k in SEMANTIC_TOPOLOGY]
    kind = draw(st.sampled_from(kinds))
    if kind.startswith("nodes: "):
        SEMANTIC_NODES[kind.removeprefix("nodes: ")](nodes, links)
    elif kind.startswith("topology: "):
        SEMANTIC_TOPOLOGY[kind.removeprefix("topology: ")](topo)
    else:
        SEMANTIC[kind](doc, flow)
    return kind


@st.composite
def broken_documents(draw) -> tuple[dict, dict]:
    doc, companions = draw(valid_documents())
    doc = copy.deepcopy(doc)
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            applied.append(draw(semantic_mutation(doc)))
        else:
            applied.append(draw(generic_mutation(doc)))
        if not isinstance(doc, dict):
            break
    note(f"mutations: {applied}")
    for m in applied:
        event(f"mutation: {m.split(' at ')[0]}")
    if companions and draw(st.integers(0, 3)) == 0:  # break the graph file instead, now and then
        name, text = next(iter(companions.items()))
        cut = draw(st.integers(0, len(text)))
        odd = ODD_GML if name.endswith(".gml") else ODD_GRAPHML
        companions = {name: draw(st.sampled_from([text[:cut], text[:cut] + "<<<garbage", "", "graph [", *odd]))}
        event("mutation: graph file")
    return doc, companions


@st.composite
def broken_topology_documents(draw) -> tuple[dict, dict]:
    """Generated and file topologies with odd graph files, odd numbers and mutated fields."""
    doc, companions = draw(st.one_of(generated_topology_document(), file_topology_document()))
    doc = copy.deepcopy(doc)
    if companions and draw(st.booleans()):
        name = next(iter(companions))
        companions = {name: draw(st.sampled_from(ODD_GML if name.endswith(".gml") else ODD_GRAPHML))}
        event("topology mutation: odd graph file")
        return doc, companions
    applied = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 3)):
            kind = draw(st.sampled_from(sorted(SEMANTIC_TOPOLOGY)))
            SEMANTIC_TOPOLOGY[kind](doc["topology"])
            applied.append(kind)
        else:
            applied.append(draw(generic_mutation(doc, under=("topology",))))
        if not isinstance(doc.get("topology"), dict):
            break
    note(f"mutations: {applied}")
    return doc, companions


def _gml(nodes: str, edges: str = "edge [ source 0 target 1 ] edge [ source 1 target 2 ]", head: str = "") -> str:
    return f"graph [ {head} {nodes} {edges} ]"


_GML_ROLES = 'node [ id 0 label "a" role "source" {} ] node [ id 1 label "m0" {} ] ' \
             'node [ id 2 label "z" role "destination" {} ]'
ODD_GML = [
    _gml(_GML_ROLES.format('pos "1" pos "2"', 'pos "5" pos "0"', 'pos "9" pos "0"')),  # string positions
    _gml(_GML_ROLES.format("x 0", "x 1", "x 2")),  # x without y
    _gml(_GML_ROLES.format('x "nan" y 0', "x 1 y 0", "x 2 y 0")),
    _gml(_GML_ROLES.format('x "inf" y 0', 'x "-inf" y 0', "x 2 y 0")),
    _gml(_GML_ROLES.format("x 0 y 0", "x 0 y 0", "x 1 y 0")),  # two nodes at the same place
    _gml(_GML_ROLES.format("x 0 y 0", "x 1 y 0", "x 2 y 0"), "edge [ source 1 target 1 ]"),  # self-loop
    _gml(_GML_ROLES.format("", "", ""), "edge [ source 0 target 1 ] edge [ source 0 target 1 ]", "multigraph 1"),
    _gml(_GML_ROLES.format("", "", ""), 'edge [ source 0 target 1 snr_db "loud" ] edge [ source 1 target 2 ]'),
    _gml(_GML_ROLES.format("", 'mode "cf"', ""),
         "edge [ source 0 target 1 snr_db 5 ] edge [ source 1 target 2 snr_db 5 ]"),
    _gml(_GML_ROLES.format("", "pos 3", "")),
    _gml('node [ id 0 label "a" ] node [ id 1 label "a" ]', "edge [ source 0 target 1 ]"),  # duplicate labels
    _gml('node [ id 0 label "bad id" ] node [ id 1 label "z" ]', "edge [ source 0 target 1 snr_db 3 ]"),
    _gml("", ""),
]
_GRAPHML = ('<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
            '<key id="x" for="node" attr.name="x" attr.type="{xtype}"/>'
            '<key id="y" for="node" attr.name="y" attr.type="double"/>'
            '<key id="r" for="node" attr.name="role" attr.type="string"/>'
            '<key id="s" for="edge" attr.name="snr_db" attr.type="{stype}"/>'
            '<graph edgedefault="{direction}"><node id="a"><data key="x">{x0}</data><data key="y">0</data>'
            '<data key="r">{role}</data></node><node id="m0"><data key="x">10</data><data key="y">0</data></node>'
            '<node id="z"><data key="x">20</data><data key="y">0</data><data key="r">destination</data></node>'
            '<edge source="a" target="m0"><data key="s">{snr}</data></edge><edge source="m0" target="z"/>'
            '</graph></graphml>')


def _graphml(xtype="double", stype="double", direction="undirected", x0="0", role="source", snr="10") -> str:
    return _GRAPHML.format(xtype=xtype, stype=stype, direction=direction, x0=x0, role=role, snr=snr)


ODD_GRAPHML = [
    _graphml(x0="NaN"), _graphml(x0="INF"), _graphml(xtype="string", x0="west"), _graphml(x0="10"),
    _graphml(role="sink"), _graphml(stype="string", snr="loud"), _graphml(snr="1e308"), _graphml(snr="NaN"),
    _graphml(direction="directed"), _graphml(direction="sideways"), _graphml(xtype="blob"),
    _graphml().replace('id="m0"', 'id="m 0"').replace('"m0"', '"m 0"'),
    _graphml().replace("</graphml>", ""),
]


# =========================================================================== broken files
DANGEROUS_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']\n",
    "name: !!python/object/apply:os.system ['touch {marker}']\n",
    "!!python/object/new:os.system [touch {marker}]\n",
    "nodes: !!python/name:os.system\n",
    "flows: [!!python/object/apply:subprocess.call [[touch, {marker}]]]\n",
]
CHOKING_VALUES = [
    "description: 2024-13-45\n", "description: 2001-02-29\n", "description: !!timestamp foo\n",
    "description: 2001-12-14t21:59:43.10-99:00\n",
    "seed: !!int ''\n", "seed: !!int 0x\n", "seed: !!int 0b\n", "seed: !!float ''\n", "seed: !!float x\n",
    "seed: !!bool maybe\n", "description: !!binary '%%%'\n", "metrics: !!set {psnr, [1]}\n",
    "seed: " + "9" * 5000 + "\n", "name: !!omap [1, 2]\n", "<<: 3\n", "nodes: *nowhere\n",
    "description: !!str [1]\n", "flows: !!seq {a: 1}\n", "x: &a [*a]\nflows: *a\n", "flows: &a [*a]\n",
    "seed: !unknown 3\n", "%YAML 9.9\n---\nseed: 1\n", "seed: 1\n---\nseed: 2\n",
]


@st.composite
def broken_files(draw) -> tuple[str | bytes, dict]:
    """Raw file contents: (text or bytes, companions)."""
    doc, companions = draw(valid_documents())
    text = dump(doc)
    kind = draw(st.sampled_from(["top-level list", "top-level scalar", "empty", "comment only", "truncated",
                                 "spliced", "garbage bytes", "latin-1", "utf-16", "nul byte", "tag",
                                 "choking value", "deep nesting", "deep mapping", "tab indentation",
                                 "random text", "line breaks in keys", "long line"]))
    event(f"file: {kind}")
    if kind == "top-level list":
        return dump([doc, doc]) if draw(st.booleans()) else "- 1\n- 2\n", companions
    if kind == "top-level scalar":
        return draw(st.sampled_from(["3\n", "hello\n", "null\n", "~\n", "'quoted'\n", "1.5e3\n", "true\n"])), {}
    if kind == "empty":
        return "", {}
    if kind == "comment only":
        return "# nothing here\n", {}
    if kind == "truncated":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))], companions
    if kind == "spliced":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.text(max_size=8)) + text[at:], companions
    if kind == "garbage bytes":
        return draw(st.binary(min_size=1, max_size=64)), {}
    if kind == "latin-1":
        doc = {**doc, "description": "café à la relay"}
        return dump(doc).encode("latin-1", errors="replace"), companions
    if kind == "utf-16":
        return text.encode("utf-16"), companions
    if kind == "nul byte":
        at = draw(st.integers(0, len(text)))
        return text[:at] + "\x00" + text[at:], companions
    if kind == "tag":
        return draw(st.sampled_from(DANGEROUS_TAGS)), {}
    if kind == "choking value":
        return text + draw(st.sampled_from(CHOKING_VALUES)), companions
    if kind == "deep nesting":
        depth = draw(st.sampled_from([10, 100, 900, 1500, 5000]))
        return text + "description: " + "[" * depth + "]" * depth + "\n", companions
    if kind == "deep mapping":
        depth = draw(st.sampled_from([50, 1200, 4000]))
        return "flows: " + "{a: " * depth + "1" + "}" * depth + "\n", {}
    if kind == "tab indentation":
        return text.replace("  ", "\t", 1), companions
    if kind == "random text":
        return draw(st.text(max_size=200)), {}
    if kind == "line breaks in keys":
        breaks = ['"x\\ny": 1\n', '"x\\ry": 1\n', '"\\u2029": 1\n', '? "a\\n"\n: 1\n']
        return text + draw(st.sampled_from(breaks)), companions
    # long line
    return text + "description: " + "x" * draw(st.sampled_from([1000, 100_000])) + "\n", companions


# =========================================================================== the fuzz tests
def test_fuzz_valid_scenarios(tmp_path):
    """Generated valid scenario files: validated without a crash, and most of them accepted."""
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=220)
    @given(valid_documents())
    def run(case):
        doc, companions = case
        outcome = check_file(write_case(tmp_path, dump(doc), companions))
        event(f"valid document: {outcome}")
        outcomes[outcome] += 1

    run()
    print("valid documents:", dict(outcomes))
    assert sum(outcomes.values()) >= 200
    # Random geometric graphs may leave a destination unreachable; everything else must pass.
    assert outcomes["ok"] >= 0.85 * sum(outcomes.values()), outcomes


def test_fuzz_broken_scenarios(tmp_path):
    """Valid documents with 1-3 structural or semantic mutations: accepted or one clean line."""
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=250)
    @given(broken_documents())
    def run(case):
        doc, companions = case
        outcome = check_file(write_case(tmp_path, dump(doc), companions))
        outcomes[outcome] += 1

    run()
    print("broken documents:", dict(outcomes))
    assert sum(outcomes.values()) >= 250
    assert outcomes["error"] >= 0.6 * sum(outcomes.values()), outcomes


def test_fuzz_broken_topologies(tmp_path):
    """Topology sections and graph files broken on purpose: accepted or one clean line."""
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=120)
    @given(broken_topology_documents())
    def run(case):
        doc, companions = case
        outcome = check_file(write_case(tmp_path, dump(doc), companions))
        outcomes[outcome] += 1

    run()
    print("broken topologies:", dict(outcomes))
    assert sum(outcomes.values()) >= 120
    assert outcomes["error"] >= 0.6 * sum(outcomes.values()), outcomes


def test_fuzz_broken_files(tmp_path):
    """Files that are not scenario YAML at all: one clean line, and no YAML tag ever runs code."""
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=150)
    @given(broken_files())
    def run(case):
        text, companions = case
        folder_marker = tmp_path / f"pwned{next(_counter)}"
        if isinstance(text, str):
            text = text.replace("{marker}", str(folder_marker))
        outcome = check_file(write_case(tmp_path, text, companions), marker=folder_marker)
        outcomes[outcome] += 1

    run()
    print("broken files:", dict(outcomes))
    assert sum(outcomes.values()) >= 150
    assert outcomes["error"] >= 0.75 * sum(outcomes.values()), outcomes  # a long line, a cut at a line end: ok


# =========================================================================== every listed mutation, once
BASE_TOPOLOGIES = {
    "line": {"kind": "line", "n": 4, "roles": {"sources": ["n0"], "destinations": ["n3"]}},
    "grid": {"kind": "grid", "rows": 3, "cols": 3, "spacing_m": 20,
             "roles": {"sources": ["r0c0"], "destinations": ["r2c2"]}},
    "random_geometric": {"kind": "random_geometric", "n": 10, "radius_m": 60, "seed": 1,
                         "roles": {"sources": ["n0"], "destinations": ["n1"]}},
    "file": {"kind": "file", "path": f"{GRAPH_PLACEHOLDER}/net.graphml"},
}


def base_chain() -> dict:
    return {"name": "base", "seed": 1,
            "nodes": [{"id": "src", "role": "source"}, {"id": "r1", "role": "relay", "mode": "df"},
                      {"id": "r2", "role": "relay", "mode": "qf", "qf": {"n_q": 2, "b": "3/2"}},
                      {"id": "dst", "role": "destination"}],
            "links": [{"src": "src", "dst": "r1", "snr_db": 5}, {"src": "r1", "dst": "r2", "snr_db": 7},
                      {"src": "r2", "dst": "dst", "snr_db": 9, "bit_rate": 1e6}],
            "flows": [{"id": "f0", "source": "src", "destination": "dst", "route": ["src", "r1", "r2", "dst"]}]}


def base_topology(kind: str) -> tuple[dict, dict]:
    topo = copy.deepcopy(BASE_TOPOLOGIES[kind])
    source, destination = ("a", "z") if kind == "file" else (topo["roles"]["sources"][0],
                                                              topo["roles"]["destinations"][0])
    doc = {"name": kind, "topology": topo, "flows": [{"id": "f0", "source": source, "destination": destination}]}
    return doc, ({"net.graphml": _graphml()} if kind == "file" else {})


@pytest.mark.parametrize("kind", ["chain", *BASE_TOPOLOGIES])
def test_base_documents_validate(tmp_path, kind):
    doc, companions = (base_chain(), {}) if kind == "chain" else base_topology(kind)
    assert check_file(write_case(tmp_path, dump(doc), companions)) == "ok"


@pytest.mark.parametrize("name", sorted(SEMANTIC))
def test_each_document_mutation_fails_cleanly(tmp_path, name):
    for doc, companions in [(base_chain(), {}), base_topology("line")]:
        SEMANTIC[name](doc, doc["flows"][0])
        check_file(write_case(tmp_path, dump(doc), companions))


@pytest.mark.parametrize("name", sorted(SEMANTIC_NODES))
def test_each_node_link_mutation_fails_cleanly(tmp_path, name):
    doc = base_chain()
    SEMANTIC_NODES[name](doc["nodes"], doc["links"])
    outcome = check_file(write_case(tmp_path, dump(doc), {}))
    # An unused node, a NaN position no SNR depends on, an infinitely fast bit pipe: all fine.
    assert outcome == "error" or name in ("intermediate destination", "position with NaN", "infinite bit rate"), outcome


@pytest.mark.parametrize("name", sorted(SEMANTIC_TOPOLOGY))
def test_each_topology_mutation_fails_cleanly(tmp_path, name):
    for kind in BASE_TOPOLOGIES:
        doc, companions = base_topology(kind)
        SEMANTIC_TOPOLOGY[name](doc["topology"])
        check_file(write_case(tmp_path, dump(doc), companions))


@pytest.mark.parametrize("graph", ODD_GML + ODD_GRAPHML, ids=lambda g: str(abs(hash(g)) % 10**6))
def test_each_odd_graph_file_fails_cleanly(tmp_path, graph):
    name = "net.gml" if graph.startswith("graph [") else "net.graphml"
    doc, _ = base_topology("file")
    doc["topology"]["path"] = f"{GRAPH_PLACEHOLDER}/{name}"
    check_file(write_case(tmp_path, dump(doc), {name: graph}))


@pytest.mark.parametrize("text", DANGEROUS_TAGS + CHOKING_VALUES, ids=range(len(DANGEROUS_TAGS + CHOKING_VALUES)))
def test_each_listed_yaml_oddity_fails_cleanly(tmp_path, text):
    marker = tmp_path / "pwned"
    assert check_file(write_case(tmp_path, dump(base_chain()) + text.replace("{marker}", str(marker))),
                      marker=marker) == "error" or text.startswith(("description: 2001-12-14", "description: !!binary"))


# =========================================================================== regressions: crashes found
def validate_line(tmp_path: Path, text: str, companions: dict[str, str] | None = None) -> str:
    """`netsim validate` on a file that must fail: its single output line."""
    path = write_case(tmp_path, text, companions)
    assert check_file(path) == "error"
    result = CliRunner().invoke(main, ["validate", str(path)])
    return result.output.strip().removeprefix(f"error: {path}: ")


@pytest.mark.parametrize("value", [
    "description: 2024-13-01",          # ValueError: month must be in 1..12 (implicit timestamp)
    "description: !!timestamp foo",     # AttributeError: 'NoneType' object has no attribute 'groupdict'
    "seed: !!int ''",                   # IndexError: string index out of range
    "seed: !!bool maybe",               # KeyError: 'maybe'
    "seed: " + "9" * 5000,              # ValueError: Exceeds the limit (4300 digits) for integer string conversion
])
def test_regression_yaml_values_pyyaml_cannot_build(tmp_path, value):
    """PyYAML's constructors raised ValueError / AttributeError / IndexError / KeyError, not YAMLError,
    and load_scenario let them through (fixed in netsim.scenario.load_scenario)."""
    line = validate_line(tmp_path, dump(base_chain()) + value + "\n")
    assert line.startswith("invalid YAML: cannot build a value ("), line


def test_regression_deeply_nested_yaml(tmp_path):
    """RecursionError from PyYAML's composer (fixed in netsim.scenario.load_scenario)."""
    line = validate_line(tmp_path, "description: " + "[" * 2000 + "]" * 2000 + "\n")
    assert line == "invalid YAML: nested too deeply"


def test_regression_empty_route(tmp_path):
    """route: [] passed the schema and resolve_route indexed route[0]: IndexError (fixed by
    Flow.route min_length=2 in netsim.scenario)."""
    doc = base_chain()
    doc["flows"][0]["route"] = []
    assert validate_line(tmp_path, dump(doc)).startswith("flows.0.route: List should have at least 2 items")
    doc["flows"][0]["route"] = ["src"]
    assert validate_line(tmp_path, dump(doc)).startswith("flows.0.route: ")


@pytest.mark.parametrize("key", [1, None, 2.5, True])
def test_regression_sweep_zip_group_with_non_string_key(tmp_path, key):
    """Sweep._axes_shape called key.split on YAML keys of a zip group: AttributeError (fixed there)."""
    doc = base_chain()
    doc["sweep"] = {"axes": {"g": {key: [1], "seed": [2]}}}
    assert validate_line(tmp_path, dump(doc)).startswith("sweep.axes.g."), doc


@pytest.mark.parametrize("doc_change,escaped", [
    (lambda d: d.update({"bad\nkey": 1}), "bad\\nkey"),
    (lambda d: d.update({"bad\u2028key": 1}), "bad\\u2028key"),
    (lambda d: d.update({"bad\rkey": 1}), "bad\\rkey"),
    (lambda d: d.update(sweep={"axes": {"links.0\n.snr_db": [1]}}), "sweep.axes.links.0\\n.snr_db"),
    (lambda d: d.update(topology=dict(BASE_TOPOLOGIES["file"], path="a\nb.gml"), nodes=None, links=None), "a\\nb"),
])
def test_regression_line_breaks_from_the_file_are_escaped(tmp_path, doc_change, escaped):
    """A key (or path) with a line break made the 'one line' error two lines; ScenarioError now
    escapes every line break str.splitlines() knows (netsim.scenario.ScenarioError)."""
    doc = base_chain()
    doc_change(doc)
    doc = {k: v for k, v in doc.items() if v is not None}
    assert escaped in validate_line(tmp_path, dump(doc))
    assert len(str(ScenarioError("a\nb\u2029c\x85d")).splitlines()) == 1


def test_regression_gml_positions_as_repeated_strings(tmp_path):
    """GML 'pos "1" pos "2"' is a list of strings: Node validation accepted it (lax floats) but the
    link SNR used the raw list: TypeError in math.dist (fixed in netsim.topology._nodes, which
    keeps the validated position)."""
    doc, _ = base_topology("file")
    doc["topology"]["path"] = f"{GRAPH_PLACEHOLDER}/net.gml"
    path = write_case(tmp_path, dump(doc), {"net.gml": ODD_GML[0]})
    assert check_file(path) == "ok"
    links = {(link.src, link.dst): link for link in load_scenario(path).links}
    assert links["a", "m0"].snr_db == pytest.approx(links["m0", "a"].snr_db)


@pytest.mark.parametrize("topology,field", [
    ({"kind": "grid", "rows": 2, "cols": 2, "spacing_m": math.inf}, "topology: "),  # 0 * inf = nan positions
    ({"kind": "line", "n": 3, "path_loss": {"ref_distance_m": math.inf}}, "topology.path_loss: "),  # log10(0)
    ({"kind": "line", "n": 3, "spacing_m": 1e-300, "path_loss": {"ref_distance_m": 1e308}}, "topology.path_loss: "),
])
def test_regression_non_finite_distances_name_the_field(tmp_path, topology, field):
    """NaN distances and log10(0) path loss raised plain ValueErrors inside the validator: one line,
    but '<top>: distance must be positive, got nan' / '<top>: math domain error' named no field
    (fixed in netsim.topology._links)."""
    ids = {"grid": ("r0c0", "r1c1"), "line": ("n0", "n2")}[topology["kind"]]
    topology = {**topology, "roles": {"sources": [ids[0]], "destinations": [ids[1]]}}
    doc = {"topology": topology, "flows": [{"id": "f", "source": ids[0], "destination": ids[1]}]}
    line = validate_line(tmp_path, dump(doc))
    assert line.startswith(field), line


def test_regression_qf_bits_with_a_huge_exponent_is_quick(tmp_path):
    """b: '1e999999999' made Fraction compute 10**999999999 (minutes and gigabytes; 1e10000000
    alone took 11 s) before failing the check; now refused at once (netsim.scenario.QFSettings)."""
    import time

    doc = base_chain()
    doc["nodes"][2]["qf"] = {"n_q": 1, "b": "1e10000000"}
    start = time.perf_counter()
    assert validate_line(tmp_path, dump(doc)).startswith("nodes.2.qf: n_q*b must be a whole number of bits")
    assert time.perf_counter() - start < 2.0
    doc["nodes"][2]["qf"] = {"n_q": 2, "b": "0.75e0"}  # exponents of a few digits still parse
    assert validate_line(tmp_path, dump(doc)).startswith("nodes.2.qf: ")
    doc["nodes"][2]["qf"] = {"n_q": 2, "b": "1.5e0"}
    assert check_file(write_case(tmp_path, dump(doc))) == "ok"
