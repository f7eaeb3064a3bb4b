"""Scenario -> networkx.DiGraph (roles on nodes, Link objects on edges) and flow routes."""
from __future__ import annotations

import networkx as nx

from netsim.scenario import Flow, Link, Scenario, ScenarioError


def build_graph(scenario: Scenario) -> nx.DiGraph:
    graph = nx.DiGraph()
    for node in scenario.nodes:
        graph.add_node(node.id, spec=node)
    for link in scenario.links:
        graph.add_edge(link.src, link.dst, link=link)
        if link.bidirectional:
            graph.add_edge(link.dst, link.src, link=link.model_copy(update={"src": link.dst, "dst": link.src}))
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
    """The path whose weakest link has the highest SNR; among those, the one with fewest hops."""
    for threshold in sorted({d["link"].snr_db for _, _, d in graph.edges(data=True)}, reverse=True):
        strong = graph.edge_subgraph((a, b) for a, b, d in graph.edges(data=True) if d["link"].snr_db >= threshold)
        if source in strong and destination in strong:
            path = _fewest_hops(strong, source, destination)
            if path is not None:
                return path
    return None


def route_links(graph: nx.DiGraph, route: list[str]) -> list[Link]:
    return [graph.edges[a, b]["link"] for a, b in zip(route, route[1:])]


def check_routes(scenario: Scenario) -> list[list[str]]:
    """Resolve every flow's route (raises ScenarioError on the first bad one)."""
    graph = build_graph(scenario)
    return [resolve_route(graph, flow, i) for i, flow in enumerate(scenario.flows)]
