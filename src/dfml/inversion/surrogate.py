"""Query-efficient recovery through a local clone of the API (``invert.method: surrogate``).

After IDEAL (Zhang, Chen, Lyu, ICLR 2023: "label generated images once, train a local clone, do the costly
optimisation against the clone") and DFMS-HL (Sanyal, Addepalli, Babu, CVPR 2022: model stealing from hard
labels). Per API, in ``invert.surrogate.rounds`` rounds:

1. the generator and its latent codes (the images to recover, N classes x n) are optimised against the clone
   with exact gradients: ``CE(clone(G(z)), y)`` plus the image prior (and a class-balance term);
2. ``images_per_round`` fresh images (the current ones first) are sent to the API, one API image each;
3. the clone (a Conv4 of our own, never the API's architecture) is trained on every answer so far, with the KL
   to the target each answer decodes to: full, top-k, hard-label or rounded answers alike (the clone learns from
   what the API returns).

Then the generator takes its last steps against the final clone, and the recovered images are sent once more
for the bank's answers (with ``bank_targets: clone`` the bank files the final clone's probabilities instead, soft
targets where the API answers a label or a top-k, and keeps the API's answers as ``api_answers`` for the
agreement). An API costs ``rounds * images_per_round + N * n`` API images and no zero-order query.
`distill`'s boundary queries then ask the clone (exact gradients, no API image): :meth:`Surrogate.boundary`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..api.base import BlackBoxAPI, QueryLedger
from ..core.losses import kd_loss
from ..core.seeding import derive_seed
from ..models.conv4 import Conv4
from .gradients import ExactGradient
from .invert import ImagePrior, InversionState, new_state, render
from .methods import BoundaryOracle, Recovered, RecoveryMethod, register


def build_clone(channels: int, num_classes: int, image_size: int, width: int, seed: int) -> nn.Module:
    """The clone: Conv4 with `width` filters and ordinary BN (running statistics), ``[B, C, S, S] -> [B, N]``."""
    torch.manual_seed(seed)
    return Conv4(channels, num_classes, image_size, hidden=width).to(memory_format=torch.channels_last)


class CloneAPI(BlackBoxAPI):
    """A trained clone behind the query interface: local (its own ledger: no API image), differentiable.

    `distill`'s boundary queries ask it in place of the API; :class:`~dfml.inversion.gradients.ExactGradient`
    reads its ``differentiable_probs``.
    """

    def __init__(self, name: str, net: nn.Module, input_shape: tuple[int, int, int], ledger: QueryLedger,
                 device: torch.device):
        super().__init__(name, net.head.out_features, input_shape, ledger)
        self._net = net.to(device).eval()
        self._device = device

    def _answer(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.differentiable_probs(images, count=False)

    def differentiable_probs(self, images: torch.Tensor, count: bool = True) -> torch.Tensor:
        if count:
            self.ledger.count(self.name, images.shape[0])
        x = images.to(self._device).contiguous(memory_format=torch.channels_last)
        return F.softmax(self._net(x), dim=1).to(images.device)


def balance_term(logits: torch.Tensor) -> torch.Tensor:
    """Negative entropy of the batch's mean prediction (IDEAL's class balance), a scalar: ``sum p_bar log p_bar``,
    lowest (``-log N``) when the batch covers the classes evenly."""
    mean = F.softmax(logits, dim=1).mean(0)
    return (mean * mean.clamp_min(1e-8).log()).sum()


@register
class Surrogate(RecoveryMethod):
    """``invert.method: surrogate`` (see the module docstring)."""

    name = "surrogate"

    def planned_images(self, num_classes: int) -> int:
        c = self.cfg.surrogate
        return c.rounds * c.images_per_round + num_classes * self.cfg.images_per_class

    def recover(self, api, index, state=None, on_step=None) -> Recovered:
        cfg, c, dev = self.cfg, self.cfg.surrogate, self.device
        seed = derive_seed(self.seed, "surrogate", index)
        rng = torch.Generator().manual_seed(seed)
        n, ways = cfg.images_per_class, api.num_classes
        state = new_state(ways, n, self.channels, self.image_size, cfg.generator, seed, dev)
        clone = build_clone(self.channels, ways, self.image_size, c.clone_width, derive_seed(seed, "clone")).to(dev)
        opt = torch.optim.Adam(clone.parameters(), lr=c.clone_lr)
        prior = ImagePrior.from_cfg(cfg.prior)
        seen_x: list[torch.Tensor] = []
        seen_t: list[torch.Tensor] = []
        for r in range(c.rounds):
            if r:
                loss = self._fit_generator(state, clone, prior)
            else:
                loss = float("nan")
            x = self._round_images(state, c.images_per_round, rng)
            probs = api.query(x)  # one API image per image
            with torch.no_grad():
                clone.eval()
                before = (clone(x.contiguous(memory_format=torch.channels_last)).argmax(1) == probs.argmax(1))
            rows = min(len(x), len(state.labels))
            aimed = (probs[:rows].argmax(1) == state.labels[:rows]).float().mean().item()
            seen_x.append(x.detach().cpu())
            seen_t.append(probs.detach().cpu())
            self._fit_clone(clone, opt, torch.cat(seen_x), torch.cat(seen_t), rng)
            state.history.append({"round": r, "loss": loss, "acc": aimed,
                                  "clone_agreement": before.float().mean().item()})
        self._fit_generator(state, clone, prior)
        x, probs = render(state, api)
        extra = {"clone": {"width": c.clone_width,
                           "state_dict": {k: v.detach().cpu() for k, v in clone.state_dict().items()}}}
        if c.bank_targets == "clone":  # the clone's soft answers go to the bank, the API's stay for the agreement
            extra["api_answers"] = probs.view(ways, n, ways).cpu()
            with torch.no_grad():
                clone.eval()
                probs = F.softmax(clone(x.contiguous(memory_format=torch.channels_last)), dim=1)
        return Recovered(x.view(ways, n, *x.shape[1:]).cpu(), probs.view(ways, n, ways).cpu(), state,
                         list(state.history), extra)

    def _round_images(self, state: InversionState, count: int, rng: torch.Generator) -> torch.Tensor:
        """The round's queries ``[count, C, H, W]``: the images being recovered (as many as fit), then images of
        fresh latent codes through the same generator."""
        with torch.no_grad():
            state.generator.train()
            x = state.generator(state.z)
            if count <= len(x):
                return x[torch.randperm(len(x), generator=rng)[:count].to(x.device)].detach()
            z = torch.randn(count - len(x), state.z.shape[1], generator=rng).to(x.device)
            return torch.cat([x, state.generator(z)]).detach()

    def _fit_generator(self, state: InversionState, clone: nn.Module, prior: ImagePrior) -> float:
        """``generator_steps`` steps of ``CE(clone(G(z)), y) + balance + prior`` with exact gradients; the last loss."""
        c = self.cfg.surrogate
        clone.eval()
        for p in clone.parameters():
            p.requires_grad_(False)
        loss_value = float("nan")
        for _ in range(c.generator_steps):
            state.generator.train()
            x = state.generator(state.z)
            logits = clone(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, state.labels)
            if c.balance:
                loss = loss + c.balance * balance_term(logits)
            if prior.tv or prior.l2 or prior.l1:
                loss = loss + prior(x).mean()
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            loss_value = loss.item()
        for p in clone.parameters():
            p.requires_grad_(True)
        return loss_value

    def _fit_clone(self, clone: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, t: torch.Tensor,
                   rng: torch.Generator) -> None:
        """``clone_steps`` Adam steps of the KL to the API's answers on minibatches of every answered image."""
        c = self.cfg.surrogate
        clone.train()
        b = min(c.clone_batch, len(x))
        order = torch.cat([torch.randperm(len(x), generator=rng) for _ in range(math.ceil(c.clone_steps * b / len(x)))])
        for step in range(c.clone_steps):
            idx = order[step * b:(step + 1) * b]
            xb = x[idx].to(self.device).contiguous(memory_format=torch.channels_last)
            loss = kd_loss(clone(xb), t[idx].to(self.device), 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def boundary(self, apis, entries, generator) -> BoundaryOracle:
        ledger = QueryLedger()  # local answers: no API image
        clones = []
        for api, entry in zip(apis, entries):
            spec = entry["clone"]
            net = build_clone(self.channels, api.num_classes, self.image_size, spec["width"], 0)
            net.load_state_dict(spec["state_dict"])
            clones.append(CloneAPI(f"{api.name}-clone", net, api.input_shape, ledger, self.device))
        return BoundaryOracle(clones, ExactGradient(), "clone")
