"""A dataset in memory before it is prepared: ``uint8`` images, labels and a class split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class RawDataset:
    """Images of one dataset with a class split.

    Attributes:
        images: ``uint8 [M, C, H, W]``.
        labels: ``int64 [M]``, index into ``class_names``.
        class_names: one name per class.
        splits: ``{"train" | "val" | "test": [class index, ...]}``, pairwise disjoint.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    splits: dict[str, list[int]] = field(default_factory=dict)
