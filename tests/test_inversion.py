import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from dfml.api.base import BlackBoxAPI, QueryLedger
from dfml.inversion.gradients import ExactGradient, ZeroOrderGradient
from dfml.inversion.invert import ImagePrior, ce_group_loss, invert_api, more_steps
from dfml.inversion.params import InvertParams

RAW = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def invert_params(**update) -> InvertParams:
    """The `invert` section of params.yaml with `update` merged in, sub-section by sub-section (validated)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in RAW["invert"].items()}
    for key, value in update.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return InvertParams.model_validate(raw)


INV = invert_params(generator={"latent_dim": 8, "width": 8, "lr": 1e-3, "lr_latent": 1e-2},
                    prior={"tv": 0.0, "l2": 0.0, "l1": 0.0}, bidf={"steps": 3, "extra_steps": 0})
CFG, GEN, NO_PRIOR = INV.bidf, INV.generator, ImagePrior()


def invert(api, per_class, channels, size, cfg, est, seed=0, generator=GEN):
    """:func:`invert_api` with the tiny generator and no prior."""
    return invert_api(api, per_class, channels, size, cfg, generator, NO_PRIOR, est, seed, torch.device("cpu"))


class SealedAPI(BlackBoxAPI):
    """Answers through a closure; any attempt to reach its weights raises (the black-box rule)."""

    ALLOWED = {"name", "num_classes", "input_shape", "ledger", "chunk", "query", "_answer", "_check",
               "_SealedAPI__answer"}

    def __init__(self, ledger, classes=3, shape=(1, 8, 8), chunk=64, seed=0, gain=1.0):
        super().__init__("sealed", classes, shape, ledger, chunk)
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.Tanh(), nn.Linear(16, classes))
        # gain > 1: answers that change with small image differences
        self.__answer = lambda x: F.softmax(net((x - 0.5) * gain), dim=1).detach()

    def __getattribute__(self, item):
        if item.startswith("__") or item in SealedAPI.ALLOWED:
            return object.__getattribute__(self, item)
        raise AssertionError(f"black-box rule broken: API attribute {item!r} was accessed")

    def _answer(self, images):
        with torch.no_grad():
            return self.__answer(images)


class WhiteBoxLinear(BlackBoxAPI):
    def __init__(self, ledger, d=16, classes=4, seed=0):
        super().__init__("wb", classes, (1, 4, 4), ledger, 4096)
        self.w = torch.randn(d, classes, generator=torch.Generator().manual_seed(seed))

    def differentiable_probs(self, x):
        self.ledger.count(self.name, x.shape[0])
        return F.softmax(x.flatten(1) @ self.w, dim=1)

    def _answer(self, images):
        return self.differentiable_probs(images).detach()


def _true_grad(api, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(x.flatten(1) @ api.w, y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def _cosines(q, batch=256, seed=0):
    api = WhiteBoxLinear(QueryLedger())
    x = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(batch) % 4
    est = ZeroOrderGradient(q, 1e-4, torch.Generator().manual_seed(seed))
    g, _, _ = est.estimate(api, x, lambda pts, p: ce_group_loss(pts, p, y))
    return F.cosine_similarity(g.flatten(1).double(), _true_grad(api, x, y).flatten(1).double(), dim=1)


def test_zero_order_cosine_rises_with_q_at_the_expected_order():
    d = 16
    means = {q: _cosines(q).mean().item() for q in (1, 4, 16, 64, 256)}
    qs = sorted(means)
    assert all(means[a] < means[b] for a, b in zip(qs, qs[1:]))
    for q in (1, 4):  # q << d: E[cos] is of order sqrt(q / d)
        assert 0.6 * math.sqrt(q / d) < means[q] < 1.4 * math.sqrt(q / d)
    assert means[256] > 0.9
    # golden values under fixed seeds (torch 2.14.1, CPU)
    assert means[1] == pytest.approx(GOLDEN[1], abs=1e-4)
    assert means[16] == pytest.approx(GOLDEN[16], abs=1e-4)


GOLDEN = {1: 0.201492, 16: 0.725160}


def test_exact_gradient_matches_autograd():
    api = WhiteBoxLinear(QueryLedger())
    x = torch.rand(8, 1, 4, 4)
    y = torch.arange(8) % 4
    g, loss, probs = ExactGradient().estimate(api, x, lambda pts, p: ce_group_loss(pts, p, y))
    assert torch.allclose(g, _true_grad(api, x, y), atol=1e-6)
    assert api.ledger.total == 8


class PlainAPI(BlackBoxAPI):
    def __init__(self):
        super().__init__("plain", 3, (1, 8, 8), QueryLedger())

    def _answer(self, images):
        return torch.full((images.shape[0], 3), 1 / 3)


def test_exact_gradient_refuses_a_black_box_api():
    api = PlainAPI()
    with pytest.raises(TypeError, match="needs a white-box API"):
        ExactGradient().estimate(api, torch.rand(2, 1, 8, 8), lambda pts, p: p[..., 0])


@pytest.mark.parametrize("q,chunk", [(3, 64), (5, 7), (4, 1000)])
def test_inversion_counts_every_image_whatever_the_chunking(q, chunk):
    ledger = QueryLedger()
    api = SealedAPI(ledger, chunk=chunk)
    per_class, steps = 4, CFG.steps
    est = ZeroOrderGradient(q, 0.005, torch.Generator().manual_seed(0))
    images, probs, state = invert(api, per_class, 1, 8, CFG, est)
    batch = api.num_classes * per_class
    # (q+1) images per image per step, plus one final query of the recovered images
    assert ledger.total == (q + 1) * batch * steps + batch
    assert images.shape == (3, per_class, 1, 8, 8) and probs.shape == (3, per_class, 3)
    assert len(state.history) == steps


def test_more_steps_extends_only_apis_below_the_target_agreement():
    cfg = invert_params(bidf={"steps": 2, "extra_steps": 2, "target_agreement": 0.7}).bidf
    low, high = {"acc": 0.2}, {"acc": 0.7}
    assert more_steps([], cfg) and more_steps([high], cfg)  # below `steps`: always
    assert not more_steps([low, high], cfg)  # reached the target at `steps`
    assert more_steps([high, low], cfg) and more_steps([low, low, low], cfg)  # below it: on, up to max_steps
    assert not more_steps([low, low, high], cfg)
    assert not more_steps([low] * 4, cfg)  # the cap: steps + extra_steps
    assert not more_steps([low, low], cfg.model_copy(update={"extra_steps": 0}))  # none


@pytest.mark.parametrize("target,steps_taken", [(0.0, 3), (1.0, 5)])
def test_extra_inversion_steps_are_counted_like_the_others(target, steps_taken):
    ledger = QueryLedger()
    api = SealedAPI(ledger)
    # target 1.0: never reached by a random generator here
    cfg = CFG.model_copy(update={"extra_steps": 2, "target_agreement": target})
    est = ZeroOrderGradient(2, 0.005, torch.Generator().manual_seed(0))
    _, _, state = invert(api, 4, 1, 8, cfg, est)
    assert len(state.history) == steps_taken
    assert ledger.total == 3 * 12 * steps_taken + 12


def test_inversion_raises_api_agreement_through_queries_only():
    ledger = QueryLedger()
    api = SealedAPI(ledger)
    cfg = CFG.model_copy(update={"steps": 60})
    gen = GEN.model_copy(update={"lr": 1e-2, "lr_latent": 5e-2})
    est = ZeroOrderGradient(8, 0.005, torch.Generator().manual_seed(0))
    _, _, state = invert(api, 8, 1, 8, cfg, est, generator=gen)
    first = sum(h["loss"] for h in state.history[:5]) / 5
    last = sum(h["loss"] for h in state.history[-5:]) / 5
    assert last < 0.7 * first
