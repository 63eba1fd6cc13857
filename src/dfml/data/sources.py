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
from concurrent.futures import ThreadPoolExecutor

from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..core.errors import DataError
from .archives import Archive, locate
from .params import DataParams, FolderData
from .raw import SPLITS, RawDataset

def split_list(name: str, split: str) -> list[str]:
    """Class names of a shipped split list (`omniglot-vinyals`, `cifar-fs`, `miniimagenet`)."""
    text = resources.files("dfml.data").joinpath("splits", name, f"{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def resize_gray(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.convert("L").resize((size, size), Image.LANCZOS), dtype=np.uint8)


def resize_rgb(img: Image.Image, size: int) -> np.ndarray:
    """``uint8 [3, size, size]``; an image already of that size is not resampled."""
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class DatasetSource(ABC):
    """One dataset: its official archives and how to read them."""

    name: str
    channels: int
    image_size: int

    def archives(self, cfg: DataParams) -> list[Archive]:
        return []

    def preflight(self, cfg: DataParams, downloads: Path) -> None:
        """Raise DataError (naming the file and the fix) when the inputs are missing or wrong, before any decoding:
        every archive is located and checksummed (downloaded when no mirror is set)."""
        for archive in self.archives(cfg):
            locate(self.name, archive, downloads)

    @abstractmethod
    def load(self, cfg: DataParams, image_size: int, downloads: Path, seed: int = 0) -> RawDataset:
        """Fetch (verified) archives and return the dataset at `image_size` (`seed`: a folder's drawn split)."""


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


def assemble(per_class: dict[str, list[np.ndarray]], splits_by_name: dict[str, list[str]], where: str,
             missing: str = "the archive is incomplete or not the official one") -> RawDataset:
    """Stack per-class image lists into a RawDataset, in split-list order.

    Raises DataError (`where`, then `missing`: what an empty class means for this source) when a class named in
    a split has no images.
    """
    names, labels, splits = [], [], {}
    for split in SPLITS:
        idx = []
        for cname in splits_by_name[split]:
            if not per_class.get(cname):
                raise DataError(f"{where}: class {cname!r} of the {split} split has no images; {missing}")
            idx.append(len(names))
            labels.extend([len(names)] * len(per_class[cname]))
            names.append(cname)
        splits[split] = idx
    first = per_class[names[0]][0]
    arr = np.empty((len(labels), *first.shape), dtype=np.uint8)  # filled in place: no second copy of the images
    row = 0
    for cname in names:
        for img in per_class[cname]:
            arr[row] = img
            row += 1
    if arr.ndim == 3:
        arr = arr[:, None]
    return RawDataset(arr, np.asarray(labels, dtype=np.int64), names, splits)


def keep_first(splits_by_name: dict[str, list[str]], cfg: DataParams) -> dict[str, list[str]]:
    """The split lists cut to their first ``data.subset.classes_per_split`` classes (smoke configs; all when null),
    as :func:`dfml.data.prepared.subsample` will keep them: a source can skip decoding the others."""
    n = cfg.subset.classes_per_split
    return {s: list(names[:n] if n else names) for s, names in splits_by_name.items()}


def assemble_encoded(members: dict[str, list[tuple[str, bytes]]], splits_by_name: dict[str, list[str]], cfg: DataParams,
                     decode: Callable[[str, bytes], np.ndarray], where: str,
                     missing: str = "the archive is incomplete or not the official one") -> RawDataset:
    """:func:`assemble` from encoded images, decoded straight into the one ``uint8 [M, C, S, S]`` array.

    Each class's members are taken in sorted name order, and only the first ``data.subset.images_per_class`` of
    them (smoke configs); decoding runs on one thread per CPU core (PIL decodes outside the GIL) and gives
    the same array for any number of threads.

    Args:
        members: class name -> ``[(member name, encoded bytes)]`` in any order.
        decode: ``(member name, bytes) -> uint8 [C, S, S]``; raises DataError naming the member.
    """
    cap = cfg.subset.images_per_class
    names, labels, splits, jobs = [], [], {}, []
    for split in SPLITS:
        idx = []
        for cname in splits_by_name[split]:
            items = sorted(members.get(cname, []), key=lambda t: t[0])[:cap]
            if not items:
                raise DataError(f"{where}: class {cname!r} of the {split} split has no images; {missing}")
            idx.append(len(names))
            labels.extend([len(names)] * len(items))
            names.append(cname)
            jobs += items
        splits[split] = idx
    first = decode(*jobs[0])
    arr = np.empty((len(jobs), *first.shape), dtype=np.uint8)

    def fill(row: int) -> None:
        arr[row] = decode(*jobs[row])

    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(len(jobs))))
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

    def load(self, cfg, image_size, downloads, seed=0):
        splits = {s: split_list("omniglot-vinyals", s) for s in SPLITS}
        wanted = {c for names in splits.values() for c in names}

        def want(member: str) -> bool:
            parts = member.split("/")
            return len(parts) == 4 and parts[3].endswith(".png") and f"{parts[1]}/{parts[2]}" in wanted

        per_class: dict[str, list[np.ndarray]] = {}
        for arch in self.archives(cfg):
            path = locate(self.name, arch, downloads)
            for member, data in _zip_members(path, want):
                parts = member.split("/")
                try:
                    with Image.open(io.BytesIO(data)) as img:
                        per_class.setdefault(f"{parts[1]}/{parts[2]}", []).append(255 - resize_gray(img, image_size))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    raise DataError(f"{path}: member {member} cannot be decoded as an image ({exc}); "
                                    "replace the archive with a good copy") from exc
        ds = assemble(per_class, splits, "omniglot")
        if cfg.rotations:
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
    """Decode image bytes (Pillow), convert to RGB and resize to ``uint8 [3, size, size]``; DataError if unreadable.

    Pillow rather than torchvision.io: torchvision 0.29 deprecates its image decoders (superseded by TorchCodec).
    """
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
    """(name, bytes) of the files of a zip archive that `want` accepts, in sorted name order.

    A damaged archive (no zip directory) or a damaged member (a broken deflate stream, a CRC error) raises
    DataError naming the archive and, for a member, the member.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a zip archive ({exc}); "
                        "it is truncated or corrupt, replace it with a good copy") from exc
    with zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/") or not want(name):
                continue
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
                raise DataError(f"{path}: member {name} cannot be read ({type(exc).__name__}: {exc}); "
                                "the archive is corrupt, replace it with a good copy") from exc
            yield name, data


def zip_names(path: Path) -> list[str]:
    """The member names of a zip archive, from its directory only (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a zip archive ({exc}); "
                        "it is truncated or corrupt, replace it with a good copy") from exc


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTS)


def _hidden_below(name: str, folder: Path) -> bool:
    """Whether a path below `folder` passes through a hidden folder (``.git``, ``.ipynb_checkpoints``...)."""
    return any(part.startswith(".") for part in Path(name).relative_to(folder).parts[:-1])


def _maybe_rotate(ds: RawDataset, cfg: DataParams) -> RawDataset:
    return add_rotations(ds) if cfg.rotations else ds


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

    def load(self, cfg, image_size, downloads, seed=0):
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

    def load(self, cfg, image_size, downloads, seed=0):
        path = locate(self.name, self.archives(cfg)[0], downloads)
        classes_txt = self._ROOT + "classes.txt"
        img_prefix = self._ROOT + "images/"

        def want(n: str) -> bool:
            return n == classes_txt or (n.startswith(img_prefix) and n.count("/") == 3 and _is_image(n))

        table = None
        encoded: dict[str, list[tuple[str, bytes]]] = {}
        fix = "the archive is corrupt, replace it with the official CUB_200_2011.tgz"
        for name, data in _tar_members(path, want):
            if name == classes_txt:
                table = data.decode("utf-8", errors="replace")
                continue
            encoded.setdefault(name.split("/")[2], []).append((name, data))
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
        splits = keep_first({
            "train": [c for i, c in enumerate(class_names) if i % 2 == 0],
            "val": [c for i, c in enumerate(class_names) if i % 4 == 1],
            "test": [c for i, c in enumerate(class_names) if i % 4 == 3],
        }, cfg)
        return _maybe_rotate(assemble_encoded(encoded, splits, cfg,
                                              lambda name, data: _decode_rgb(data, image_size, f"{path}: {name}", fix),
                                              f"cub ({path})"), cfg)


def _wnid_of(name: str) -> str | None:
    """WordNet id of an image path: its parent folder if that is a wnid, else the file name's first 9 chars."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) >= 2 and _WNID.match(parts[-2]):
        return parts[-2]
    head = parts[-1][:9]
    return head if _WNID.match(head) else None


@register("miniimagenet")
class MiniImageNet(DatasetSource):
    """MiniImageNet (Vinyals et al., NeurIPS 2016) with the Ravi & Larochelle split 64/16/20 (ICLR 2017).

    There is no official download. With `data.miniimagenet.source` unset, the archive
    ``$DFML_DATA_MIRROR/miniimagenet/mini-imagenet-500.zip`` is read, checked against the ``SHA256SUMS``
    beside it (a copy with 500 of the 600 images of every class, 84x84 JPEG); set, it names a folder or a
    .tar / .tar.gz / .tgz / .zip archive the user obtained. Images may sit in wnid folders
    (``.../n01532829/xxx.jpg``) or flat in Ravi format (``images/n0153282900000005.jpg``).
    Output: ``uint8 [M, 3, S, S]``, each class's images in sorted member-name order.
    """

    channels = 3
    image_size = 84
    KEY = "data.miniimagenet.source"
    MIRROR = Archive("mini-imagenet-500.zip", None, None,
                     fix=f"set {KEY} to a MiniImageNet folder or archive you downloaded")

    def preflight(self, cfg, downloads):
        """The archive is located and checked, and its directory (a zip's) lists an image of every class of
        the split, before anything is decoded."""
        path = self._source(cfg, downloads)
        if path.is_file() and path.name.lower().endswith(".zip"):
            counts = self.inventory(path)
            missing = [c for s in SPLITS for c in split_list("miniimagenet", s) if not counts.get(c)]
            if missing:
                raise DataError(f"{path}: no images of {len(missing)} MiniImageNet classes (e.g. {missing[0]}); "
                                "the archive is incomplete, replace it with a full copy")

    @staticmethod
    def inventory(path: Path) -> dict[str, int]:
        """``{wnid: images}`` of a zip archive, read from its directory alone (no image is decoded)."""
        counts: dict[str, int] = {}
        for name in zip_names(path):
            wnid = _wnid_of(name)
            if wnid is not None and _is_image(name):
                counts[wnid] = counts.get(wnid, 0) + 1
        return counts

    def _source(self, cfg, downloads: Path) -> Path:
        src = cfg.miniimagenet.source
        if not src:
            return locate(self.name, self.MIRROR, downloads)
        path = Path(src).expanduser()
        if not path.exists():
            raise DataError(f"{self.KEY}: {path} does not exist (resolved: {path.resolve()}); "
                            "fix the path, or set it to null to read the data mirror's copy")
        return path

    def load(self, cfg, image_size, downloads, seed=0):
        path = self._source(cfg, downloads)
        splits = keep_first({s: split_list("miniimagenet", s) for s in SPLITS}, cfg)
        wanted = {c for names in splits.values() for c in names}

        def want(n: str) -> bool:
            return _is_image(n) and _wnid_of(n) in wanted

        lower = path.name.lower()
        if path.is_dir():
            members = _folder_members(path, want)
        elif lower.endswith(".zip"):
            members = _zip_members(path, want)
        elif lower.endswith((".tar", ".tar.gz", ".tgz")):
            members = _tar_members(path, want)
        else:
            raise DataError(f"{self.KEY}: {path} is neither a folder nor a .tar/.tar.gz/.tgz/.zip archive; "
                            "point it at one of those")
        fix = f"replace that file or re-download MiniImageNet into {path}"
        prefix = "" if path.is_dir() else f"{path}: "
        encoded: dict[str, list[tuple[str, bytes]]] = {}
        for name, data in members:
            encoded.setdefault(_wnid_of(name), []).append((name, data))
        return _maybe_rotate(assemble_encoded(encoded, splits, cfg,
                                              lambda name, data: _decode_rgb(data, image_size, prefix + name, fix),
                                              f"miniimagenet ({path})"), cfg)


def _folder_members(root: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the files below `root` that `want` accepts, in sorted order (deterministic)."""
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
    """A user dataset: `data.folder.root` holds one folder per class, its images anywhere below it.

    A class's images may lie directly in its folder or in sub-folders of it (as torchvision's
    ``ImageFolder`` accepts, and as many published datasets ship them); they are taken in sorted order of
    their path inside the class folder, hidden files and files that are not images skipped. Classes are
    split by the explicit `data.folder.train/val/test` lists when all three are given, else by a seeded
    random permutation of the sorted class folders with `data.folder.fractions` ``[train, val, test]``.
    Grey / palette images become RGB: ``uint8 [M, 3, S, S]``.
    """

    channels = 3
    image_size = 84

    def preflight(self, cfg, downloads):
        self._root(cfg.folder)

    @staticmethod
    def _root(fcfg: FolderData) -> Path:
        if not fcfg.root:
            raise DataError("data.folder.root: not set; name a folder holding one sub-folder of images per class")
        root = Path(fcfg.root).expanduser()
        if not root.is_dir():
            raise DataError(f"data.folder.root: {root} is not a folder (resolved: {root.resolve()}); "
                            "fix the path")
        return root

    def load(self, cfg, image_size, downloads, seed=0):
        fcfg = cfg.folder
        root = self._root(fcfg)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"data.folder.root: {root} has no class sub-folders; put one folder of images per class there")
        splits = keep_first(self._split(fcfg, classes, seed, root), cfg)
        encoded: dict[str, list[tuple[str, bytes]]] = {}
        for cname in (c for s in SPLITS for c in splits[s]):
            folder = root / cname
            encoded[cname] = list(_folder_members(folder, lambda n, f=folder: _is_image(n) and not _hidden_below(n, f)))
        return _maybe_rotate(assemble_encoded(
            encoded, splits, cfg, lambda name, data: _decode_rgb(data, image_size, name, "remove or replace that file"),
            f"data.folder.root ({root})", missing=f"put its images ({', '.join(IMAGE_EXTS)}) in that class folder "
                                                  "or a folder below it, or remove the class folder"), cfg)

    @staticmethod
    def _split(fcfg: FolderData, classes: list[str], seed: int, root: Path) -> dict[str, list[str]]:
        given = {s: getattr(fcfg, s) for s in SPLITS}
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
        fr = fcfg.fractions
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
