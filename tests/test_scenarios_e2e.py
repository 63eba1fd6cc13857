"""End to end: the whole `dvc repro` of the sh and mh scenarios on the tiny config of test_pipeline_e2e.py.

sh runs on the Omniglot archives of the data mirror; mh on tiny CIFAR-100 (python pickles), CUB-200-2011 (tgz)
and Omniglot (zips) archives built here in the official formats, in a temporary mirror with SHA256SUMS files.
"""

import json

import pandas as pd
import pytest
import torch

from archive_builders import build_cifar, build_cub, build_omniglot
from dfml.owner.pool import draw_architectures
from test_pipeline_e2e import DVC, _changed_by, _run, make_tiny_repo, tiny_params

ARCHS = ["conv4", "resnet10", "resnet18"]
MODELS = ["random", "maml_real", "bidf_mkd"]
SHOTS = ("1shot", "2shot")


def _json(repo, path):
    return json.loads((repo / path).read_text())


@pytest.mark.slow
def test_sh_scenario_dvc_repro(tmp_path):
    params = tiny_params({"apis": {"scenario": "sh", "architectures": ARCHS}})
    repo, env = make_tiny_repo(tmp_path, params, OMP_NUM_THREADS="1")
    _run(DVC + ["repro"], repo, env)

    pool = _json(repo, "models/apis/pool.json")
    drawn = draw_architectures(ARCHS, 3, params["seed"])
    assert pool["scenario"] == "sh" and pool["architectures"] == ARCHS
    assert [a["arch"] for a in pool["apis"]] == drawn and set(drawn) <= set(ARCHS) and len(set(drawn)) > 1
    for rec in pool["apis"]:
        assert torch.load(repo / "models/apis" / f"{rec['name']}.pt", weights_only=False)["arch"] == rec["arch"]
    assert _json(repo, "metrics/apis.json")["architectures"] == {a: drawn.count(a) for a in ARCHS}
    ev = _json(repo, "metrics/eval.json")
    assert list(ev) == MODELS
    for model in ev.values():
        assert "datasets" not in model
        for shot in SHOTS:
            assert 0.0 <= model[shot]["acc"] <= 100.0
    inv = _json(repo, "metrics/invert.json")
    assert inv["api_images"] == 3 * ((2 + 1) * 5 * 4 * 3 + 5 * 4)  # as in ss: the API's architecture is hidden
    # the architectures are pretrain's: changing them reruns pretrain (and what follows), never prepare; report
    # lists the whole apis section (the protocol rows beside the paper's figures)
    assert _changed_by(repo, env, {"apis": {"architectures": ["conv4", "resnet10"]}}) == {"pretrain", "report"}


@pytest.mark.slow
def test_mh_scenario_dvc_repro(tmp_path):
    mirror = tmp_path / "mirror"
    build_omniglot(mirror, per_class=6, size=16)
    build_cifar(mirror, per_class_train=5, per_class_test=1)
    build_cub(mirror, per_class=6)
    datasets = ["omniglot", "cifar-fs", "cub"]
    # 32 px instead of CUB's 84 (the largest default, tests/test_scenarios.py) keeps the ResNets fast on CPU
    params = tiny_params({"data": {"image_size": 32, "datasets": datasets, "subset": {"images_per_class": 6}},
                          "apis": {"scenario": "mh", "architectures": ARCHS}})
    repo, env = make_tiny_repo(tmp_path, params, OMP_NUM_THREADS="1")
    env["DFML_DATA_MIRROR"] = str(mirror)
    _run(DVC + ["repro"], repo, env)

    data = _json(repo, "metrics/data.json")
    assert (data["image_size"], data["channels"]) == (32, 3) and list(data["datasets"]) == datasets
    assert data["test"] == {"classes": 36, "images": 216}
    index = _json(repo, "data/prepared/index.json")
    assert index["datasets"] == datasets and len(index["class_datasets"]) == 3 * 36
    pool = _json(repo, "models/apis/pool.json")
    assert pool["scenario"] == "mh" and pool["datasets"] == datasets and pool["architectures"] == ARCHS
    assert [a["dataset"] for a in pool["apis"]] == datasets  # API i: data.datasets[i % 3]
    assert [a["arch"] for a in pool["apis"]] == draw_architectures(ARCHS, 3, params["seed"])
    for rec in pool["apis"]:
        names = torch.load(repo / "models/apis" / f"{rec['name']}.pt", weights_only=False)["class_names"]
        assert all(n.startswith(rec["dataset"] + "/") for n in names)

    ev = _json(repo, "metrics/eval.json")
    assert list(ev) == MODELS
    for model in ev.values():
        assert list(model["datasets"]) == datasets
        for shot in SHOTS:
            per = [model["datasets"][d][shot]["acc"] for d in datasets]
            assert all(0.0 <= a <= 100.0 for a in per)
            assert model[shot]["acc"] == pytest.approx(sum(per) / len(per), abs=1e-3)
    episodes = pd.read_csv(repo / "plots/episodes.csv")
    assert len(episodes) == len(MODELS) * len(datasets) * 2 * 10
    for (model, d, k), part in episodes.groupby(["model", "dataset", "shot"]):
        assert part["acc"].mean() == pytest.approx(ev[model]["datasets"][d][f"{k}shot"]["acc"], abs=1e-3)
    summary = (repo / "plots/summary.md").read_text()
    for d in datasets:
        assert f"| `bidf_mkd` | {d} |" in summary and f"| `random` | {d} | 1-shot | 10 |" in summary
    assert "| `bidf_mkd` | **mean** |" in summary and "| `random` | **mean** | 2-shot | 30 |" in summary
    shown = json.loads(_run(DVC + ["metrics", "show", "--json"], repo, env))
    assert next(iter(shown.values()))["data"]["metrics/eval.json"]["data"] == ev
    # the datasets are prepare's alone (pretrain takes them from data/prepared), and report lists the whole data
    # section (the protocol rows beside the paper's figures)
    assert _changed_by(repo, env, {"data": {"datasets": datasets[:2]}}) == {"prepare", "report"}
