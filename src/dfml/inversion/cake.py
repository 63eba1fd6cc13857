"""Contrastive recovery at the API's decision boundary (``invert.method: cake``).

CAKE (Braun, Mundt, Kersting, "Deep Classifier Mimicry without Data Access", 2023): synthetic samples come in
pairs across classes and are driven contrastively toward the model's decision boundary, with a total-variation
prior and noise that spreads them along it. CAKE takes input gradients from the model; its outlook asks for
estimated gradients to make it truly black-box, which is what this is: every gradient of an API-dependent term is
a forward-difference estimate through the API.

Per API, the generator and latent codes of the task (N classes x n, as BiDf-MKD's) take ``invert.cake.steps``
steps of

    CE(A(x_i), y_i) + contrast * (log p_{y_i}(x_i) - log p_{y_j}(x_i))^2 + prior(x_i)

where j is x_i's partner, an image of another class (:func:`partners`): the second term is zero on the API's
boundary between the two classes and grows away from it, while the first keeps x_i on its own side. After each
step the latent codes take Langevin noise ``sqrt(2 lr_latent) * noise * N(0, I)``. Each step costs ``(q + 1)``
API images per image, the final answers ``N * n``. `distill`'s boundary queries go to the API with CAKE's q, mu.
"""

from __future__ import annotations

import math

import torch

from ..core.losses import EPS, ce_on_probs
from ..core.seeding import derive_seed
from .gradients import ZeroOrderGradient
from .invert import ImagePrior, inversion_step, new_state, render
from .methods import BoundaryOracle, Recovered, RecoveryMethod, register


def partners(labels: torch.Tensor, ways: int, gen: torch.Generator) -> torch.Tensor:
    """For each image ``[B]`` (labels, class-major) the index of a partner image of another class, drawn by `gen`."""
    b = len(labels)
    other = (labels + 1 + torch.randint(ways - 1, (b,), generator=gen).to(labels.device)) % ways  # its class
    per_class = b // ways
    return other * per_class + torch.randint(per_class, (b,), generator=gen).to(labels.device)


def boundary_term(probs: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor) -> torch.Tensor:
    """``(log p_y - log p_pair)^2`` per image ``[..., B]``: zero where the API is undecided between the image's
    class and its partner's, positive elsewhere; 0 for a pair of one class (there is no boundary between them)."""
    logp = probs.clamp_min(EPS).log()
    own = logp.gather(-1, labels.expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    other = logp.gather(-1, partner_labels.expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return (own - other).pow(2) * (labels != partner_labels).to(probs.dtype)


def cake_loss(probs: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor, contrast: float) -> torch.Tensor:
    """CAKE's per-image loss on API answers ``[..., B, N]``: ``CE(p, y) + contrast * boundary_term``, ``[..., B]``."""
    return ce_on_probs(probs, labels) + contrast * boundary_term(probs, labels, partner_labels)


@register
class CAKE(RecoveryMethod):
    """``invert.method: cake`` (see the module docstring)."""

    name = "cake"

    def planned_images(self, num_classes: int) -> int:
        c, n = self.cfg.cake, self.cfg.images_per_class
        return c.steps * (c.q + 1) * num_classes * n + num_classes * n

    def recover(self, api, index, state=None, on_step=None) -> Recovered:
        cfg, c = self.cfg, self.cfg.cake
        seed = derive_seed(self.seed, "cake", index)
        rng = torch.Generator().manual_seed(seed)
        ways, n = api.num_classes, cfg.images_per_class
        state = new_state(ways, n, self.channels, self.image_size, cfg.generator, seed, self.device)
        pair = partners(state.labels, ways, rng)
        pair_labels = state.labels[pair]
        est = ZeroOrderGradient(c.q, c.mu, torch.Generator().manual_seed(derive_seed(seed, "directions")))
        prior = ImagePrior(cfg.prior.tv + c.tv, cfg.prior.l2, cfg.prior.l1)
        scale = math.sqrt(2 * cfg.generator.lr_latent) * c.noise
        for _ in range(c.steps):
            step = inversion_step(state, api, est, lambda pts, p, y: cake_loss(p, y, pair_labels, c.contrast),
                                  prior=prior)
            state.history.append(step)
            if scale:
                with torch.no_grad():
                    state.z.add_(torch.randn(state.z.shape, generator=rng).to(state.z.device) * scale)
        x, probs = render(state, api)
        return Recovered(x.view(ways, n, *x.shape[1:]).cpu(), probs.view(ways, n, ways).cpu(), state,
                         list(state.history))

    def boundary(self, apis, entries, generator) -> BoundaryOracle:
        return BoundaryOracle(list(apis), ZeroOrderGradient(self.cfg.cake.q, self.cfg.cake.mu, generator), "api")
