"""Answer modes: how much of its class distribution an API gives away, and the target rebuilt from it.

An API computes probabilities ``p [B, N]``; its answer mode decides what leaves
the server (:meth:`Answer.encode`, a JSON-ready mapping) and the client turns
that reply back into a distribution ``[B, N]`` used as the training target
downstream (:meth:`Answer.decode`). The modes, by name in :data:`MODES`:

- ``probs``: the full distribution. Decoded as is.
- ``topk``: the `topk` most probable classes and their probabilities. Decoded
  with the given k probabilities kept and the remaining mass
  ``max(0, 1 - sum of the k)`` spread evenly over the other N - k classes.
- ``label``: the top class only (hard labels, as in DFMS-HL, Sanyal et al., CVPR
  2022). Decoded as one-hot, smoothed as ``(1 - eps) * onehot + eps / N`` with
  ``eps = label_smoothing`` (0: plain one-hot).
- ``rounded``: the full distribution rounded to `decimals` decimals. Decoded
  renormalised to sum to one; a row that rounds to all zeros (every class below
  half a unit of the last decimal, possible only when N > 2 * 10**decimals)
  carries no information and decodes to the uniform distribution.

Replies are checked strictly: a wrong mode, a missing field, a wrong shape, a
class index out of range or repeated, a k or decimals other than agreed, a
non-integer label, a non-finite, negative or above-one probability raise
:class:`~dfml.api.base.APIReplyError` naming the API and what was wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from .base import APIReplyError

ROUND_TOL = 1e-9  # how far a `rounded` value may sit from a multiple of 10**-decimals
MASS_TOL = 1e-3   # how far above one the `topk` mass may sum (float rounding on the server)


@dataclass(frozen=True)
class AnswerSettings:
    """Which mode and its options: `topk` (topk mode), `decimals` (rounded), `label_smoothing` (label, client side)."""

    mode: str = "probs"
    topk: int = 2
    decimals: int = 2
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown answer mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.topk < 1 or self.decimals < 0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"answer settings out of range: topk={self.topk} (>= 1), decimals={self.decimals} "
                             f"(>= 0), label_smoothing={self.label_smoothing} (in [0, 1))")


class Answer(ABC):
    """One answer mode: `encode` on the server, `decode` on the client, `describe` for the API listing."""

    mode: ClassVar[str]

    def __init__(self, settings: AnswerSettings):
        self.settings = settings

    @abstractmethod
    def encode(self, probs: torch.Tensor) -> dict[str, Any]:
        """Probabilities ``[B, N]`` -> reply: ``{"mode": ..., field: tensor}`` (see :func:`to_json`)."""

    @abstractmethod
    def _rebuild(self, reply: Mapping, num_classes: int, api: str) -> torch.Tensor:
        """Checked fields of `reply` -> target distribution ``[B, N]`` float32."""

    def describe(self) -> dict[str, Any]:
        """What a client must know to decode: the mode and its public options."""
        return {"mode": self.mode}

    def decode(self, reply: Mapping, num_classes: int, api: str = "?") -> torch.Tensor:
        """Reply -> training target ``[B, num_classes]`` float32 (rules in the module docstring)."""
        if not isinstance(reply, Mapping):
            raise APIReplyError(f"API {api}: expected a JSON object reply, got {type(reply).__name__}")
        if reply.get("mode") != self.mode:
            raise APIReplyError(f"API {api}: expected a {self.mode!r} answer, got mode {reply.get('mode')!r}")
        return self._rebuild(reply, num_classes, api)

    def _option(self, reply: Mapping, key: str, want: int, api: str) -> None:
        if reply.get(key) != want:
            raise APIReplyError(f"API {api}: {self.mode} answer with {key}={reply.get(key)!r}, agreed {key}={want}")


def to_json(reply: Mapping[str, Any]) -> dict[str, Any]:
    """Reply with tensors -> plain JSON-serialisable dict (tensors as nested lists)."""
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in reply.items()}


def _field(reply: Mapping, key: str, shape: tuple, api: str) -> torch.Tensor:
    """Numeric field ``reply[key]`` as float64 of the given shape (None: any size), finite, else APIReplyError."""
    if key not in reply:
        raise APIReplyError(f"API {api}: reply has no {key!r} field")
    try:
        value = torch.as_tensor(reply[key], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise APIReplyError(f"API {api}: reply field {key!r} is not a numeric array ({exc})") from None
    if value.dim() != len(shape) or any(w is not None and s != w for s, w in zip(value.shape, shape)):
        want = ", ".join("B" if w is None else str(w) for w in shape)
        raise APIReplyError(f"API {api}: reply field {key!r} has shape {list(value.shape)}, expected [{want}]")
    if not torch.isfinite(value).all():
        raise APIReplyError(f"API {api}: reply field {key!r} holds non-finite values")
    return value


def _probabilities(reply: Mapping, key: str, shape: tuple, api: str) -> torch.Tensor:
    value = _field(reply, key, shape, api)
    if ((value < 0) | (value > 1)).any():
        raise APIReplyError(f"API {api}: reply field {key!r} holds values outside [0, 1]")
    return value


def _classes(reply: Mapping, key: str, shape: tuple, num_classes: int, api: str) -> torch.Tensor:
    value = _field(reply, key, shape, api)
    if (value != value.round()).any() or ((value < 0) | (value >= num_classes)).any():
        raise APIReplyError(f"API {api}: reply field {key!r} holds values that are not class indices "
                            f"0..{num_classes - 1}")
    return value.long()


class ProbsAnswer(Answer):
    """The full distribution ``{"probs": [B, N]}``."""

    mode = "probs"

    def encode(self, probs):
        return {"mode": self.mode, "probs": probs.float()}

    def _rebuild(self, reply, num_classes, api):
        return _probabilities(reply, "probs", (None, num_classes), api).float()


class TopKAnswer(Answer):
    """``{"k": k, "indices": [B, k], "probs": [B, k]}``, most probable first; k = min(topk, N)."""

    mode = "topk"

    def describe(self):
        return {"mode": self.mode, "k": self.settings.topk}

    def encode(self, probs):
        k = min(self.settings.topk, probs.shape[1])
        top = probs.float().topk(k, dim=1)
        return {"mode": self.mode, "k": k, "indices": top.indices, "probs": top.values}

    def _rebuild(self, reply, num_classes, api):
        k = min(self.settings.topk, num_classes)
        self._option(reply, "k", k, api)
        idx = _classes(reply, "indices", (None, k), num_classes, api)
        given = _probabilities(reply, "probs", (None, k), api)
        if (idx.sort(1).values.diff(dim=1) == 0).any():
            raise APIReplyError(f"API {api}: topk answer repeats a class index within a row")
        mass = given.sum(1, keepdim=True)
        if (mass > 1 + MASS_TOL).any():
            raise APIReplyError(f"API {api}: topk probabilities sum to {mass.max():.4f} > 1")
        rest = (1 - mass).clamp_min(0) / max(num_classes - k, 1)
        out = rest.expand(-1, num_classes).clone()
        return out.scatter_(1, idx, given).float()


class LabelAnswer(Answer):
    """The top class only ``{"labels": [B]}``."""

    mode = "label"

    def encode(self, probs):
        return {"mode": self.mode, "labels": probs.argmax(1)}

    def _rebuild(self, reply, num_classes, api):
        labels = _classes(reply, "labels", (None,), num_classes, api)
        eps = self.settings.label_smoothing
        return ((1 - eps) * F.one_hot(labels, num_classes).float() + eps / num_classes).float()


class RoundedAnswer(Answer):
    """``{"decimals": d, "probs": [B, N]}``, each probability rounded to d decimals."""

    mode = "rounded"

    def describe(self):
        return {"mode": self.mode, "decimals": self.settings.decimals}

    def encode(self, probs):
        d = self.settings.decimals
        return {"mode": self.mode, "decimals": d, "probs": probs.double().round(decimals=d)}

    def _rebuild(self, reply, num_classes, api):
        d = self.settings.decimals
        self._option(reply, "decimals", d, api)
        probs = _probabilities(reply, "probs", (None, num_classes), api)
        if ((probs - probs.round(decimals=d)).abs() > ROUND_TOL).any():
            raise APIReplyError(f"API {api}: rounded answer holds values that are not multiples of 1e-{d}")
        sums = probs.sum(1, keepdim=True)
        uniform = torch.full_like(probs, 1.0 / num_classes)
        return torch.where(sums > 0, probs / sums.clamp_min(1e-12), uniform).float()


MODES: dict[str, type[Answer]] = {cls.mode: cls for cls in (ProbsAnswer, TopKAnswer, LabelAnswer, RoundedAnswer)}


def make_answer(settings: AnswerSettings) -> Answer:
    """The :class:`Answer` of ``settings.mode`` with its options."""
    return MODES[settings.mode](settings)


def settings_from_description(desc: Mapping, label_smoothing: float = 0.0) -> AnswerSettings:
    """Client settings from a server's :meth:`Answer.describe` (plus the client-side label smoothing)."""
    defaults = AnswerSettings()
    return AnswerSettings(mode=desc.get("mode", "?"), topk=desc.get("k", defaults.topk),
                          decimals=desc.get("decimals", defaults.decimals), label_smoothing=label_smoothing)
