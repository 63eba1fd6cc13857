import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfml.core.errors import DataError, ParamError
from dfml.data.archives import Archive, locate
from dfml.data.episodes import episode_labels, sample_episodes
from dfml.data.prepared import load_prepared, save_prepared, subsample
from dfml.data.raw import RawDataset
from dfml.data.sources import add_rotations, split_list


def test_vinyals_split_counts_and_disjoint():
    s = {k: split_list("omniglot-vinyals", k) for k in ("train", "val", "test")}
    assert [len(s[k]) for k in ("train", "val", "test")] == [1028, 172, 423]
    assert all(len(set(v)) == len(v) for v in s.values())
    assert not (set(s["train"]) & set(s["val"]) or set(s["train"]) & set(s["test"]) or set(s["val"]) & set(s["test"]))
    assert s["train"][0] == "Angelic/character01"


@pytest.mark.parametrize("name,counts", [("cifar-fs", [64, 16, 20]), ("miniimagenet", [64, 16, 20])])
def test_other_split_lists(name, counts):
    s = [split_list(name, k) for k in ("train", "val", "test")]
    assert [len(x) for x in s] == counts
    assert len(set().union(*s)) == sum(counts)


def _toy(classes=12, per_class=6, size=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 255, size=(len(labels), 1, size, size), dtype=np.uint8)
    return RawDataset(images, labels.astype(np.int64), [f"c{i}" for i in range(classes)],
                      {"train": list(range(0, 6)), "val": list(range(6, 9)), "test": list(range(9, 12))})


def _prepared(tmp_path, ds=None):
    save_prepared(ds or _toy(), tmp_path / "prep", "toy")
    return load_prepared(tmp_path / "prep")


def test_prepared_roundtrip_and_summary(tmp_path):
    ds = _toy()
    summary = save_prepared(ds, tmp_path / "prep", "toy")
    assert summary == {"train": {"classes": 6, "images": 36}, "val": {"classes": 3, "images": 18},
                       "test": {"classes": 3, "images": 18}}
    data = load_prepared(tmp_path / "prep")
    assert data.images.shape == (72, 1, 4, 4) and data.images.dtype == torch.uint8  # no float copy in memory
    batch = data.pixels(torch.tensor([[7, 8]]))
    assert batch.shape == (1, 2, 1, 4, 4) and batch.dtype == torch.float32
    assert torch.equal(batch[0, 0], torch.from_numpy(ds.images[7]).float() / 255)
    assert [len(data.by_class[c]) for c in range(12)] == [6] * 12


def test_subsample_keeps_first_classes_and_images():
    small = subsample(_toy(), classes_per_split=2, images_per_class=3)
    assert small.splits == {"train": [0, 1], "val": [2, 3], "test": [4, 5]}
    assert small.class_names == ["c0", "c1", "c6", "c7", "c9", "c10"]
    assert np.bincount(small.labels).tolist() == [3] * 6


def test_rotations_add_disjoint_classes():
    rot = add_rotations(_toy())
    assert len(rot.class_names) == 48 and len(rot.splits["train"]) == 24
    assert rot.class_names[12] == "c0/rot090"
    np.testing.assert_array_equal(rot.images[72], np.rot90(rot.images[0], 1, axes=(1, 2)))


def test_episode_sampler_is_seeded_and_respects_split(tmp_path):
    data = _prepared(tmp_path)
    a = sample_episodes(data, "test", 20, 3, 2, 3, seed=5)
    b = sample_episodes(data, "test", 20, 3, 2, 3, seed=5)
    c = sample_episodes(data, "test", 20, 3, 2, 3, seed=6)
    assert torch.equal(a.support, b.support) and not torch.equal(a.support, c.support)
    assert a.support.shape == (20, 6) and a.query.shape == (20, 9)
    test_classes = set(data.splits["test"])
    for e in range(20):
        sup_cls = data.labels[a.support[e]].view(3, 2)
        qry_cls = data.labels[a.query[e]].view(3, 3)
        assert set(sup_cls.flatten().tolist()) <= test_classes
        assert (sup_cls == sup_cls[:, :1]).all() and torch.equal(sup_cls[:, 0], qry_cls[:, 0])
        assert len(set(sup_cls[:, 0].tolist())) == 3
        assert not set(a.support[e].tolist()) & set(a.query[e].tolist())
    assert episode_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


def test_episode_sampler_rejects_impossible_requests(tmp_path):
    data = _prepared(tmp_path)
    with pytest.raises(ParamError, match=r"fewer than 5 ways; .*\(data\.subset\.classes_per_split\)"):
        sample_episodes(data, "val", 1, 5, 1, 1, 0)
    with pytest.raises(ParamError, match="lower the shots or queries in params section `evaluate`"):
        sample_episodes(data, "val", 1, 2, 3, 4, 0)


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        img = io.BytesIO()
        Image.new("L", (5, 5), 255).save(img, "PNG")
        zf.writestr("images_background/A/character01/0001_01.png", img.getvalue())
    return buf.getvalue()


def test_mirror_checksum_mismatch_names_file_and_fix(tmp_path, monkeypatch):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    data = _zip_bytes()
    (folder / "images_background.zip").write_bytes(data)
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  images_background.zip\n")
    monkeypatch.setenv("DFML_DATA_MIRROR", str(tmp_path))
    arch = Archive("images_background.zip", "https://example.invalid/x.zip", "md5:" + "1" * 32)
    with pytest.raises(DataError) as err:
        locate("omniglot", arch, tmp_path / "dl")
    msg = str(err.value)
    assert "images_background.zip" in msg and "checksum mismatch" in msg and "0" * 64 in msg
    assert hashlib.sha256(data).hexdigest() in msg and "Fix:" in msg
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  images_background.zip\n")
    assert locate("omniglot", arch, tmp_path / "dl") == folder / "images_background.zip"


def test_missing_archive_in_mirror_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("DFML_DATA_MIRROR", str(tmp_path))
    arch = Archive("images_evaluation.zip", "https://example.invalid/e.zip", "md5:" + "1" * 32)
    with pytest.raises(DataError, match=r"(?s)images_evaluation.zip: not found in the data mirror.*looked for"):
        locate("omniglot", arch, tmp_path / "dl")


def test_truncated_official_archive_is_rejected_without_sums(tmp_path, monkeypatch):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    data = _zip_bytes()
    (folder / "images_background.zip").write_bytes(data[: len(data) // 2])
    monkeypatch.setenv("DFML_DATA_MIRROR", str(tmp_path))
    arch = Archive("images_background.zip", "u", "md5:" + hashlib.md5(data).hexdigest())
    with pytest.raises(DataError, match="md5 checksum mismatch"):
        locate("omniglot", arch, tmp_path / "dl")


def test_download_goes_through_torchvision_and_our_checksum(tmp_path, monkeypatch):
    """Without a mirror the official URL is fetched (torchvision's downloader) into a temp file, checked against
    the official checksum, then renamed: a bad download leaves nothing behind."""
    import torchvision.datasets.utils as tv

    data = _zip_bytes()
    monkeypatch.delenv("DFML_DATA_MIRROR", raising=False)
    calls = []

    def fake_download(url, root, filename):
        calls.append(url)
        (Path(root) / filename).write_bytes(payload)

    monkeypatch.setattr(tv, "download_url", fake_download)
    arch = Archive("images_background.zip", "https://example.invalid/b.zip", "md5:" + hashlib.md5(data).hexdigest())
    payload = data[:10]
    with pytest.raises(DataError, match=r"md5 checksum mismatch \(downloaded from https://example.invalid/b.zip\)"):
        locate("omniglot", arch, tmp_path / "dl")
    assert not list((tmp_path / "dl" / "omniglot").iterdir())
    payload = data
    assert locate("omniglot", arch, tmp_path / "dl").read_bytes() == data and calls == [arch.url] * 2
    assert locate("omniglot", arch, tmp_path / "dl").is_file() and len(calls) == 2  # cached and checked

    def offline(url, root, filename):
        raise OSError("no network")

    monkeypatch.setattr(tv, "download_url", offline)
    with pytest.raises(DataError, match="download failed .* no network"):
        locate("omniglot", Archive("x.zip", "https://example.invalid/x.zip", "md5:" + "0" * 32), tmp_path / "dl")
