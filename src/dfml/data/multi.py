"""The prepared data of each API scenario (`apis.scenario`, DESIGN.md section 4).

ss and sh read one dataset (`data.dataset`) at its own size (or `data.image_size`).
mh reads every dataset of `apis.datasets` through the source registry and brings
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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import scenario_datasets
from .prepared import save_prepared, subsample
from .sources import SPLITS, RawDataset, get_source


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


@dataclass
class PreparedSummary:
    """What `prepare` reports in ``metrics/data.json``."""

    metrics: dict
    message: str


def prepare_data(params: dict, out: Path, downloads: Path) -> PreparedSummary:
    """Load the scenario's dataset(s), subsample (smoke configs), write `out`; return the metrics and a line to print.

    The ss / sh path and its files are exactly the single-dataset ones. In mh every dataset's inputs are checked
    first (:meth:`~dfml.data.sources.DatasetSource.preflight`: a missing or wrong archive stops the stage before
    any decoding), then each is loaded at the common size and subsampled on its own.
    """
    cfg = dict(params["data"], seed=params["seed"])
    if params["apis"]["scenario"] != "mh":
        source = get_source(cfg["dataset"])
        ds = source.load(cfg, cfg["image_size"] or source.image_size, downloads)
        ds = subsample(ds, cfg["classes_per_split"], cfg["images_per_class"])
        summary = save_prepared(ds, out, cfg["dataset"])
        metrics = {"dataset": cfg["dataset"], "image_size": int(ds.images.shape[2]),
                   "channels": int(ds.images.shape[1]), **summary}
        return PreparedSummary(metrics, f"prepared {cfg['dataset']}: " + _splits_line(summary))
    names = scenario_datasets(params)
    size, channels = common_format(names, cfg["image_size"])
    for name in names:
        get_source(name).preflight(cfg, downloads)
    parts = {}
    for name in names:
        ds = get_source(name).load(cfg, size, downloads)
        parts[name] = subsample(ds, cfg["classes_per_split"], cfg["images_per_class"])
    ds, tags = combine(parts, channels)
    label = "+".join(names)
    summary = save_prepared(ds, out, label, tags)
    per_dataset = {}
    for name, part in parts.items():
        counts = np.bincount(part.labels, minlength=len(part.class_names))
        per_dataset[name] = {s: {"classes": len(part.splits[s]), "images": int(counts[part.splits[s]].sum())}
                             for s in SPLITS}
    metrics = {"dataset": label, "image_size": size, "channels": channels, **summary, "datasets": per_dataset}
    lines = [f"prepared {label} at {size} px, {channels} channel(s): {_splits_line(summary)}"]
    lines += [f"  {name}: {_splits_line(v)}" for name, v in per_dataset.items()]
    return PreparedSummary(metrics, "\n".join(lines))


def _splits_line(summary: dict) -> str:
    return ", ".join(f"{s} {v['classes']} classes / {v['images']} images" for s, v in summary.items())
