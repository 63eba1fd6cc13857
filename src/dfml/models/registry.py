"""Name -> classifier constructor, for `apis.arch` and the meta model."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .conv4 import Conv4
from .resnet import resnet10, resnet18

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "conv4": Conv4,
    "resnet10": resnet10,
    "resnet18": resnet18,
}


def build_classifier(arch: str, in_channels: int, num_classes: int, image_size: int,
                     track_bn_stats: bool = True) -> nn.Module:
    """Build `arch` for ``[B, in_channels, image_size, image_size]`` inputs and `num_classes` outputs."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                               track_bn_stats=track_bn_stats)
