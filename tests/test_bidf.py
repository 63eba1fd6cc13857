import torch

from dfml.api.base import QueryLedger
from dfml.inversion.gradients import ZeroOrderGradient
from dfml.meta.bidf import BiDfTaskSampler, TaskMemory
from dfml.meta.params import DistillParams
from dfml.meta.trainer import MetaTrainer
from dfml.models import build_meta_model
from test_inversion import CFG, RAW, SealedAPI, invert

DCFG = DistillParams.model_validate({
    **RAW["distill"], "tasks_per_batch": 2, "memory_tasks": 1, "support_shots": 2, "query_shots": 2,
    "boundary_lambda": 1.0, "boundary_after": 1, "boundary_steps": 2, "memory_size": 6, "temperature": 2.0,
    "augment": True, "permute_classes": True})


def _setup(q=3):
    ledger = QueryLedger()
    apis = [SealedAPI(ledger, shape=(1, 16, 16), seed=s, gain=30.0) for s in range(2)]
    est = ZeroOrderGradient(q, 0.005, torch.Generator().manual_seed(0))
    bank, states = [], []
    for i, api in enumerate(apis):
        x, p, st = invert(api, 4, 1, 16, CFG, est, seed=i)
        bank.append({"images": x, "probs": p})
        states.append(st)
    model = build_meta_model("conv4", 1, 3, 16, seed=0)
    sampler = BiDfTaskSampler(model, apis, bank, states, est, DCFG, torch.Generator().manual_seed(0),
                              torch.device("cpu"))
    return ledger, model, sampler


def test_distillation_uses_queries_only_and_counts_boundary_images():
    ledger, model, sampler = _setup(q=3)
    trainer = MetaTrainer(model, 2, 0.1, 1e-3, True, 2.0, validate=lambda p: 0.0)
    before = ledger.total
    loss = trainer.step(sampler(1))  # warm-up: queries come from the bank, no API call
    assert torch.isfinite(torch.tensor(loss)) and ledger.total == before
    trainer.step(sampler(2))  # boundary queries: SealedAPI raises if anything reaches for weights
    per_task = DCFG.boundary_steps * (3 + 1) * 6 + 6  # steps * (q+1) * (N * query_shots) + final answers
    assert ledger.total - before == DCFG.tasks_per_batch * per_task


def test_second_order_step_changes_parameters():
    ledger, model, sampler = _setup()
    trainer = MetaTrainer(model, 2, 0.1, 1e-2, False, 1.0, validate=lambda p: 0.0)
    w0 = model.head.weight.detach().clone()
    trainer.step(sampler(1))
    assert not torch.equal(w0, model.head.weight)


def test_task_memory_ring_keeps_latest():
    mem = TaskMemory(3, torch.Generator().manual_seed(0))
    mem.add(0, 1, torch.arange(5.0).view(5, 1))
    assert mem.fill[(0, 1)] == 3 and sorted(mem.slots[(0, 1)].flatten().tolist()) == [2.0, 3.0, 4.0]
    mem.add(0, 1, torch.tensor([[9.0]]))
    assert 9.0 in mem.slots[(0, 1)].flatten().tolist() and 2.0 not in mem.slots[(0, 1)].flatten().tolist()
    assert mem.sample((0, 1), 5).shape == (5, 1)


def _one_run():
    ledger, model, sampler = _setup(q=2)
    trainer = MetaTrainer(model, 1, 0.1, 1e-2, True, 1.0, validate=lambda p: 0.0)
    losses = [trainer.step(sampler(it)) for it in (1, 2, 3)]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, ledger.total


def test_same_seeds_give_identical_runs_on_cpu():
    a, b = _one_run(), _one_run()
    assert a[0] == b[0] and a[2] == b[2]
    assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_random_affine_keeps_shape_and_identity_at_zero():
    from dfml.meta.augment import random_affine

    x = torch.rand(4, 1, 16, 16)
    gen = torch.Generator().manual_seed(0)
    same = random_affine(x, gen, max_rot_deg=0.0, max_shift=0.0, scale=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    moved = random_affine(x, gen)
    assert moved.shape == x.shape and not torch.allclose(moved, x)


def test_api_tasks_put_classes_in_a_random_order_per_task():
    _, _, sampler = _setup()
    orders = set()
    for _ in range(12):
        task = sampler.api_task(0)
        probs = torch.cat([sampler.bank[a]["probs"].flatten(0, 1) for a in range(len(sampler.bank))])
        # each target row is some bank row with its columns permuted, the same permutation for the whole task
        perms = []
        for row in task.support_target:
            match = (probs.sort(1).values - row.sort().values).abs().sum(1).argmin()
            perms.append(tuple(int((probs[match] == v).nonzero()[0]) for v in row))
        assert len(set(perms)) == 1
        orders.add(perms[0])
    assert len(orders) > 1


def test_memory_files_images_under_the_class_the_api_answered():
    _, _, sampler = _setup()
    sampler.memory = TaskMemory(8, torch.Generator().manual_seed(0))
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16)
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    sampler.remember(1, images, probs)
    assert sampler.memory.keys() == [(1, 0), (1, 1), (1, 2)]
    assert sampler.memory.fill[(1, 1)] == 2 and sampler.memory.slots[(1, 1)][:2, 0, 0, 0].tolist() == [0.0, 3.0]
    assert sampler.memory.slots[(1, 0)][0, 0, 0, 0] == 1.0


def test_support_shots_list_draws_per_task():
    _, _, sampler = _setup()
    sampler.cfg = DCFG.model_copy(update={"support_shots": [1, 2], "boundary_after": 100})
    sizes = {t.support.shape[0] for _ in range(8) for t in sampler(1)}
    assert sizes == {3 * 1, 3 * 2}  # N=3 ways: both shot counts occur, nothing else
    sampler.cfg = DCFG.model_copy(update={"support_shots": 2, "boundary_after": 100})
    assert {t.support.shape[0] for t in sampler(1)} == {6}
