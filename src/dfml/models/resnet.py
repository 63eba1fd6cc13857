"""Small-image ResNet-10 / ResNet-18 (He et al., CVPR 2016), as used for API-SH pools in BiDf-MKD."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


LARGE = 64  # images of at least this size get the ImageNet stem


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, track: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, track_running_stats=track)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, track_running_stats=track)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout, track_running_stats=track))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """Stem, four stages (64, 128, 256, 512 channels), global average pool, linear head.

    The stem is a 3x3 convolution at full resolution for small images (below :data:`LARGE` px: Omniglot,
    CIFAR-FS), and the ImageNet stem of He et al. (7x7 stride-2 convolution, 3x3 stride-2 max pool) for
    larger ones (MiniImageNet, CUB at 84 px), whose stages then run at a quarter of the resolution (a
    full-resolution stem at 84 px trains at 8-14 images/s on 2 CPU cores).

    Shapes: ``[B, C, H, W] -> [B, num_classes]``.
    """

    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, image_size: int = 32,
                 track_bn_stats: bool = True):
        super().__init__()
        if image_size < LARGE:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(64, track_running_stats=track_bn_stats), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(64, track_running_stats=track_bn_stats), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            for j in range(n):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1, track_bn_stats))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1))


def resnet10(in_channels=3, num_classes=5, image_size=32, track_bn_stats=True) -> ResNet:
    return ResNet([1, 1, 1, 1], in_channels, num_classes, image_size, track_bn_stats)


def resnet18(in_channels=3, num_classes=5, image_size=32, track_bn_stats=True) -> ResNet:
    return ResNet([2, 2, 2, 2], in_channels, num_classes, image_size, track_bn_stats)
