"""Batched meta-batches (``MetaTrainer(batched=True)``, ``runtime.vmap``) against the loop: the same meta-gradients
and updated weights to float rounding, first and second order, and the same API images in the same order."""

import pytest
import torch
from torch import nn

from dfml.api.base import QueryLedger
from dfml.inversion.gradients import ZeroOrderGradient
from dfml.meta.bidf import BiDfTaskSampler
from dfml.meta.functional import batch_norm_by_hand
from dfml.meta.trainer import MetaTrainer, Task
from dfml.models import build_meta_model
from dfml.runtime.params import RuntimeParams
from test_bidf import DCFG
from test_inversion import CFG, RAW, SealedAPI, invert

WAYS, SIZE = 3, 16


def _tasks(dtype: torch.dtype) -> list[Task]:
    """Five tasks of three inner shapes, interleaved: CE 2-shot (three, one of them with a query function that
    gives a smaller query set), CE 1-shot, and KD 2-shot on API-style probabilities."""
    gen = torch.Generator().manual_seed(0)

    def images(n):
        return torch.rand(n, 1, SIZE, SIZE, generator=gen, dtype=torch.float64).to(dtype)

    def labels(shots):
        return torch.arange(WAYS).repeat_interleave(shots)

    probs = torch.softmax(torch.randn(2 * WAYS, WAYS, generator=gen, dtype=torch.float64) * 2, 1).to(dtype)
    qprobs = torch.softmax(torch.randn(2 * WAYS, WAYS, generator=gen, dtype=torch.float64) * 2, 1).to(dtype)
    small_q = (images(WAYS), labels(1))

    def query_fn(fast):  # a query function of the adapted weights (as BiDf-MKD's boundary queries)
        assert fast["head.weight"].shape == (WAYS, 32)  # one task's weights, not the group's
        return small_q

    tasks = [Task(images(2 * WAYS), labels(2), (images(2 * WAYS), labels(2)), "ce"),
             Task(images(WAYS), labels(1), (images(2 * WAYS), labels(2)), "ce"),
             Task(images(2 * WAYS), probs, (images(2 * WAYS), qprobs), "kd"),
             Task(images(2 * WAYS), labels(2), query_fn, "ce"),
             Task(images(2 * WAYS), labels(2), (images(2 * WAYS), labels(2)), "ce")]
    return tasks


def _one_step(batched: bool, first_order: bool, dtype: torch.dtype):
    model = build_meta_model("conv4", 1, WAYS, SIZE, seed=0).to(dtype)
    trainer = MetaTrainer(model, 2, 0.1, 1e-3, first_order, 2.0, validate=lambda p: 0.0, batched=batched)
    loss = trainer.step(_tasks(dtype))
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return loss, grads, {k: p.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("first_order", [True, False], ids=["first_order", "second_order"])
def test_batched_meta_gradients_equal_the_loop(first_order):
    """Conv4 with BN, float64: every parameter's outer gradient and its value after the Adam step agree."""
    loop, batched = _one_step(False, first_order, torch.float64), _one_step(True, first_order, torch.float64)
    assert loop[0] == pytest.approx(batched[0], rel=1e-10)
    for k in loop[1]:
        torch.testing.assert_close(batched[1][k], loop[1][k], rtol=1e-7, atol=1e-10, msg=f"gradient of {k}")
        torch.testing.assert_close(batched[2][k], loop[2][k], rtol=1e-9, atol=1e-10, msg=f"updated {k}")


@pytest.mark.parametrize("first_order", [True, False], ids=["first_order", "second_order"])
def test_batched_meta_gradients_in_float32(first_order):
    """What the pipeline runs: float32, where the two differ by rounding only."""
    loop, batched = _one_step(False, first_order, torch.float32), _one_step(True, first_order, torch.float32)
    assert loop[0] == pytest.approx(batched[0], rel=1e-5)
    scale = max(g.abs().max().item() for g in loop[1].values())
    for k in loop[1]:  # the conv biases before BN have a true gradient of 0: rounding noise on both sides
        torch.testing.assert_close(batched[1][k], loop[1][k], rtol=1e-3, atol=1e-5 * scale, msg=f"gradient of {k}")


def test_batch_norm_by_hand_matches_the_fused_layer_and_is_undone():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, track_running_stats=False)
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    tracked = nn.BatchNorm2d(4)
    x = torch.randn(6, 4, 5, 5)
    model = nn.Sequential(bn, tracked)
    with batch_norm_by_hand(model):
        assert "forward" in bn.__dict__
        by_hand = bn(x)
        tracked(x)  # a layer with running statistics keeps its own forward: it still updates them
    assert "forward" not in bn.__dict__ and "forward" not in tracked.__dict__
    assert int(tracked.num_batches_tracked) == 1
    torch.testing.assert_close(by_hand, bn(x), rtol=1e-5, atol=1e-5)


class RecordingLedger(QueryLedger):
    """A ledger that also keeps the sequence of (API, images) it counted."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple[str, int]] = []

    def count(self, api: str, n: int) -> None:
        self.log.append((api, n))
        super().count(api, n)


def _bidf(batched: bool):
    ledger = RecordingLedger()
    apis = [SealedAPI(ledger, shape=(1, SIZE, SIZE), seed=s, gain=30.0) for s in range(2)]
    for s, api in enumerate(apis):
        api.name = f"sealed_{s}"
    est = ZeroOrderGradient(2, 0.005, torch.Generator().manual_seed(0))
    bank, states = [], []
    for i, api in enumerate(apis):
        x, p, st = invert(api, 4, 1, SIZE, CFG, est, seed=i)
        bank.append({"images": x, "probs": p})
        states.append(st)
    model = build_meta_model("conv4", 1, WAYS, SIZE, seed=0)
    cfg = DCFG.model_copy(update={"tasks_per_batch": 3, "support_shots": [1, 2]})  # two support shapes per batch
    sampler = BiDfTaskSampler(model, apis, bank, states, est, cfg, torch.Generator().manual_seed(0),
                              torch.device("cpu"))
    trainer = MetaTrainer(model, 1, 0.1, 1e-3, False, 2.0, validate=lambda p: 0.0, batched=batched)
    start = len(ledger.log)
    losses = [trainer.step(sampler(it)) for it in (1, 2, 3)]  # it 1: warm-up; 2, 3: boundary queries
    return losses, ledger, ledger.log[start:]


def test_bidf_boundary_queries_are_the_same_in_number_and_order():
    (loop_losses, loop_ledger, loop_log), (vm_losses, vm_ledger, vm_log) = _bidf(False), _bidf(True)
    assert vm_log == loop_log and len(loop_log) > 0
    assert vm_ledger.total == loop_ledger.total and dict(vm_ledger.per_api) == dict(loop_ledger.per_api)
    assert vm_losses[0] == pytest.approx(loop_losses[0], rel=1e-5)  # warm-up: the same tasks, rounding apart
    assert all(torch.isfinite(torch.tensor(vm_losses)))


def test_runtime_vmap_switch():
    raw = RAW["runtime"]
    auto = RuntimeParams.model_validate(raw)
    assert raw["vmap"] == "auto" and not auto.batched(torch.device("cpu")) and auto.batched("cuda:0")
    assert auto.batched(torch.device("cuda", 1))
    on = RuntimeParams.model_validate({**raw, "vmap": True})  # YAML's bare `on`
    assert on.vmap == "on" and on.batched("cpu")
    off = RuntimeParams.model_validate({**raw, "vmap": "off"})
    assert not off.batched("cuda")
    with pytest.raises(ValueError):
        RuntimeParams.model_validate({**raw, "vmap": "yes"})
