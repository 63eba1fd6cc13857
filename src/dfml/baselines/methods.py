"""The data-free baselines, each a function ``(Setting, cfg) -> BaselineResult``.

All three learn only from the pseudo tasks `invert` recovered (:mod:`.bank`), with
the tempered KL of :func:`dfml.core.losses.kd_loss`, into the meta architecture
(Conv4 of :func:`dfml.models.build_meta_model`, BN on batch statistics). Every
student starts from the seeded initialisation that `random` and `bidf_mkd` start
from (``derive_seed(seed, "meta-init")``), so a baseline differs from `random` only
by what distillation taught it, and the students of `distill_avg` share the start
that makes averaging their parameters meaningful.

- ``best_api``: the API with the highest held-out accuracy reported by its owner
  (ties: the first in pool order) is distilled into a 5-way student on its own
  recovered images; the student is the initialisation.
- ``single_dfkd``: one student distilled from all A APIs at once. Its head covers
  the union of their classes with no class identities: API a owns the output
  columns ``[a*N, (a+1)*N)`` and, on API a's images, the KD loss is taken on the
  softmax restricted to those columns. Its body is the initialisation, under a new
  N-way head (`baselines.single_dfkd.head`): ``random`` (default), the seeded head
  that `random` starts from, so that the two differ only in the body; or ``zero``.
  Measured on 100 meta-val episodes of the default profile (5 adaptation steps, lr
  0.1): the seeded head 63.4% (1-shot) / 79.7% (5-shot), the zero head 58.8% /
  74.8% (with a zero head the body gets no gradient on the first step, and all
  logits start equal).
- ``distill_avg``: every API distilled into its own N-way student (same start,
  same settings, its own minibatch order); the initialisation is the element-wise
  mean of the A students' parameters (head included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..models import build_meta_model
from ..core.seeding import derive_seed
from .bank import BankTask
from .params import SingleDFKDParams, StudentParams
from .students import agreement, distill_student

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Setting:
    """What every baseline gets: the recovered tasks (all with N classes, same image shape), the owner's
    reported accuracy per API, the run's seed and device."""

    bank: list[BankTask]
    reported_accuracy: dict[str, float]
    seed: int
    device: torch.device

    def __post_init__(self):
        if not self.bank:
            raise ValueError("the bank holds no recovered task; run `dvc repro invert` first")
        shapes = {(t.num_classes, *t.images.shape[1:]) for t in self.bank}
        if len(shapes) != 1:
            raise ValueError(f"the recovered tasks differ in classes or image shape ({sorted(shapes)}); "
                             "the baselines need one N-way task shape (apis.scenario: ss)")

    @property
    def ways(self) -> int:
        return self.bank[0].num_classes

    def student(self, outputs: int) -> nn.Module:
        """A Conv4 meta model with `outputs` head outputs, from the shared seeded initialisation."""
        _, c, size, _ = self.bank[0].images.shape
        return build_meta_model("conv4", c, outputs, size, derive_seed(self.seed, "meta-init")).to(self.device)

    def generator(self, *names: object) -> torch.Generator:
        """A CPU generator seeded from the run's seed and `names` (minibatch order)."""
        return torch.Generator().manual_seed(derive_seed(self.seed, "baseline", *names))


@dataclass
class BaselineResult:
    """A baseline's initialisation and what its training did.

    Attributes:
        state_dict: an N-way Conv4 meta model's parameters (CPU).
        apis: the APIs whose recovered images (and so whose inversion queries) it used.
        info: the choices it made (for the checkpoint and the metrics).
        training: ``steps``, ``initial_loss``, ``final_loss``, ``agreement_pct`` (means over students).
    """

    state_dict: State
    apis: list[str]
    info: dict
    training: dict


def _cpu_state(model: nn.Module) -> State:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _own(task: BankTask) -> torch.Tensor:
    """``[N*n]`` zeros: every image belongs to the one API of a single-API student."""
    return torch.zeros(len(task.images), dtype=torch.long)


def union(bank: list[BankTask]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All APIs' images ``[A*N*n, C, H, W]``, answers ``[A*N*n, N]`` and owner index ``[A*N*n]`` (API a -> a)."""
    owner = torch.cat([torch.full((len(t.images),), a, dtype=torch.long) for a, t in enumerate(bank)])
    return torch.cat([t.images for t in bank]), torch.cat([t.probs for t in bank]), owner


def average_states(states: list[State]) -> State:
    """Element-wise mean of same-shaped parameter dicts."""
    return {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}


def best_api(s: Setting, cfg: StudentParams) -> BaselineResult:
    """Best-API: distil the API of highest reported held-out accuracy (first in pool order on ties)."""
    missing = [t.name for t in s.bank if t.name not in s.reported_accuracy]
    if missing:
        raise ValueError(f"no reported accuracy for {missing} in the pool index; rerun `dvc repro pretrain`")
    task = max(s.bank, key=lambda t: s.reported_accuracy[t.name])  # max keeps the first of equal values
    student = s.student(s.ways)
    training = distill_student(student, task.images, task.probs, _own(task), cfg, s.generator("best_api"), s.device,
                               desc=f"best_api <- {task.name}")
    return BaselineResult(_cpu_state(student), [task.name],
                          {"api": task.name, "reported_accuracy": s.reported_accuracy[task.name]}, training)


def _zero_head(head: State) -> State:
    """Every class starts at the same logit: the first adaptation step sets each class's weights from the mean
    features of its support images (a prototype), and the result does not depend on the episode's label order."""
    return {k: torch.zeros_like(v) for k, v in head.items()}


def _seeded_head(head: State) -> State:
    """The seeded head of the meta model (the head `random` starts from)."""
    return head


HEADS: dict[str, Callable[[State], State]] = {"zero": _zero_head, "random": _seeded_head}


def single_dfkd(s: Setting, cfg: SingleDFKDParams) -> BaselineResult:
    """Single-DFKD: one student over the union of all APIs' classes (API a: columns ``[a*N, (a+1)*N)``),
    KD on each image's restricted softmax; its body under a fresh N-way head (``cfg.head``)."""
    images, probs, owner = union(s.bank)
    student = s.student(len(s.bank) * s.ways)
    training = distill_student(student, images, probs, owner, cfg, s.generator("single_dfkd"), s.device,
                               desc=f"single_dfkd <- {len(s.bank)} APIs")
    init = s.student(s.ways)
    head = {f"head.{k}": v for k, v in _cpu_state(init.head).items()}
    body = {k: v for k, v in _cpu_state(student).items() if not k.startswith("head.")}
    state = {**body, **HEADS[cfg.head](head)}
    return BaselineResult(state, [t.name for t in s.bank],
                          {"head": cfg.head, "distilled_outputs": len(s.bank) * s.ways}, training)


def distill_avg(s: Setting, cfg: StudentParams) -> BaselineResult:
    """Distill-Avg: one N-way student per API, then the mean of their parameters."""
    states, runs = [], []
    for task in s.bank:
        student = s.student(s.ways)
        runs.append(distill_student(student, task.images, task.probs, _own(task), cfg,
                                    s.generator("distill_avg", task.name), s.device,
                                    desc=f"distill_avg <- {task.name}"))
        states.append(_cpu_state(student))
    state = average_states(states)
    averaged = s.student(s.ways)
    averaged.load_state_dict(state)
    kept = [agreement(averaged, t.images, t.probs, _own(t), cfg.batch_size, s.device) for t in s.bank]
    training = {key: round(sum(r[key] for r in runs) / len(runs), 5)
                for key in ("initial_loss", "final_loss", "agreement_pct")}
    return BaselineResult(state, [t.name for t in s.bank], {"students": len(runs)},
                          {"steps": cfg.steps, **training,
                           "average_agreement_pct": round(sum(kept) / len(kept), 2)})


BASELINES: dict[str, Callable[[Setting, StudentParams], BaselineResult]] = {
    "best_api": best_api,
    "single_dfkd": single_dfkd,
    "distill_avg": distill_avg,
}
