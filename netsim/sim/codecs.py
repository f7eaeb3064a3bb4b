"""The codec interface the simulator drives, and resolution of a flow's codec spec to one codec per hop.

A codec maps images S [B, 3, H, W] in [0, 1] to channel symbols x (complex64 [B, *symbol_shape],
unit average power per image) plus optional side information, and back:

    encode(S)               -> (x, side)      side: float [B, m] or None (m * 32 bits per image)
    decode(y, side, snr_db, shape) -> S_hat   y with unit signal gain; snr_db float [B], the effective
                                              SNR, passed only to codecs with needs_snr
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from netsim.scenario import ScenarioError, UntrainedCodec


class UncodedCodec:
    """The analog baseline: two pixel values -> one complex symbol (rho = 1/2).

    Each image is centred on its mean and scaled to unit power; mean and scale are the side
    information (2 floats). The receiver applies the LMMSE gain 1 / (1 + sigma^2).
    """

    name = "uncoded"
    side_info_bits = 64
    needs_snr = True
    sha256 = None

    def encode(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = S.flatten(1)
        if flat.shape[1] % 2:
            raise ValueError("uncoded transmission needs an even number of pixel values per image")
        mean = flat.mean(1, keepdim=True)
        centred = flat - mean
        # Two reals per symbol: scale each real to variance 1/2 so that E|x|^2 = 1 exactly.
        scale = (2.0 * centred.square().mean(1, keepdim=True)).sqrt().clamp_min(1e-8)
        pairs = (centred / scale).view(S.shape[0], -1, 2)
        x = torch.complex(pairs[..., 0].contiguous(), pairs[..., 1].contiguous())
        return x, torch.cat([mean, scale], 1)

    def decode(self, y: torch.Tensor, side: torch.Tensor, snr_db: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """snr_db: float [B], the effective SNR of each image's y."""
        gain = 1.0 / (1.0 + torch.pow(10.0, -snr_db / 10.0))
        values = torch.view_as_real(y).reshape(y.shape[0], -1) * gain.view(-1, 1)
        S_hat = values * side[:, 1:2] + side[:, 0:1]
        return S_hat.view(y.shape[0], *shape).clamp(0.0, 1.0)

    def symbol_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape) // 2,)


class NeuralCodec:
    """Adapter around one DeepJSCC encoder/decoder pair (``netsim.nn.deepjscc.DeepJSCC``)."""

    side_info_bits = 0
    needs_snr = False  # DeepJSCC decoders are trained for one SNR; adaptive ones will set this

    def __init__(self, pair: torch.nn.Module, name: str, sha256: str | None):
        self.pair, self.name, self.sha256 = pair, name, sha256

    @torch.no_grad()
    def encode(self, S: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.pair.encode(S), None

    @torch.no_grad()
    def decode(self, y: torch.Tensor, side, snr_db: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
        return self.pair.decode(y, snr_db)

    def symbol_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.pair.symbol_shape(shape[-2], shape[-1]))


@dataclass
class CodecResolver:
    """Loads codecs and hashers once per spec, so flows that share a model share its modules."""

    device: torch.device
    cache: dict[str, list] = field(default_factory=dict)

    def for_route(self, spec, n_hops: int, where: str) -> list:
        specs = spec if isinstance(spec, list) else [spec]
        if isinstance(spec, list) and len(spec) != n_hops:
            raise ScenarioError(f"{where}: {len(spec)} codecs listed for a route of {n_hops} hops")
        per_hop = []
        for i, s in enumerate(specs):
            pairs = self._load(s, f"{where}.{i}" if isinstance(spec, list) else where)
            if isinstance(spec, list):
                if len(pairs) != 1:
                    raise ScenarioError(f"{where}.{i}: a multi-hop model cannot stand for a single hop")
                per_hop.append(pairs[0])
            elif len(pairs) == 1:
                per_hop = pairs * n_hops
            elif len(pairs) == n_hops:
                per_hop = pairs
            else:
                raise ScenarioError(f"{where}: model has {len(pairs)} hops but the route has {n_hops}")
        return per_hop

    def _load(self, spec, where: str) -> list:
        key = spec if isinstance(spec, str) else spec.model_dump_json()
        if key not in self.cache:
            self.cache[key] = self._build(spec, where)
        return self.cache[key]

    def _build(self, spec, where: str) -> list:
        from netsim.nn import registry, zoo

        if isinstance(spec, UntrainedCodec):
            try:
                with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
                    torch.manual_seed(spec.seed)
                    model = registry.build_model(spec.untrained, **spec.config)
                model = model.to(self.device).eval()
            except (KeyError, TypeError, ValueError) as err:
                raise ScenarioError(f"{where}: cannot build untrained {spec.untrained!r}: {err}") from None
            return _pairs_of(model, f"untrained:{spec.untrained}", None)
        if spec == "uncoded":
            return [UncodedCodec()]
        try:
            model, card = zoo.load_model(spec, device=self.device)
        except (zoo.ModelNotFound, zoo.CheckpointError) as err:
            raise ScenarioError(f"{where}: {err}") from None
        return _pairs_of(model, card.get("name", str(spec)), card.get("sha256"))

    def hasher(self, spec: str | None, where: str):
        """The DHD hasher named by the scenario, or None when hash checks are unavailable."""
        if spec is None:
            return None
        from netsim.nn import zoo

        try:
            model, card = zoo.load_model(spec, device=self.device)
        except (zoo.ModelNotFound, zoo.CheckpointError) as err:
            raise ScenarioError(f"{where}: {err}") from None
        return Hasher(model, card.get("name", spec), card.get("sha256"))


@dataclass
class Hasher:
    model: torch.nn.Module
    name: str
    sha256: str | None

    @torch.no_grad()
    def __call__(self, S: torch.Tensor) -> torch.Tensor:
        return self.model(S)


def _pairs_of(model: torch.nn.Module, name: str, sha256: str | None) -> list[NeuralCodec]:
    if hasattr(model, "pairs"):
        return [NeuralCodec(p, f"{name}[hop{i}]", sha256) for i, p in enumerate(model.pairs)]
    return [NeuralCodec(model, name, sha256)]
