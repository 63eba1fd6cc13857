"""Pseudo-task recovery by API inversion (BiDf-MKD, Hu et al., ICML 2023, Sec. 3.2), and the generator
machinery every recovery method shares (:class:`InversionState`, :func:`inversion_step`, :func:`render`).

A generator ``G(z; w)`` and its latent codes are trained so that the API classifies
``G(z)`` as fixed labels: ``min CE(A(G(z)), y)``. The image gradient comes from a
:class:`GradientEstimator` and is pushed into ``w`` and ``z`` through the surrogate
loss ``mean_b <x_b, g_b.detach()>``, whose gradient w.r.t. x is exactly g.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..api.base import BlackBoxAPI
from ..core.losses import ce_on_probs
from ..core.seeding import derive_seed
from ..models.generator import Generator
from .gradients import GradientEstimator, GroupLoss, build_estimator
from .methods import BoundaryOracle, Recovered, RecoveryMethod, register
from .params import BidfParams, GeneratorParams, PriorParams


@dataclass
class InversionState:
    """A generator with its latent codes and optimiser for one API's task.

    ``z``: ``[N*n, latent]``; labels ``y``: ``[N*n]`` class-major (n images per class).
    """

    generator: Generator
    z: torch.nn.Parameter
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    history: list = field(default_factory=list)

    def state_dict(self) -> dict:
        """Generator weights, latent codes and labels (the optimiser is not kept: it restarts in `distill`)."""
        return {"generator": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
                "z": self.z.detach().cpu(), "labels": self.labels.cpu()}

    def full_state_dict(self) -> dict:
        """:meth:`state_dict` plus the optimiser state and history: all a checkpoint needs to continue exactly."""
        return {**self.state_dict(), "optimizer": self.optimizer.state_dict(), "history": list(self.history)}

    def load_full_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`full_state_dict` (a state built with the same settings)."""
        self.generator.load_state_dict(sd["generator"])
        with torch.no_grad():
            self.z.copy_(sd["z"].to(self.z.device))
        self.optimizer.load_state_dict(sd["optimizer"])
        self.history[:] = sd["history"]


def new_state(num_classes: int, per_class: int, channels: int, image_size: int, cfg: GeneratorParams, seed: int,
              device: torch.device) -> InversionState:
    """A fresh generator (seeded) with latent codes ``[N*n, latent]`` and class-major labels, Adam (0.5, 0.999)."""
    torch.manual_seed(seed)
    gen = Generator(cfg.latent_dim, channels, image_size, cfg.width).to(device)
    gen = gen.to(memory_format=torch.channels_last)  # generator fwd+bwd 1.5x faster on CPU (measured, width 64)
    z = torch.nn.Parameter(torch.randn(num_classes * per_class, cfg.latent_dim, device=device))
    y = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    opt = torch.optim.Adam([{"params": gen.parameters(), "lr": cfg.lr},
                            {"params": [z], "lr": cfg.lr_latent}], betas=(0.5, 0.999))
    return InversionState(gen, z, y, opt)


def load_state(sd: dict, cfg: GeneratorParams, channels: int, image_size: int, device: torch.device) -> InversionState:
    y = sd["labels"].to(device)
    st = new_state(int(y.max()) + 1, len(y) // (int(y.max()) + 1), channels, image_size, cfg, 0, device)
    st.generator.load_state_dict(sd["generator"])
    with torch.no_grad():
        st.z.copy_(sd["z"].to(device))
    return st


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image, ``[B, C, H, W] -> [B]`` (sum of absolute neighbour differences)."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
            + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1))


@dataclass(frozen=True)
class ImagePrior:
    """Data-free image prior ``tv * TV(x) + l2 * ||x||^2 + l1 * ||x||_1`` per image, ``[B, C, H, W] -> [B]``.

    The prior of DeepInversion (Yin et al., CVPR 2020), also used by CAKE (Braun
    et al.). It is a property of our own generator's output, so its gradient is
    exact and it sends nothing to the API.
    """

    tv: float = 0.0
    l2: float = 0.0
    l1: float = 0.0

    @classmethod
    def from_cfg(cls, cfg: PriorParams) -> "ImagePrior":
        return cls(cfg.tv, cfg.l2, cfg.l1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0])
        if self.tv:
            out = out + self.tv * total_variation(x)
        if self.l2:
            out = out + self.l2 * x.pow(2).flatten(1).sum(1)
        if self.l1:
            out = out + self.l1 * x.abs().flatten(1).sum(1)
        return out


def _generate(state: InversionState, rows: torch.Tensor | None) -> torch.Tensor:
    """Images of the rows `rows` (default all), ``[B, C, H, W]``.

    The generator always runs on all latent codes, so its BN uses the statistics
    of the whole task (as during `invert`) and a subset of rows comes out exactly
    as it would in the whole batch; only the chosen rows go to the API.
    """
    state.generator.train()
    x = state.generator(state.z)
    return x if rows is None else x[rows]


def inversion_step(state: InversionState, api: BlackBoxAPI, estimator: GradientEstimator,
                   loss_fn: GroupLoss, rows: torch.Tensor | None = None, prior: ImagePrior = ImagePrior()) -> dict:
    """One generator update; `rows` picks the images that are queried and moved (default all).

    `prior` adds a data-free image prior with its exact gradient (no API cost).

    Returns ``{"loss": mean loss at x, "acc": API top-1 agreement with the labels}``.
    """
    y = state.labels if rows is None else state.labels[rows]
    x = _generate(state, rows)
    g, loss, probs = estimator.estimate(api, x, lambda pts, p: loss_fn(pts, p, y))
    surrogate = (x * g.detach()).flatten(1).sum(1).mean()
    if prior.tv or prior.l2 or prior.l1:
        surrogate = surrogate + prior(x).mean()
    state.optimizer.zero_grad(set_to_none=True)
    surrogate.backward()
    state.optimizer.step()
    return {"loss": loss.mean().item(), "acc": (probs.argmax(1) == y).float().mean().item()}


def ce_group_loss(pts: torch.Tensor, probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``CE(A(x), y)`` per image: ``[G, B]``."""
    return ce_on_probs(probs, y)


@torch.no_grad()
def render(state: InversionState, api: BlackBoxAPI, rows: torch.Tensor | None = None):
    """Final images ``[B, C, H, W]`` and the API's answers on them ``[B, N]`` (counted queries)."""
    x = _generate(state, rows)
    return x, api.query(x)


def more_steps(history: list[dict], cfg: BidfParams) -> bool:
    """Whether an API's inversion takes another generator step, given the steps done so far (`history`).

    Always below ``cfg.steps``. Beyond it, while the last step's agreement (the
    share of the unperturbed batch the API put in the class aimed at, known
    without extra queries) is below ``cfg.target_agreement``, for up to
    ``cfg.extra_steps`` more. Some APIs start out answering
    one class for every generated image and need more steps before zero-order
    estimates move them (measured: README); the extra API images go only to
    those. The rule reads nothing but `history`, so a resumed inversion takes
    the same steps.
    """
    k = len(history)
    if k < cfg.steps:
        return True
    return k < cfg.steps + cfg.extra_steps and history[-1]["acc"] < cfg.target_agreement


def invert_api(api: BlackBoxAPI, per_class: int, channels: int, image_size: int, cfg: BidfParams,
               generator: GeneratorParams, prior: ImagePrior, estimator: GradientEstimator, seed: int,
               device: torch.device, state: InversionState | None = None,
               on_step: Callable[[InversionState], None] | None = None):
    """Recover ``per_class`` images per class of `api` by BiDf-MKD's inversion.

    `state` (optional) is the inversion to carry on, e.g. restored from a
    checkpoint: its ``history`` says how many steps are done (:func:`more_steps` says how many follow).
    `on_step(state)` (optional) runs before every step and before the final
    answers are queried, the points where the state is whole (checkpoints).

    Returns:
        ``(images, answers, state)``: images ``[N, per_class, C, H, W]``, the API's answers ``[N, per_class, N]``,
        and the inversion state (to continue in `distill`; its ``history`` holds the per-step loss and
        agreement).
    """
    if state is None:
        state = new_state(api.num_classes, per_class, channels, image_size, generator, seed, device)
    while more_steps(state.history, cfg):
        if on_step is not None:
            on_step(state)
        state.history.append(inversion_step(state, api, estimator, ce_group_loss, prior=prior))
    if on_step is not None:
        on_step(state)
    x, probs = render(state, api)
    n = api.num_classes
    return x.view(n, per_class, *x.shape[1:]).cpu(), probs.view(n, per_class, n).cpu(), state


@register
class BiDf(RecoveryMethod):
    """``invert.method: bidf``: BiDf-MKD's inversion, ``CE(A(G(z)), y)`` by forward differences (Hu et al., ICML
    2023, Eq. 4; DFME's estimator): each step costs ``(q + 1)`` API images per image, the final answers ``N * n``.

    API i's generator comes from its own seed (``derive_seed(seed, "invert", i)``). Its directions come, with
    ``bidf.directions: shared``, from one stream for all APIs in order (``derive_seed(seed, "invert-directions")``,
    as the release draws them; the run is then sequential), or, with ``per_api``, from its own stream
    (``derive_seed(seed, "invert-directions", i)``), so its task does not depend on the APIs before it and the
    APIs can run on parallel workers. An API can be checkpointed within its steps (the estimator's random state
    with it). ``bidf.gradient: exact`` is the white-box reference (:class:`~dfml.inversion.gradients.ExactGradient`).
    """

    name = "bidf"
    steps_resumable = True

    def __init__(self, cfg, channels, image_size, device, seed):
        super().__init__(cfg, channels, image_size, device, seed)
        self.estimator = self._estimator(None)

    def _estimator(self, index: int | None) -> GradientEstimator:
        names = ("invert-directions",) if index is None else ("invert-directions", index)
        return build_estimator(self.cfg.bidf, torch.Generator().manual_seed(derive_seed(self.seed, *names)))

    order_hint = ("invert.bidf.directions: shared draws one stream of directions for all APIs in order; set "
                  "invert.bidf.directions: per_api (each API its own stream)")

    @classmethod
    def order_free_for(cls, cfg) -> bool:
        """With ``per_api`` directions, or with exact gradients (they draw no direction at all)."""
        return cfg.bidf.directions == "per_api" or cfg.bidf.gradient == "exact"

    def planned_images(self, num_classes: int) -> int | None:
        c, n = self.cfg.bidf, self.cfg.images_per_class
        per_image = 1 if c.gradient == "exact" else c.q + 1
        return None if c.extra_steps else c.steps * per_image * num_classes * n + num_classes * n

    def new_state(self, api: BlackBoxAPI, index: int) -> InversionState:
        """API `index`'s fresh generator state (with ``per_api`` directions, its direction stream starts anew)."""
        if self.cfg.bidf.directions == "per_api":
            self.estimator = self._estimator(index)
        return new_state(api.num_classes, self.cfg.images_per_class, self.channels, self.image_size,
                         self.cfg.generator, derive_seed(self.seed, "invert", index), self.device)

    def recover(self, api, index, state=None, on_step=None) -> Recovered:
        state = state if state is not None else self.new_state(api, index)
        x, probs, state = invert_api(api, self.cfg.images_per_class, self.channels, self.image_size, self.cfg.bidf,
                                     self.cfg.generator, ImagePrior.from_cfg(self.cfg.prior), self.estimator, 0,
                                     self.device, state=state, on_step=on_step)
        return Recovered(x, probs, state, list(state.history))

    def state_dict(self) -> dict:
        return {"estimator": self.estimator.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.estimator.load_state_dict(sd["estimator"])

    def boundary(self, apis, entries, generator) -> BoundaryOracle:
        return BoundaryOracle(list(apis), build_estimator(self.cfg.bidf, generator), "api")
