"""The outer loop shared by MAML on real data and BiDf-MKD: meta-batches, validation, checkpoint choice.

A :class:`Task` carries a support set with its inner targets and a way to get
the query set given the adapted weights (BiDf-MKD recovers boundary queries
with them). Inner and outer losses are ``"ce"`` (labels) or ``"kd"`` (API
probabilities). The checkpoint with the best meta-val accuracy is kept, and
the last one too.

With ``batched=True`` (``runtime.vmap``) the tasks of a meta-batch that have the
same shapes run together: their inner loops under ``torch.func.vmap``, the query
sets fetched one task at a time in task order (BiDf-MKD's boundary queries spend
API images in the same order and number as the loop), then the outer losses
vmapped again. The meta-gradient equals the loop's to float rounding, not bit for
bit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .functional import Params, adapt, adapt_batched, batch_norm_by_hand, batched_loss, forward, get_params
from ..core.losses import kd_loss

QueryFn = Callable[[Params], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Task:
    """One meta-training task.

    Attributes:
        support: ``[n_s, C, H, W]``; support_target: labels ``[n_s]`` or probabilities ``[n_s, N]``.
        query: ``(images [n_q, C, H, W], target)`` or a function of the adapted weights returning it.
        loss: ``"ce"`` or ``"kd"``, used inside and outside.
    """

    support: torch.Tensor
    support_target: torch.Tensor
    query: tuple[torch.Tensor, torch.Tensor] | QueryFn
    loss: str


def make_loss(kind: str, temperature: float):
    if kind == "ce":
        return F.cross_entropy
    if kind == "kd":
        return lambda logits, probs: kd_loss(logits, probs, temperature)
    raise ValueError(f"unknown task loss {kind!r}")


def _shape_key(kind: str, x: torch.Tensor, target: torch.Tensor) -> tuple:
    """What tasks must share to be vmapped together: loss kind, and shape, dtype and device of images and
    targets."""
    return (kind, tuple(x.shape), x.dtype, x.device, tuple(target.shape), target.dtype, target.device)


class MetaTrainer:
    """MAML-style outer loop (Finn et al., ICML 2017) over tasks from `make_tasks(iteration)`.

    Args:
        model: meta model (BN without running statistics).
        inner_steps, inner_lr, outer_lr, first_order, temperature: from params.
        validate: ``theta -> meta-val accuracy (percent)``.
        batched: run tasks of the same shapes together under ``torch.func.vmap`` (:meth:`batched_task_losses`);
            False: one task after another (:meth:`task_loss`).
    """

    def __init__(self, model: nn.Module, inner_steps: int, inner_lr: float, outer_lr: float, first_order: bool,
                 temperature: float, validate: Callable[[Params], float], batched: bool = False):
        self.model = model
        self.batched = batched
        self.inner_steps, self.inner_lr = inner_steps, inner_lr
        self.second_order = not first_order
        self.temperature = temperature
        self.validate = validate
        self.opt = torch.optim.Adam(model.parameters(), lr=outer_lr)
        self.curve: list[dict] = []
        self.best = {"val_acc": -1.0, "iteration": 0, "state_dict": None}
        self.iteration = 0  # meta-iterations done
        self.elapsed = 0.0  # seconds spent in `run` (a resumed run continues the clock)

    def task_loss(self, task: Task) -> torch.Tensor:
        loss_fn = make_loss(task.loss, self.temperature)
        fast = adapt(self.model, get_params(self.model), task.support, task.support_target, loss_fn,
                     self.inner_steps, self.inner_lr, self.second_order)
        xq, tq = task.query(fast) if callable(task.query) else task.query
        return loss_fn(forward(self.model, fast, xq), tq)

    def batched_task_losses(self, tasks: list[Task]) -> list[torch.Tensor]:
        """The losses of :meth:`task_loss`, in task order, with the tasks of the same shapes batched.

        1. Tasks whose support sets have the same shapes and dtypes and the same loss kind form a group, and
           each group's inner loops run at once (:func:`adapt_batched`).
        2. Each task's query set is then fetched, one task after another in task order, with that task's
           adapted weights: a query function that asks an API (BiDf-MKD's boundary queries) sends the same
           images in the same order as the loop.
        3. Within a group, tasks whose query sets have the same shapes get their outer losses in one vmapped
           forward.

        Batch norm is computed by hand inside the vmapped parts (:func:`batch_norm_by_hand`).
        """
        theta = get_params(self.model)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tasks):
            groups.setdefault(_shape_key(t.loss, t.support, t.support_target), []).append(i)
        fast_of: list[tuple[Params, int]] = [None] * len(tasks)  # type: ignore[list-item]  # (group weights, row)
        with batch_norm_by_hand(self.model):
            for (kind, *_), idx in groups.items():
                xs = torch.stack([tasks[i].support for i in idx])
                ts = torch.stack([tasks[i].support_target for i in idx])
                fast = adapt_batched(self.model, theta, xs, ts, make_loss(kind, self.temperature), self.inner_steps,
                                     self.inner_lr, self.second_order)
                for row, i in enumerate(idx):
                    fast_of[i] = (fast, row)
        queries = []
        for t, (fast, row) in zip(tasks, fast_of):  # task order, as the loop
            queries.append(t.query({k: v[row] for k, v in fast.items()}) if callable(t.query) else t.query)
        losses: list[torch.Tensor] = [None] * len(tasks)  # type: ignore[list-item]
        with batch_norm_by_hand(self.model):
            for (kind, *_), idx in groups.items():
                fast = fast_of[idx[0]][0]
                loss_fn = make_loss(kind, self.temperature)
                sub: dict[tuple, list[int]] = {}
                for row, i in enumerate(idx):
                    sub.setdefault(_shape_key(kind, *queries[i]), []).append(row)
                for rows in sub.values():
                    p = fast if len(rows) == len(idx) else {k: v[rows] for k, v in fast.items()}
                    xq = torch.stack([queries[idx[r]][0] for r in rows])
                    tq = torch.stack([queries[idx[r]][1] for r in rows])
                    out = batched_loss(self.model, p, xq, tq, loss_fn)
                    for r, value in zip(rows, out):
                        losses[idx[r]] = value
        return losses

    def step(self, tasks: list[Task]) -> float:
        self.model.train()
        losses = self.batched_task_losses(tasks) if self.batched else [self.task_loss(t) for t in tasks]
        loss = torch.stack(losses).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def run(self, iterations: int, make_tasks: Callable[[int], list[Task]], val_every: int,
            extra: Callable[[], dict] | None = None, desc: str = "meta-train",
            after_iteration: Callable[[int], None] | None = None) -> None:
        """Meta-train up to `iterations`, from ``self.iteration`` on (0, or where :meth:`load_state_dict` left
        off); `after_iteration(it)` runs after each one (checkpoints)."""
        start = time.perf_counter() - self.elapsed
        if not self.curve:
            self._record(0, float("nan"), start, extra)
        bar = tqdm(range(self.iteration + 1, iterations + 1), desc=desc, unit="it", initial=self.iteration,
                   total=iterations)
        for it in bar:
            loss = self.step(make_tasks(it))
            if it % val_every == 0 or it == iterations:
                row = self._record(it, loss, start, extra)
                bar.set_postfix(val=f"{row['val_acc']:.1f}", loss=f"{loss:.3f}")
            self.iteration, self.elapsed = it, time.perf_counter() - start
            if after_iteration is not None:
                after_iteration(it)
        self.last = {"iteration": iterations, "state_dict": copy.deepcopy(self.model.state_dict())}

    def state_dict(self) -> dict:
        """Iteration, clock, meta model, outer optimiser, curve and best checkpoint (references, not copies)."""
        return {"iteration": self.iteration, "elapsed": self.elapsed, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "curve": list(self.curve), "best": dict(self.best)}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`state_dict`; the next :meth:`run` starts after ``sd["iteration"]``."""
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["optimizer"])
        self.curve, self.best = list(sd["curve"]), dict(sd["best"])
        self.iteration, self.elapsed = sd["iteration"], sd["elapsed"]

    def _record(self, it: int, loss: float, start: float, extra) -> dict:
        acc = self.validate(get_params(self.model))
        row = {"iteration": it, "val_acc": round(acc, 3), "train_loss": round(loss, 5),
               "seconds": round(time.perf_counter() - start, 2), **(extra() if extra else {})}
        self.curve.append(row)
        if acc > self.best["val_acc"]:
            self.best = {"val_acc": acc, "iteration": it, "state_dict": copy.deepcopy(self.model.state_dict())}
        return row
