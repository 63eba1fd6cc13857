import pytest
import torch

from dfml.api.answers import MODES, AnswerSettings, make_answer, settings_from_description, to_json
from dfml.core.errors import APIReplyError


def _mode(mode, **opts):
    return make_answer(AnswerSettings(mode, **opts))


def _roundtrip(mode, probs, through_json=True, **opts):
    answer = _mode(mode, **opts)
    reply = answer.encode(probs)
    return answer.decode(to_json(reply) if through_json else reply, probs.shape[1], "api_000")


def test_registry_holds_the_four_modes():
    assert list(MODES) == ["probs", "topk", "label", "rounded"]
    with pytest.raises(ValueError, match="unknown answer mode 'logits'"):
        AnswerSettings("logits")
    with pytest.raises(ValueError, match="topk=0"):
        AnswerSettings("topk", topk=0)
    with pytest.raises(ValueError, match="label_smoothing=1.0"):
        AnswerSettings("label", label_smoothing=1.0)


@pytest.mark.parametrize("through_json", [True, False])
def test_probs_roundtrip_is_exact(through_json):
    probs = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), 1)
    assert torch.equal(_roundtrip("probs", probs, through_json), probs)


def test_topk_golden_keeps_k_and_spreads_the_rest():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.3, 0.2, 0.05, 0.45]])
    reply = to_json(_mode("topk", topk=2).encode(probs))
    assert reply["k"] == 2 and reply["indices"] == [[1, 2], [3, 0]]
    out = _roundtrip("topk", probs, topk=2)
    assert torch.allclose(out, torch.tensor([[0.05, 0.6, 0.3, 0.05], [0.3, 0.125, 0.125, 0.45]]))
    assert torch.allclose(_roundtrip("topk", probs, topk=9), probs)  # k >= N: the whole distribution


def test_label_golden_one_hot_and_smoothed():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0]])
    assert to_json(_mode("label").encode(probs)) == {"mode": "label", "labels": [1]}
    assert torch.equal(_roundtrip("label", probs), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    smoothed = _roundtrip("label", probs, label_smoothing=0.2)
    assert torch.allclose(smoothed, torch.tensor([[0.05, 0.85, 0.05, 0.05]]))


def test_rounded_golden_renormalised_and_zero_rows_uniform():
    probs = torch.tensor([[0.46, 0.46, 0.08], [0.5, 0.3, 0.2]])
    reply = to_json(_mode("rounded", decimals=1).encode(probs))
    assert reply["decimals"] == 1 and reply["probs"] == [[0.5, 0.5, 0.1], [0.5, 0.3, 0.2]]
    out = _roundtrip("rounded", probs, decimals=1)
    assert torch.allclose(out, torch.tensor([[5 / 11, 5 / 11, 1 / 11], [0.5, 0.3, 0.2]]))
    flat = torch.tensor([[0.3, 0.3, 0.2, 0.2]])  # every class rounds to 0 at 0 decimals
    assert torch.equal(_roundtrip("rounded", flat, decimals=0), torch.full((1, 4), 0.25))


@pytest.mark.parametrize("mode,opts,reply,msg", [
    ("probs", {}, [[0.5, 0.5, 0.0]], "expected a JSON object reply, got list"),
    ("probs", {}, {"mode": "topk", "probs": [[1, 0, 0]]}, "expected a 'probs' answer, got mode 'topk'"),
    ("probs", {}, {"mode": "probs"}, "no 'probs' field"),
    ("probs", {}, {"mode": "probs", "probs": [[0.5, 0.5]]}, r"shape \[1, 2\], expected \[B, 3\]"),
    ("probs", {}, {"mode": "probs", "probs": [[0.5, 0.5, 0.0], [1.0]]}, "not a numeric array"),
    ("probs", {}, {"mode": "probs", "probs": [["a", "b", "c"]]}, "not a numeric array"),
    ("probs", {}, {"mode": "probs", "probs": [[float("nan"), 0.5, 0.5]]}, "non-finite"),
    ("probs", {}, {"mode": "probs", "probs": [[-0.1, 0.6, 0.5]]}, r"outside \[0, 1\]"),
    ("probs", {}, {"mode": "probs", "probs": [[1.5, 0.0, 0.0]]}, r"outside \[0, 1\]"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 1, "indices": [[0]], "probs": [[0.9]]}, "k=1, agreed k=2"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 2, "indices": [[0, 1, 2]], "probs": [[0.5, 0.3]]},
     r"'indices' has shape \[1, 3\], expected \[B, 2\]"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 2, "indices": [[0, 3]], "probs": [[0.5, 0.3]]},
     "not class indices 0..2"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 2, "indices": [[0, 1.5]], "probs": [[0.5, 0.3]]},
     "not class indices"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 2, "indices": [[1, 1]], "probs": [[0.5, 0.3]]}, "repeats a class"),
    ("topk", {"topk": 2}, {"mode": "topk", "k": 2, "indices": [[0, 1]], "probs": [[0.8, 0.7]]}, "sum to 1.5000"),
    ("label", {}, {"mode": "label", "labels": [3]}, "not class indices 0..2"),
    ("label", {}, {"mode": "label", "labels": [-1]}, "not class indices"),
    ("label", {}, {"mode": "label", "labels": [[1]]}, r"shape \[1, 1\], expected \[B\]"),
    ("rounded", {"decimals": 2}, {"mode": "rounded", "decimals": 3, "probs": [[0.5, 0.5, 0.0]]},
     "decimals=3, agreed decimals=2"),
    ("rounded", {"decimals": 2}, {"mode": "rounded", "decimals": 2, "probs": [[0.505, 0.495, 0.0]]},
     "not multiples of 1e-2"),
])
def test_bad_replies_name_the_api_and_the_fault(mode, opts, reply, msg):
    with pytest.raises(APIReplyError, match=f"API api_007: .*{msg}"):
        _mode(mode, **opts).decode(reply, 3, "api_007")


def test_settings_from_a_server_description():
    for settings in (AnswerSettings("topk", topk=3), AnswerSettings("rounded", decimals=4), AnswerSettings("label")):
        assert settings_from_description(make_answer(settings).describe()) == settings
    assert settings_from_description({"mode": "label"}, 0.1).label_smoothing == 0.1
