"""The SimPy core: frames, links, node processes and the Simulation that wires them.

    arrivals --> [source] --link--> [relay df|qf|af] --link--> ... --> [destination]
                  encode   airtime    decode/re-encode,                 decode, measure
                  + hash   + delay    quantise or amplify
                           + channel

Timing is simulated (SimPy clock): a radio transmits one frame at a time (FIFO), airtime =
symbols / symbol_rate (+ bits / bit_rate for bit payloads and side information), then the
propagation delay. By default each node has one radio shared by all its outgoing links
(``radio.per: node``); ``per: link`` gives every link its own transmitter, and ``half_duplex``
also keeps the receiver's radio busy while it receives. A node that becomes idle takes up to ``max_batch`` waiting frames and runs one
forward pass per codec on the real device; its simulated compute time follows the compute model.
Channel noise for frame f of flow i at hop j comes from noise_key(seed, i, f, j), so results do not
depend on batching or event order.

Two deliberate departures from a textbook SimPy model, both for speed (benchmarks/sim_overhead.py):
a radio's FIFO transmitter is scheduled arithmetically (busy_until) rather than with a Resource and
a process per frame, and a node inbox is a deque plus a wake-up event rather than a Store. Both
give the event times of a FIFO transmitter exactly (hand-computed in tests/test_engine.py).

Records leave the engine as they complete: a hop record when its node's batch is done, a frame
record when the frame reaches its destination or is dropped, both handed to the record sink
(netsim.sim.records; ``run_scenario`` streams them to disk), and every radio and inbox queue change
goes to a QueueLog that emits queue lengths over time as they become final. Nothing per frame
outlives the frame: its tensors are rows of batch tensors, freed once every frame of the batch is done.
"""
from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import simpy
import torch

from netsim.data import image_labels, load_workload_images
from netsim.metrics import (LpipsMetric, LpipsUnavailable, bit_agreement, hamming_distance, hash_bits, hash_cosine,
                            ms_ssim, psnr)
from netsim.phy.channel import keys_tensor, noise_key, transmit
from netsim.phy.quantizer import VectorQuantizer
from netsim.scenario import Link, Node, QFSettings, Scenario, ScenarioError
from netsim.sim.codecs import CodecResolver
from netsim.sim.records import MemorySink, QueueLog
from netsim.sim.retrieval import RetrievalDatabase
from netsim.topology import build_graph, resolve_route, route_links

QUALITY_COLUMNS = ("psnr", "ms_ssim", "lpips", "hash_bit_agreement", "hash_cosine", "hash_hamming", "hash_verdict",
                   "retrieved", "retrieval_ap")

_STR, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
_QUALITY_TYPES = [("psnr", _FLOAT), ("ms_ssim", _FLOAT), ("lpips", _FLOAT), ("hash_bit_agreement", _FLOAT),
                  ("hash_cosine", _FLOAT), ("hash_hamming", _FLOAT), ("hash_verdict", _STR), ("retrieved", _FLOAT),
                  ("retrieval_ap", _FLOAT)]
assert tuple(n for n, _ in _QUALITY_TYPES) == QUALITY_COLUMNS
# The columns of hops and frames, in order, with their types (Simulation._record / _finish fill them; a
# record with other columns is an error in the sink, so a new column is added here too).
HOP_SCHEMA = pa.schema([
    ("flow", _STR), ("frame", _INT), ("image", _STR), ("hop", _INT), ("node", _STR), ("sender", _STR),
    ("role", _STR), ("mode", _STR), ("snr_db", _FLOAT), ("snr_eff_db", _FLOAT), ("codec", _STR),
    ("created_s", _FLOAT), ("enqueue_s", _FLOAT), ("tx_start_s", _FLOAT), ("tx_end_s", _FLOAT),
    ("arrival_s", _FLOAT), ("queue_wait_s", _FLOAT), ("airtime_s", _FLOAT), ("channel_symbols", _INT),
    ("payload_bits", _INT), ("side_info_bits", _INT), ("bits_sent", _INT), ("bpp", _FLOAT), ("rho", _FLOAT),
    *_QUALITY_TYPES, ("holds", _STR), ("dropped", _BOOL), ("attempt", _INT), ("retransmit", _BOOL),
    ("retransmissions", _INT), ("total_bits", _INT), ("total_symbols", _INT),
    ("start_s", _FLOAT), ("done_s", _FLOAT), ("inbox_wait_s", _FLOAT), ("compute_s", _FLOAT),
])
FRAME_SCHEMA = pa.schema([
    ("flow", _STR), ("frame", _INT), ("image", _STR), ("outcome", _STR), ("final_node", _STR), ("hops", _INT),
    ("created_s", _FLOAT), ("done_s", _FLOAT), ("latency_s", _FLOAT), ("total_bits", _INT),
    ("retransmissions", _INT), ("total_symbols", _INT), *_QUALITY_TYPES,
])
# Queue lengths over time (netsim.sim.records.QueueLog; netsim.results.queue_lengths from a hops table)
QUEUE_SCHEMA = pa.schema([("node", _STR), ("queue", _STR), ("time_s", _FLOAT), ("length", _INT)])
SCHEMAS = {"hops": HOP_SCHEMA, "frames": FRAME_SCHEMA, "queues": QUEUE_SCHEMA}


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ScenarioError(f"device: {spec!r} requested but CUDA is not available (use auto or cpu)")
    return torch.device(spec)


Ref = tuple[torch.Tensor, int]  # (batch tensor, row): a frame's slice without a per-frame tensor


def gather(refs: list[Ref]) -> torch.Tensor:
    """Stack the referenced rows; a whole batch in its own order is returned as is (no copy)."""
    base = refs[0][0]
    if all(t is base for t, _ in refs):
        rows = [r for _, r in refs]
        if len(rows) == base.shape[0] and rows == list(range(len(rows))):
            return base
        return base[rows]
    return torch.cat([t[r:r + 1] for t, r in refs])


@dataclass(slots=True)
class Frame:
    """One image in flight. ``payload`` is the image S~, symbols x/y, or QF codeword indices."""

    flow: "FlowRuntime"
    index: int
    image: int
    created_s: float
    kind: str = "image"  # image -> symbols -> (bits)
    payload: Ref | None = None
    side: Ref | None = None
    codec_hop: int = 0  # the hop whose encoder produced the symbols
    quantizer: VectorQuantizer | None = None
    symbol_shape: tuple[int, ...] = ()
    sig_power: float = 1.0  # signal gain^2 in y (changes at AF relays)
    noise_power: float = 0.0  # accumulated noise variance in y
    h_src: Ref | None = None
    hop: int = -1  # index of the last link crossed
    attempt: int = 0  # transmissions of this frame on its current hop, minus one
    retries: int = 0  # retransmissions over all hops
    sent: tuple | None = None  # (payload, noise_power) as the sender had them, for a retransmission
    enqueue_s: float = math.nan
    tx_start_s: float = math.nan
    tx_end_s: float = math.nan
    arrival_s: float = math.nan
    link_bits: int = 0
    link_symbols: int = 0
    total_bits: int = 0
    total_symbols: int = 0

    @property
    def snr_eff_db(self) -> float:
        return 10.0 * math.log10(self.sig_power / self.noise_power) if self.noise_power > 0 else math.inf

    @property
    def side_bits(self) -> int:
        bits = self.flow.codecs[self.codec_hop].side_info_bits
        # the source hash travels as its sign bits, one per hash element
        return bits + (self.h_src[0].shape[1] if self.h_src is not None else 0)


@dataclass
class FlowRuntime:
    index: int
    id: str
    route: list[str]
    links: list[Link]
    codecs: list
    images: torch.Tensor
    image_ids: list[str]
    n_frames: int
    hw: tuple[int, int] = (0, 0)
    hashes: torch.Tensor | None = None  # float [N_images, N_H]: the DHD hash of every source image
    labels: torch.Tensor | None = None  # long [N_images]: class ids (each image its own when unlabelled)

    def __post_init__(self) -> None:
        self.hw = tuple(self.images.shape[-2:])


@dataclass
class Radio:
    """A FIFO transmitter: the time it is next free."""

    busy_until: float = 0.0


@dataclass
class LinkRuntime:
    spec: Link
    radio: Radio  # the sender's radio (or the link's own, with radio.per: link)


@dataclass
class NodeRuntime:
    spec: Node
    queue: deque = field(default_factory=deque)
    wakeup: simpy.Event | None = None
    links: dict[str, LinkRuntime] = field(default_factory=dict)
    quantizer: VectorQuantizer | None = None
    radio: Radio = field(default_factory=Radio)


def retrieved_right_class(h: torch.Tensor, database: torch.Tensor, labels: torch.Tensor,
                          own: list[int]) -> list[float]:
    """Ground truth for the hash check: does a reconstruction still retrieve the right class?

    ``h`` [B, N_H] are the reconstructions' hashes, ``database`` [N, N_H] the hashes of the flow's
    source images with class ids ``labels`` [N], ``own`` the source image of each reconstruction.
    1.0 where the nearest database hash (Hamming, sign bits) of the reconstruction's own class is
    strictly nearer than every hash of another class, else 0.0; NaN when the flow holds one class
    only (nothing to confuse). Unlabelled images are each their own class, which makes this "does
    it retrieve its own image"."""
    own_labels = labels[torch.as_tensor(own, device=labels.device)]
    if bool((labels == labels[0]).all()):
        return [math.nan] * h.shape[0]
    s, s_db = (hash_bits(t).float() * 2 - 1 for t in (h, database))  # bits as +-1
    dist = (h.shape[1] - s @ s_db.T) / 2  # [B, N] Hamming distances
    same = own_labels[:, None] == labels[None, :]
    nearest_same = dist.masked_fill(~same, math.inf).min(dim=1).values
    nearest_other = dist.masked_fill(same, math.inf).min(dim=1).values
    return (nearest_same < nearest_other).float().tolist()


def _grouped(frames: Iterable[Frame], key: Callable[[Frame], Any]) -> dict[Any, list[Frame]]:
    groups: dict[Any, list[Frame]] = defaultdict(list)
    for f in frames:
        groups[key(f)].append(f)
    return groups


class Simulation:
    """Build from a validated Scenario, then ``run()``. Records go to ``sink`` as they complete
    (netsim.sim.records: MemorySink by default, StreamingSink to stream them to disk)."""

    def __init__(self, scenario: Scenario, progress: Callable[[int], None] | None = None, sink=None):
        self.scenario = scenario
        self.sink = MemorySink(SCHEMAS) if sink is None else sink
        self.queue_log = QueueLog(self.sink.add_queues)
        self.device = pick_device(scenario.device)
        self.env = simpy.Environment()
        self.progress = progress
        self.notes: list[str] = []
        graph = build_graph(scenario)
        self.nodes = {n.id: NodeRuntime(n) for n in scenario.nodes}
        per_node = scenario.radio.per == "node"
        for a, b, data in graph.edges(data=True):
            self.nodes[a].links[b] = LinkRuntime(data["link"], self.nodes[a].radio if per_node else Radio())
        resolver = CodecResolver(self.device)
        self.hasher = resolver.hasher(scenario.hash_check.model, "hash_check.model")
        if self.hasher is None:
            self.notes.append("hash checks unavailable: no hash_check.model given")
        self.lpips = self._load_lpips()
        self.flows: list[FlowRuntime] = []
        for i, spec in enumerate(scenario.flows):
            route = resolve_route(graph, spec, i)
            codecs = resolver.for_route(spec.codec, len(route) - 1, f"flows.{i}.codec")
            images, ids = load_workload_images(spec.workload.images)
            n_frames = spec.workload.frames or len(ids)
            self.flows.append(FlowRuntime(i, spec.id, route, route_links(graph, route), codecs,
                                          images.to(self.device), ids, n_frames))
        self.codec_names = sorted({c.name for f in self.flows for c in f.codecs})
        self.weights = {c.name: c.sha256 for f in self.flows for c in f.codecs if c.sha256}
        if self.hasher is not None:
            self.weights[self.hasher.name] = self.hasher.sha256
        self._prepare_quantizers()
        if self.hasher is not None:
            for flow in self.flows:
                with torch.no_grad():
                    flow.hashes = torch.cat([self.hasher(chunk) for chunk in flow.images.split(256)])
                names = image_labels(flow.image_ids) or flow.image_ids
                classes = {c: i for i, c in enumerate(sorted(set(names)))}
                flow.labels = torch.tensor([classes[c] for c in names], device=self.device)
        self.retrieval = None
        if scenario.retrieval is not None and self.hasher is not None:
            self.retrieval = RetrievalDatabase(scenario.retrieval, self.hasher, self.device)
        self.measuring = bool(scenario.metrics) or self.hasher is not None or scenario.save_images > 0
        self.samples: dict[tuple[str, int, int], torch.Tensor] = {}  # (flow, frame, hop) -> image
        self._rng = {f.index: np.random.default_rng([scenario.seed, f.index, 1]) for f in self.flows}

    # ----------------------------------------------------------------------------------- setup
    def _load_lpips(self):
        if "lpips" not in self.scenario.metrics:
            return None
        try:
            metric = LpipsMetric.load(self.scenario.lpips_weights, device=self.device)
        except LpipsUnavailable as err:
            msg = f"{err} -> LPIPS reported as NaN"
            warnings.warn(msg, stacklevel=2)
            self.notes.append(msg)
            return None
        self.notes.append(f"LPIPS AlexNet backbone from {metric.source}")
        return metric

    def _prepare_quantizers(self) -> None:
        """Load or fit the codebook of each QF relay that receives symbols (fitted on the first flow
        through it). A QF relay that only ever receives bits forwards them and needs none."""
        for flow in self.flows:
            carries_bits = False
            for pos, node_id in enumerate(flow.route[1:-1], start=1):
                node = self.nodes[node_id]
                if node.spec.mode == "df":
                    carries_bits = False
                if node.spec.mode != "qf" or carries_bits:
                    continue
                carries_bits = True
                if node.quantizer is not None:
                    continue
                settings = node.spec.qf or QFSettings()
                if settings.codebook:
                    try:
                        node.quantizer = VectorQuantizer.load(settings.codebook)
                    except (OSError, ValueError) as err:
                        raise ScenarioError(f"nodes.{node_id}.qf.codebook: {err}") from None
                    continue
                node.quantizer = self._fit_quantizer(flow, pos, settings)
                self.notes.append(f"QF codebook of {node_id} fitted on {settings.fit_images} channel outputs of "
                                  f"flow {flow.id} at {flow.links[pos - 1].snr_db} dB")

    def _fit_quantizer(self, flow: FlowRuntime, pos: int, settings) -> VectorQuantizer:
        codec = flow.codecs[pos - 1]
        link = flow.links[pos - 1]
        n = settings.fit_images
        idx = torch.arange(n) % flow.images.shape[0]
        S = flow.images[idx]
        x, _ = codec.encode(S)
        keys = keys_tensor([noise_key(self.scenario.seed, flow.index, -1 - i, pos - 1) for i in range(n)])
        y, _ = transmit(link.channel, x, link.snr_db, keys, link.csi)
        return VectorQuantizer.fit(y, settings.n_q, settings.fraction_b, seed=self.scenario.seed)

    @property
    def hop_records(self) -> list[dict]:
        """Every hop record so far (MemorySink only: a streaming sink keeps none)."""
        return self.sink.rows["hops"]

    @property
    def frame_records(self) -> list[dict]:
        return self.sink.rows["frames"]

    # ----------------------------------------------------------------------------------- run
    def run(self):
        """Simulate to the end; returns the sink (not closed: the caller closes or aborts it)."""
        for node in self.nodes.values():
            if any(node.spec.id in f.route for f in self.flows):
                self.env.process(self._node_process(node))
        for flow in self.flows:
            self.env.process(self._arrivals(flow))
        self.env.run()
        self.queue_log.close()
        return self.sink

    def _arrivals(self, flow: FlowRuntime):
        spec = self.scenario.flows[flow.index].workload.arrivals
        source = self.nodes[flow.route[0]]
        rng = self._rng[flow.index]
        if spec.start_s:
            yield self.env.timeout(spec.start_s)
        for k in range(flow.n_frames):
            if k and spec.kind != "all_at_once":
                gap = spec.interval_s if spec.kind == "periodic" else rng.exponential(1.0 / spec.rate_hz)
                yield self.env.timeout(gap)
            self._deliver(source, Frame(flow, k, k % flow.images.shape[0], self.env.now))

    def _enqueue(self, node: NodeRuntime, frame: Frame) -> None:
        node.queue.append(frame)
        if node.wakeup is not None:
            wakeup, node.wakeup = node.wakeup, None
            wakeup.succeed()

    def _node_process(self, node: NodeRuntime):
        env, sc = self.env, self.scenario
        while True:
            if not node.queue:
                node.wakeup = env.event()
                yield node.wakeup
            # Wait (0 s by default) so that frames arriving at this same instant join the batch.
            yield env.timeout(sc.batch_window_s)
            batch = [node.queue.popleft() for _ in range(min(sc.max_batch, len(node.queue)))]
            start = env.now
            for _ in batch:
                self.queue_log.add(start, node.spec.id, "inbox", start, -1)
            records, forward, resend, busy_wall = self._work(node, batch)
            if sc.compute.model == "fixed":
                compute = sc.compute.per_batch_s + sc.compute.per_image_s * len(batch)
            else:
                compute = busy_wall
            yield env.timeout(compute)
            for rec in records:
                rec["start_s"], rec["done_s"] = start, env.now
                rec["inbox_wait_s"] = start - rec["arrival_s"]
                rec["compute_s"] = env.now - start
                if (rec["dropped"] or rec["role"] == "destination") and not rec["retransmit"]:
                    self._finish(rec)
            self.sink.add_hops(records)
            for f in forward:
                f.attempt = 0  # a new hop
            self._transmit(node, forward)
            for f in resend:  # the previous hop sends its copy again, on its own radio
                f.payload, f.noise_power = f.sent
                f.hop, f.attempt, f.retries = f.hop - 1, f.attempt + 1, f.retries + 1
                self._transmit(self.nodes[f.flow.route[f.hop + 1]], [f])

    # ----------------------------------------------------------------------------------- work
    def _work(self, node: NodeRuntime, batch: list[Frame]) -> tuple[list[dict], list[Frame], list[Frame], float]:
        """One batch of a node's work: hop records, frames to forward, frames whose previous hop must
        send them again (semantic ARQ), and the data-path wall time.

        DF relays and destinations decode on the data path. QF and AF relays hold symbols or bits;
        their quality and hash columns come from a probe decode that costs no simulated time.
        """
        role, mode = node.spec.role, node.spec.mode
        if role == "source":
            records = [self._record(node, f) for f in batch]
            for rec in records:
                rec["holds"] = "image"
            wall = self._encode(batch, next_hop=0)
            if self.hasher is not None:
                for f in batch:
                    f.h_src = (f.flow.hashes, f.image)
            return records, batch, [], wall

        records = [self._record(node, f) for f in batch]
        decodes = role == "destination" or mode == "df"
        wall = 0.0
        if decodes or self.measuring:  # QF/AF relays decode only to measure (a probe)
            t0 = time.perf_counter()
            S_hat = self._reconstruct(batch)
            wall = self._elapsed(t0) if decodes else 0.0
            self._measure(batch, records, S_hat)
        check = self.scenario.hash_check
        resend = []
        if check.policy == "retransmit":
            for f, rec in zip(batch, records):
                rec["retransmit"] = (rec["hash_verdict"] == "mismatch" and f.sent is not None
                                     and f.attempt + 1 < check.max_tries)
            resend = [f for f, rec in zip(batch, records) if rec["retransmit"]]
            batch = [f for f, rec in zip(batch, records) if not rec["retransmit"]]
        if role == "destination":
            return records, [], resend, wall
        keep = batch
        if check.policy == "drop":
            for rec in records:
                rec["dropped"] = rec["hash_verdict"] == "mismatch"
            keep = [f for f, rec in zip(batch, records) if not rec["dropped"]]
        t0 = time.perf_counter()
        if mode == "df":
            for f in keep:
                f.payload, f.kind = S_hat[id(f)], "image"
            self._encode(keep, next_hop=None)
        elif mode == "qf":
            self._quantize(node, [f for f in keep if f.kind == "symbols"])
        else:
            self._amplify([f for f in keep if f.kind == "symbols"])
        return records, keep, resend, wall + self._elapsed(t0)

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda" and self.scenario.compute.model == "measured":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _encode(self, frames: list[Frame], next_hop: int | None) -> float:
        """Encode with the codec of the hop each frame crosses next (None: the one after f.hop)."""
        t0 = time.perf_counter()
        for f in frames:
            f.codec_hop = f.hop + 1 if next_hop is None else next_hop
        for group in _grouped(frames, lambda f: (id(f.flow.codecs[f.codec_hop]), f.flow.hw)).values():
            codec = group[0].flow.codecs[group[0].codec_hop]
            if group[0].payload is None:  # at the source
                S = group[0].flow.images[[f.image for f in group]]
            else:
                S = gather([f.payload for f in group])
            x, side = codec.encode(S)
            shape = tuple(x.shape[1:])
            for i, f in enumerate(group):
                f.payload, f.kind, f.side = (x, i), "symbols", None if side is None else (side, i)
                f.symbol_shape = shape
                f.sig_power, f.noise_power = 1.0, 0.0
        return self._elapsed(t0)

    def _received_symbols(self, group: list[Frame]) -> torch.Tensor:
        """y of a group with unit signal gain; QF bits are dequantised first."""
        y = gather([f.payload for f in group])
        if group[0].kind == "bits":
            y = group[0].quantizer.dequantize(y, group[0].symbol_shape)
        if any(f.sig_power != 1.0 for f in group):  # after AF relays: restore unit signal gain
            gain = torch.tensor([1.0 / math.sqrt(f.sig_power) for f in group], device=y.device)
            y = y * gain.view(-1, *([1] * (y.dim() - 1)))
        return y

    def _reconstruct(self, frames: list[Frame]) -> dict[int, Ref]:
        """Decode each frame's payload with the decoder paired to the encoder that produced it."""
        out: dict[int, Ref] = {}
        groups = _grouped(frames, lambda f: (id(f.flow.codecs[f.codec_hop]), f.kind, f.quantizer, f.symbol_shape,
                                              f.flow.hw))
        for group in groups.values():
            codec = group[0].flow.codecs[group[0].codec_hop]
            y = self._received_symbols(group)
            snr = None
            if codec.needs_snr:
                snr = torch.tensor([f.snr_eff_db for f in group], device=y.device).clamp(max=100.0)
            side = gather([f.side for f in group]) if group[0].side is not None else None
            S_hat = codec.decode(y, side, snr, (3, *group[0].flow.hw))
            for i, f in enumerate(group):
                out[id(f)] = (S_hat, i)
        return out

    def _quantize(self, node: NodeRuntime, frames: list[Frame]) -> None:
        for group in _grouped(frames, lambda f: f.symbol_shape).values():
            idx = node.quantizer.quantize(gather([f.payload for f in group]))
            for i, f in enumerate(group):
                f.payload, f.kind, f.quantizer = (idx, i), "bits", node.quantizer

    @staticmethod
    def _amplify(frames: list[Frame]) -> None:
        """AF: rescale y to unit average power; signal and noise scale alike."""
        for group in _grouped(frames, lambda f: f.symbol_shape).values():
            y = gather([f.payload for f in group])
            power = y.abs().square().flatten(1).mean(1)
            y = y * power.rsqrt().view(-1, *([1] * (y.dim() - 1)))
            for i, (f, p) in enumerate(zip(group, power.tolist())):
                f.payload = (y, i)
                f.sig_power /= p
                f.noise_power /= p

    # ----------------------------------------------------------------------------------- links
    def _transmit(self, node: NodeRuntime, frames: list[Frame]) -> None:
        """Queue frames on their next link (FIFO transmitter) and schedule their deliveries."""
        env, now = self.env, self.env.now
        queue_log, sender, deliver = self.queue_log, node.spec.id, self._deliver
        for group in _grouped(frames, lambda f: (f.flow.index, f.kind, f.symbol_shape)).values():
            first = group[0]
            hop = first.hop + 1
            link = node.links[first.flow.route[hop + 1]]
            receiver = self.nodes[first.flow.route[hop + 1]]
            spec = link.spec
            # Everything below is the same for every frame of one flow at one hop.
            side_bits = first.side_bits
            if first.kind == "symbols":
                symbols, bits = math.prod(first.symbol_shape), 0
                # a retransmission (attempt > 0) meets fresh noise; the first keeps the plain key
                keys = keys_tensor([noise_key(self.scenario.seed, f.flow.index, f.index, hop,
                                              *([f.attempt] if f.attempt else [])) for f in group])
                y, noise = transmit(spec.channel, gather([f.payload for f in group]), spec.snr_db, keys, spec.csi)
                for i, (f, n) in enumerate(zip(group, noise.tolist())):
                    f.sent = (f.payload, f.noise_power)
                    f.payload = (y, i)
                    f.noise_power += n  # added to y whose signal power is f.sig_power
            else:  # bits cross error-free: nothing to gain from sending them again
                symbols, bits = 0, first.quantizer.bits_per_image(math.prod(first.symbol_shape))
                for f in group:
                    f.sent = None
            airtime = symbols / spec.symbol_rate + (bits + side_bits) / spec.effective_bit_rate
            radio = link.radio
            listening = receiver.radio if self.scenario.radio.half_duplex else radio
            for f in group:
                f.hop, f.link_symbols, f.link_bits = hop, symbols, bits
                f.total_bits += bits + side_bits
                f.total_symbols += symbols
                f.enqueue_s = now
                f.tx_start_s = max(now, radio.busy_until, listening.busy_until)
                queue_log.add(now, sender, "radio", now, 1)
                queue_log.add(now, sender, "radio", f.tx_start_s, -1)
                f.tx_end_s = radio.busy_until = f.tx_start_s + airtime
                listening.busy_until = max(listening.busy_until, f.tx_end_s)
                env.timeout(f.tx_end_s + spec.delay_s - now).callbacks.append(
                    lambda _e, f=f, to=receiver: deliver(to, f))  # bind both: receiver changes per group

    def _deliver(self, node: NodeRuntime, frame: Frame) -> None:
        frame.arrival_s = self.env.now
        self.queue_log.add(frame.arrival_s, node.spec.id, "inbox", frame.arrival_s, 1)
        self._enqueue(node, frame)

    # ----------------------------------------------------------------------------------- records
    def _measure(self, frames: list[Frame], records: list[dict], S_hat: dict[int, Ref]) -> None:
        """Fill the quality and hash columns of each frame's record from its reconstruction."""
        metrics = self.scenario.metrics
        for group in _grouped(zip(frames, records), lambda fr: fr[0].flow.index).values():
            flow = group[0][0].flow
            S = flow.images[[f.image for f, _ in group]]
            R = gather([S_hat[id(f)] for f, _ in group])
            columns: dict[str, list] = {}
            with torch.no_grad():
                if "psnr" in metrics:
                    columns["psnr"] = psnr(S, R).tolist()
                if "ms_ssim" in metrics:
                    columns["ms_ssim"] = ms_ssim(S, R).tolist()
                if "lpips" in metrics and self.lpips is not None:
                    columns["lpips"] = self.lpips(S, R).tolist()
                if self.hasher is not None:
                    h_ref, h = gather([f.h_src for f, _ in group]), self.hasher(R)
                    columns["hash_bit_agreement"] = bit_agreement(h_ref, h).tolist()
                    columns["hash_cosine"] = hash_cosine(h_ref, h).tolist()
                    dist = hamming_distance(h_ref, h).tolist()
                    limit = self.scenario.hash_check.threshold_bits
                    columns["hash_hamming"] = dist
                    columns["hash_verdict"] = ["match" if d <= limit else "mismatch" for d in dist]
                    columns["retrieved"] = retrieved_right_class(h, flow.hashes, flow.labels,
                                                                 [f.image for f, _ in group])
                    if self.retrieval is not None:
                        columns["retrieval_ap"] = self.retrieval.average_precisions(
                            h, [flow.image_ids[f.image] for f, _ in group])
            for name, values in columns.items():
                for (_, rec), value in zip(group, values):
                    rec[name] = value
            for j, (f, _) in enumerate(group):
                if f.index < self.scenario.save_images:
                    self.samples[(flow.id, f.index, f.hop + 1)] = R[j].cpu()

    def _record(self, node: NodeRuntime, f: Frame) -> dict:
        """The hop record of a frame at a node; quality, hash and compute columns are filled later."""
        h, w = f.flow.hw
        link = f.flow.links[f.hop] if f.hop >= 0 else None
        side_bits = f.side_bits if link else 0
        return {
            "flow": f.flow.id, "frame": f.index, "image": f.flow.image_ids[f.image], "hop": f.hop + 1,
            "node": node.spec.id, "sender": f.flow.route[f.hop] if link else "",
            "role": node.spec.role, "mode": node.spec.mode or "",
            "snr_db": link.snr_db if link else math.nan,
            "snr_eff_db": f.snr_eff_db if link else math.nan,
            "codec": f.flow.codecs[f.codec_hop].name,
            "created_s": f.created_s, "enqueue_s": f.enqueue_s, "tx_start_s": f.tx_start_s,
            "tx_end_s": f.tx_end_s, "arrival_s": f.arrival_s,
            "queue_wait_s": f.tx_start_s - f.enqueue_s, "airtime_s": f.tx_end_s - f.tx_start_s,
            "channel_symbols": f.link_symbols, "payload_bits": f.link_bits,
            "side_info_bits": side_bits, "bits_sent": f.link_bits + side_bits,
            "bpp": f.link_bits / (h * w), "rho": f.link_symbols / (3 * h * w),
            "psnr": math.nan, "ms_ssim": math.nan, "lpips": math.nan,
            "hash_bit_agreement": math.nan, "hash_cosine": math.nan, "hash_hamming": math.nan,
            "hash_verdict": "unavailable", "retrieved": math.nan, "retrieval_ap": math.nan, "holds": f.kind, "dropped": False,
            "attempt": f.attempt, "retransmit": False, "retransmissions": f.retries,
            "total_bits": f.total_bits, "total_symbols": f.total_symbols,
        }

    def _finish(self, rec: dict) -> None:
        """The end-to-end row of a frame that reached its destination or was dropped."""
        self.sink.add_frame({
            "flow": rec["flow"], "frame": rec["frame"], "image": rec["image"],
            "outcome": "dropped" if rec["dropped"] else "delivered", "final_node": rec["node"],
            "hops": rec["hop"], "created_s": rec["created_s"], "done_s": rec["done_s"],
            "latency_s": rec["done_s"] - rec["created_s"], "total_bits": rec["total_bits"],
            "retransmissions": rec["retransmissions"],
            "total_symbols": rec["total_symbols"],
            **{k: rec[k] for k in QUALITY_COLUMNS},
        })
        if self.progress is not None:
            self.progress(1)
