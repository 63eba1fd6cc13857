"""The prepared dataset on disk (``data/prepared/``) and its in-memory form.

Layout: ``images.npy`` ``uint8 [M, C, H, W]``, ``labels.npy`` ``int64 [M]`` and
``index.json`` (class names, split -> class indices, dataset name).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .raw import SPLITS, RawDataset


def subsample(ds: RawDataset, classes_per_split: int | None, images_per_class: int | None) -> RawDataset:
    """Keep the first `classes_per_split` classes of each split and the first images of each class (smoke configs)."""
    if classes_per_split is None and images_per_class is None:
        return ds
    keep_classes = {s: ds.splits[s][:classes_per_split] if classes_per_split else ds.splits[s] for s in SPLITS}
    old = [c for s in SPLITS for c in keep_classes[s]]
    remap = {c: i for i, c in enumerate(old)}
    mask = np.zeros(len(ds.labels), dtype=bool)
    for c in old:
        idx = np.flatnonzero(ds.labels == c)
        mask[idx[:images_per_class] if images_per_class else idx] = True
    labels = np.asarray([remap[c] for c in ds.labels[mask]], dtype=np.int64)
    return RawDataset(ds.images[mask], labels, [ds.class_names[c] for c in old],
                      {s: [remap[c] for c in keep_classes[s]] for s in SPLITS})


def save_prepared(ds: RawDataset, out: Path, dataset: str, class_datasets: list[str] | None = None) -> dict:
    """Write atomically (temp folder, then rename); return the per-split summary.

    Args:
        class_datasets: the mh scenario's per-class dataset tag (one per class name); written to index.json
            with the list of datasets. None (ss, sh): one dataset, index.json as it always was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        np.save(tmp / "images.npy", ds.images)
        np.save(tmp / "labels.npy", ds.labels)
        summary = {}
        for s in SPLITS:
            counts = np.bincount(ds.labels, minlength=len(ds.class_names))[ds.splits[s]]
            summary[s] = {"classes": len(ds.splits[s]), "images": int(counts.sum())}
        index = {"dataset": dataset, "channels": int(ds.images.shape[1]), "image_size": int(ds.images.shape[2]),
                 "class_names": ds.class_names, "splits": ds.splits}
        if class_datasets is not None:
            index.update(datasets=list(dict.fromkeys(class_datasets)), class_datasets=list(class_datasets))
        (tmp / "index.json").write_text(json.dumps(index))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


@dataclass
class Prepared:
    """A prepared dataset in memory.

    Attributes:
        images: ``uint8 [M, C, H, W]``, as on disk: a batch becomes ``float32`` in ``[0, 1]`` only when it is
            used (:meth:`pixels`), so no float copy of a whole split is ever made (MiniImageNet: 1 GB, not 4).
        labels: ``int64 [M]``.
        by_class: class index -> ``int64`` tensor of image indices.
        splits: split -> list of class indices (in mh: the union over datasets).
        dataset: the dataset's name (mh: the datasets joined by ``+``).
        class_datasets: per class, the dataset it comes from (ss and sh: all `dataset`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    splits: dict[str, list[int]]
    by_class: dict[int, torch.Tensor]
    dataset: str
    class_datasets: list[str] | None = None

    def __post_init__(self):
        if self.class_datasets is None:
            self.class_datasets = [self.dataset] * len(self.class_names)

    @property
    def datasets(self) -> list[str]:
        """The datasets in order of first appearance: ``[dataset]`` unless the data was prepared for mh."""
        return list(dict.fromkeys(self.class_datasets))

    @property
    def multi(self) -> bool:
        """True when the data holds several datasets (the mh scenario)."""
        return len(self.datasets) > 1

    def split_classes(self, split: str, dataset: str | None = None) -> list[int]:
        """Class indices of `split`, of one `dataset` only when given (``splits[split]`` itself when None)."""
        classes = self.splits[split]
        if dataset is None:
            return classes
        if dataset not in self.datasets:
            raise ValueError(f"dataset {dataset!r} is not in the prepared data ({self.datasets}); "
                             "run `dvc repro prepare`")
        return [c for c in classes if self.class_datasets[c] == dataset]

    def pixels(self, index: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``index [...]`` as ``float32 [..., C, H, W]`` in ``[0, 1]`` on `device` (moved as uint8)."""
        return self.images[index].to(device).float().div_(255.0)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]


def load_prepared(path: Path) -> Prepared:
    path = Path(path)
    if not (path / "index.json").is_file():
        raise FileNotFoundError(f"{path}: no prepared dataset here; run `dvc repro prepare` first")
    index = json.loads((path / "index.json").read_text())
    images = torch.from_numpy(np.load(path / "images.npy"))
    if images.dtype != torch.uint8:
        raise ValueError(f"{path / 'images.npy'} holds {images.dtype}, not uint8; run `dvc repro prepare`")
    labels = torch.from_numpy(np.load(path / "labels.npy"))
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=len(index["class_names"])).tolist()
    by_class, start = {}, 0
    for c, n in enumerate(counts):
        by_class[c] = order[start:start + n]
        start += n
    splits = {s: list(v) for s, v in index["splits"].items()}
    return Prepared(images, labels, index["class_names"], splits, by_class, index["dataset"],
                    index.get("class_datasets"))
