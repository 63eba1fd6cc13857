import math

import pytest
import torch
from torch.nn import functional as F

from dfml.api.base import BlackBoxAPI, QueryLedger
from dfml.core.errors import APIReplyError
from dfml.core.losses import boundary_loss, ce_on_probs, kd_loss, kd_per_sample
from dfml.core.stats import ci95


class LinearAPI(BlackBoxAPI):
    """A black-box API over a fixed linear map; `reply` can be swapped to fake broken services."""

    def __init__(self, ledger, chunk=7, classes=3, shape=(1, 4, 4), seed=0):
        super().__init__("lin", classes, shape, ledger, chunk)
        g = torch.Generator().manual_seed(seed)
        self._w = torch.randn(math.prod(shape), classes, generator=g)
        self.reply = None

    def _answer(self, images):
        if self.reply is not None:
            return self.reply(images)
        return F.softmax(images.flatten(1) @ self._w, dim=1)


def test_query_counts_every_image_across_chunks():
    ledger = QueryLedger()
    api = LinearAPI(ledger, chunk=7)
    ledger.phase = "invert"
    out = api.query(torch.rand(23, 1, 4, 4))
    assert out.shape == (23, 3)
    assert ledger.total == 23 and ledger.calls == 4  # 7 + 7 + 7 + 2
    ledger.phase = "distill"
    api.query(torch.rand(5, 1, 4, 4))
    assert ledger.summary() == {"total": 28, "calls": 5, "per_phase": {"invert": 23, "distill": 5},
                                "per_api": {"lin": 28}}


def test_query_rejects_wrong_input_shape():
    api = LinearAPI(QueryLedger())
    with pytest.raises(ValueError, match=r"takes \[B, 1, 4, 4\]"):
        api.query(torch.rand(2, 3, 4, 4))


@pytest.mark.parametrize("reply,msg", [
    (lambda x: torch.full((x.shape[0], 2), 0.5), r"shape \[4, 3\], got \[4, 2\]"),
    (lambda x: torch.full((x.shape[0], 3), float("nan")), "non-finite"),
    (lambda x: torch.full((x.shape[0], 3), 0.5), "sum to 1.5000"),
])
def test_bad_replies_raise_clear_errors(reply, msg):
    api = LinearAPI(QueryLedger())
    api.reply = reply
    with pytest.raises(APIReplyError, match=msg):
        api.query(torch.rand(4, 1, 4, 4))


def test_ci95_formula_golden():
    acc = [50.0, 60.0, 70.0, 80.0]
    assert ci95(acc) == pytest.approx(1.96 * math.sqrt(125.0) / 2.0)  # population std sqrt(125), n = 4
    assert ci95([70.0] * 10) == 0.0


def test_kl_zero_for_identical_positive_otherwise_and_hand_value():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    probs = F.softmax(logits, 1)
    assert kd_loss(logits, probs, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, probs, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([[0.7, 0.2, 0.1]])
    s_logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    hand = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.25) + 0.1 * math.log(0.1 / 0.25)
    assert kd_loss(s_logits, p, 1.0).item() == pytest.approx(hand, rel=1e-5)
    # temperature 2: both sides softened (p^(1/2) renormalised), then scaled by T^2
    pt = torch.sqrt(p) / torch.sqrt(p).sum()
    st = torch.sqrt(torch.tensor([[0.5, 0.25, 0.25]]))
    st = st / st.sum()
    hand_t = 4.0 * float((pt * (pt / st).log()).sum())
    assert kd_loss(s_logits, p, 2.0).item() == pytest.approx(hand_t, rel=1e-5)
    assert kd_per_sample(s_logits, p).item() > 0


def test_ce_on_probs_matches_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(ce_on_probs(F.softmax(logits, 1), y), F.cross_entropy(logits, y, reduction="none"), atol=1e-6)


def test_boundary_term_sign_and_mask():
    api_probs = torch.tensor([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1]])
    agree = torch.log(torch.tensor([0.4, 0.3, 0.3]))  # same top class as the API, different distribution
    disagree = torch.log(torch.tensor([0.2, 0.6, 0.2]))
    student = torch.stack([agree, disagree])
    y = torch.tensor([0, 0])
    ce = ce_on_probs(api_probs, y)
    kd = kd_per_sample(student, api_probs)
    out = boundary_loss(api_probs, student, y, lam=2.0)
    assert out[0].item() == pytest.approx((ce[0] - 2.0 * kd[0]).item())  # agree: KD subtracted
    assert out[0] < ce[0]
    assert out[1].item() == pytest.approx(ce[1].item())  # disagree: eta = 0, no KD term
    assert torch.equal(boundary_loss(api_probs, student, y, lam=0.0), ce)


def test_episode_adaptation_same_for_any_worker_count_and_matches_vmap():
    """The CPU thread pool gives bit-identical logits for 1 and 3 workers, and the functorch (vmap) path's
    logits up to float error: the episodes are independent, whatever runs them."""
    from torch.func import functional_call, grad, vmap

    from dfml.meta.functional import _single_threaded_episodes, get_params
    from dfml.models.conv4 import Conv4

    torch.manual_seed(0)
    model = Conv4(1, 3, 16, hidden=8, track_bn_stats=False)
    params = {k: v.detach() for k, v in get_params(model).items()}
    xs, xq = torch.rand(5, 6, 1, 16, 16), torch.rand(5, 9, 1, 16, 16)
    ys = torch.tensor([0, 0, 1, 1, 2, 2]).expand(5, -1)
    one = _single_threaded_episodes(model, params, xs, ys, xq, 3, 0.2, workers=1)
    three = _single_threaded_episodes(model, params, xs, ys, xq, 3, 0.2, workers=3)
    assert one.shape == (5, 9, 3) and torch.equal(one, three)

    def run(x, y, q):
        p = params
        for _ in range(3):
            g = grad(lambda pp: F.cross_entropy(functional_call(model, pp, (x,)), y))(p)
            p = {k: p[k] - 0.2 * g[k] for k in p}
        return functional_call(model, p, (q,))

    torch.testing.assert_close(vmap(run)(xs, ys, xq), one, atol=1e-4, rtol=1e-4)
