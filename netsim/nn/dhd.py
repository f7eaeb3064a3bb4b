"""Deep Hash Distillation hasher (Jang et al., ECCV 2022), registered as "dhd".

::

    S [B,3,H,W] in [0,1] -> ImageNet mean/std normalisation
      -> E: backbone -> z [B, N_E]                (small-cnn: 128, resnet18: 512, resnet50: 2048)
      -> H: Linear(N_E, N_H, no bias) -> LayerNorm -> tanh -> h [B, N_H] in (-1,1)
    proxies P [n_classes, N_H] (trainable, used only by the hash-proxy loss)
    bits b = sign(h)

The LayerNorm before tanh follows the DHD reference implementation. Backbones are built with
``weights=None``; to start from ImageNet weights load a torchvision state dict yourself, e.g.
``m.backbone.load_state_dict(sd, strict=False)`` (the classifier ``fc`` is replaced by Identity).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from netsim.nn.registry import register_model

__all__ = ["DHD", "BACKBONES"]

BACKBONES = ("small-cnn", "resnet18", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _small_cnn() -> tuple[nn.Module, int]:
    """Four conv-BN-ReLU stages (32x32 -> 4x4 after three 2x max-pools), global average pooling; ~0.25M params."""
    layers, cin = [], 3
    for i, cout in enumerate((32, 64, 128, 128)):
        layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


def _resnet(name: str) -> tuple[nn.Module, int]:
    net = getattr(torchvision.models, name)(weights=None)
    n_e = net.fc.in_features
    net.fc = nn.Identity()
    return net, n_e


@register_model("dhd")
class DHD(nn.Module):
    """DHD hasher H(S) = tanh(LN(W E(S))) with proxies ``P``.

    Config: ``backbone`` in BACKBONES, ``n_bits`` (N_H), ``n_classes`` (number of proxies),
    ``temperature`` (tau of the hash-proxy loss, stored here so a checkpoint carries it).
    """

    def __init__(self, backbone: str = "small-cnn", n_bits: int = 64, n_classes: int = 10,
                 temperature: float = 0.2):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.config = {"backbone": backbone, "n_bits": n_bits, "n_classes": n_classes,
                       "temperature": temperature}
        self.temperature = temperature
        self.backbone, self.n_features = _small_cnn() if backbone == "small-cnn" else _resnet(backbone)
        self.hash = nn.Sequential(nn.Linear(self.n_features, n_bits, bias=False), nn.LayerNorm(n_bits))
        self.P = nn.Parameter(torch.empty(n_classes, n_bits))
        nn.init.xavier_uniform_(self.P, gain=nn.init.calculate_gain("tanh"))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, S: Tensor) -> Tensor:
        """E: S float [B,3,H,W] in [0,1] -> z float [B, N_E]."""
        return self.backbone((S - self.mean) / self.std)

    def forward(self, S: Tensor) -> Tensor:
        """S float [B,3,H,W] in [0,1] -> h float [B, N_H] in (-1,1)."""
        return torch.tanh(self.hash(self.features(S)))
