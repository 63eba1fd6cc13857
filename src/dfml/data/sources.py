"""Dataset sources: a registry from `data.dataset` to a loader of real archives.

Every source returns a :class:`RawDataset` with images already at the target size,
``uint8`` in ``[M, C, H, W]`` layout, and a train / val / test split of classes.
Split lists are facts shipped with the package (``dfml/data/splits``).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .archives import Archive, DataError, locate

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


def split_list(name: str, split: str) -> list[str]:
    """Class names of a shipped split list (`omniglot-vinyals`, `cifar-fs`, `miniimagenet`)."""
    text = resources.files("dfml.data").joinpath("splits", name, f"{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def resize_gray(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.convert("L").resize((size, size), Image.LANCZOS), dtype=np.uint8)


def resize_rgb(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8).transpose(2, 0, 1)


class DatasetSource(ABC):
    """One dataset: its official archives and how to read them."""

    name: str
    channels: int
    image_size: int

    def archives(self, cfg: dict) -> list[Archive]:
        return []

    def preflight(self, cfg: dict, downloads: Path) -> None:
        """Raise DataError (naming the file and the fix) when the inputs are missing or wrong, before any decoding:
        every archive is located and checksummed (downloaded when no mirror is set)."""
        for archive in self.archives(cfg):
            locate(self.name, archive, downloads)

    @abstractmethod
    def load(self, cfg: dict, image_size: int, downloads: Path) -> RawDataset:
        """Fetch (verified) archives and return the dataset at `image_size`."""


DATASETS: dict[str, type[DatasetSource]] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        DATASETS[name] = cls
        return cls

    return deco


def get_source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise DataError(f"data.dataset: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]()


def assemble(per_class: dict[str, list[np.ndarray]], splits_by_name: dict[str, list[str]], where: str) -> RawDataset:
    """Stack per-class image lists into a RawDataset, in split-list order.

    Raises DataError when a class named in a split has no images.
    """
    names, images, labels, splits = [], [], [], {}
    for split in SPLITS:
        idx = []
        for cname in splits_by_name[split]:
            imgs = per_class.get(cname)
            if not imgs:
                raise DataError(f"{where}: class {cname!r} of the {split} split has no images; "
                                "the archive is incomplete or not the official one")
            idx.append(len(names))
            labels.extend([len(names)] * len(imgs))
            names.append(cname)
            images.extend(imgs)
        splits[split] = idx
    arr = np.stack(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    return RawDataset(arr, np.asarray(labels, dtype=np.int64), names, splits)


@register("omniglot")
class Omniglot(DatasetSource):
    """Omniglot (Lake et al., Science 2015), Vinyals split 1028/172/423 characters.

    Images are 105x105 black-on-white PNGs; we resize to `image_size` (default 28)
    and invert so strokes are bright: ``uint8 [M, 1, 28, 28]``, 20 per character.
    """

    channels = 1
    image_size = 28
    _BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"

    def archives(self, cfg):
        return [
            Archive("images_background.zip", self._BASE + "images_background.zip", "md5:68d2efa1b9178cc56df9314c21c6e718"),
            Archive("images_evaluation.zip", self._BASE + "images_evaluation.zip", "md5:6b91aef0f799c5bb55b94e3f2daec811"),
        ]

    def load(self, cfg, image_size, downloads):
        splits = {s: split_list("omniglot-vinyals", s) for s in SPLITS}
        wanted = {c for names in splits.values() for c in names}
        per_class: dict[str, list[np.ndarray]] = {}
        for arch in self.archives(cfg):
            path = locate(self.name, arch, downloads)
            try:
                with zipfile.ZipFile(path) as zf:
                    for member in sorted(zf.namelist()):
                        parts = member.split("/")
                        if len(parts) != 4 or not parts[3].endswith(".png"):
                            continue
                        cname = f"{parts[1]}/{parts[2]}"
                        if cname not in wanted:
                            continue
                        with Image.open(io.BytesIO(zf.read(member))) as img:
                            per_class.setdefault(cname, []).append(255 - resize_gray(img, image_size))
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"{path}: cannot be read as a zip archive ({exc}); replace it with a good copy") from exc
        ds = assemble(per_class, splits, "omniglot")
        if cfg.get("rotations"):
            ds = add_rotations(ds)
        return ds


def add_rotations(ds: RawDataset) -> RawDataset:
    """Rotated copies (90, 180, 270 degrees) of every class as new classes of the same split."""
    images, labels, names = [ds.images], [ds.labels], list(ds.class_names)
    splits = {s: list(v) for s, v in ds.splits.items()}
    n = len(names)
    for k, deg in enumerate((90, 180, 270), start=1):
        images.append(np.rot90(ds.images, k, axes=(2, 3)).copy())
        labels.append(ds.labels + k * n)
        names += [f"{c}/rot{deg:03d}" for c in ds.class_names]
        for s in splits:
            splits[s] += [c + k * n for c in ds.splits[s]]
    return RawDataset(np.concatenate(images), np.concatenate(labels), names, splits)


# --------------------------------------------------------------------------- #
# RGB sources: CIFAR-FS, CUB-200-2011, MiniImageNet and a user folder of classes.
# --------------------------------------------------------------------------- #

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_WNID = re.compile(r"^n\d{8}$")


def _decode_rgb(data: bytes, size: int, where: str, fix: str) -> np.ndarray:
    """Decode image bytes, convert to RGB and resize to ``uint8 [3, size, size]``; DataError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return resize_rgb(img, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where}: cannot be decoded as an image ({exc}); {fix}") from exc


def _tar_members(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Stream (name, bytes) of the regular members of a tar archive that `want` accepts, in archive order.

    Streaming (rather than random access in sorted order) keeps gzip archives to a single pass;
    callers sort by member name afterwards for determinism.
    """
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                if not member.isfile() or not want(member.name):
                    continue
                fh = tf.extractfile(member)
                if fh is None:
                    continue
                yield member.name, fh.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as a tar archive ({exc}); "
                        "it is truncated or corrupt, replace it with a good copy") from exc


def _zip_members(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the files of a zip archive that `want` accepts, in sorted name order."""
    try:
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                if name.endswith("/") or not want(name):
                    continue
                yield name, zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as a zip archive ({exc}); "
                        "it is truncated or corrupt, replace it with a good copy") from exc


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTS)


def _sorted_per_class(named: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, list[np.ndarray]]:
    """Order each class's images by member / file name."""
    return {c: [img for _, img in sorted(items, key=lambda t: t[0])] for c, items in named.items()}


def _maybe_rotate(ds: RawDataset, cfg: dict) -> RawDataset:
    return add_rotations(ds) if cfg.get("rotations") else ds


@register("cifar-fs")
class CifarFS(DatasetSource):
    """CIFAR-FS (Bertinetto et al., ICLR 2019): CIFAR-100 classes split 64/16/20, 600 images each.

    Both the official train and test images of CIFAR-100 are used. Native size is 32x32;
    images are resized only when `image_size` differs: ``uint8 [60000, 3, S, S]``.
    """

    channels = 3
    image_size = 32
    _MEMBERS = ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta")

    def archives(self, cfg):
        return [Archive("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "md5:eb9058c3a382ffc7106e4002c42a8d85")]

    def load(self, cfg, image_size, downloads):
        path = locate(self.name, self.archives(cfg)[0], downloads)
        raw: dict[str, dict] = {}
        for name, data in _tar_members(path, lambda n: n in self._MEMBERS):
            try:
                raw[name] = pickle.loads(data, encoding="latin1")
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad archive
                raise DataError(f"{path}: member {name} is not a readable CIFAR-100 pickle ({exc}); "
                                "replace the archive with the official cifar-100-python.tar.gz") from exc
        missing = [m for m in self._MEMBERS if m not in raw]
        if missing:
            raise DataError(f"{path}: missing member(s) {missing}; this is not the official "
                            "cifar-100-python.tar.gz, replace it")
        try:
            names = list(raw["cifar-100-python/meta"]["fine_label_names"])
            parts = [raw[f"cifar-100-python/{s}"] for s in ("train", "test")]
            data = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])
            fine = np.concatenate([np.asarray(p["fine_labels"], dtype=np.int64) for p in parts])
            images = data.reshape(-1, 3, 32, 32)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: CIFAR-100 pickles lack the expected 'data' / 'fine_labels' / "
                            f"'fine_label_names' layout ({exc}); replace it with the official archive") from exc
        if len(fine) != len(images) or (len(fine) and (fine.min() < 0 or fine.max() >= len(names))):
            raise DataError(f"{path}: CIFAR-100 labels do not match the images / label names; "
                            "replace it with the official archive")
        if image_size != 32:
            images = np.stack([resize_rgb(Image.fromarray(im.transpose(1, 2, 0)), image_size) for im in images])
        order = np.argsort(fine, kind="stable")
        per_class: dict[str, list[np.ndarray]] = {}
        for i in order:
            per_class.setdefault(names[fine[i]], []).append(images[i])
        splits = {s: split_list("cifar-fs", s) for s in SPLITS}
        return _maybe_rotate(assemble(per_class, splits, f"cifar-fs ({path})"), cfg)


@register("cub")
class CUB(DatasetSource):
    """CUB-200-2011 birds (Wah et al. 2011), 200 classes split 100/50/50 by class index
    (train: i % 2 == 0, val: i % 4 == 1, test: i % 4 == 3; Hilliard et al. / Chen et al. convention).

    Whole images (no bounding-box crop) are resized to `image_size` (default 84).
    """

    channels = 3
    image_size = 84
    _ROOT = "CUB_200_2011/"

    def archives(self, cfg):
        return [Archive("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vzc92/files/CUB_200_2011.tgz",
                        "md5:97eceeb196236b17998738112f37df78")]

    def load(self, cfg, image_size, downloads):
        path = locate(self.name, self.archives(cfg)[0], downloads)
        classes_txt = self._ROOT + "classes.txt"
        img_prefix = self._ROOT + "images/"

        def want(n: str) -> bool:
            return n == classes_txt or (n.startswith(img_prefix) and n.count("/") == 3 and _is_image(n))

        table = None
        named: dict[str, list[tuple[str, np.ndarray]]] = {}
        fix = "the archive is corrupt, replace it with the official CUB_200_2011.tgz"
        for name, data in _tar_members(path, want):
            if name == classes_txt:
                table = data.decode("utf-8", errors="replace")
                continue
            folder = name.split("/")[2]
            named.setdefault(folder, []).append((name, _decode_rgb(data, image_size, f"{path}: {name}", fix)))
        if table is None:
            raise DataError(f"{path}: member {classes_txt} not found; this is not the official "
                            "CUB_200_2011.tgz, replace it")
        ids = []
        for line in table.splitlines():
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError(f"{path}: {classes_txt}: bad line {line!r} (want '<id> <folder>'); replace the archive")
            ids.append((int(parts[0]), parts[1]))
        class_names = [folder for _, folder in sorted(ids)]
        if len(class_names) != 200:
            raise DataError(f"{path}: {classes_txt} lists {len(class_names)} classes, expected 200; "
                            "replace it with the official CUB_200_2011.tgz")
        splits = {
            "train": [c for i, c in enumerate(class_names) if i % 2 == 0],
            "val": [c for i, c in enumerate(class_names) if i % 4 == 1],
            "test": [c for i, c in enumerate(class_names) if i % 4 == 3],
        }
        return _maybe_rotate(assemble(_sorted_per_class(named), splits, f"cub ({path})"), cfg)


def _wnid_of(name: str) -> str | None:
    """WordNet id of an image path: its parent folder if that is a wnid, else the file name's first 9 chars."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) >= 2 and _WNID.match(parts[-2]):
        return parts[-2]
    head = parts[-1][:9]
    return head if _WNID.match(head) else None


@register("miniimagenet")
class MiniImageNet(DatasetSource):
    """MiniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle split 64/16/20, 600 images per class.

    There is no stable official URL, so `data.miniimagenet.source` names a folder or a
    .tar / .tar.gz / .tgz / .zip archive the user obtained. Images may sit in wnid folders
    (``.../n01532829/xxx.jpg``) or flat in Ravi format (``images/n0153282900000005.jpg``).
    """

    channels = 3
    image_size = 84
    KEY = "data.miniimagenet.source"

    def preflight(self, cfg, downloads):
        self._source(cfg)

    def _source(self, cfg) -> Path:
        src = (cfg.get("miniimagenet") or {}).get("source")
        if not src:
            raise DataError(f"{self.KEY}: not set; name the MiniImageNet folder or archive you downloaded "
                            "(no stable public URL exists)")
        path = Path(src).expanduser()
        if not path.exists():
            raise DataError(f"{self.KEY}: {path} does not exist (resolved: {path.resolve()}); "
                            "fix the path or download MiniImageNet there")
        return path

    def load(self, cfg, image_size, downloads):
        path = self._source(cfg)
        splits = {s: split_list("miniimagenet", s) for s in SPLITS}
        wanted = {c for names in splits.values() for c in names}

        def want(n: str) -> bool:
            return _is_image(n) and _wnid_of(n) in wanted

        lower = path.name.lower()
        if path.is_dir():
            members = self._folder_members(path, want)
        elif lower.endswith(".zip"):
            members = _zip_members(path, want)
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            members = _tar_members(path, want)
        else:
            raise DataError(f"{self.KEY}: {path} is neither a folder nor a .tar/.tar.gz/.tgz/.zip archive; "
                            "point it at one of those")
        fix = f"replace that file or re-download MiniImageNet into {path}"
        prefix = "" if path.is_dir() else f"{path}: "
        named: dict[str, list[tuple[str, np.ndarray]]] = {}
        for name, data in members:
            named.setdefault(_wnid_of(name), []).append(
                (name, _decode_rgb(data, image_size, prefix + name, fix)))
        return _maybe_rotate(assemble(_sorted_per_class(named), splits, f"miniimagenet ({path})"), cfg)

    @staticmethod
    def _folder_members(root: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if not want(full.as_posix()):
                    continue
                try:
                    yield str(full), full.read_bytes()
                except OSError as exc:
                    raise DataError(f"{full}: cannot be read ({exc}); fix its permissions or replace it") from exc


@register("folder")
class Folder(DatasetSource):
    """A user dataset: `data.folder.root` holds one folder of images per class.

    Classes are split by the explicit `data.folder.train/val/test` lists when all three are
    given, else by a seeded random permutation of the sorted class folders with
    `data.folder.fractions` ``[train, val, test]``. Grey / palette images become RGB.
    """

    channels = 3
    image_size = 84

    def preflight(self, cfg, downloads):
        self._root(cfg.get("folder") or {})

    @staticmethod
    def _root(fcfg: dict) -> Path:
        if not fcfg.get("root"):
            raise DataError("data.folder.root: not set; name a folder holding one sub-folder of images per class")
        root = Path(fcfg["root"]).expanduser()
        if not root.is_dir():
            raise DataError(f"data.folder.root: {root} is not a folder (resolved: {root.resolve()}); "
                            "fix the path")
        return root

    def load(self, cfg, image_size, downloads):
        fcfg = cfg.get("folder") or {}
        root = self._root(fcfg)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"data.folder.root: {root} has no class sub-folders; put one folder of images per class there")
        splits = self._split(fcfg, classes, cfg.get("seed", 0), root)
        per_class: dict[str, list[np.ndarray]] = {}
        for cname in (c for s in SPLITS for c in splits[s]):
            folder = root / cname
            files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
            imgs = []
            for f in files:
                try:
                    data = f.read_bytes()
                except OSError as exc:
                    raise DataError(f"{f}: cannot be read ({exc}); fix its permissions or remove it") from exc
                imgs.append(_decode_rgb(data, image_size, str(f), "remove or replace that file"))
            per_class[cname] = imgs
        return _maybe_rotate(assemble(per_class, splits, f"folder ({root})"), cfg)

    @staticmethod
    def _split(fcfg: dict, classes: list[str], seed: int, root: Path) -> dict[str, list[str]]:
        given = {s: fcfg.get(s) for s in SPLITS}
        if any(given.values()):
            missing = [f"data.folder.{s}" for s in SPLITS if not given[s]]
            if missing:
                raise DataError(f"{', '.join(missing)}: not set while other split lists are; give all of "
                                "data.folder.train/val/test, or none of them to split by data.folder.fractions")
            seen: dict[str, str] = {}
            for s in SPLITS:
                for c in given[s]:
                    if c not in classes:
                        raise DataError(f"data.folder.{s}: class folder {c!r} not found in {root}; "
                                        "fix the name or add the folder")
                    if c in seen:
                        raise DataError(f"data.folder.{s}: class {c!r} is also in data.folder.{seen[c]}; "
                                        "splits must be disjoint")
                    seen[c] = s
            return {s: list(given[s]) for s in SPLITS}
        fr = fcfg.get("fractions")
        if not fr or len(fr) != 3 or any(f < 0 for f in fr) or sum(fr) <= 0:
            raise DataError(f"data.folder.fractions: must be three non-negative numbers [train, val, test], got {fr!r}")
        n = len(classes)
        total = float(sum(fr))
        n_train = int(round(n * fr[0] / total))
        n_val = int(round(n * fr[1] / total))
        n_test = n - n_train - n_val if fr[2] > 0 else 0
        counts = {"train": n_train, "val": n_val, "test": n_test}
        if min(counts.values()) < 1:
            raise DataError(f"data.folder.fractions: {fr} splits the {n} class folders of {root} into "
                            f"{counts}; every split needs at least one class: add class folders or change "
                            "the fractions")
        perm = np.random.default_rng(seed).permutation(n)
        out, start = {}, 0
        for s in SPLITS:
            out[s] = sorted(classes[i] for i in perm[start:start + counts[s]])
            start += counts[s]
        return out
