"""Query interface of one classifier API and the ledger of images sent.

Everything downstream of `pretrain` reaches an API only through
:meth:`BlackBoxAPI.query`; it knows the API's name, its number of classes and
input shape, and nothing else (no weights, no architecture, no gradients).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict

import torch


class APIReplyError(RuntimeError):
    """An API answered something that is not a batch of class probabilities."""


class QueryLedger:
    """Counts images sent, per API and per stage label.

    ``ledger.count(api, n)`` is called by :meth:`BlackBoxAPI.query` for every
    chunk actually sent; ``ledger.phase`` labels the spend (e.g. ``"invert"``).
    """

    def __init__(self) -> None:
        self.per_api: dict[str, int] = defaultdict(int)
        self.per_phase: dict[str, int] = defaultdict(int)
        self.calls = 0
        self.phase = "default"

    def count(self, api: str, n: int) -> None:
        self.per_api[api] += n
        self.per_phase[self.phase] += n
        self.calls += 1

    @property
    def total(self) -> int:
        return sum(self.per_api.values())

    def summary(self) -> dict:
        return {"total": self.total, "calls": self.calls, "per_phase": dict(self.per_phase),
                "per_api": dict(sorted(self.per_api.items()))}


class BlackBoxAPI(ABC):
    """One API: ``query(images [B, C, H, W]) -> probabilities [B, num_classes]``.

    Batches larger than `chunk` go out as several calls; every image is counted
    in `ledger` before its answer is used. Replies are checked: wrong shape,
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
        outs = []
        for start in range(0, images.shape[0], self.chunk):
            part = images[start:start + self.chunk]
            self.ledger.count(self.name, part.shape[0])
            outs.append(self._check(self._answer(part), part.shape[0]))
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
