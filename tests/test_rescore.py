"""`dfml score-val` (was scripts/score_val.py): paired scores of meta-learned checkpoints on fresh meta-val
episodes."""

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from dfml.__main__ import main
from dfml.data.prepared import load_prepared, save_prepared
from dfml.data.raw import RawDataset
from dfml.evaluation.rescore import format_scores, score_on_val
from dfml.models import build_meta_model
from dfml.params import validate
from dfml.pipeline import paths

SIZE = 16
WAYS = 5


def _data(folder):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(15), 6).astype(np.int64)
    images = rng.integers(0, 255, size=(len(labels), 1, SIZE, SIZE), dtype=np.uint8)
    save_prepared(RawDataset(images, labels, [f"c{i}" for i in range(15)],
                             {"train": list(range(5)), "val": list(range(5, 10)), "test": list(range(10, 15))}),
                  folder, "toy")
    return load_prepared(folder)


def _checkpoint(path, seed, inner_lr=0.1):
    m = build_meta_model("conv4", 1, WAYS, SIZE, seed)
    # inner_steps 1: a meta-learned checkpoint adapts with its own inner steps (before: evaluate.adapt_steps 1)
    torch.save({"arch": "conv4", "state_dict": m.state_dict(), "inner_lr": inner_lr, "inner_steps": 1,
                "best_iteration": 1, "best_val_acc": 50.0, "cost": {"api_images": 0, "seconds": 1.0}}, path)
    return path


@pytest.fixture
def raw():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["evaluate"].update(query=2, adapt_steps=1, episode_batch=4)
    p["device"] = "cpu"
    return p


@pytest.fixture
def params(raw):
    p = validate(raw)
    assert p.ways == WAYS
    return p


def _score(paths_, params, data, episodes, shots, lrs=None):
    return score_on_val(paths_, params.evaluate, params.seed, params.ways, data, episodes, shots, torch.device("cpu"),
                        lrs)


def test_paired_scores_on_val(tmp_path, params):
    data = _data(tmp_path / "prep")
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    same = _checkpoint(tmp_path / "same.pt", 0)
    scores = _score([a, b, same], params, data, 8, [1, 2])
    assert list(scores) == ["1shot", "2shot"]
    one = scores["1shot"]
    assert one[str(a)]["minus_first"] == 0 and one[str(same)] == one[str(a)]  # same weights: same episodes, same score
    assert one[str(b)]["minus_first"] == pytest.approx(one[str(b)]["acc"] - one[str(a)]["acc"], abs=1e-2)
    assert one[str(b)]["acc"] != one[str(a)]["acc"]
    # the same seed gives the same episodes: a second call scores the same
    assert _score([a, b], params, data, 8, [1])["1shot"][str(b)] == one[str(b)]
    text = format_scores(scores, 8)
    assert "8 episodes" in text and f"| `{b}` | 1shot |" in text


def test_other_adaptation_lrs_score_as_a_checkpoint_meta_trained_at_that_lr(tmp_path, params):
    data = _data(tmp_path / "prep")
    a = _checkpoint(tmp_path / "a.pt", 0)  # own inner lr 0.1
    at_half = _checkpoint(tmp_path / "half.pt", 0, inner_lr=0.5)  # the same weights, own inner lr 0.5
    scores = _score([a, at_half], params, data, 8, [1], lrs=[0.1, 0.5])["1shot"]
    # the own lr is not scored twice; the other lr is a row of its own, paired with the first
    assert list(scores) == [str(a), f"{a} @ lr 0.5", str(at_half), f"{at_half} @ lr 0.1"]
    assert scores[str(a)] == _score([a], params, data, 8, [1])["1shot"][str(a)]
    assert scores[f"{a} @ lr 0.5"]["acc"] == scores[str(at_half)]["acc"]
    assert scores[f"{at_half} @ lr 0.1"]["acc"] == scores[str(a)]["acc"]
    assert scores[f"{a} @ lr 0.5"]["acc"] != scores[str(a)]["acc"]


def test_missing_checkpoint_names_the_file(tmp_path, params):
    data = _data(tmp_path / "prep")
    with pytest.raises(FileNotFoundError, match="nope.pt not found"):
        _score([tmp_path / "nope.pt"], params, data, 4, [1])


def test_cli_prints_and_writes_the_paired_scores(tmp_path, raw, params, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    data = _data(paths.PREPARED)
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    main(["score-val", str(a), str(b), "--episodes", "8", "--shots", "1", "2", "--out", "scores.json"])
    want = _score([a, b], params, data, 8, [1, 2])
    assert capsys.readouterr().out == format_scores(want, 8) + "\n"
    assert json.loads((tmp_path / "scores.json").read_text()) == {"episodes": 8, "split": "val", "lrs": None,
                                                                 "scores": want}
    assert want["1shot"][str(b)]["acc"] != want["1shot"][str(a)]["acc"]


def test_cli_missing_checkpoint_exits_2_naming_it(tmp_path, raw, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    _data(paths.PREPARED)
    a = _checkpoint(tmp_path / "a.pt", 0)
    with pytest.raises(SystemExit) as exc:
        main(["score-val", str(a), "nope.pt", "--episodes", "4"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "dfml score-val: error: nope.pt: no such checkpoint" in err and str(a) not in err
    with pytest.raises(SystemExit) as exc:
        main(["score-val", str(a), "--lrs", "0.1", "0"])
    assert exc.value.code == 2 and "--lrs 0.1 0.0: every lr must be above 0" in capsys.readouterr().err
