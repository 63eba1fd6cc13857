"""Dataset sources read tiny archives built here in the official formats.

Each test builds its archive in tmp_path, writes a SHA256SUMS beside it and points
DFML_DATA_MIRROR there, so nothing is downloaded.
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
import pytest
from PIL import Image

from dfml.data.archives import MIRROR_ENV, DataError
from dfml.data.sources import SPLITS, get_source, split_list

KNOWN_RGB = (10, 200, 77)


# ----------------------------------------------------------------------------- helpers


def _jpeg(colour, size=8, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png(colour, size=8, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_sums(folder: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(folder.iterdir()) if p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _check_common(ds, n_classes, counts, channels=3, size=8):
    assert ds.images.dtype == np.uint8
    assert ds.images.ndim == 4 and ds.images.shape[1:] == (channels, size, size)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds.images),)
    assert len(ds.class_names) == n_classes
    assert {s: len(ds.splits[s]) for s in SPLITS} == counts
    sets = [set(ds.splits[s]) for s in SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(n_classes))
    assert set(np.unique(ds.labels)) == set(range(n_classes))


def _cifar_names() -> list[str]:
    return sorted({c for s in SPLITS for c in split_list("cifar-fs", s)})


def _build_cifar(mirror: Path, per_class_train=3, per_class_test=1) -> Path:
    """cifar-100-python.tar.gz with the real layout; image j of class k has value (k + 2*j) in every pixel,
    except the first train image of class 'train', which is filled with KNOWN_RGB."""
    names = _cifar_names()
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
        _add(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": names, "coarse_label_names": []}))
        _add(tf, "cifar-100-python/test", pickle.dumps({"data": test_x, "fine_labels": test_y}))
        _add(tf, "cifar-100-python/train", pickle.dumps({"data": train_x, "fine_labels": train_y}))
    _write_sums(folder)
    return path


def _cub_folder(i: int) -> str:
    return f"{i + 1:03d}.Bird_{i + 1:03d}"


def _build_cub(mirror: Path, bad_member: str | None = None) -> Path:
    """CUB_200_2011.tgz: classes.txt and 200 class folders; class i holds 1 + i % 2 JPEGs of grey level i.
    Members are written in shuffled order to check that the reader sorts."""
    members = []
    for i in range(200):
        for j in range(1 + i % 2):
            name = f"CUB_200_2011/images/{_cub_folder(i)}/Bird_{i + 1:03d}_{j:04d}.jpg"
            mode, colour = ("L", i) if i == 7 else ("RGB", (i, i, i))  # one greyscale JPEG class
            members.append((name, b"not a jpeg" if name == bad_member else _jpeg(colour, mode=mode)))
    random.Random(0).shuffle(members)
    classes = "".join(f"{i + 1} {_cub_folder(i)}\n" for i in range(200)).encode()
    folder = mirror / "cub"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "CUB_200_2011.tgz"
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "attributes.txt", b"1 has_bill_shape::curved\n")
        for name, data in members[:50]:
            _add(tf, name, data)
        _add(tf, "CUB_200_2011/classes.txt", classes)  # not first: the reader must not depend on order
        for name, data in members[50:]:
            _add(tf, name, data)
    _write_sums(folder)
    return path


def _wnids() -> list[str]:
    return [c for s in SPLITS for c in split_list("miniimagenet", s)]


def _mini_colour(k: int, j: int) -> tuple[int, int, int]:
    return (k * 2, 100 + j * 50, 255 - k * 2)


def _build_mini_ravi(root: Path, per_class=2) -> Path:
    """Ravi format: images/<wnid><8 digits>.jpg, flat, plus the csv files it ships with."""
    (root / "images").mkdir(parents=True)
    for k, w in enumerate(_wnids()):
        for j in range(per_class):
            (root / "images" / f"{w}{j + 1:08d}.jpg").write_bytes(_jpeg(_mini_colour(k, j)))
    (root / "train.csv").write_text("filename,label\n")
    return root


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    m = tmp_path / "mirror"
    m.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(m))
    return m


def _cfg(dataset, **extra):
    cfg = {"dataset": dataset, "image_size": None, "rotations": False, "classes_per_split": None,
           "images_per_class": None,
           "folder": {"root": None, "train": None, "val": None, "test": None, "fractions": [0.64, 0.16, 0.2]},
           "miniimagenet": {"source": None}, "seed": 0}
    for k, v in extra.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


# ----------------------------------------------------------------------------- CIFAR-FS


def test_cifar_fs_native_size(mirror, tmp_path):
    _build_cifar(mirror)
    ds = get_source("cifar-fs").load(_cfg("cifar-fs"), 32, tmp_path / "dl")
    _check_common(ds, 100, {"train": 64, "val": 16, "test": 20}, size=32)
    assert len(ds.images) == 400
    assert np.all(np.bincount(ds.labels) == 4)  # 3 train + 1 test image per class
    for s in SPLITS:
        assert [ds.class_names[i] for i in ds.splits[s]] == split_list("cifar-fs", s)
    # the known-colour image survives exactly at native size, in channel order
    k = ds.class_names.index("train")
    first = ds.images[ds.labels == k][0]
    assert first.shape == (3, 32, 32)
    for c in range(3):
        assert np.all(first[c] == KNOWN_RGB[c])
    # other images carry their class's fill value (train images then test images)
    names = _cifar_names()
    k2 = ds.class_names.index("otter")
    vals = [int(im[0, 5, 5]) for im in ds.images[ds.labels == k2]]
    orig = names.index("otter")
    assert vals == [(orig + 2 * j) % 256 for j in range(4)]


def test_cifar_fs_resized(mirror, tmp_path):
    _build_cifar(mirror, per_class_train=1, per_class_test=1)
    ds = get_source("cifar-fs").load(_cfg("cifar-fs"), 8, tmp_path / "dl")
    _check_common(ds, 100, {"train": 64, "val": 16, "test": 20}, size=8)
    first = ds.images[ds.labels == ds.class_names.index("train")][0]
    assert np.all(first == np.asarray(KNOWN_RGB, dtype=np.uint8)[:, None, None])


def test_cifar_fs_corrupt_archive_checksum(mirror, tmp_path):
    path = _build_cifar(mirror, per_class_train=1, per_class_test=1)
    path.write_bytes(b"these are the wrong bytes")  # SHA256SUMS still names the good archive
    with pytest.raises(DataError) as err:
        get_source("cifar-fs").load(_cfg("cifar-fs"), 32, tmp_path / "dl")
    assert "cifar-100-python.tar.gz" in str(err.value) and "checksum" in str(err.value)


def test_cifar_fs_unreadable_archive(mirror, tmp_path):
    path = _build_cifar(mirror, per_class_train=1, per_class_test=1)
    path.write_bytes(path.read_bytes()[:300])  # truncated, with a matching SHA256SUMS
    _write_sums(path.parent)
    with pytest.raises(DataError) as err:
        get_source("cifar-fs").load(_cfg("cifar-fs"), 32, tmp_path / "dl")
    assert str(path) in str(err.value) and "replace" in str(err.value)


# ----------------------------------------------------------------------------- CUB


def test_cub(mirror, tmp_path):
    _build_cub(mirror)
    ds = get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    _check_common(ds, 200, {"train": 100, "val": 50, "test": 50})
    assert [ds.class_names[i] for i in ds.splits["train"]] == [_cub_folder(i) for i in range(0, 200, 2)]
    assert [ds.class_names[i] for i in ds.splits["val"]] == [_cub_folder(i) for i in range(1, 200, 4)]
    assert [ds.class_names[i] for i in ds.splits["test"]] == [_cub_folder(i) for i in range(3, 200, 4)]
    assert len(ds.images) == 300
    for c, name in enumerate(ds.class_names):
        i = int(name[:3]) - 1
        imgs = ds.images[ds.labels == c]
        assert len(imgs) == 1 + i % 2
        assert np.all(np.abs(imgs.astype(int) - i) <= 2)  # grey level i survives JPEG round trip
    # deterministic despite shuffled archive order
    again = get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    assert np.array_equal(again.images, ds.images) and np.array_equal(again.labels, ds.labels)


def test_cub_bad_image(mirror, tmp_path):
    bad = f"CUB_200_2011/images/{_cub_folder(4)}/Bird_005_0000.jpg"
    path = _build_cub(mirror, bad_member=bad)
    with pytest.raises(DataError) as err:
        get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    assert bad in str(err.value) and str(path) in str(err.value)


def test_cub_corrupt_archive_checksum(mirror, tmp_path):
    path = _build_cub(mirror)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    assert "CUB_200_2011.tgz" in str(err.value) and "checksum" in str(err.value)


# ----------------------------------------------------------------------------- MiniImageNet


def _check_mini(ds):
    _check_common(ds, 100, {"train": 64, "val": 16, "test": 20})
    for s in SPLITS:
        assert [ds.class_names[i] for i in ds.splits[s]] == split_list("miniimagenet", s)
    assert np.all(np.bincount(ds.labels) == 2)
    order = _wnids()
    for c in (0, 70, 99):
        k = order.index(ds.class_names[c])
        imgs = ds.images[ds.labels == c].astype(int)
        for j in range(2):
            want = np.asarray(_mini_colour(k, j))[:, None, None]
            assert np.all(np.abs(imgs[j] - want) <= 3)


def test_miniimagenet_ravi_folder(tmp_path):
    root = _build_mini_ravi(tmp_path / "mini")
    ds = get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(root)}), 8, tmp_path / "dl")
    _check_mini(ds)


def test_miniimagenet_tar_gz(tmp_path):
    root = _build_mini_ravi(tmp_path / "mini")
    arch = tmp_path / "mini.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(root, arcname="mini")
    ds = get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(arch)}), 8, tmp_path / "dl")
    _check_mini(ds)


def test_miniimagenet_zip_wnid_folders(tmp_path):
    """Folder-per-class layout (train/<wnid>/<any name>.JPEG) inside a zip."""
    arch = tmp_path / "mini.zip"
    split_of = {w: s for s in SPLITS for w in split_list("miniimagenet", s)}
    with zipfile.ZipFile(arch, "w") as zf:
        for k, w in enumerate(_wnids()):
            for j in range(2):
                zf.writestr(f"mini/{split_of[w]}/{w}/img_{j}.JPEG", _jpeg(_mini_colour(k, j)))
    ds = get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(arch)}), 8, tmp_path / "dl")
    _check_mini(ds)


def test_miniimagenet_missing_source(tmp_path):
    missing = tmp_path / "nowhere" / "mini.tar"
    with pytest.raises(DataError) as err:
        get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(missing)}), 8, tmp_path)
    assert "data.miniimagenet.source" in str(err.value) and str(missing) in str(err.value)
    assert get_source("miniimagenet").archives({}) == []


def test_miniimagenet_bad_image(tmp_path):
    root = _build_mini_ravi(tmp_path / "mini")
    bad = root / "images" / f"{_wnids()[3]}00000001.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(root)}), 8, tmp_path / "dl")
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------- folder


def _build_tree(root: Path, n_classes=10) -> Path:
    for k in range(n_classes):
        d = root / f"class_{k:02d}"
        d.mkdir(parents=True)
        (d / "a.png").write_bytes(_png((k * 20, 5, 250)))
        (d / "b.png").write_bytes(_png(k * 20, mode="L"))  # greyscale -> RGB
        (d / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("a file, not a class")
    return root


def _folder_cfg(root, seed=0, **folder):
    return _cfg("folder", folder={"root": str(root), "fractions": [0.6, 0.2, 0.2], **folder}, seed=seed)


def test_folder_fractions_seeded(tmp_path):
    root = _build_tree(tmp_path / "tree")
    src = get_source("folder")
    ds = src.load(_folder_cfg(root, seed=0), 8, tmp_path / "dl")
    _check_common(ds, 10, {"train": 6, "val": 2, "test": 2})
    assert np.all(np.bincount(ds.labels) == 2)
    c = ds.class_names.index("class_03")
    a, b = ds.images[ds.labels == c]
    assert np.array_equal(a[:, 0, 0], [60, 5, 250])  # PNG is lossless
    assert np.array_equal(b[:, 0, 0], [60, 60, 60])  # grey became RGB

    def named(d):
        return {s: [d.class_names[i] for i in d.splits[s]] for s in SPLITS}

    same = src.load(_folder_cfg(root, seed=0), 8, tmp_path / "dl")
    assert named(same) == named(ds) and np.array_equal(same.images, ds.images)
    other = src.load(_folder_cfg(root, seed=1), 8, tmp_path / "dl")
    assert named(other) != named(ds)


def test_folder_explicit_lists(tmp_path):
    root = _build_tree(tmp_path / "tree")
    cfg = _folder_cfg(root, train=["class_05", "class_01", "class_02"], val=["class_00"], test=["class_09"])
    ds = get_source("folder").load(cfg, 8, tmp_path / "dl")
    assert {s: [ds.class_names[i] for i in ds.splits[s]] for s in SPLITS} == {
        "train": ["class_05", "class_01", "class_02"], "val": ["class_00"], "test": ["class_09"]}
    assert ds.images.shape == (10, 3, 8, 8)


def test_folder_errors(tmp_path):
    root = _build_tree(tmp_path / "tree", n_classes=2)
    src = get_source("folder")
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(root, train=["class_00"], val=["class_01"], test=["class_07"]), 8, tmp_path)
    assert "class_07" in str(err.value) and "data.folder.test" in str(err.value)
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(root), 8, tmp_path)  # 2 classes cannot fill three splits
    assert "data.folder.fractions" in str(err.value)
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(tmp_path / "absent"), 8, tmp_path)
    assert "data.folder.root" in str(err.value)
    bad = root / "class_00" / "c.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(root, train=["class_00"], val=["class_01"], test=["class_01x"]), 8, tmp_path)
    assert "class_01x" in str(err.value)
    (root / "class_02").mkdir()
    (root / "class_02" / "a.png").write_bytes(_png(1))
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(root, train=["class_00"], val=["class_01"], test=["class_02"]), 8, tmp_path)
    assert str(bad) in str(err.value)
