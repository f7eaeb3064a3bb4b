"""The single name -> class table for every torch module in netsim.

Register with ``@register_model("kebab-name")``; build with ``build_model(arch, **config)``.
A registered class takes its whole config as keyword arguments and exposes ``.config`` (a
JSON-serialisable dict of the kwargs it was built with, defaults included), so that
``build_model(m.arch, **m.config)`` rebuilds an identical architecture (see ``netsim.nn.zoo``).
The decorator also sets the class attribute ``arch`` to the registered name.
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

from torch import nn

__all__ = ["UnknownModelError", "register_model", "build_model", "registered_models"]

_MODELS: dict[str, type[nn.Module]] = {}
_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
M = TypeVar("M", bound=type[nn.Module])


class UnknownModelError(KeyError):
    """An architecture name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: add ``cls`` to the table under the kebab-case ``name``."""
    if not _KEBAB.match(name):
        raise ValueError(f"model name {name!r} is not kebab-case (e.g. 'deepjscc-multihop')")

    def deco(cls: M) -> M:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__name__}")
        _MODELS[name] = cls
        cls.arch = name
        return cls

    return deco


def build_model(arch: str, **config) -> nn.Module:
    """Instantiate the class registered as ``arch`` with ``config`` as kwargs."""
    try:
        cls = _MODELS[arch]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {arch!r}; known: {', '.join(registered_models())}"
        ) from None
    return cls(**config)


def registered_models() -> list[str]:
    """Sorted registered names."""
    return sorted(_MODELS)
