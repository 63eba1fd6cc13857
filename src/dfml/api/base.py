"""Query interface of one classifier API and the ledger of images sent.

Everything downstream of `pretrain` reaches an API only through
:meth:`BlackBoxAPI.query`; it knows the API's name, its number of classes and
input shape, and nothing else (no weights, no architecture, no gradients).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict

import torch

from ..core.errors import APIReplyError, BudgetExhausted


class QueryLedger:
    """Counts images sent, per API and per stage label, and enforces the run's image budgets.

    ``ledger.count(api, n)`` is called by :meth:`BlackBoxAPI.query` once for
    every chunk answered; ``ledger.phase`` labels the spend (e.g. ``"invert"``).
    ``ledger.check(api, n)`` is called before a query sends anything: it raises
    :class:`BudgetExhausted` when `n` more images would pass `budget` (images for
    the whole run) or `budget_per_api` (images per API for the whole run); None
    means unlimited. A later stage continues the run's ledger
    (:meth:`load_state_dict` of the earlier stage's :meth:`summary`), so its budget
    is what the earlier stages left. ``discarded`` counts images whose answers
    went into work that was rolled back and will be redone (they stay spent).
    """

    def __init__(self, budget: int | None = None, budget_per_api: int | None = None) -> None:
        self.per_api: dict[str, int] = defaultdict(int)
        self.per_phase: dict[str, int] = defaultdict(int)
        self.calls = 0
        self.discarded = 0
        self.phase = "default"
        self.budget, self.budget_per_api = budget, budget_per_api

    def check(self, api: str, n: int) -> None:
        """Raise :class:`BudgetExhausted` if sending `n` more images to `api` would pass a budget."""
        refused = self.refusal(api, n)
        if refused is not None:
            raise BudgetExhausted(*refused)

    def refusal(self, api: str, n: int, held: int = 0, held_by_api: int = 0) -> tuple | None:
        """None if `n` more images to `api` stay within the budgets, with `held` images (`held_by_api` of them
        `api`'s) promised to queries under way beside what was spent; else :class:`BudgetExhausted`'s arguments."""
        total = self.total + held
        if self.budget is not None and total + n > self.budget:
            return api, n, total, self.budget, "run"
        mine = self.per_api.get(api, 0) + held_by_api
        if self.budget_per_api is not None and mine + n > self.budget_per_api:
            return api, n, mine, self.budget_per_api, "per API"
        return None

    def count(self, api: str, n: int) -> None:
        self.per_api[api] += n
        self.per_phase[self.phase] += n
        self.calls += 1

    @property
    def total(self) -> int:
        return sum(self.per_api.values())

    def summary(self) -> dict:
        out = {"total": self.total, "calls": self.calls, "per_phase": dict(self.per_phase),
               "per_api": dict(sorted(self.per_api.items()))}
        return {**out, "discarded": self.discarded} if self.discarded else out

    state_dict = summary

    def load_state_dict(self, sd: dict) -> None:
        """Continue from a :meth:`summary` (the counts; the budgets and the phase stay as set)."""
        self.per_api = defaultdict(int, sd["per_api"])
        self.per_phase = defaultdict(int, sd["per_phase"])
        self.calls, self.discarded = sd["calls"], sd.get("discarded", 0)

    def budget_report(self) -> dict:
        """The budgets and what is left of them: ``{"images", "images_per_api", "remaining", "remaining_per_api"}``."""
        per_api = None if self.budget_per_api is None else {
            a: self.budget_per_api - n for a, n in sorted(self.per_api.items())}
        return {"images": self.budget, "images_per_api": self.budget_per_api,
                "remaining": None if self.budget is None else self.budget - self.total, "remaining_per_api": per_api}


class BlackBoxAPI(ABC):
    """One API: ``query(images [B, C, H, W]) -> probabilities [B, num_classes]``.

    Batches larger than `chunk` go out as several calls; every image is counted
    in `ledger` once, when the backend has answered its chunk and before that
    answer is used (a backend that retries a chunk still counts it once; a
    chunk that never got an answer is not counted). Before the first chunk goes
    out the whole batch is checked against the ledger's budgets
    (:class:`BudgetExhausted`: nothing is sent). Replies are checked: wrong shape,
    non-finite values or rows that are not distributions raise APIReplyError.
    """

    def __init__(self, name: str, num_classes: int, input_shape: tuple[int, int, int], ledger: QueryLedger,
                 chunk: int = 1024):
        self.name = name
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.ledger = ledger
        self.chunk = chunk

    @abstractmethod
    def _answer(self, images: torch.Tensor) -> torch.Tensor:
        """Backend call for one chunk ``[b, C, H, W]`` -> ``[b, num_classes]``."""

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(f"API {self.name} takes [B, {', '.join(map(str, self.input_shape))}] images, "
                             f"got {list(images.shape)}")
        images = images.detach()
        self.ledger.check(self.name, images.shape[0])  # the whole batch fits the budget, or nothing goes out
        outs = []
        for start in range(0, images.shape[0], self.chunk):
            part = images[start:start + self.chunk]
            reply = self._answer(part)
            self.ledger.count(self.name, part.shape[0])
            outs.append(self._check(reply, part.shape[0]))
        return torch.cat(outs) if outs else images.new_zeros(0, self.num_classes)

    def _check(self, probs: torch.Tensor, n: int) -> torch.Tensor:
        if not isinstance(probs, torch.Tensor) or tuple(probs.shape) != (n, self.num_classes):
            shape = list(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
            raise APIReplyError(f"API {self.name}: expected a reply of shape [{n}, {self.num_classes}], got {shape}")
        if not torch.isfinite(probs).all() or (probs < 0).any():
            raise APIReplyError(f"API {self.name}: reply holds negative or non-finite probabilities")
        sums = probs.sum(1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise APIReplyError(f"API {self.name}: reply rows sum to {sums.min():.4f}..{sums.max():.4f}, not 1")
        return probs
