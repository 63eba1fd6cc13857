"""Input-gradient estimators of a per-image loss that depends on an API's answers.

A loss function here maps ``(x [G, B, C, H, W], probs [G, B, N]) -> [G, B]``:
G groups of the same B images (the unperturbed batch and its perturbed copies),
so a loss that also runs a network with batch-statistic BN sees one group at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from ..api.base import BlackBoxAPI
from .params import BidfParams

GroupLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GradientEstimator(ABC):
    """``estimate(api, x, loss_fn) -> (grad [B, C, H, W], loss [B], probs [B, N])`` at x."""

    @abstractmethod
    def estimate(self, api: BlackBoxAPI, x: torch.Tensor, loss_fn: GroupLoss):
        ...

    def state_dict(self) -> dict:
        """The estimator's random state (for checkpoints); none by default."""
        return {}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`state_dict`."""


class ZeroOrderGradient(GradientEstimator):
    """Forward differences over random unit-sphere directions (BiDf-MKD Eq. 4; DFME, Truong et al. 2021).

    ``g(x) = (d/q) * sum_j [(l(x + mu u_j) - l(x)) / mu] u_j``, ``u_j`` uniform on the
    unit sphere of R^d (d = C*H*W), one set of q directions per image; probes are
    clipped to the valid image range [0, 1] (x itself must lie in it). All
    ``(q+1) * B`` images go to the API in one `query` call (chunked by the API
    client, every image counted); no direction is ever dropped.

    Args:
        q: directions per image. mu: difference step. generator: seeded torch RNG.
    """

    def __init__(self, q: int, mu: float, generator: torch.Generator):
        self.q, self.mu, self.gen = q, mu, generator

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.gen.set_state(sd["gen"])

    def estimate(self, api, x, loss_fn):
        x = x.detach()
        b = x.shape[0]
        d = x[0].numel()
        u = torch.randn(self.q, b, d, generator=self.gen).to(x.device)
        u = u / u.norm(dim=-1, keepdim=True)
        # Probes stay valid images (APIs take [0, 1]); a probe clipped at a saturated pixel just
        # sees no change there. The slope divides by mu, the step of an unclipped probe.
        probes = (x.unsqueeze(0) + self.mu * u.view(self.q, *x.shape)).clamp(0, 1)
        pts = torch.cat([x.unsqueeze(0), probes])  # [q+1, B, C, H, W]
        probs = api.query(pts.flatten(0, 1)).view(self.q + 1, b, -1)
        with torch.no_grad():
            losses = loss_fn(pts, probs)  # [q+1, B]
        slopes = (losses[1:] - losses[0]) / self.mu  # [q, B]
        g = (d / self.q) * torch.einsum("qb,qbd->bd", slopes, u)
        return g.view_as(x), losses[0], probs[0]


class ExactGradient(GradientEstimator):
    """White-box reference: true input gradients through a :class:`~dfml.api.WhiteBoxAPI`."""

    def estimate(self, api, x, loss_fn):
        if not hasattr(api, "differentiable_probs"):
            raise TypeError(f"invert.gradient: exact needs a white-box API; {api.name} is black-box")
        x = x.detach().requires_grad_(True)
        probs = api.differentiable_probs(x)
        loss = loss_fn(x.unsqueeze(0), probs.unsqueeze(0))[0]
        (g,) = torch.autograd.grad(loss.sum(), x)
        return g, loss.detach(), probs.detach()


# invert.bidf.gradient -> (bidf params, direction RNG) -> estimator
ESTIMATORS: dict[str, Callable[[BidfParams, torch.Generator], GradientEstimator]] = {
    "zo": lambda cfg, gen: ZeroOrderGradient(cfg.q, cfg.mu, gen),
    "exact": lambda cfg, gen: ExactGradient(),
}


def build_estimator(cfg: BidfParams, gen: torch.Generator) -> GradientEstimator:
    return ESTIMATORS[cfg.gradient](cfg, gen)
