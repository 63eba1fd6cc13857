"""Pseudo-task recovery: the method of ``invert.method``, from the registry of every method module.

- ``bidf`` (:class:`~dfml.inversion.invert.BiDf`): BiDf-MKD's inversion by forward differences.
- ``surrogate`` (:class:`~dfml.inversion.surrogate.Surrogate`): a local clone learns from the API's answers; the
  generator is optimised against the clone with exact gradients.
- ``dfme`` (:class:`~dfml.inversion.dfme.DFME`): an adversarial generator/student game through the API.
- ``cake`` (:class:`~dfml.inversion.cake.CAKE`): contrastive pairs driven to the API's decision boundary.
"""

from __future__ import annotations

import torch

from . import cake, dfme, invert, surrogate  # noqa: F401  (each registers its method)
from .methods import METHODS, RecoveryMethod
from .params import InvertParams

__all__ = ["METHODS", "build_method"]


def build_method(cfg: InvertParams, channels: int, image_size: int, device: torch.device, seed: int) -> RecoveryMethod:
    """The method of ``invert.method`` for images ``[C, S, S]`` on `device`, seeded from the run's `seed`."""
    return METHODS[cfg.method](cfg, channels, image_size, device, seed)
