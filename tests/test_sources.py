"""Dataset sources read tiny archives built here in the official formats.

Each test builds its archive in tmp_path, writes a SHA256SUMS beside it and points
DFML_DATA_MIRROR there, so nothing is downloaded.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from archive_builders import (KNOWN_RGB, build_cifar, build_cub, cifar_names, cub_folder, jpeg, png,
                              write_sums)
from dfml.core.errors import DataError
from dfml.data.archives import MIRROR_ENV
from dfml.data.params import DataParams
from dfml.data.raw import SPLITS
from dfml.data.sources import get_source, split_list

# ----------------------------------------------------------------------------- helpers


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


def _wnids() -> list[str]:
    return [c for s in SPLITS for c in split_list("miniimagenet", s)]


def _mini_colour(k: int, j: int) -> tuple[int, int, int]:
    return (k * 2, 100 + j * 50, 255 - k * 2)


def _build_mini_ravi(root: Path, per_class=2) -> Path:
    """Ravi format: images/<wnid><8 digits>.jpg, flat, plus the csv files it ships with."""
    (root / "images").mkdir(parents=True)
    for k, w in enumerate(_wnids()):
        for j in range(per_class):
            (root / "images" / f"{w}{j + 1:08d}.jpg").write_bytes(jpeg(_mini_colour(k, j)))
    (root / "train.csv").write_text("filename,label\n")
    return root


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    m = tmp_path / "mirror"
    m.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(m))
    return m


def _cfg(dataset, **extra) -> DataParams:
    """The ``data`` section of params.yaml for `dataset` (defaults of params.yaml), with `extra` merged into it
    (a dict value updates that nested section: ``subset``, ``folder``, ``miniimagenet``)."""
    cfg = {"dataset": dataset, "datasets": None, "image_size": None, "rotations": False,
           "subset": {"classes_per_split": None, "images_per_class": None},
           "folder": {"root": None, "train": None, "val": None, "test": None, "fractions": [0.64, 0.16, 0.2]},
           "miniimagenet": {"source": None}}
    for k, v in extra.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return DataParams.model_validate(cfg)


# ----------------------------------------------------------------------------- CIFAR-FS


def test_cifar_fs_native_size(mirror, tmp_path):
    build_cifar(mirror)
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
    names = cifar_names()
    k2 = ds.class_names.index("otter")
    vals = [int(im[0, 5, 5]) for im in ds.images[ds.labels == k2]]
    orig = names.index("otter")
    assert vals == [(orig + 2 * j) % 256 for j in range(4)]


def test_cifar_fs_resized(mirror, tmp_path):
    build_cifar(mirror, per_class_train=1, per_class_test=1)
    ds = get_source("cifar-fs").load(_cfg("cifar-fs"), 8, tmp_path / "dl")
    _check_common(ds, 100, {"train": 64, "val": 16, "test": 20}, size=8)
    first = ds.images[ds.labels == ds.class_names.index("train")][0]
    assert np.all(first == np.asarray(KNOWN_RGB, dtype=np.uint8)[:, None, None])


def test_cifar_fs_corrupt_archive_checksum(mirror, tmp_path):
    path = build_cifar(mirror, per_class_train=1, per_class_test=1)
    path.write_bytes(b"these are the wrong bytes")  # SHA256SUMS still names the good archive
    with pytest.raises(DataError) as err:
        get_source("cifar-fs").load(_cfg("cifar-fs"), 32, tmp_path / "dl")
    assert "cifar-100-python.tar.gz" in str(err.value) and "checksum" in str(err.value)


def test_cifar_fs_unreadable_archive(mirror, tmp_path):
    path = build_cifar(mirror, per_class_train=1, per_class_test=1)
    path.write_bytes(path.read_bytes()[:300])  # truncated, with a matching SHA256SUMS
    write_sums(path.parent)
    with pytest.raises(DataError) as err:
        get_source("cifar-fs").load(_cfg("cifar-fs"), 32, tmp_path / "dl")
    assert str(path) in str(err.value) and "replace" in str(err.value)


# ----------------------------------------------------------------------------- CUB


def test_cub(mirror, tmp_path):
    build_cub(mirror)
    ds = get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    _check_common(ds, 200, {"train": 100, "val": 50, "test": 50})
    assert [ds.class_names[i] for i in ds.splits["train"]] == [cub_folder(i) for i in range(0, 200, 2)]
    assert [ds.class_names[i] for i in ds.splits["val"]] == [cub_folder(i) for i in range(1, 200, 4)]
    assert [ds.class_names[i] for i in ds.splits["test"]] == [cub_folder(i) for i in range(3, 200, 4)]
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
    bad = f"CUB_200_2011/images/{cub_folder(4)}/Bird_005_0000.jpg"
    path = build_cub(mirror, bad_member=bad)
    with pytest.raises(DataError) as err:
        get_source("cub").load(_cfg("cub"), 8, tmp_path / "dl")
    assert bad in str(err.value) and str(path) in str(err.value)


def test_cub_corrupt_archive_checksum(mirror, tmp_path):
    path = build_cub(mirror)
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
                zf.writestr(f"mini/{split_of[w]}/{w}/img_{j}.JPEG", jpeg(_mini_colour(k, j)))
    ds = get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(arch)}), 8, tmp_path / "dl")
    _check_mini(ds)


def test_miniimagenet_missing_source(tmp_path):
    missing = tmp_path / "nowhere" / "mini.tar"
    with pytest.raises(DataError) as err:
        get_source("miniimagenet").load(_cfg("miniimagenet", miniimagenet={"source": str(missing)}), 8, tmp_path)
    assert "data.miniimagenet.source" in str(err.value) and str(missing) in str(err.value)
    assert get_source("miniimagenet").archives(_cfg("miniimagenet")) == []  # no official download


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
        (d / "a.png").write_bytes(png((k * 20, 5, 250)))
        (d / "b.png").write_bytes(png(k * 20, mode="L"))  # greyscale -> RGB
        (d / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("a file, not a class")
    return root


def _folder_cfg(root, **folder):
    return _cfg("folder", folder={"root": str(root), "fractions": [0.6, 0.2, 0.2], **folder})


def test_folder_fractions_seeded(tmp_path):
    root = _build_tree(tmp_path / "tree")
    src = get_source("folder")
    ds = src.load(_folder_cfg(root), 8, tmp_path / "dl", seed=0)
    _check_common(ds, 10, {"train": 6, "val": 2, "test": 2})
    assert np.all(np.bincount(ds.labels) == 2)
    c = ds.class_names.index("class_03")
    a, b = ds.images[ds.labels == c]
    assert np.array_equal(a[:, 0, 0], [60, 5, 250])  # PNG is lossless
    assert np.array_equal(b[:, 0, 0], [60, 60, 60])  # grey became RGB

    def named(d):
        return {s: [d.class_names[i] for i in d.splits[s]] for s in SPLITS}

    same = src.load(_folder_cfg(root), 8, tmp_path / "dl", seed=0)
    assert named(same) == named(ds) and np.array_equal(same.images, ds.images)
    other = src.load(_folder_cfg(root), 8, tmp_path / "dl", seed=1)
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
    (root / "class_02" / "a.png").write_bytes(png(1))
    with pytest.raises(DataError) as err:
        src.load(_folder_cfg(root, train=["class_00"], val=["class_01"], test=["class_02"]), 8, tmp_path)
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------- MiniImageNet from the data mirror

SHARED_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "miniimagenet" / "mini-imagenet-500.zip"


def _build_mini_zip(mirror: Path, per_class=3) -> Path:
    """The mirror's layout: miniimagenet/mini-imagenet-500.zip with mini-imagenet/<wnid>/<wnid><8 digits>.jpg."""
    folder = mirror / "miniimagenet"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "mini-imagenet-500.zip", "w", zipfile.ZIP_STORED) as zf:
        for k, w in enumerate(_wnids()):
            for j in range(per_class):
                zf.writestr(f"mini-imagenet/{w}/{w}{j:08d}.jpg", jpeg(_mini_colour(k, j)))
    write_sums(folder)
    return folder / "mini-imagenet-500.zip"


def test_miniimagenet_reads_the_mirror_when_no_source_is_set(mirror, tmp_path):
    _build_mini_zip(mirror)
    src = get_source("miniimagenet")
    src.preflight(_cfg("miniimagenet"), tmp_path / "dl")
    ds = src.load(_cfg("miniimagenet"), 8, tmp_path / "dl")
    _check_common(ds, 100, {"train": 64, "val": 16, "test": 20})
    assert np.all(np.bincount(ds.labels) == 3)


def test_miniimagenet_mirror_checksum_mismatch_stops_before_decoding(mirror, tmp_path):
    arch = _build_mini_zip(mirror)
    (arch.parent / "SHA256SUMS").write_text(f"{'0' * 64}  {arch.name}\n")
    with pytest.raises(DataError, match=r"mini-imagenet-500\.zip: sha256 checksum mismatch") as err:
        get_source("miniimagenet").preflight(_cfg("miniimagenet"), tmp_path / "dl")
    assert "0" * 64 in str(err.value) and "Fix:" in str(err.value)


def test_miniimagenet_without_mirror_or_source_names_both_fixes(monkeypatch, tmp_path):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(DataError) as err:
        get_source("miniimagenet").preflight(_cfg("miniimagenet"), tmp_path / "dl")
    assert MIRROR_ENV in str(err.value) and "data.miniimagenet.source" in str(err.value)
    assert "no official download" in str(err.value)


def test_miniimagenet_incomplete_mirror_archive_is_named_before_decoding(mirror, tmp_path):
    arch = _build_mini_zip(mirror, per_class=1)
    with zipfile.ZipFile(arch) as zf:
        keep = [(n, zf.read(n)) for n in zf.namelist() if _wnids()[70] not in n]
    with zipfile.ZipFile(arch, "w") as zf:
        for n, data in keep:
            zf.writestr(n, data)
    write_sums(arch.parent)
    with pytest.raises(DataError, match=rf"no images of 1 MiniImageNet classes \(e\.g\. {_wnids()[70]}\)"):
        get_source("miniimagenet").preflight(_cfg("miniimagenet"), tmp_path / "dl")


def test_miniimagenet_subset_decodes_only_what_it_keeps(mirror, tmp_path, monkeypatch):
    """classes_per_split / images_per_class cut the members before decoding, to the same data as cutting after."""
    from dfml.data import sources
    from dfml.data.prepared import subsample

    _build_mini_zip(mirror, per_class=4)
    full = get_source("miniimagenet").load(_cfg("miniimagenet"), 8, tmp_path)
    calls = []
    real = sources._decode_rgb
    monkeypatch.setattr(sources, "_decode_rgb", lambda *a: calls.append(a[2]) or real(*a))
    small = get_source("miniimagenet").load(_cfg("miniimagenet", subset={"classes_per_split": 2, "images_per_class": 3}), 8, tmp_path)
    assert len(calls) == 3 * 2 * 3 + 1  # the first image is decoded once more to size the array
    want = subsample(full, 2, 3)
    assert small.class_names == want.class_names and small.splits == want.splits
    assert np.array_equal(small.images, want.images) and np.array_equal(small.labels, want.labels)


@pytest.mark.skipif(not SHARED_MINI.is_file(), reason="the shared MiniImageNet copy is not beside the repository")
def test_shared_miniimagenet_archive_counts_from_its_directory():
    """The shared copy: 100 classes of the Ravi split x 500 images, counted without decoding any image."""
    from dfml.data.sources import MiniImageNet

    counts = MiniImageNet.inventory(SHARED_MINI)
    assert sorted(counts) == sorted(_wnids()) and set(counts.values()) == {500}


# ----------------------------------------------------------------------------- damaged archives and own folders

def test_corrupt_deflate_member_names_the_member(tmp_path):
    """A zip whose checksum matches but whose deflate stream is damaged: DataError naming the member."""
    from dfml.data.sources import _zip_members

    arch = tmp_path / "a.zip"
    with zipfile.ZipFile(arch, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x/ok.png", png(3, size=32))
        zf.writestr("x/bad.png", png(4, size=32) * 20)
    raw = bytearray(arch.read_bytes())
    with zipfile.ZipFile(arch) as zf:
        info = zf.getinfo("x/bad.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 10:start + 30] = b"\xff" * 20  # inside the compressed data
    arch.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"member x/bad\.png cannot be read"):
        list(_zip_members(arch, lambda n: True))


def test_omniglot_undecodable_member_is_named(mirror, tmp_path):
    from archive_builders import build_omniglot

    background, _ = build_omniglot(mirror)
    with zipfile.ZipFile(background) as zf:
        items = [(n, zf.read(n)) for n in zf.namelist()]
    victim = next(n for n, _ in items if n.endswith(".png"))
    with zipfile.ZipFile(background, "w") as zf:
        for n, data in items:
            zf.writestr(n, b"not a png" if n == victim else data)
    write_sums(background.parent)
    with pytest.raises(DataError, match=rf"member {victim} cannot be decoded"):
        get_source("omniglot").load(_cfg("omniglot"), 8, tmp_path)


def test_folder_images_in_subfolders_are_found_in_sorted_order(tmp_path):
    """Images anywhere below a class folder (ImageFolder-style nesting), non-images and hidden folders skipped."""
    root = tmp_path / "own"
    for k in range(5):
        d = root / f"class_{k}"
        (d / "images" / "b").mkdir(parents=True)
        (d / "images" / "b" / "2.png").write_bytes(png((k, 2, 0)))
        (d / "images" / "1.png").write_bytes(png((k, 1, 0)))
        (d / "0.png").write_bytes(png((k, 0, 0)))
        (d / "labels.csv").write_text("not an image")
        (d / ".cache").mkdir()
        (d / ".cache" / "9.png").write_bytes(png((k, 9, 0)))
    ds = get_source("folder").load(_folder_cfg(root, train=["class_0", "class_1", "class_2"], val=["class_3"],
                                                test=["class_4"]), 8, tmp_path)
    assert np.bincount(ds.labels).tolist() == [3] * 5
    c = ds.class_names.index("class_2")
    assert ds.images[ds.labels == c][:, 1, 0, 0].tolist() == [0, 1, 2]  # 0.png, images/1.png, images/b/2.png


def test_folder_class_without_images_is_worded_for_folders(tmp_path):
    root = _build_tree(tmp_path / "tree", n_classes=3)
    for f in (root / "class_02").iterdir():
        f.unlink()
    (root / "class_02" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        get_source("folder").load(_folder_cfg(root, train=["class_00"], val=["class_01"], test=["class_02"]), 8,
                                  tmp_path)
    text = str(err.value)
    assert "class 'class_02'" in text and "class folder" in text and "archive" not in text
