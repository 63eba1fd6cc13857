"""Several datasets as one (the mh scenario): the common format and the combination.

ss and sh read one dataset (`data.dataset`) at its own size (or `data.image_size`).
mh reads every dataset of `data.datasets` through the source registry and brings
them to one common format, the meta model's input:

- size: `data.image_size` if set, else the largest default size of the listed datasets;
- channels: the largest channel count of the listed datasets (grey images are
  repeated to 3 channels).

The datasets are kept as one prepared dataset: class names are prefixed by their
dataset (``cifar-fs/apple``) to stay unique, each class carries its dataset tag
(``index.json``: ``class_datasets``), and every split is the union of the datasets'
own splits (each dataset's meta-train / val / test classes stay in that split).
"""

from __future__ import annotations

import numpy as np

from .raw import SPLITS, RawDataset
from .sources import get_source


def common_format(names: list[str], image_size: int | None) -> tuple[int, int]:
    """``(size, channels)`` of the mh common format of datasets `names` (see the module docstring)."""
    sources = [get_source(n) for n in names]
    return image_size or max(s.image_size for s in sources), max(s.channels for s in sources)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """``uint8 [M, c, H, W] -> [M, channels, H, W]``: a single grey channel is repeated; other counts must match."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"cannot bring {images.shape[1]}-channel images to {channels} channels")
    return np.repeat(images, channels, axis=1)


def combine(parts: dict[str, RawDataset], channels: int) -> tuple[RawDataset, list[str]]:
    """One dataset from several of the same image size: ``(dataset, per-class dataset tags)``.

    Classes keep their datasets' order (dataset by dataset); names become ``<dataset>/<class>``; each split is the
    concatenation of the datasets' splits.
    """
    images, labels, names, tags = [], [], [], []
    splits: dict[str, list[int]] = {s: [] for s in SPLITS}
    for name, ds in parts.items():
        offset = len(names)
        images.append(to_channels(ds.images, channels))
        labels.append(ds.labels + offset)
        names += [f"{name}/{c}" for c in ds.class_names]
        tags += [name] * len(ds.class_names)
        for s in SPLITS:
            splits[s] += [c + offset for c in ds.splits[s]]
    return RawDataset(np.concatenate(images), np.concatenate(labels), names, splits), tags
