"""The outer loop shared by MAML on real data and BiDf-MKD: meta-batches, validation, checkpoint choice.

A :class:`Task` carries a support set with its inner targets and a way to get
the query set given the adapted weights (BiDf-MKD recovers boundary queries
with them). Inner and outer losses are ``"ce"`` (labels) or ``"kd"`` (API
probabilities). The checkpoint with the best meta-val accuracy is kept, and
the last one too.
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

from .functional import Params, adapt, forward, get_params
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


class MetaTrainer:
    """MAML-style outer loop (Finn et al., ICML 2017) over tasks from `make_tasks(iteration)`.

    Args:
        model: meta model (BN without running statistics).
        inner_steps, inner_lr, outer_lr, first_order, temperature: from params.
        validate: ``theta -> meta-val accuracy (percent)``.
    """

    def __init__(self, model: nn.Module, inner_steps: int, inner_lr: float, outer_lr: float, first_order: bool,
                 temperature: float, validate: Callable[[Params], float]):
        self.model = model
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

    def step(self, tasks: list[Task]) -> float:
        self.model.train()
        loss = torch.stack([self.task_loss(t) for t in tasks]).mean()
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
