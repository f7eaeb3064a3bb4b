"""Scenario files: the pydantic schema, safe YAML loading and one-line errors for people.

A scenario describes nodes (source / relay / destination, relay mode df / qf / af), directed links
(AWGN SNR, symbol rate, propagation delay, optional bit rate for error-free bit pipes), flows
(route or shortest path, codec per hop, workload), hash checks, metrics, compute model, seed,
device and output directory. ``load_scenario`` raises ``ScenarioError`` whose message is one line:
``FILE: field.path: what is wrong (what is allowed)``.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=64)]


# Everything str.splitlines() breaks at; a file's keys and values may hold them (escaped in messages).
_ESCAPE_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is a single line meant for people (line breaks
    that come from the file, e.g. inside a key, are escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(str(message).translate(_ESCAPE_LINE_BREAKS))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QFSettings(_Strict):
    """Vector quantiser of a QF relay: blocks of n_q reals of y, n_q*b bits per block."""

    n_q: int = Field(2, ge=1, le=16)
    b: str = Field("1", description="bits per real value, a number or fraction such as 3/4")
    codebook: str | None = Field(None, description="safetensors codebook; fitted at run start when absent")
    fit_images: int = Field(256, ge=1, description="images whose channel outputs fit the codebook")

    @field_validator("b", mode="before")
    @classmethod
    def _b_as_text(cls, v: Any) -> str:
        return str(v)

    @model_validator(mode="after")
    def _integer_bits(self) -> "QFSettings":
        if re.search(r"[eE][+-]?[\d_]{4,}", self.b):  # Fraction("1e999999999") would compute 10**999999999
            raise ValueError(f"n_q*b must be a whole number of bits in 1..16, got {self.n_q}*{self.b}")
        try:
            b = Fraction(self.b)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"b={self.b!r} is not a number or fraction like 3/4") from None
        bits = self.n_q * b
        if b <= 0 or bits.denominator != 1 or bits > 16:
            raise ValueError(f"n_q*b must be a whole number of bits in 1..16, got {self.n_q}*{self.b}")
        return self

    @property
    def fraction_b(self) -> Fraction:
        return Fraction(self.b)


class Node(_Strict):
    id: Identifier
    role: Literal["source", "relay", "destination"]
    mode: Literal["df", "qf", "af"] | None = Field(None, description="relay mode; relays only")
    qf: QFSettings | None = None
    position: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _mode_matches_role(self) -> "Node":
        if self.role == "relay" and self.mode is None:
            raise ValueError("a relay needs mode: df, qf or af")
        if self.role != "relay" and self.mode is not None:
            raise ValueError(f"mode is only for relays, not for a {self.role}")
        if self.qf is not None and self.mode != "qf":
            raise ValueError("qf settings are only for relays with mode: qf")
        return self


class Link(_Strict):
    """A directed link. Symbols cross it through the channel; bits cross it error-free at bit_rate."""

    src: Identifier
    dst: Identifier
    snr_db: float = Field(ge=-50, le=100)
    symbol_rate: float = Field(1e6, gt=0, description="complex channel symbols per second")
    delay_s: float = Field(0.0, ge=0, description="propagation delay in seconds")
    channel: Literal["awgn", "rayleigh"] = Field(
        "awgn", description="awgn, or rayleigh: block fading, one h ~ CN(0,1) per frame and hop")
    csi: bool = Field(True, description="rayleigh: the receiver knows h and equalises")
    bit_rate: float | None = Field(
        None, gt=0, description="bits/s of the error-free bit pipe; default: capacity symbol_rate*log2(1+SNR)")
    bidirectional: bool = False

    @property
    def effective_bit_rate(self) -> float:
        if self.bit_rate is not None:
            return self.bit_rate
        return self.symbol_rate * math.log2(1.0 + 10.0 ** (self.snr_db / 10.0))


RelayMode = Literal["df", "qf", "af"]


class PathLoss(_Strict):
    """Log-distance path loss: PL(d) = ref_loss_db + 10 * exponent * log10(d / ref_distance_m) dB,
    and the link SNR is tx_power_dbm - PL(d) - noise_floor_dbm (netsim.topology.snr_from_distance)."""

    tx_power_dbm: float = Field(20.0, description="transmit power in dBm (20 dBm = 100 mW)")
    noise_floor_dbm: float = Field(-90.0, description="receiver noise floor in dBm")
    exponent: float = Field(3.0, gt=0, le=10, description="path-loss exponent eta (2: free space)")
    ref_distance_m: float = Field(1.0, gt=0, description="reference distance d0 in metres")
    ref_loss_db: float = Field(
        40.05, description="PL(d0); default: free space at 2.4 GHz and 1 m, 20 log10(4 pi d0 f / c)")
    min_snr_db: float | None = Field(
        None, ge=-50, le=100, description="links whose SNR from distance is below this are left out")


class LinkDefaults(_Strict):
    """Link fields for every link of a topology (a file's edge attributes take precedence).
    Unset fields take the Link defaults; snr_db, when set, replaces the SNR from path loss."""

    snr_db: float | None = Field(None, ge=-50, le=100)
    symbol_rate: float | None = Field(None, gt=0)
    delay_s: float | None = Field(None, ge=0)
    channel: Literal["awgn", "rayleigh"] | None = None
    csi: bool | None = None
    bit_rate: float | None = Field(None, gt=0)


class Roles(_Strict):
    sources: list[Identifier] = []
    destinations: list[Identifier] = []


TOPOLOGY_FIELDS = {  # the kind-specific fields each kind accepts
    "file": {"path"},
    "line": {"n", "spacing_m"},
    "grid": {"rows", "cols", "spacing_m"},
    "random_geometric": {"n", "radius_m", "area_m", "seed"},
}


class Topology(_Strict):
    """Nodes and links generated (line, grid, random geometric) or read from a GraphML / GML file.

    Generated node ids: ``n0 .. n{N-1}`` (line, random_geometric), ``r{i}c{j}`` (grid, row i,
    column j). Positions are in metres: line (i * spacing_m, 0), grid (j * spacing_m,
    i * spacing_m), random_geometric uniform in an area_m x area_m square. Neighbours (line:
    consecutive, grid: 4-neighbourhood, random_geometric: within radius_m) get a link in both
    directions whose SNR comes from ``path_loss`` (or ``link_defaults.snr_db``). Nodes named in
    ``roles`` are sources / destinations; every other node is a relay with ``relay_mode``
    (``modes`` overrides it per node). Expanded by netsim.topology.expand_topology.
    """

    kind: Literal["file", "line", "grid", "random_geometric"]
    path: str | None = Field(
        None, description="file: .graphml / .xml or .gml; relative to the current directory; ~ and env vars expanded")
    n: int | None = Field(None, ge=2, le=10000, description="line, random_geometric: number of nodes")
    rows: int | None = Field(None, ge=1, le=1000, description="grid")
    cols: int | None = Field(None, ge=1, le=1000, description="grid")
    spacing_m: float | None = Field(None, gt=0, description="line, grid: distance between neighbours (10 m)")
    radius_m: float | None = Field(None, gt=0, description="random_geometric: link when distance <= radius_m")
    area_m: float | None = Field(None, gt=0, description="random_geometric: side of the square (100 m)")
    seed: int | None = Field(None, ge=0, description="random_geometric: placement seed (0; not the scenario seed)")
    roles: Roles | None = Field(None, description="required when generated; file: overrides role attributes")
    relay_mode: RelayMode = "df"
    modes: dict[Identifier, RelayMode] = Field({}, description="relay mode per node id")
    qf: QFSettings | None = Field(None, description="settings of every qf relay")
    link_defaults: LinkDefaults = LinkDefaults()
    path_loss: PathLoss = PathLoss()

    @model_validator(mode="after")
    def _kind_fields(self) -> "Topology":
        allowed = TOPOLOGY_FIELDS[self.kind]
        for name in sorted(set().union(*TOPOLOGY_FIELDS.values()) - allowed):
            if getattr(self, name) is not None:
                raise _FieldError(f"topology.{name}", f"not used by kind {self.kind} "
                                                      f"(its fields: {', '.join(sorted(allowed))})")
        required = {"file": ["path"], "line": ["n"], "grid": ["rows", "cols"], "random_geometric": ["n", "radius_m"]}
        for name in required[self.kind]:
            if getattr(self, name) is None:
                raise _FieldError(f"topology.{name}", f"kind {self.kind} needs {name}")
        if self.kind == "grid" and self.rows * self.cols < 2:
            raise _FieldError("topology", "a grid needs at least 2 nodes")
        if self.kind == "grid" and self.rows * self.cols > 10000:
            raise _FieldError("topology", f"a grid of at most 10000 nodes, got {self.rows}x{self.cols}")
        if self.kind != "file" and (self.roles is None or not self.roles.sources or not self.roles.destinations):
            raise _FieldError("topology.roles", "a generated topology needs roles: {sources: [ids], "
                                                "destinations: [ids]} (at least one of each)")
        return self


class ImageSource(_Strict):
    """Where a flow's images come from. ``skimage``: photos bundled with scikit-image."""

    source: Literal["skimage", "folder", "cifar10"] = "skimage"
    path: str | None = Field(None, description="folder or CIFAR-10 root; env vars and ~ are expanded")
    split: Literal["train", "val", "test"] = Field(
        "test", description="cifar10: the part to take images from (val only with split_file)")
    split_file: str | None = Field(
        None, description="cifar10: a split file (`netsim train split`) whose `split` list picks the images")
    size: int | tuple[int, int] = Field(64, description="centre crop + resize to HxW (int: square)")
    count: int = Field(8, ge=1)
    offset: int = Field(0, ge=0)
    landscape: bool = Field(False, description="folder: give portrait images a quarter turn first, so that "
                                               "mixed orientations share one size (Kodak at 512x768)")

    @model_validator(mode="after")
    def _needs_path(self) -> "ImageSource":
        if self.source in ("folder", "cifar10") and not self.path:
            raise ValueError(f"source {self.source} needs a path")
        if self.split_file and self.source != "cifar10":
            raise ValueError("split_file is for source cifar10")
        if self.split == "val" and not self.split_file:
            raise ValueError("split val needs a split_file")
        h, w = self.hw
        if h < 4 or w < 4 or h % 4 or w % 4:
            raise ValueError(f"size must be at least 4 and divisible by 4, got {h}x{w}")
        return self

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)


class Arrivals(_Strict):
    kind: Literal["periodic", "poisson", "all_at_once"] = "all_at_once"
    interval_s: float | None = Field(None, gt=0, description="periodic spacing")
    rate_hz: float | None = Field(None, gt=0, description="poisson rate")
    start_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _params(self) -> "Arrivals":
        if self.kind == "periodic" and self.interval_s is None:
            raise ValueError("periodic arrivals need interval_s")
        if self.kind == "poisson" and self.rate_hz is None:
            raise ValueError("poisson arrivals need rate_hz")
        return self


class Workload(_Strict):
    images: ImageSource = ImageSource()
    frames: int | None = Field(None, ge=1, description="frames to send; default one per image")
    arrivals: Arrivals = Arrivals()


class UntrainedCodec(_Strict):
    """A randomly initialised network, for tests and timing only (results say 'untrained')."""

    untrained: str = Field(description="registered architecture, e.g. deepjscc")
    config: dict[str, Any] = {}
    seed: int = 0


CodecSpec = Union[str, UntrainedCodec]


class Flow(_Strict):
    id: Identifier
    source: Identifier
    destination: Identifier
    route: list[Identifier] | None = Field(None, min_length=2, description="node ids from source to destination")
    routing: Literal["fewest_hops", "widest"] = Field(
        "fewest_hops", description="without a route: fewest hops, or the path whose weakest link is strongest")
    codec: CodecSpec | list[CodecSpec] = Field(
        "uncoded", description="'uncoded', a zoo model name or checkpoint path, or one per hop")
    workload: Workload = Workload()


class HashCheck(_Strict):
    model: str | None = Field(None, description="DHD hasher from the zoo; none: hash columns unavailable")
    threshold_bits: int = Field(8, ge=0, description="max Hamming distance that still matches")
    policy: Literal["record", "drop", "retransmit"] = Field(
        "record", description="on a mismatch: record it, drop the frame, or ask the previous hop to resend")
    max_tries: int = Field(3, ge=1, le=64, description="retransmit: transmissions per hop at most")


class RadioModel(_Strict):
    """Who shares a transmitter: one radio per node (all its outgoing links) or one per link."""

    per: Literal["node", "link"] = "node"
    half_duplex: bool = Field(False, description="a node cannot transmit while it receives")


class Compute(_Strict):
    """Simulated compute time of a node's batch: fixed (deterministic) or measured wall time."""

    model: Literal["fixed", "measured"] = "fixed"
    per_image_s: float = Field(1e-3, ge=0)
    per_batch_s: float = Field(0.0, ge=0)


class Sweep(_Strict):
    """A grid of variations of this scenario, run point by point by ``netsim sweep`` (netsim/sweep.py).

    ``axes`` maps a dotted field path to the list of values it takes, and the grid is the
    Cartesian product of the axes in the order written (the first axis varies slowest)::

        sweep:
          name: snr-seed            # sweep directory: output_dir with {name}; default <name>-sweep
          metrics_at: all           # sweep table rows: all = every (flow, hop, node); destination
          axes:
            snr_db: [0, 10, 20]     # alias: every link's snr_db (codec: every flow's codec)
            seed: [0, 1]
            nodes.r1.qf.b: [1, 3/2] # list items by index (links.0.snr_db) or, for nodes and
                                    # flows, by id; ``*`` stands for every item (links.*.delay_s)
            scheme:                 # a mapping is a zip group: its paths take their i-th values
              flows.0.codec: [a, b] # together (equal lengths); its key is only a label
              hash_check.model: [null, dhd-cifar10]

    Each point is the scenario with those fields replaced, validated like any scenario file.
    ``output_dir`` and ``sweep`` itself cannot be swept.
    """

    name: Identifier | None = Field(None, description="names the sweep directory; default <scenario name>-sweep")
    axes: dict[str, Any] = Field(
        min_length=1, description="dotted path -> list of values; a mapping of paths -> lists is a zip group")
    metrics_at: Literal["destination", "all"] = Field(
        "all", description="sweep table rows: every (flow, hop, node) or destinations only")

    @field_validator("axes")
    @classmethod
    def _axes_shape(cls, axes: dict[str, Any]) -> dict[str, Any]:
        seen: set[str] = set()

        def check_path(path: str, where: str) -> None:
            if not isinstance(path, str):  # a zip group's keys come straight from YAML
                raise _FieldError(where, f"{path!r} is not a dotted field path like links.0.snr_db")
            parts = path.split(".")
            if not path or any(not re.fullmatch(r"[A-Za-z0-9_\-]+|\*", p) for p in parts):
                raise _FieldError(where, f"{path!r} is not a dotted field path like links.0.snr_db")
            if parts[0] in ("sweep", "output_dir"):
                raise _FieldError(where, f"{parts[0]} cannot be swept (each point runs in <sweep dir>/points/<id>)")
            if path in seen:
                raise _FieldError(where, f"path {path!r} appears in more than one axis")
            seen.add(path)

        def check_values(values: Any, where: str) -> int:
            if not isinstance(values, list):
                raise _FieldError(where, f"expected a list of values, got {type(values).__name__}")
            if not values:
                raise _FieldError(where, "needs at least one value")
            return len(values)

        for key, values in axes.items():
            where = f"sweep.axes.{key}"
            if isinstance(values, dict):  # a zip group: key is a label
                if not values:
                    raise _FieldError(where, "a zip group needs at least one path")
                lengths = set()
                for path, column in values.items():
                    check_path(path, f"{where}.{path}")
                    lengths.add(check_values(column, f"{where}.{path}"))
                if len(lengths) > 1:
                    raise _FieldError(where, f"zip group lists differ in length ({sorted(lengths)})")
            else:
                check_path(key, where)
                if not isinstance(values, list):
                    raise _FieldError(where, f"expected a list of values or a mapping of paths to lists "
                                             f"(a zip group), got {type(values).__name__}")
                check_values(values, where)
        return axes


Metric = Literal["psnr", "ms_ssim", "lpips"]


class Retrieval(_Strict):
    """Retrieval with received images as queries: every reconstruction's hash ranks a clean,
    labelled database by Hamming distance; its AP@topk goes in the ``retrieval_ap`` column (the
    mean over a hop is the paper's mAP). Queries and database need class labels (CIFAR-10, or a
    folder tree with one subfolder per class)."""

    database: ImageSource
    topk: int = Field(1000, ge=1)


class Scenario(_Strict):
    name: Identifier = "scenario"
    description: str = ""
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    output_dir: str = "runs/{name}"
    nodes: list[Node] | None = Field(None, min_length=2, description="written out, or generated by topology")
    links: list[Link] | None = Field(None, min_length=1, description="written out, or generated by topology")
    topology: Topology | None = Field(None, description="generate nodes and links, or read them from a file")
    flows: list[Flow] = Field(min_length=1)
    hash_check: HashCheck = HashCheck()
    metrics: list[Metric] = ["psnr", "ms_ssim", "lpips"]
    lpips_weights: str | None = Field(None, description="LPIPS AlexNet weights (.npz or .pth)")
    compute: Compute = Compute()
    radio: RadioModel = RadioModel()
    max_batch: int = Field(16, ge=1, le=4096)
    batch_window_s: float = Field(0.0, ge=0, description="how long an idle node waits to fill a batch")
    save_images: int = Field(0, ge=0, le=64, description="first N frames per flow: save each hop's image")
    retrieval: Retrieval | None = Field(None, description="AP of each reconstruction's hash against a "
                                                          "labelled database (needs hash_check.model)")
    sweep: Sweep | None = Field(None, description="grid of variations run by `netsim sweep`; ignored by `netsim run`")

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        self._expand_topology()
        ids = [n.id for n in self.nodes]
        _unique(ids, "nodes", "node id")
        _unique([f.id for f in self.flows], "flows", "flow id")
        known = set(ids)
        roles = {n.id: n.role for n in self.nodes}
        seen_links: set[tuple[str, str]] = set()
        for i, link in enumerate(self.links):
            for end in ("src", "dst"):
                if getattr(link, end) not in known:
                    raise _FieldError(f"links.{i}.{end}", f"unknown node {getattr(link, end)!r} (nodes: {_listed(ids)})")
            if link.src == link.dst:
                raise _FieldError(f"links.{i}", f"self-loop on {link.src!r}")
            pairs = [(link.src, link.dst)] + ([(link.dst, link.src)] if link.bidirectional else [])
            for pair in pairs:
                if pair in seen_links:
                    raise _FieldError(f"links.{i}", f"duplicate link {pair[0]} -> {pair[1]}")
                seen_links.add(pair)
        for i, flow in enumerate(self.flows):
            for end, role in (("source", "source"), ("destination", "destination")):
                node = getattr(flow, end)
                if node not in known:
                    raise _FieldError(f"flows.{i}.{end}", f"unknown node {node!r} (nodes: {_listed(ids)})")
                if roles[node] != role:
                    raise _FieldError(f"flows.{i}.{end}", f"node {node!r} is a {roles[node]}, not a {role}")
        if self.retrieval is not None and not self.hash_check.model:
            raise _FieldError("retrieval", "needs a hasher: set hash_check.model")
        return self

    def _expand_topology(self) -> None:
        """With a topology section, fill nodes and links with what it generates (written-out
        nodes / links and a topology exclude each other)."""
        if self.topology is None:
            for name in ("nodes", "links"):
                if getattr(self, name) is None:
                    raise _FieldError(name, f"Field required (or a topology section that generates {name})")
            return
        for name in ("nodes", "links"):
            if getattr(self, name) is not None:
                raise _FieldError(name, "give either a topology or written-out nodes and links, not both")
        from netsim.topology import TopologyError, expand_topology

        try:
            nodes, links = expand_topology(self.topology)
        except TopologyError as err:
            raise _FieldError(err.loc, err.msg) from None
        # The model is frozen; these two fields are derived once, here, during validation.
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "links", links)

    @model_serializer(mode="wrap")
    def _without_generated(self, handler) -> dict[str, Any]:
        """Dumps keep the topology section, not what it generated, so that they parse again."""
        data = handler(self)
        if self.topology is not None and isinstance(data, dict):
            data.pop("nodes", None)
            data.pop("links", None)
        return data


class _FieldError(ValueError):
    def __init__(self, loc: str, msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def _listed(ids: list[str], limit: int = 20) -> str:
    """Node ids for an error line; long lists (generated topologies) are cut short."""
    if len(ids) <= limit:
        return ", ".join(ids)
    return f"{', '.join(ids[:limit])}, ... {len(ids) - limit} more"


def _unique(values: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise _FieldError(f"{where}.{i}.id", f"duplicate {what} {v!r}")
        seen.add(v)


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    ctx = first.get("ctx") or {}
    # Our own cross-field checks carry a precise location inside the message.
    inner = ctx.get("error")
    if isinstance(inner, _FieldError):
        loc, msg = inner.loc, inner.msg
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc or '<top>'}: {msg}{extra}"


def parse_scenario(data: Any, origin: str = "<scenario>") -> Scenario:
    """Validate already-loaded data; raise ScenarioError with one line on failure."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: <top>: expected a mapping of scenario fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(f"{origin}: {_format_validation_error(err)}") from None


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read a YAML scenario with a safe loader (no Python object construction) and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ScenarioError(f"{path}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, LookupError, AttributeError) as err:
        # PyYAML's constructors raise these on values they cannot build: dates such as 2024-13-01,
        # tags on the wrong text (!!int '', !!timestamp foo, !!bool maybe), 5000-digit integers.
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ScenarioError(f"{path}: invalid YAML: cannot build a value ({detail})") from None
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_scenario(data, str(path))


def scenario_json_schema() -> dict[str, Any]:
    return Scenario.model_json_schema()
