"""What a pseudo-task recovery method is (the registry :data:`METHODS` of ``invert.method`` is filled by the
method modules; :mod:`dfml.inversion.recovery` imports them all and builds one).

Every method gives, per API, the same bank entry (``images [N, n, C, H, W]``, the API's answers ``probs
[N, n, N]``, the generator state and the history of its steps), so `distill` and the baselines run unchanged;
every image goes through the API's query interface and is counted in the run's ledger.

- ``bidf`` (:class:`~dfml.inversion.invert.BiDf`): BiDf-MKD's inversion by forward differences.
- ``surrogate`` (:class:`~dfml.inversion.surrogate.Surrogate`): a local clone learns from the API's answers; the
  generator is optimised against the clone with exact gradients.
- ``dfme`` (:class:`~dfml.inversion.dfme.DFME`): an adversarial generator/student game through the API.
- ``cake`` (:class:`~dfml.inversion.cake.CAKE`): contrastive pairs driven to the API's decision boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from ..api.base import BlackBoxAPI
from .gradients import GradientEstimator
from .params import InvertParams

if TYPE_CHECKING:
    from .invert import InversionState


@dataclass
class Recovered:
    """One API's recovered task.

    Attributes:
        images: ``[N, n, C, H, W]`` (CPU); probs: the API's answers ``[N, n, N]`` (CPU).
        state: the generator and latents that render `images` (distill re-inverts boundary queries from it).
        history: one record per step (bidf, cake: generator steps; surrogate, dfme: rounds).
        extra: what else the method keeps in the bank entry (surrogate: the clone).
    """

    images: torch.Tensor
    probs: torch.Tensor
    state: InversionState
    history: list[dict]
    extra: dict = field(default_factory=dict)


@dataclass
class BoundaryOracle:
    """What `distill`'s boundary queries ask and how they estimate image gradients.

    Attributes:
        apis: one oracle per API (the APIs themselves, or local clones); estimator: zero-order or exact;
        kind: ``"api"`` (counted as API images) or ``"clone"`` (local: no API image).
    """

    apis: list[BlackBoxAPI]
    estimator: GradientEstimator
    kind: str


class RecoveryMethod(ABC):
    """One way to recover an API's task through its query interface.

    Args:
        cfg: the ``invert`` section; channels, image_size: the images' shape; device; seed: the run's seed
            (each API's randomness derives from it and the API's index, so an API's result does not depend on
            the order APIs are recovered in; ``bidf`` keeps the release's one shared stream of directions).
    """

    name: ClassVar[str]
    steps_resumable: ClassVar[bool] = False  # checkpoints within an API (bidf); else an API is redone whole
    order_hint: ClassVar[str] = ""  # when not order free: why, and the key that makes it so

    def __init__(self, cfg: InvertParams, channels: int, image_size: int, device: torch.device, seed: int):
        self.cfg, self.channels, self.image_size, self.device, self.seed = cfg, channels, image_size, device, seed

    @classmethod
    def order_free_for(cls, cfg: InvertParams) -> bool:
        """Whether, with `cfg`, an API's task does not depend on the APIs before it (so parallel workers may
        recover the APIs in any order); True unless a method shares a random stream across APIs."""
        return True

    @property
    def order_free(self) -> bool:
        """:meth:`order_free_for` this method's ``cfg``."""
        return self.order_free_for(self.cfg)

    @abstractmethod
    def recover(self, api: BlackBoxAPI, index: int, state: InversionState | None = None,
                on_step: Callable[[InversionState], None] | None = None) -> Recovered:
        """Recover API `index`'s task; `state` and `on_step` only for :attr:`steps_resumable` methods."""

    @abstractmethod
    def planned_images(self, num_classes: int) -> int | None:
        """API images one API costs (None when it depends on the answers, e.g. bidf's extra steps)."""

    @abstractmethod
    def boundary(self, apis: list[BlackBoxAPI], entries: list[dict], generator: torch.Generator) -> BoundaryOracle:
        """The boundary-query oracle of `distill` for this method's bank `entries` (`generator`: its directions)."""

    def state_dict(self) -> dict:
        """Random state shared across APIs (checkpoints); none unless the method has such a stream."""
        return {}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`state_dict`."""


METHODS: dict[str, type[RecoveryMethod]] = {}


def register(cls: type[RecoveryMethod]) -> type[RecoveryMethod]:
    METHODS[cls.name] = cls
    return cls
