"""Image generator for API inversion (architecture of the BiDf-MKD / CMI release)."""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """``z [B, latent_dim] -> images [B, C, S, S]`` in ``[0, 1]``.

    Linear(latent -> W*(S/4)^2), BN, upsample x2, conv W, BN, LeakyReLU(0.2),
    upsample x2, conv W/2, BN, LeakyReLU(0.2), conv C, sigmoid. S must be divisible
    by 4. The reference width is W = 128; a narrower one makes CPU runs affordable.
    """

    def __init__(self, latent_dim: int = 256, channels: int = 1, image_size: int = 28, width: int = 128):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"generator needs an image size divisible by 4, got {image_size}")
        self.init_size = image_size // 4
        self.width = width
        self.fc = nn.Linear(latent_dim, width * self.init_size**2)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        return self.net(h)
