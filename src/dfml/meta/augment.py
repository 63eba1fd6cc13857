"""Batched random affine augmentation of recovered images (no per-image Python loop).

Used on memory-replay tasks, whose labels are slot positions (not API answers),
so label-preserving small deformations cost no API query. A standard device of
data-free distillation (e.g. CMI, Fang et al., IJCAI 2021).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine(x: torch.Tensor, gen: torch.Generator, max_rot_deg: float = 10.0, max_shift: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Rotate, scale and shift each image of ``x [B, C, H, W]`` at random; returns ``[B, C, H, W]``.

    Args:
        max_rot_deg: rotation drawn from ``[-max_rot_deg, max_rot_deg]``.
        max_shift: translation as a fraction of the half-width (affine_grid units).
        scale: range of the zoom factor.
    """
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen).to(x.device)
    ang = (u[:, 0] * 2 - 1) * math.radians(max_rot_deg)
    s = scale[0] + u[:, 1] * (scale[1] - scale[0])
    tx, ty = (u[:, 2] * 2 - 1) * max_shift, (u[:, 3] * 2 - 1) * max_shift
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
