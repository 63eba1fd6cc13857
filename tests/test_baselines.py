"""Data-free baselines on a tiny fake bank and pool; per-model evaluation and its merge; dvc.yaml in step."""

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from dfml.baselines import methods
from dfml.baselines.bank import load_bank
from dfml.baselines.methods import BASELINES, HEADS, Setting
from dfml.baselines.params import BASELINE_NAMES, SingleDFKDParams, StudentParams
from dfml.baselines.students import distill_student, minibatches, restricted_logits
from dfml.core.errors import ParamError
from dfml.core.io import write_json
from dfml.core.losses import kd_loss
from dfml.core.seeding import derive_seed
from dfml.data.prepared import load_prepared, save_prepared
from dfml.data.raw import RawDataset
from dfml.evaluation.candidates import KINDS
from dfml.evaluation.params import EVAL_MODELS
from dfml.models import build_meta_model
from dfml.params import validate
from dfml.pipeline import paths
from dfml.pipeline.baseline import baseline
from dfml.pipeline.evaluate import evaluate
from dfml.pipeline.evaluate_model import evaluate_model
from dfml.pipeline.random_init import random_init
from dfml.reporting.plots import eval_bars_png

APIS, WAYS, PER_CLASS, SIZE = 3, 5, 4, 16
ACCURACY = {"api_000": 0.9, "api_001": 0.95, "api_002": 0.95}  # a tie: the first of the best wins
TINY = StudentParams.model_validate({"steps": 3, "lr": 0.01, "batch_size": 8, "temperature": 1.0})
pytestmark = pytest.mark.usefixtures("one_thread")


def _params():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["device"] = "cpu"
    raw["baselines"] = {"best_api": TINY.model_dump(), "single_dfkd": {**TINY.model_dump(), "head": "zero"},
                        "distill_avg": TINY.model_dump()}
    raw["run"].update({"baselines": ["best_api", "single_dfkd", "distill_avg"],
                       "evaluate": ["random", "best_api", "single_dfkd", "distill_avg"]})
    raw["evaluate"].update({"shots": [1, 2], "query": 2, "episodes": 4, "val_episodes": 2, "adapt_steps": 1,
                            "lr_grid": [0.1, 0.3], "episode_batch": 4})
    params = validate(raw)
    assert params.ways == WAYS
    return params


def _bank(root):
    """`invert`'s outputs for APIS fake APIs: data/bank/<api>.pt, index.json, metrics/invert.json; and the pool index."""
    gen = torch.Generator().manual_seed(0)
    names = sorted(ACCURACY)
    (root / "data/bank").mkdir(parents=True)
    for name in names:
        images = torch.rand(WAYS, PER_CLASS, 1, SIZE, SIZE, generator=gen)
        probs = torch.softmax(3 * torch.randn(WAYS, PER_CLASS, WAYS, generator=gen), -1)
        torch.save({"api": name, "images": images, "probs": probs}, root / "data/bank" / f"{name}.pt")
    (root / "data/bank/index.json").write_text(json.dumps({"apis": names, "gradient": "zo"}))
    (root / "models/apis").mkdir(parents=True)
    (root / "models/apis/pool.json").write_text(json.dumps(
        {"scenario": "ss", "apis": [{"name": n, "arch": "conv4", "classes": [0] * WAYS, "heldout_acc": a}
                                    for n, a in ACCURACY.items()]}))
    write_json(root / "metrics/invert.json", {"api_images": 3000, "seconds": 10.0,
                                              "api_images_per_api": {"api_000": 1000, "api_001": 1000,
                                                                     "api_002": 1000}})
    return root


def _prepared(root, classes=15, per_class=5):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    images = rng.integers(0, 255, size=(len(labels), 1, SIZE, SIZE), dtype=np.uint8)
    third = classes // 3
    save_prepared(RawDataset(images, labels, [f"c{i}" for i in range(classes)],
                             {"train": list(range(third)), "val": list(range(third, 2 * third)),
                              "test": list(range(2 * third, classes))}), root / "data/prepared", "toy")


def _setting(root, seed=0):
    return Setting(load_bank(root / "data/bank"), ACCURACY, seed, torch.device("cpu"))


# ---------------------------------------------------------------- pieces

def test_restricted_logits_pick_each_samples_api_columns():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 12)  # A = 3 APIs x N = 4 columns
    out = restricted_logits(logits, torch.tensor([2, 0]), 4)
    assert out.tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_restricted_kl_is_zero_when_the_student_matches_its_api(temperature):
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(6, WAYS, generator=gen), -1)
    owner = torch.tensor([0, 1, 2, 2, 1, 0])
    logits = 5 * torch.randn(6, APIS * WAYS, generator=gen)  # other APIs' columns: anything
    view = logits.view(6, APIS, WAYS)
    view[torch.arange(6), owner] = probs.log() + 7.0  # the owner's block matches the API up to a constant
    assert kd_loss(restricted_logits(logits, owner, WAYS), probs, temperature).item() == pytest.approx(0, abs=1e-5)
    view[0, 1] += 1.0  # another API's block: still zero
    assert kd_loss(restricted_logits(logits, owner, WAYS), probs, temperature).item() == pytest.approx(0, abs=1e-5)
    view[0, 0, 0] += 1.0  # the owner's block: positive
    assert kd_loss(restricted_logits(logits, owner, WAYS), probs, temperature).item() > 1e-4


def test_minibatches_cover_every_index_once_per_pass():
    batches = list(minibatches(10, 4, 5, torch.Generator().manual_seed(0)))
    assert len(batches) == 5 and all(b.shape == (4,) for b in batches)
    flat = torch.cat(batches)
    assert sorted(flat[:10].tolist()) == list(range(10))  # first pass
    assert list(minibatches(3, 8, 2, torch.Generator().manual_seed(0)))[0].shape == (3,)  # batch capped at n


def test_kd_training_fits_one_api(tmp_path):
    task = load_bank(_bank(tmp_path) / "data/bank")[0]
    student = build_meta_model("conv4", 1, WAYS, SIZE, 0)
    owner = torch.zeros(len(task.images), dtype=torch.long)
    cfg = TINY.model_copy(update={"steps": 60, "batch_size": 20})
    out = distill_student(student, task.images, task.probs, owner, cfg, torch.Generator().manual_seed(0),
                          torch.device("cpu"))
    assert out["steps"] == 60 and out["final_loss"] < 0.5 * out["initial_loss"]
    assert out["agreement_pct"] >= 80


# ---------------------------------------------------------------- the three baselines

def test_best_api_distils_the_highest_reported_accuracy_first_on_ties(tmp_path):
    res = BASELINES["best_api"](_setting(_bank(tmp_path)), TINY)
    assert res.apis == ["api_001"] and res.info == {"api": "api_001", "reported_accuracy": 0.95}
    assert res.state_dict["head.weight"].shape == (WAYS, 32)


def test_best_api_needs_every_reported_accuracy(tmp_path):
    s = Setting(load_bank(_bank(tmp_path) / "data/bank"), {"api_000": 1.0}, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"no reported accuracy for \['api_001', 'api_002'\]"):
        BASELINES["best_api"](s, TINY)


def test_distill_avg_is_the_mean_of_the_students(tmp_path, monkeypatch):
    students = []

    def recording(student, *args, **kwargs):
        out = distill_student(student, *args, **kwargs)
        students.append({k: v.detach().clone() for k, v in student.state_dict().items()})
        return out

    monkeypatch.setattr(methods, "distill_student", recording)
    res = BASELINES["distill_avg"](_setting(_bank(tmp_path)), TINY)
    assert len(students) == APIS and res.apis == sorted(ACCURACY) and res.info == {"students": APIS}
    for k, v in res.state_dict.items():
        torch.testing.assert_close(v, (students[0][k] + students[1][k] + students[2][k]) / 3)
    assert not torch.equal(students[0]["head.weight"], students[1]["head.weight"])  # each learnt its own API
    init = build_meta_model("conv4", 1, WAYS, SIZE, derive_seed(0, "meta-init")).state_dict()
    torch.testing.assert_close(init["head.weight"], students[0]["head.weight"], atol=0.2, rtol=0)  # shared start


@pytest.mark.parametrize("head", sorted(HEADS))
def test_single_dfkd_keeps_the_distilled_body_under_a_new_head(tmp_path, head, monkeypatch):
    wide = []

    def recording(student, *args, **kwargs):
        out = distill_student(student, *args, **kwargs)
        wide.append({k: v.detach().clone() for k, v in student.state_dict().items()})
        assert args[2].tolist() == [a for a in range(APIS) for _ in range(WAYS * PER_CLASS)]  # owners
        return out

    monkeypatch.setattr(methods, "distill_student", recording)
    res = BASELINES["single_dfkd"](_setting(_bank(tmp_path)),
                                   SingleDFKDParams.model_validate({**TINY.model_dump(), "head": head}))
    assert wide[0]["head.weight"].shape == (APIS * WAYS, 32) and res.apis == sorted(ACCURACY)
    random_init = build_meta_model("conv4", 1, WAYS, SIZE, derive_seed(0, "meta-init")).state_dict()
    for k, v in res.state_dict.items():
        want = wide[0][k] if not k.startswith("head.") else (
            torch.zeros_like(v) if head == "zero" else random_init[k])
        torch.testing.assert_close(v, want)
    assert not torch.equal(res.state_dict["features.0.weight"], random_init["features.0.weight"])


def test_baseline_stage_writes_a_checkpoint_that_evaluate_loads(tmp_path, monkeypatch):
    root = _bank(tmp_path)
    _prepared(root)
    params = _params()
    monkeypatch.chdir(root)  # the stages read and write their files from the working directory
    for name in BASELINES:
        m = baseline(name, params)
        assert m["steps"] == TINY.steps and m["seconds"] >= 0 and np.isfinite(m["final_loss"])
        assert m["api_images"] == (1000 if name == "best_api" else 3000)
        assert json.loads((root / f"metrics/{name}.json").read_text()) == m
    data = load_prepared(root / "data/prepared")
    for name in BASELINES:
        cand = KINDS[name](paths.model(name), data.channels, params.ways, data.image_size, torch.device("cpu"))
        assert cand.own_lr is None and cand.info["checkpoint"] == f"models/{name}.pt"
        own = json.loads((root / f"metrics/{name}.json").read_text())
        assert cand.cost["api_images"] == own["api_images"]
        cost = json.loads((root / f"metrics/cost/{name}.json").read_text())  # the seconds: not in the checkpoint
        assert cand.cost == {"api_images": cost["api_images"]}
        assert cost["seconds"] == pytest.approx(10 + own["seconds"], abs=0.011)  # invert's 10 s included
        assert cand.model(torch.rand(4, 1, SIZE, SIZE)).shape == (4, WAYS)


def test_baseline_stage_is_reproducible(tmp_path, monkeypatch):
    root = _bank(tmp_path)
    params = _params()
    monkeypatch.chdir(root)
    baseline("best_api", params)
    first = torch.load(root / "models/best_api.pt", weights_only=False)
    first_bytes = (root / "models/best_api.pt").read_bytes()
    baseline("best_api", params)
    again = torch.load(root / "models/best_api.pt", weights_only=False)
    # the wall-clock seconds, the one thing a rerun changes, are kept out of the checkpoint: the same bytes twice
    assert (root / "models/best_api.pt").read_bytes() == first_bytes
    assert json.loads((root / "metrics/cost/best_api.json").read_text())["seconds"] >= 10  # invert's 10 s included
    assert first.keys() == again.keys() and first["cost"] == again["cost"] and first["info"] == again["info"]
    assert all(torch.equal(v, again["state_dict"][k]) for k, v in first["state_dict"].items())


# ---------------------------------------------------------------- per-model evaluation and the merge

def test_per_model_evaluation_and_merge(tmp_path, monkeypatch):
    root = _bank(tmp_path)
    _prepared(root)
    params = _params()
    monkeypatch.chdir(root)
    for name in BASELINES:
        baseline(name, params)
    write_json(root / "metrics/data.json", {"channels": 1, "image_size": SIZE})
    random_init(params)
    init = torch.load(root / "models/random.pt", weights_only=False)
    seeded = build_meta_model("conv4", 1, WAYS, SIZE, derive_seed(params.seed, "meta-init"))
    assert init["state_dict"].keys() == seeded.state_dict().keys()
    assert all(torch.equal(init["state_dict"][k], v) for k, v in seeded.state_dict().items())
    for name in params.run.evaluate:
        evaluate_model(name, params)
    one = json.loads((root / "metrics/eval/best_api.json").read_text())
    assert set(one["results"]) == {"1shot", "2shot"}
    assert one["settings"]["1shot"]["chosen_by"].startswith("best of evaluate.lr_grid")
    results = evaluate(params)
    assert list(results) == params.run.evaluate
    assert json.loads((root / "metrics/eval.json").read_text()) == results
    assert results["random"]["api_images"] == 0 and results["random"]["seconds"] == 0
    own = json.loads((root / "metrics/best_api.json").read_text())
    assert results["best_api"]["api_images"] == 1000 and results["best_api"]["seconds"] == round(10 + own["seconds"], 2)
    assert results["distill_avg"]["api_images"] == 3000
    assert results["best_api"]["1shot"] == one["results"]["1shot"]
    settings = json.loads((root / "metrics/eval_settings.json").read_text())
    assert settings["episodes"] == 4 and list(settings["models"]) == params.run.evaluate
    episodes = (root / "plots/episodes.csv").read_text().splitlines()
    assert episodes[0] == "model,shot,episode,acc" and len(episodes) == 1 + 4 * 2 * 4
    assert (root / "plots/eval.png").stat().st_size > 0
    # every model saw the same episodes: a model evaluated twice gives the same file
    before = (root / "plots/episodes/random.csv").read_text()
    evaluate_model("random", params)
    assert (root / "plots/episodes/random.csv").read_text() == before
    (root / "metrics/cost/random.json").unlink()  # a model whose training cost is missing is named
    with pytest.raises(FileNotFoundError, match=r"metrics/cost/random\.json not found.*run dvc repro"):
        evaluate(params)


def test_merge_names_a_model_without_evaluation(tmp_path, monkeypatch):
    params = _params()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="metrics/eval/random.json not found"):
        evaluate(params)


def test_eval_bars_plot_only_shot_entries(tmp_path):
    results = {"random": {"1shot": {"acc": 60.0, "ci95": 1.0}, "5shot": {"acc": 80.0, "ci95": 1.0},
                          "api_images": 0, "seconds": 0.0},
               "bidf_mkd": {"1shot": {"acc": 70.0, "ci95": 1.0}, "5shot": {"acc": 90.0, "ci95": 1.0},
                            "api_images": 552000, "seconds": 357.1}}
    eval_bars_png(results, tmp_path / "eval.png")
    assert (tmp_path / "eval.png").stat().st_size > 0


# ---------------------------------------------------------------- params and dvc.yaml in step with the code

def test_registries_params_and_dvc_yaml_agree():
    assert set(EVAL_MODELS) == set(KINDS) and set(BASELINES) <= set(KINDS)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    validate(raw)
    assert set(raw["baselines"]) == set(BASELINES) == set(BASELINE_NAMES)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["baseline"]["foreach"] == "${run.baselines}"
    assert stages["evaluate_model"]["foreach"] == "${run.evaluate}"
    assert "models/${item}.pt" in stages["evaluate_model"]["do"]["deps"]


def test_evaluate_models_must_be_known_and_unique():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["run"]["evaluate"] = ["random", "best_apii"]
    with pytest.raises(ParamError, match="run.evaluate: must be a non-empty list"):
        validate(params)
    params["run"]["evaluate"] = ["random", "random"]
    with pytest.raises(ParamError, match=r"run.evaluate: lists \['random', 'random'\] with a repeat"):
        validate(params)
    params["run"]["evaluate"] = ["random", "bidf_mkd_whitebox"]
    with pytest.raises(ParamError, match=r"lists bidf_mkd_whitebox, which run.whitebox does not train"):
        validate(params)
    params["run"]["whitebox"] = ["bidf_mkd_whitebox"]
    validate(params)
    params["runtime"]["backend"] = "http"
    with pytest.raises(ParamError, match=r"runtime.backend: the white-box reference reads input gradients"):
        validate(params)
    params["runtime"]["backend"], params["run"]["whitebox"] = "inprocess", []
    params["run"]["evaluate"] = ["random", "distill_avg"]
    with pytest.raises(ParamError, match="run.evaluate lists distill_avg, which run.baselines does not train"):
        validate(params)
    params["run"]["baselines"] = ["distill_avg", "distill_avg"]
    with pytest.raises(ParamError, match=r"run.baselines: lists \['distill_avg', 'distill_avg'\] with a repeat"):
        validate(params)
    params["run"]["baselines"] = ["distill_avg"]
    validate(params)
    params["run"]["evaluate"] = ["random"]
    params["baselines"]["single_dfkd"]["head"] = "mean"
    with pytest.raises(ParamError, match=r"baselines.single_dfkd.head: must be one of 'random', 'zero'"):
        validate(params)
