"""scripts/score_val.py: paired scores of meta-learned checkpoints on fresh meta-val episodes."""

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from dfml.data.prepared import load_prepared, save_prepared
from dfml.data.sources import RawDataset
from dfml.evaluation.rescore import format_scores, score_on_val
from dfml.meta.runs import build_meta_model

SIZE = 16


def _data(root):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(15), 6).astype(np.int64)
    images = rng.integers(0, 255, size=(len(labels), 1, SIZE, SIZE), dtype=np.uint8)
    save_prepared(RawDataset(images, labels, [f"c{i}" for i in range(15)],
                             {"train": list(range(5)), "val": list(range(5, 10)), "test": list(range(10, 15))}),
                  root / "prep", "toy")
    return load_prepared(root / "prep")


def _checkpoint(path, seed):
    m = build_meta_model("conv4", 1, 5, SIZE, seed)
    torch.save({"arch": "conv4", "state_dict": m.state_dict(), "inner_lr": 0.1, "best_iteration": 1,
                "best_val_acc": 50.0, "cost": {"api_images": 0, "seconds": 1.0}}, path)
    return path


@pytest.fixture
def params():
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["evaluate"].update(query=2, adapt_steps=1, episode_batch=4)
    return p


def test_paired_scores_on_val(tmp_path, params):
    data = _data(tmp_path)
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    same = _checkpoint(tmp_path / "same.pt", 0)
    scores = score_on_val([a, b, same], params, data, 8, [1, 2], torch.device("cpu"))
    assert list(scores) == ["1shot", "2shot"]
    one = scores["1shot"]
    assert one[str(a)]["minus_first"] == 0 and one[str(same)] == one[str(a)]  # same weights: same episodes, same score
    assert one[str(b)]["minus_first"] == pytest.approx(one[str(b)]["acc"] - one[str(a)]["acc"], abs=1e-2)
    assert one[str(b)]["acc"] != one[str(a)]["acc"]
    # the same seed gives the same episodes: a second call scores the same
    assert score_on_val([a, b], params, data, 8, [1], torch.device("cpu"))["1shot"][str(b)] == one[str(b)]
    text = format_scores(scores, 8)
    assert "8 episodes" in text and f"| `{b}` | 1shot |" in text


def test_missing_checkpoint_names_the_file(tmp_path, params):
    data = _data(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.pt not found"):
        score_on_val([tmp_path / "nope.pt"], params, data, 4, [1], torch.device("cpu"))
