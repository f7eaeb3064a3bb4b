"""Scenario -> networkx.DiGraph (roles on nodes, Link objects on edges) and flow routes.

Also where a scenario's ``topology`` section becomes nodes and links (``expand_topology``):
generated graphs (line, grid, random geometric) or a GraphML / GML file, with link SNR from
node positions through the log-distance path-loss model::

    PL(d)  = ref_loss_db + 10 * exponent * log10(d / ref_distance_m)      [dB]
    SNR_dB = tx_power_dbm - PL(d) - noise_floor_dbm

Scenario validation calls ``expand_topology`` and stores the result in ``scenario.nodes`` /
``scenario.links``, so everything downstream (routes, the engine) sees written-out nodes and links.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from netsim.scenario import Flow, Link, Node, PathLoss, Scenario, ScenarioError, Topology

LINK_ATTRIBUTES = ("snr_db", "symbol_rate", "delay_s", "channel", "csi", "bit_rate")
MAX_SNR_DB = 100.0  # the schema's bound on Link.snr_db; nearer nodes are capped to it
GRAPH_SUFFIXES = {".graphml": "GraphML", ".xml": "GraphML", ".gml": "GML"}
_DEFAULT_PATH_LOSS = PathLoss()


class TopologyError(ScenarioError):
    """A topology that cannot be expanded; ``loc`` is the scenario field to blame."""

    def __init__(self, loc: str, msg: str):
        super().__init__(f"{loc}: {msg}")
        self.loc, self.msg = loc, msg


# --------------------------------------------------------------------------------- path loss
def path_loss_db(distance_m: float, exponent: float = _DEFAULT_PATH_LOSS.exponent,
                 ref_distance_m: float = _DEFAULT_PATH_LOSS.ref_distance_m,
                 ref_loss_db: float = _DEFAULT_PATH_LOSS.ref_loss_db) -> float:
    """Log-distance path loss PL(d) = PL(d0) + 10 * eta * log10(d / d0) in dB (d > 0, in metres)."""
    if not distance_m > 0:
        raise ValueError(f"distance must be positive, got {distance_m}")
    return ref_loss_db + 10.0 * exponent * math.log10(distance_m / ref_distance_m)


def snr_from_distance(distance_m: float, model: PathLoss | None = None) -> float:
    """Link SNR in dB at ``distance_m``: P_tx - PL(d) - N_floor (``model`` defaults to PathLoss())."""
    m = model or _DEFAULT_PATH_LOSS
    return m.tx_power_dbm - path_loss_db(distance_m, m.exponent, m.ref_distance_m, m.ref_loss_db) - m.noise_floor_dbm


def distance_for_snr(snr_db: float, model: PathLoss | None = None) -> float:
    """The distance in metres at which the SNR falls to ``snr_db`` (inverse of snr_from_distance)."""
    m = model or _DEFAULT_PATH_LOSS
    excess = m.tx_power_dbm - m.noise_floor_dbm - snr_db - m.ref_loss_db
    return m.ref_distance_m * 10.0 ** (excess / (10.0 * m.exponent))


# --------------------------------------------------------------------------------- expansion
def expand_topology(spec: Topology) -> tuple[list[Node], list[Link]]:
    """The nodes and directed links a ``topology`` section stands for; raises TopologyError.

    Undirected graphs (every generated one, and undirected files) give a link in each direction.
    A link's fields come from the file's edge attributes, else ``link_defaults``, else the Link
    defaults; its SNR from the edge's ``snr_db``, else ``link_defaults.snr_db``, else path loss over
    the distance between the two nodes' positions (capped at 100 dB; below
    ``path_loss.min_snr_db`` the link is left out).
    """
    if spec.kind == "file":
        graph, where = read_graph_file(spec.path), "topology.path"
    else:
        graph, where = _generate(spec), "topology"
    nodes = _nodes(graph, spec, where)
    links = _links(graph, spec, where)
    if not links:
        raise TopologyError(where, "the topology has no links (check radius_m, path_loss.min_snr_db or the file)")
    return nodes, links


def read_graph_file(path: str) -> nx.Graph:
    """A GraphML (.graphml, .xml) or GML (.gml) file as a simple graph with string node ids.

    Paths are relative to the current directory (like every path in a scenario); ~ and
    environment variables are expanded. GML nodes are named by their ``label`` (else ``id``).
    """
    where = "topology.path"
    file = Path(os.path.expandvars(os.path.expanduser(path)))
    fmt = GRAPH_SUFFIXES.get(file.suffix.lower())
    if fmt is None:
        raise TopologyError(where, f"{path}: unknown graph format {file.suffix or '(no suffix)'!r} "
                                   f"(allowed: {', '.join(GRAPH_SUFFIXES)})")
    if not file.is_file():
        raise TopologyError(where, f"file not found: {path}")
    try:
        if fmt == "GraphML":
            graph = nx.read_graphml(file)
        else:
            graph = nx.read_gml(file, label=None)
            labels = {n: d["label"] for n, d in graph.nodes(data=True) if "label" in d}
            if len(labels) == len(graph) and len(set(map(str, labels.values()))) == len(graph):
                graph = nx.relabel_nodes(graph, labels)
    except Exception as err:  # noqa: BLE001 - any parser failure is one line for people
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TopologyError(where, f"cannot read {path} as {fmt}: {detail}") from None
    graph = nx.relabel_nodes(graph, {n: str(n) for n in graph.nodes}) if any(
        not isinstance(n, str) for n in graph.nodes) else graph
    if graph.is_multigraph():
        for a, b in graph.edges():
            if graph.number_of_edges(a, b) > 1:
                raise TopologyError(where, f"{path}: more than one edge {a} - {b}")
        graph = nx.DiGraph(graph) if graph.is_directed() else nx.Graph(graph)
    for a, _ in nx.selfloop_edges(graph):
        raise TopologyError(where, f"{path}: self-loop on {a!r}")
    for node, data in graph.nodes(data=True):
        has = [k for k in ("x", "y") if k in data]
        if len(has) == 1:
            raise TopologyError(where, f"{path}: node {node!r} has {has[0]} but not {'y' if has[0] == 'x' else 'x'}")
        if has:
            try:
                data["pos"] = (float(data["x"]), float(data["y"]))
            except (TypeError, ValueError):
                raise TopologyError(where, f"{path}: node {node!r}: x, y must be numbers, got "
                                           f"{data['x']!r}, {data['y']!r}") from None
    graph.graph["origin"] = path
    return graph


def _generate(spec: Topology) -> nx.Graph:
    if spec.kind == "line":
        spacing = spec.spacing_m or 10.0
        graph = nx.path_graph(spec.n)
        pos = {i: (i * spacing, 0.0) for i in graph}
        names = {i: f"n{i}" for i in graph}
    elif spec.kind == "grid":
        spacing = spec.spacing_m or 10.0
        graph = nx.grid_2d_graph(spec.rows, spec.cols)  # nodes (row, col); edges to the 4 neighbours
        pos = {(i, j): (j * spacing, i * spacing) for i, j in graph}
        names = {(i, j): f"r{i}c{j}" for i, j in graph}
    else:  # random_geometric: uniform in the unit square, scaled to area_m x area_m metres
        area = spec.area_m or 100.0
        graph = nx.random_geometric_graph(spec.n, spec.radius_m / area, seed=0 if spec.seed is None else spec.seed)
        pos = {i: (graph.nodes[i]["pos"][0] * area, graph.nodes[i]["pos"][1] * area) for i in graph}
        names = {i: f"n{i}" for i in graph}
    out = nx.Graph()
    out.add_nodes_from((names[n], {"pos": pos[n]}) for n in graph)  # ids in generation order
    out.add_edges_from((names[a], names[b]) for a, b in graph.edges())
    return out


def _nodes(graph: nx.Graph, spec: Topology, where: str) -> list[Node]:
    origin = graph.graph.get("origin")
    ids = list(graph.nodes)
    known = set(ids)
    shown = f"{ids[0]} .. {ids[-1]}" if len(ids) > 6 else ", ".join(ids)
    assigned: dict[str, tuple[str, str]] = {}
    roles = spec.roles
    for field, role in (("sources", "source"), ("destinations", "destination")):
        for i, node in enumerate(getattr(roles, field) if roles else []):
            loc = f"topology.roles.{field}.{i}"
            if node not in known:
                raise TopologyError(loc, f"unknown node {node!r} (the topology has {len(ids)} nodes: {shown})")
            if node in assigned:
                raise TopologyError(loc, f"node {node!r} is already a {assigned[node][0]}")
            assigned[node] = (role, loc)
    nodes: list[Node] = []
    for node, data in graph.nodes(data=True):
        role = assigned[node][0] if node in assigned else data.get("role", "relay")
        mode = None
        if role == "relay":
            mode = spec.modes.get(node) or data.get("mode") or spec.relay_mode
        fields: dict[str, Any] = {"id": node, "role": role, "mode": mode, "position": data.get("pos")}
        if mode == "qf" and spec.qf is not None:
            fields["qf"] = spec.qf
        try:
            nodes.append(Node(**fields))
        except ValidationError as err:
            raise TopologyError(where, f"{origin + ': ' if origin else ''}node {node!r}: {_first_error(err)}") from None
        data["pos"] = nodes[-1].position  # validated floats (a GML pos "1" pos "2" is a list of strings)
    by_id = {n.id: n for n in nodes}
    for node in spec.modes:
        if node not in by_id:
            raise TopologyError(f"topology.modes.{node}", f"unknown node {node!r} (the topology has {shown})")
        if by_id[node].role != "relay":
            raise TopologyError(f"topology.modes.{node}", f"node {node!r} is a {by_id[node].role}, not a relay")
    for role, field in (("source", "sources"), ("destination", "destinations")):
        if not any(n.role == role for n in nodes):
            hint = "a role attribute on the file's nodes or " if origin else ""
            raise TopologyError("topology.roles", f"the topology has no {role} (give {hint}topology.roles.{field})")
    return nodes


def _links(graph: nx.Graph, spec: Topology, where: str) -> list[Link]:
    origin = graph.graph.get("origin")
    prefix = f"{origin}: " if origin else ""
    defaults = spec.link_defaults.model_dump(exclude_none=True)
    pairs = []
    for a, b, data in graph.edges(data=True):
        pairs.append((a, b, data))
        if not graph.is_directed():
            pairs.append((b, a, data))
    links: list[Link] = []
    for a, b, data in pairs:
        fields = {**defaults, **{k: data[k] for k in LINK_ATTRIBUTES if k in data}}
        if "snr_db" not in fields:
            pa, pb = graph.nodes[a].get("pos"), graph.nodes[b].get("pos")
            if pa is None or pb is None:
                raise TopologyError(where, f"{prefix}edge {a} -> {b} has no snr_db and its nodes no x, y "
                                           "positions (give one, or link_defaults.snr_db)")
            distance = math.dist(pa, pb)
            if not math.isfinite(distance):
                raise TopologyError(where, f"{prefix}nodes {a!r} and {b!r} are {distance} m apart (positions, "
                                           "spacing_m and area_m must give finite distances)")
            if distance <= 0:
                raise TopologyError(where, f"{prefix}nodes {a!r} and {b!r} are at the same position")
            try:
                snr = snr_from_distance(distance, spec.path_loss)
            except ValueError:  # log10 of distance / ref_distance_m when that ratio underflows to 0
                ref = spec.path_loss.ref_distance_m
                raise TopologyError("topology.path_loss", f"link {a} -> {b} over {distance:g} m: no path loss "
                                                          f"relative to ref_distance_m {ref:g} m") from None
            if spec.path_loss.min_snr_db is not None and snr < spec.path_loss.min_snr_db:
                continue
            if snr < -50:
                raise TopologyError("topology.path_loss", f"link {a} -> {b} over {distance:g} m has SNR {snr:.1f} dB, "
                                                          "below -50 dB (set path_loss.min_snr_db to leave such links out)")
            fields["snr_db"] = min(snr, MAX_SNR_DB)
        try:
            links.append(Link(src=a, dst=b, **fields))
        except ValidationError as err:
            raise TopologyError(where, f"{prefix}edge {a} -> {b}: {_first_error(err)}") from None
    return links


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


# --------------------------------------------------------------------------------- graph, routes
def build_graph(scenario: Scenario) -> nx.DiGraph:
    """Nodes carry ``spec`` (Node) and ``pos`` (x, y in metres or None); edges carry ``link``
    (Link) and ``distance_m`` when both ends have positions."""
    graph = nx.DiGraph()
    for node in scenario.nodes:
        graph.add_node(node.id, spec=node, pos=node.position)
    for link in scenario.links:
        graph.add_edge(link.src, link.dst, link=link)
        if link.bidirectional:
            graph.add_edge(link.dst, link.src, link=link.model_copy(update={"src": link.dst, "dst": link.src}))
    for a, b, data in graph.edges(data=True):
        pa, pb = graph.nodes[a]["pos"], graph.nodes[b]["pos"]
        if pa is not None and pb is not None:
            data["distance_m"] = math.dist(pa, pb)
    return graph


def resolve_route(graph: nx.DiGraph, flow: Flow, index: int) -> list[str]:
    """The flow's route as node ids: the given one (checked) or the fewest-hop path."""
    where = f"flows.{index}.route"
    if flow.route is None:
        # Only relays may carry traffic onwards; other sources and destinations are not transit nodes.
        transit = [n for n, spec in graph.nodes(data="spec") if spec.role == "relay"]
        usable = graph.subgraph([*transit, flow.source, flow.destination])
        path = (widest_path if flow.routing == "widest" else _fewest_hops)(usable, flow.source, flow.destination)
        if path is None:
            raise ScenarioError(f"{where}: destination {flow.destination!r} is unreachable from {flow.source!r}")
        return path
    route = list(flow.route)
    if route[0] != flow.source or route[-1] != flow.destination:
        raise ScenarioError(f"{where}: must start at {flow.source!r} and end at {flow.destination!r}")
    if len(set(route)) != len(route):
        raise ScenarioError(f"{where}: visits a node twice")
    for node in route:
        if node not in graph:
            raise ScenarioError(f"{where}: unknown node {node!r}")
    for a, b in zip(route, route[1:]):
        if not graph.has_edge(a, b):
            raise ScenarioError(f"{where}: no link {a} -> {b}")
    for node in route[1:-1]:
        if graph.nodes[node]["spec"].role != "relay":
            raise ScenarioError(f"{where}: intermediate node {node!r} is not a relay")
    return route


def _fewest_hops(graph: nx.DiGraph, source: str, destination: str) -> list[str] | None:
    try:
        return nx.shortest_path(graph, source, destination)
    except nx.NetworkXNoPath:
        return None


def widest_path(graph: nx.DiGraph, source: str, destination: str) -> list[str] | None:
    """The path whose weakest link has the highest SNR; among those, the one with fewest hops.

    Reachability over the links at or above an SNR threshold only shrinks as the threshold rises,
    so the widest bottleneck is found by bisection over the distinct link SNRs."""

    def path_at(threshold: float) -> list[str] | None:
        strong = graph.edge_subgraph((a, b) for a, b, d in graph.edges(data=True) if d["link"].snr_db >= threshold)
        if source not in strong or destination not in strong:
            return None
        return _fewest_hops(strong, source, destination)

    levels = sorted({d["link"].snr_db for _, _, d in graph.edges(data=True)})
    if not levels or path_at(levels[0]) is None:
        return None
    lo, hi = 0, len(levels) - 1  # invariant: a path exists at levels[lo]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if path_at(levels[mid]) is None:
            hi = mid - 1
        else:
            lo = mid
    return path_at(levels[lo])


def route_links(graph: nx.DiGraph, route: list[str]) -> list[Link]:
    return [graph.edges[a, b]["link"] for a, b in zip(route, route[1:])]


def check_routes(scenario: Scenario) -> list[list[str]]:
    """Resolve every flow's route (raises ScenarioError on the first bad one)."""
    graph = build_graph(scenario)
    return [resolve_route(graph, flow, i) for i, flow in enumerate(scenario.flows)]
