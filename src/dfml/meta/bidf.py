"""BiDf-MKD: bi-level data-free meta knowledge distillation from black-box APIs.

Hu, Shen, Wang, Wu, Yuan, Tao, "Learning to Learn from APIs: Black-Box Data-Free
Meta-Learning", ICML 2023 (arXiv 2305.18413), Sec. 3.3-3.5.

Each meta-iteration draws ``tasks_per_batch`` API tasks and ``memory_tasks``
memory-replay tasks and takes one outer step on the mean of their losses:

* API task (API i): support = recovered images of i with i's answers, the
  API's classes put in a random order per task (``permute_classes``; with a fixed
  order the meta model can memorise "this look -> output 2" per API instead of
  learning to adapt, the memorisation problem of Yin et al., ICLR 2020); inner loop
  ``KD(F(S; theta), A_i(S))``; query = recovered images (before
  ``boundary_after``) or boundary queries re-inverted online with the adapted
  weights (after); outer loss ``KD(F(Q; theta_i), A_i(Q))``.
* Memory task: N (API, class) slots drawn across the whole memory (interpolated
  tasks), labels = slot position, MAML cross-entropy inside and outside; with
  ``augment`` its images get random small affine deformations (no API cost).

All API images sent here (boundary queries) are counted by the ledger.
"""

from __future__ import annotations

import warnings

from typing import Callable

import torch
from torch import nn

from ..api.base import BlackBoxAPI
from ..inversion.gradients import GradientEstimator
from ..inversion.invert import ImagePrior, InversionState, inversion_step, render
from ..core.losses import boundary_loss
from .augment import random_affine
from .functional import Params, forward_groups
from .params import DistillParams
from .trainer import Task


class TaskMemory:
    """Ring buffers of recovered images per (API, class): ``[capacity, C, H, W]`` each."""

    def __init__(self, capacity: int, gen: torch.Generator):
        self.capacity, self.gen = capacity, gen
        self.slots: dict[tuple[int, int], torch.Tensor] = {}
        self.fill: dict[tuple[int, int], int] = {}
        self.cursor: dict[tuple[int, int], int] = {}

    def add(self, api: int, cls: int, images: torch.Tensor) -> None:
        key = (api, cls)
        if key not in self.slots:
            self.slots[key] = images.new_zeros(self.capacity, *images.shape[1:])
            self.fill[key], self.cursor[key] = 0, 0
        for img in images[-self.capacity:]:  # at most `capacity` rows: a short loop
            self.slots[key][self.cursor[key]] = img
            self.cursor[key] = (self.cursor[key] + 1) % self.capacity
            self.fill[key] = min(self.fill[key] + 1, self.capacity)

    def sample(self, key: tuple[int, int], n: int) -> torch.Tensor:
        fill = self.fill[key]
        idx = torch.randperm(fill, generator=self.gen)[:n] if fill >= n else torch.randint(fill, (n,), generator=self.gen)
        return self.slots[key][idx]

    def keys(self) -> list[tuple[int, int]]:
        return sorted(self.slots)

    def state_dict(self, apis: list[int]) -> dict:
        """The ring buffers of `apis` (references, not copies): ``{"apis", "entries": [[api, cls, slots, fill,
        cursor]]}``."""
        return {"apis": list(apis), "entries": [[a, c, self.slots[(a, c)], self.fill[(a, c)], self.cursor[(a, c)]]
                                                for a, c in self.keys() if a in apis]}

    def load_state_dict(self, sd: dict) -> None:
        """Replace the buffers of the APIs in ``sd["apis"]`` by those of :meth:`state_dict` (others are kept)."""
        for key in [k for k in self.slots if k[0] in sd["apis"]]:
            del self.slots[key], self.fill[key], self.cursor[key]
        for a, c, slots, fill, cursor in sd["entries"]:
            self.slots[(a, c)], self.fill[(a, c)], self.cursor[(a, c)] = slots.clone(), fill, cursor


class BiDfTaskSampler:
    """``iteration -> [Task]`` for BiDf-MKD (see module docstring).

    Args:
        apis: the pool (query interface only). bank: per API ``{"images": [N, n, C, H, W],
        "probs": [N, n, N]}``. states: per API inversion state (for boundary queries).
        prior: the inversion's image prior, kept for boundary re-inversion.
    """

    def __init__(self, model: nn.Module, apis: list[BlackBoxAPI], bank: list[dict], states: list[InversionState],
                 estimator: GradientEstimator, cfg: DistillParams, gen: torch.Generator, device: torch.device,
                 prior: ImagePrior = ImagePrior()):
        self.model, self.apis, self.bank, self.states = model, apis, bank, states
        self.estimator, self.cfg, self.gen, self.device = estimator, cfg, gen, device
        self.memory = TaskMemory(cfg.memory_size, gen)
        self.ways = bank[0]["images"].shape[0]
        for a, entry in enumerate(bank):
            self.remember(a, entry["images"].flatten(0, 1), entry["probs"].flatten(0, 1))
        self.prior = prior
        self.warned = False

    on_change: Callable[[int], None] | None = None
    """Hook: ``on_change(a)`` runs before boundary queries change API a's inversion state and memory."""

    def state_dict(self, apis: list[int] | None = None) -> dict:
        """The sampler's random state, the direction generator's, and the inversion states (with optimiser
        state) and task memory of `apis` (default: all); references, not copies (checkpoints)."""
        apis = list(range(len(self.states))) if apis is None else list(apis)
        return {"gen": self.gen.get_state(), "estimator": self.estimator.state_dict(),
                "memory": self.memory.state_dict(apis), "states": {a: self.states[a].full_state_dict() for a in apis}}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`state_dict` (of all APIs or some: the others are left as they are)."""
        self.gen.set_state(sd["gen"])
        self.estimator.load_state_dict(sd["estimator"])
        self.memory.load_state_dict(sd["memory"])
        for a, state in sd["states"].items():
            self.states[a].load_full_state_dict(state)

    def __call__(self, it: int) -> list[Task]:
        tasks = [self.api_task(it) for _ in range(self.cfg.tasks_per_batch)]
        if len(self.memory.keys()) >= self.ways:
            tasks += [self.memory_task() for _ in range(self.cfg.memory_tasks)]
        elif self.cfg.memory_tasks and not self.warned:
            warnings.warn(f"task memory holds {len(self.memory.keys())} (API, class) slots, fewer than "
                          f"{self.ways} ways: no memory tasks until it holds enough (the APIs answered too few "
                          "distinct classes on the recovered images)")
            self.warned = True
        return tasks

    def _support_shots(self) -> int:
        """Support images per class of the next task: ``distill.support_shots``, or, when it is a list, one of
        its entries drawn uniformly per task (a model evaluated in 1-shot and 5-shot episodes meets both)."""
        shots = self.cfg.support_shots
        if isinstance(shots, int):
            return shots
        return int(shots[int(torch.randint(len(shots), (1,), generator=self.gen))])

    def _pick(self, a: int, k: int) -> torch.Tensor:
        """Per class, k image positions of API a's bank: ``[N, k]``."""
        n = self.bank[a]["images"].shape[1]
        return torch.stack([torch.randperm(n, generator=self.gen)[:k] for _ in range(self.ways)])

    def api_task(self, it: int) -> Task:
        cfg = self.cfg
        a = int(torch.randint(len(self.apis), (1,), generator=self.gen))
        images, probs = self.bank[a]["images"], self.bank[a]["probs"]
        ks, kq = self._support_shots(), cfg.query_shots
        pos = self._pick(a, ks + kq)
        rows = torch.arange(self.ways).unsqueeze(1)
        # Task class j is API class perm[j]: target column j = API column perm[j].
        perm = torch.randperm(self.ways, generator=self.gen) if cfg.permute_classes else torch.arange(self.ways)
        xs = images[rows, pos[:, :ks]].flatten(0, 1).to(self.device)
        ts = probs[rows, pos[:, :ks]].flatten(0, 1)[:, perm].to(self.device)
        if it > cfg.boundary_after and cfg.boundary_steps > 0:
            qrows = (rows * images.shape[1] + pos[:, ks:]).flatten()
            return Task(xs, ts, lambda fast: self.boundary_query(a, qrows, fast, perm), "kd")
        xq = images[rows, pos[:, ks:]].flatten(0, 1).to(self.device)
        tq = probs[rows, pos[:, ks:]].flatten(0, 1)[:, perm].to(self.device)
        return Task(xs, ts, (xq, tq), "kd")

    def boundary_query(self, a: int, qrows: torch.Tensor, fast: Params, perm: torch.Tensor):
        """Re-invert the query rows of API a toward its decision boundary (BiDf-MKD Eq. 7).

        ``perm``: the task's class order (task class j = API class perm[j]); the
        student's logits are put back in API order for the boundary term, and the
        API's answers are returned in task order.
        """
        if self.on_change is not None:
            self.on_change(a)
        fast = {k: v.detach() for k, v in fast.items()}
        lam, temp = self.cfg.boundary_lambda, self.cfg.temperature
        perm = perm.to(self.device)
        to_api = torch.argsort(perm)

        def loss_fn(pts, probs, y):
            student = forward_groups(self.model, fast, pts)[..., to_api]
            return boundary_loss(probs, student, y, lam, temp)

        state = self.states[a]
        qrows = qrows.to(self.device)
        for _ in range(self.cfg.boundary_steps):
            inversion_step(state, self.apis[a], self.estimator, loss_fn, rows=qrows, prior=self.prior)
        x, p = render(state, self.apis[a], rows=qrows)
        self.remember(a, x.detach(), p)
        return x.detach(), p[:, perm]

    def remember(self, a: int, images: torch.Tensor, probs: torch.Tensor) -> None:
        """File recovered images ``[B, C, H, W]`` of API a under the class the API answered (``probs [B, N]``).

        The API's top class, not the class the generator aimed at: memory tasks
        train with these labels, and an image the API puts elsewhere would be a
        wrong label.
        """
        top = probs.argmax(1)
        for c in range(self.ways):
            rows = images[top == c]
            if len(rows):
                self.memory.add(a, c, rows)

    def memory_task(self) -> Task:
        keys = self.memory.keys()
        chosen = torch.randperm(len(keys), generator=self.gen)[:self.ways].tolist()
        ks, kq = self._support_shots(), self.cfg.query_shots
        sets = [self.memory.sample(keys[i], ks + kq) for i in chosen]
        xs = torch.cat([s[:ks] for s in sets]).to(self.device)
        xq = torch.cat([s[ks:] for s in sets]).to(self.device)
        if self.cfg.augment:
            xs, xq = random_affine(xs, self.gen), random_affine(xq, self.gen)
        ys = torch.arange(self.ways, device=self.device).repeat_interleave(ks)
        yq = torch.arange(self.ways, device=self.device).repeat_interleave(kq)
        return Task(xs, ys, (xq, yq), "ce")
