"""API scenarios (`apis.scenario`, DESIGN.md section 4): sh architectures by seed, mh data in one common format with
per-class dataset tags, mh evaluation per dataset, and the config errors of bad sh / mh params."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from archive_builders import build_cifar, build_cub, build_omniglot, write_sums
from conftest import ROOT
from dfml.api.base import QueryLedger
from dfml.api.inprocess import open_pool
from dfml.core.errors import DataError, ParamError
from dfml.core.io import write_json
from dfml.core.seeding import derive_seed
from dfml.data.archives import MIRROR_ENV
from dfml.data.combine import common_format
from dfml.data.episodes import sample_episodes
from dfml.data.prepared import load_prepared, save_prepared
from dfml.data.raw import SPLITS, RawDataset
from dfml.data.sources import get_source, split_list
from dfml.owner.params import PoolParams
from dfml.owner.pool import (build_pool, draw_architectures, epochs_for, plan_pool, pool_index, pool_metrics,
                             steps_per_epoch, train_api)
from dfml.params import validate
from dfml.pipeline.evaluate_model import evaluate_model
from dfml.pipeline.prepare import prepare
from dfml.pipeline.random_init import random_init
from dfml.pipeline.report import summary
from dfml.reporting.report import paired_differences

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["conv4", "resnet10", "resnet18"]


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _mh(params, datasets=("omniglot", "cifar-fs", "cub"), subset=None, **data):
    """params.yaml (raw) for the mh scenario on `datasets`, with `data` (and `subset`: data.subset) merged in."""
    params = copy.deepcopy(params)
    params["apis"]["scenario"] = "mh"
    params["data"].update(datasets=list(datasets), **data)
    params["data"]["subset"].update(subset or {})
    return params


def _few_images(params):
    """Lower every key that takes real images from one class, so that a subset of 2 images per class is valid."""
    params = copy.deepcopy(params)
    params["evaluate"].update(shots=[1], query=1)
    params["distill"].update(val_shots=1, val_query=1)
    params["maml_real"].update(support_shots=1, query_shots=1, val_shots=1, val_query=1)
    return params


# ---------------------------------------------------------------- config


def test_sh_and_mh_params_are_accepted(params):
    params["apis"]["scenario"] = "sh"
    assert validate(copy.deepcopy(params)).apis.scenario == "sh"
    mh = validate(_mh(params))
    assert mh.apis.scenario == "mh" and mh.data.used() == ["omniglot", "cifar-fs", "cub"]


@pytest.mark.parametrize("apis,data,msg", [
    ({"scenario": "mh"}, {"datasets": ["omniglot"]},
     r"data\.datasets: must be null, or a list of 2 or more, each one of 'omniglot', 'cifar-fs'.*"
     r"got \['omniglot'\]"),
    ({"scenario": "mh"}, {"datasets": None},
     r"data\.datasets: the mh scenario needs two or more datasets .*; set it, or use apis\.scenario: sh"),
    ({"scenario": "mh"}, {"datasets": ["omniglot", "omniglot"]}, r"data\.datasets: lists \[.omniglot., .omniglot.\] with a repeat"),
    ({"scenario": "mh"}, {"datasets": ["omniglot", "imagenet"]},
     r"data\.datasets: must be null, or a list of 2 or more, each one of 'omniglot', 'cifar-fs'.*"
     r"got \['omniglot', 'imagenet'\]"),
    ({"scenario": "sh", "architectures": ["conv4", "vgg16"]}, {},
     r"apis\.architectures: must be a non-empty list, each one of 'conv4', 'resnet10', 'resnet18'"),
    ({"scenario": "sh", "architectures": []}, {}, r"apis\.architectures: must be a non-empty list"),
    ({"scenario": "sh", "architectures": ["conv4", "conv4"]}, {}, r"apis\.architectures: lists \[.conv4., .conv4.\] with a repeat"),
    ({"scenario": "mh"}, {"datasets": ["omniglot", "folder"]},
     r"data\.folder\.root: must name a folder of class folders when the run reads dataset 'folder'"),
    ({"scenario": "dh"}, {}, r"apis\.scenario: must be one of 'ss', 'sh', 'mh', got 'dh'"),
])
def test_bad_scenario_params_are_named(params, apis, data, msg):
    params["apis"].update(apis)
    params["data"].update(data)
    with pytest.raises(ParamError, match=msg):
        validate(params)


def test_only_mh_reads_data_datasets(params):
    """ss and sh read data.dataset; data.datasets is the mh scenario's, null otherwise (a list there is refused,
    as nothing would read it)."""
    params["data"]["dataset"] = "cub"
    for scenario in ("ss", "sh"):
        params["apis"]["scenario"] = scenario
        assert validate(copy.deepcopy(params)).data.used() == ["cub"]
        listed = copy.deepcopy(params)
        listed["data"]["datasets"] = ["omniglot", "cifar-fs"]
        with pytest.raises(ParamError, match=rf"data\.datasets is \['omniglot', 'cifar-fs'\] but apis\.scenario "
                                             rf"is '{scenario}', which reads data\.dataset only"):
            validate(listed)


# ---------------------------------------------------------------- sh: architectures by seed


def test_sh_architectures_are_drawn_by_seed():
    first = draw_architectures(ARCHS, 30, seed=0)
    assert first == draw_architectures(ARCHS, 30, seed=0)
    assert set(first) <= set(ARCHS) and set(first) == set(ARCHS)  # 30 draws meet all three
    assert first != draw_architectures(ARCHS, 30, seed=1)
    assert set(draw_architectures(["resnet10"], 5, seed=3)) == {"resnet10"}
    assert draw_architectures(ARCHS, 5, seed=0) == first[:5]  # a larger pool extends a smaller one


def _toy_prepared(tmp_path, tags=None, classes=12, per_class=6, size=16, channels=1):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 255, size=(len(labels), channels, size, size), dtype=np.uint8)
    third = classes // 3
    if tags is None:
        splits = {"train": list(range(third)), "val": list(range(third, 2 * third)),
                  "test": list(range(2 * third, classes))}
        names = [f"c{i}" for i in range(classes)]
    else:  # the mh layout: per dataset a block of classes split train / val / test
        block, splits, names = classes // len(tags), {s: [] for s in SPLITS}, []
        for b, tag in enumerate(tags):
            cls = list(range(b * block, (b + 1) * block))
            k = block // 3
            splits["train"] += cls[:k]
            splits["val"] += cls[k:2 * k]
            splits["test"] += cls[2 * k:]
            names += [f"{tag}/c{c}" for c in cls]
    ds = RawDataset(images, labels.astype(np.int64), names, splits)
    class_tags = None if tags is None else [t for t in tags for _ in range(classes // len(tags))]
    save_prepared(ds, tmp_path / "data/prepared", "toy" if tags is None else "+".join(tags), class_tags)
    return load_prepared(tmp_path / "data/prepared")


def _apis_cfg(params, **over) -> PoolParams:
    return PoolParams.model_validate({**copy.deepcopy(params["apis"]), "count": 4, "epochs": 1, "batch_size": 8,
                                      **over})


def test_sh_pool_records_drawn_architectures_and_keeps_the_ss_classes(tmp_path, params):
    data = _toy_prepared(tmp_path, classes=12)
    ss = build_pool(data, _apis_cfg(params, scenario="ss"), 2, 0, tmp_path / "ss", torch.device("cpu"))
    sh_cfg = _apis_cfg(params, scenario="sh", architectures=["conv4", "resnet10"])
    sh = build_pool(data, sh_cfg, 2, 0, tmp_path / "sh", torch.device("cpu"))
    drawn = draw_architectures(["conv4", "resnet10"], 4, 0)
    assert [r["arch"] for r in sh] == drawn and [r["arch"] for r in ss] == ["conv4"] * 4
    assert [r["classes"] for r in sh] == [r["classes"] for r in ss]  # own stream: same tasks as ss
    assert all("dataset" not in r for r in sh)
    write_json(tmp_path / "sh" / "pool.json", pool_index(sh_cfg, None, sh))
    index = json.loads((tmp_path / "sh" / "pool.json").read_text())
    assert index["scenario"] == "sh" and index["architectures"] == ["conv4", "resnet10"]
    assert json.loads(json.dumps(pool_index(_apis_cfg(params), None, ss))).keys() == {"scenario", "apis"}  # ss as ever
    for rec in sh:
        assert torch.load(tmp_path / "sh" / f"{rec['name']}.pt", weights_only=False)["arch"] == rec["arch"]
    apis = open_pool(tmp_path / "sh", QueryLedger(), torch.device("cpu"))  # the API builds from the checkpoint
    probs = apis[drawn.index("resnet10")].query(data.pixels(torch.arange(3)))
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))
    metrics = pool_metrics(sh_cfg, 2, None, sh)
    assert metrics["architectures"] == {a: drawn.count(a) for a in ("conv4", "resnet10")}
    assert "arch" not in metrics and pool_metrics(_apis_cfg(params), 2, None, ss)["arch"] == "conv4"


def test_min_steps_gives_an_api_with_few_images_more_epochs(tmp_path, params):
    # an Omniglot API (80 training images) takes 1 step an epoch, a MiniImageNet one (2,000) 16; a last batch of
    # one image is skipped
    assert [steps_per_epoch(n, 128) for n in (80, 2000, 129, 130)] == [1, 16, 1, 2]
    assert epochs_for(80, _apis_cfg(params, epochs=12, batch_size=128, min_steps=192)) == 192
    assert epochs_for(2000, _apis_cfg(params, epochs=12, batch_size=128, min_steps=192)) == 12
    assert epochs_for(80, _apis_cfg(params, epochs=12, batch_size=128)) == 12  # 0: apis.epochs
    data = _toy_prepared(tmp_path, classes=12)  # 2 ways x 5 training images, batch 8: 2 steps an epoch
    cpu = torch.device("cpu")

    def weights(**over):
        state, _ = train_api(data, [0, 1], "conv4", _apis_cfg(params, **over), 7, cpu)
        return state

    one, two = weights(epochs=1), weights(epochs=2)
    assert all(torch.equal(one[k], weights(epochs=1, min_steps=2)[k]) for k in one)  # 1 epoch has 2 steps
    three_steps = weights(epochs=1, min_steps=3)  # needs a second epoch: the same as epochs 2
    assert all(torch.equal(two[k], three_steps[k]) for k in two)
    assert not all(torch.equal(one[k], two[k]) for k in one)


def test_mh_pool_takes_datasets_round_robin(tmp_path, params):
    tags = ["omniglot", "cifar-fs"]
    data = _toy_prepared(tmp_path, tags=tags, classes=24)
    cfg = _apis_cfg(params, scenario="mh", count=5)
    records = build_pool(data, cfg, 2, 0, tmp_path / "apis", torch.device("cpu"))
    assert [r["dataset"] for r in records] == ["omniglot", "cifar-fs", "omniglot", "cifar-fs", "omniglot"]
    assert [r["arch"] for r in records] == draw_architectures(cfg.architectures, 5, 0)
    for r in records:
        assert set(r["classes"]) <= set(data.split_classes("train", r["dataset"]))
        ck = torch.load(tmp_path / "apis" / f"{r['name']}.pt", weights_only=False)
        assert ck["dataset"] == r["dataset"] and all(n.startswith(r["dataset"] + "/") for n in ck["class_names"])
    assert pool_index(cfg, data.datasets, records)["datasets"] == tags
    assert pool_metrics(cfg, 2, data.datasets, records)["datasets"]["cifar-fs"]["count"] == 2
    # the mh datasets are the prepared data's: data prepared for another scenario is named before any training
    with pytest.raises(ParamError, match=r"apis\.scenario is 'sh' but data/prepared holds \['omniglot', 'cifar-fs'\]"):
        plan_pool(_apis_cfg(params, scenario="sh"), 2, 0, data)
    single = _toy_prepared(tmp_path / "ss", classes=12)
    with pytest.raises(ParamError, match=r"apis\.scenario is 'mh' but data/prepared holds \['toy'\]"):
        plan_pool(cfg, 2, 0, single)
    with pytest.raises(ParamError, match="ways=5 but omniglot's train split has only 4 classes"):
        plan_pool(cfg, 5, 0, data)


# ---------------------------------------------------------------- mh: prepare


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    m = tmp_path / "mirror"
    build_omniglot(m, per_class=3, size=12)
    build_cifar(m, per_class_train=2, per_class_test=1)
    build_cub(m, per_class=3)
    monkeypatch.setenv(MIRROR_ENV, str(m))
    return m


def test_mh_common_format_is_the_largest(params):
    assert common_format(["omniglot", "cifar-fs"], None) == (32, 3)
    assert common_format(["omniglot", "cifar-fs", "cub"], None) == (84, 3)
    assert common_format(["omniglot", "cub"], 20) == (20, 3)


@pytest.mark.parametrize("image_size,want", [(None, 84), (16, 16)])
def test_mh_prepare_tags_classes_and_keeps_each_datasets_splits(tmp_path, mirror, params, image_size, want,
                                                                 monkeypatch, capsys):
    p = validate(_few_images(_mh(params, image_size=image_size,
                                 subset={"classes_per_split": 3, "images_per_class": 2})))
    monkeypatch.chdir(tmp_path)
    prepare(p)
    out = tmp_path / "data/prepared"
    index = json.loads((out / "index.json").read_text())
    data = load_prepared(out)
    assert data.images.shape[1:] == (3, want, want) and (index["image_size"], index["channels"]) == (want, 3)
    assert index["datasets"] == ["omniglot", "cifar-fs", "cub"] == data.datasets and data.multi
    assert len(index["class_datasets"]) == len(index["class_names"]) == 3 * 3 * 3
    for name, tag in zip(index["class_names"], index["class_datasets"]):
        assert name.startswith(tag + "/")
    cub_names = [f"{i + 1:03d}.Bird_{i + 1:03d}" for i in range(200)]
    own = {"omniglot": {s: split_list("omniglot-vinyals", s)[:3] for s in SPLITS},
           "cifar-fs": {s: split_list("cifar-fs", s)[:3] for s in SPLITS},
           "cub": {"train": cub_names[0:6:2], "val": cub_names[1:12:4], "test": cub_names[3:12:4]}}
    for d, splits in own.items():
        for s in SPLITS:
            assert [data.class_names[c] for c in data.split_classes(s, d)] == [f"{d}/{n}" for n in splits[s]]
    for s in SPLITS:  # each split is the union of the datasets' splits
        assert data.splits[s] == [c for d in own for c in data.split_classes(s, d)]
    grey = data.images[data.by_class[data.split_classes("train", "omniglot")[0]]]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])  # grey -> 3 channels
    metrics = json.loads((tmp_path / "metrics/data.json").read_text())
    assert metrics["datasets"]["cub"]["test"] == {"classes": 3, "images": 6}
    assert metrics["train"] == {"classes": 9, "images": 18}
    assert "omniglot+cifar-fs+cub" in capsys.readouterr().out


def test_ss_prepare_index_is_unchanged(tmp_path, mirror, params, monkeypatch):
    params["data"]["image_size"] = 16
    params["data"]["subset"].update(classes_per_split=2, images_per_class=2)
    monkeypatch.chdir(tmp_path)
    prepare(validate(_few_images(params)))
    index = json.loads((tmp_path / "data/prepared" / "index.json").read_text())
    assert list(index) == ["dataset", "channels", "image_size", "class_names", "splits"]
    assert index["dataset"] == "omniglot" and index["channels"] == 1 and index["image_size"] == 16
    assert not load_prepared(tmp_path / "data/prepared").multi


def test_mh_missing_archive_is_named_before_any_decoding(tmp_path, mirror, params, monkeypatch):
    (mirror / "cub" / "CUB_200_2011.tgz").unlink()
    write_sums(mirror / "cub")
    loaded = []
    for name in ("omniglot", "cifar-fs"):
        cls = type(get_source(name))
        monkeypatch.setattr(cls, "load", lambda self, *a, **k: loaded.append(self.name))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        prepare(validate(_mh(params)))
    assert "CUB_200_2011.tgz: not found in the data mirror" in str(err.value) and "Fix:" in str(err.value)
    assert str(mirror / "cub" / "CUB_200_2011.tgz") in str(err.value)
    assert loaded == [] and not (tmp_path / "data/prepared").exists()


# ---------------------------------------------------------------- mh: evaluation


def test_mh_episodes_of_a_dataset_use_its_test_classes_only(tmp_path):
    tags = ["omniglot", "cifar-fs", "cub"]
    data = _toy_prepared(tmp_path, tags=tags, classes=36)
    for d in tags:
        eps = sample_episodes(data, "test", 20, 3, 1, 2, seed=5, dataset=d)
        used = set(data.labels[torch.cat([eps.support.flatten(), eps.query.flatten()])].tolist())
        assert used <= set(data.split_classes("test", d))
        assert {data.class_datasets[c] for c in used} == {d}
    with pytest.raises(ParamError, match="cub's test split has 4 classes, fewer than 5 ways"):
        sample_episodes(data, "test", 2, 5, 1, 1, seed=0, dataset="cub")


def test_mh_evaluation_per_dataset_and_mean(tmp_path, params, monkeypatch):
    tags = ["omniglot", "cifar-fs"]
    data = _toy_prepared(tmp_path, tags=tags, classes=24, size=16, channels=3)
    monkeypatch.chdir(tmp_path)
    params["evaluate"].update(shots=[1, 2], query=2, episodes=6, val_episodes=3, adapt_steps=1, lr_grid=[0.1, 0.3])
    params["ways"] = 2
    cfg = validate(params)
    write_json(tmp_path / "metrics/data.json", {"channels": 3, "image_size": 16})
    random_init(cfg)
    results = evaluate_model("random", cfg)
    assert list(results) == ["1shot", "2shot", "datasets"] and list(results["datasets"]) == tags
    for shot in ("1shot", "2shot"):
        per = [results["datasets"][d][shot] for d in tags]
        assert results[shot]["acc"] == pytest.approx(np.mean([p["acc"] for p in per]), abs=1e-3)
        assert results[shot]["ci95"] == pytest.approx(np.sqrt(sum(p["ci95"] ** 2 for p in per)) / 2, abs=1e-3)
    rows = pd.read_csv(tmp_path / "plots/episodes/random.csv")
    assert list(rows.columns) == ["model", "dataset", "shot", "episode", "acc"]
    assert len(rows) == 2 * 2 * 6
    for (d, k), part in rows.groupby(["dataset", "shot"]):
        assert part["acc"].mean() == pytest.approx(results["datasets"][d][f"{k}shot"]["acc"], abs=1e-3)
        eps = sample_episodes(data, "test", 6, 2, k, 2, derive_seed(cfg.seed, "test", d, k), dataset=d)
        assert set(data.labels[eps.support.flatten()].tolist()) <= set(data.split_classes("test", d))
    saved = json.loads((tmp_path / "metrics/eval/random.json").read_text())
    assert saved["protocol"]["datasets"] == "omniglot+cifar-fs"
    assert "per dataset" in saved["settings"]["1shot"]["chosen_by"]


# ---------------------------------------------------------------- mh: report


def test_report_has_a_row_per_dataset_and_the_mean(tmp_path, monkeypatch):
    results = {m: {"1shot": {"acc": a, "ci95": 1.0},
                   "datasets": {"omniglot": {"1shot": {"acc": a + 10, "ci95": 1.0}},
                                "cub": {"1shot": {"acc": a - 10, "ci95": 1.0}}},
                   "api_images": n, "seconds": 1.0} for m, a, n in (("random", 50.0, 0), ("bidf_mkd", 60.0, 9))}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "plots").mkdir()
    write_json(tmp_path / "metrics/eval.json", results)
    accs = {("bidf_mkd", "omniglot"): [80, 60], ("bidf_mkd", "cub"): [50, 50],
            ("random", "omniglot"): [60, 60], ("random", "cub"): [40, 40]}
    rows = [{"model": m, "dataset": d, "shot": 1, "episode": e, "acc": a} for (m, d), v in accs.items()
            for e, a in enumerate(v)]
    pd.DataFrame(rows).to_csv(tmp_path / "plots/episodes.csv", index=False)
    diffs = paired_differences(pd.read_csv(tmp_path / "plots/episodes.csv"))
    got = {r.dataset: (r.episodes, r.mean_diff, r.ci95) for r in diffs.itertuples()}
    assert got["omniglot"] == pytest.approx((2, 10.0, 1.96 * 10 / np.sqrt(2)))
    assert got["cub"] == pytest.approx((2, 10.0, 0.0))
    assert got["mean"] == pytest.approx((4, 10.0, np.sqrt(got["omniglot"][2] ** 2) / 2))
    monkeypatch.chdir(tmp_path)
    summary(None)
    md = (tmp_path / "plots/summary.md").read_text()
    assert "| model | dataset | 1-shot | API images | seconds |" in md
    assert "| `bidf_mkd` | omniglot | 70.00 +- 1.00 | 9 | 1.0 |" in md
    assert "| `bidf_mkd` | **mean** | 60.00 +- 1.00 | 9 | 1.0 |" in md
    assert "| `random` | **mean** | 1-shot | 4 | +10.00 |" in md
    assert (tmp_path / "plots/summary.png").stat().st_size > 1000
