"""Tiny dataset archives in the official formats, for the source loaders and the mh scenario's end-to-end run.

Each builder writes its archive into ``<mirror>/<dataset>/`` with the ``SHA256SUMS`` file that
:func:`dfml.data.archives.locate` checks, so pointing ``DFML_DATA_MIRROR`` at `mirror` downloads nothing.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dfml.data.sources import SPLITS, split_list

KNOWN_RGB = (10, 200, 77)


def jpeg(colour, size=8, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png(colour, size=8, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_sums(folder: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(folder.iterdir()) if p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def cifar_names() -> list[str]:
    return sorted({c for s in SPLITS for c in split_list("cifar-fs", s)})


def build_cifar(mirror: Path, per_class_train=3, per_class_test=1) -> Path:
    """cifar-100-python.tar.gz with the real layout; image j of class k has value (k + 2*j) in every pixel,
    except the first train image of class 'train', which is filled with KNOWN_RGB."""
    names = cifar_names()
    assert len(names) == 100

    def part(n_per, offset):
        labels, rows = [], []
        for k in range(100):
            for j in range(n_per):
                labels.append(k)
                rows.append(np.full(3072, (k + 2 * (j + offset)) % 256, dtype=np.uint8))
        return np.stack(rows), labels

    train_x, train_y = part(per_class_train, 0)
    first = train_y.index(names.index("train"))
    train_x[first] = np.repeat(np.asarray(KNOWN_RGB, dtype=np.uint8), 1024)  # R plane, G plane, B plane
    test_x, test_y = part(per_class_test, per_class_train)
    folder = mirror / "cifar-fs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        add_member(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": names, "coarse_label_names": []}))
        add_member(tf, "cifar-100-python/test", pickle.dumps({"data": test_x, "fine_labels": test_y}))
        add_member(tf, "cifar-100-python/train", pickle.dumps({"data": train_x, "fine_labels": train_y}))
    write_sums(folder)
    return path


def cub_folder(i: int) -> str:
    return f"{i + 1:03d}.Bird_{i + 1:03d}"


def build_cub(mirror: Path, bad_member: str | None = None, per_class: int | None = None) -> Path:
    """CUB_200_2011.tgz: classes.txt and 200 class folders; class i holds 1 + i % 2 JPEGs (or `per_class`) of grey
    level i. Members are written in shuffled order to check that the reader sorts."""
    members = []
    for i in range(200):
        for j in range(per_class or 1 + i % 2):
            name = f"CUB_200_2011/images/{cub_folder(i)}/Bird_{i + 1:03d}_{j:04d}.jpg"
            mode, colour = ("L", i) if i == 7 else ("RGB", (i, i, i))  # one greyscale JPEG class
            members.append((name, b"not a jpeg" if name == bad_member else jpeg(colour, mode=mode)))
    random.Random(0).shuffle(members)
    classes = "".join(f"{i + 1} {cub_folder(i)}\n" for i in range(200)).encode()
    folder = mirror / "cub"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "CUB_200_2011.tgz"
    with tarfile.open(path, "w:gz") as tf:
        add_member(tf, "attributes.txt", b"1 has_bill_shape::curved\n")
        for name, data in members[:50]:
            add_member(tf, name, data)
        add_member(tf, "CUB_200_2011/classes.txt", classes)  # not first: the reader must not depend on order
        for name, data in members[50:]:
            add_member(tf, name, data)
    write_sums(folder)
    return path


def build_omniglot(mirror: Path, per_class: int = 2, size: int = 20) -> tuple[Path, Path]:
    """images_background.zip (the Vinyals train characters) and images_evaluation.zip (val and test) in the
    official layout ``<archive root>/<alphabet>/<character>/<file>.png``: black strokes on white, `per_class`
    PNGs per character; character k is a seeded random pattern of its own, its images shifted copies."""
    folder = mirror / "omniglot"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for archive, splits in (("images_background", ("train",)), ("images_evaluation", ("val", "test"))):
        path = folder / f"{archive}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for split in splits:
                for k, name in enumerate(split_list("omniglot-vinyals", split)):
                    pattern = np.random.default_rng([SPLITS.index(split), k]).random((size, size)) < 0.2
                    for j in range(per_class):
                        img = np.where(np.roll(pattern, j, axis=1), 0, 255).astype(np.uint8)
                        buf = io.BytesIO()
                        Image.fromarray(img, mode="L").save(buf, format="PNG")
                        zf.writestr(f"{archive}/{name}/{j:04d}.png", buf.getvalue())
        paths.append(path)
    write_sums(folder)
    return paths[0], paths[1]
