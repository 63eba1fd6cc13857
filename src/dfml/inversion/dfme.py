"""Data-free model extraction through the API (``invert.method: dfme``).

DFME (Truong, Maini, Walls, Papernot, CVPR 2021). Per API, ``invert.dfme.iterations`` rounds of:

- ``generator_steps`` steps of the generator G (fresh latent codes each step) toward images where a student S
  (a Conv4 of our own) and the API disagree most: maximise ``|| l_A(x) - l_S(x) ||_1`` with logits recovered from
  the API's probabilities, ``l = log p - mean(log p)`` (:func:`recovered_logits`); the image gradient of that
  disagreement comes by forward differences through the API (``(q + 1)`` API images per image);
- ``student_steps`` steps of the student toward the API on fresh generated images (one API image each).

The bank is then drawn from the final generator: batches of fresh images go to the API (one image each), and
each image is filed under the class the API answered until every class has n (up to ``draw_batches``; a class
still short takes the images the API gives the highest probability of it). The chosen latent codes become the
generator state, rendered once more together and answered by the API for the bank (``N * n`` images).
`distill`'s boundary queries go to the API with DFME's own q and mu.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.losses import EPS
from ..core.seeding import derive_seed
from ..models.conv4 import Conv4
from ..models.generator import Generator
from .gradients import ZeroOrderGradient
from .invert import InversionState, render
from .methods import BoundaryOracle, Recovered, RecoveryMethod, register


def recovered_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits from probabilities, up to the constant a softmax ignores: ``log p - mean(log p)`` over classes
    (DFME's logit recovery), ``[..., N] -> [..., N]``; probabilities are clamped at 1e-8 first."""
    logp = probs.clamp_min(EPS).log()
    return logp - logp.mean(-1, keepdim=True)


def centred(logits: torch.Tensor) -> torch.Tensor:
    """A student's logits centred the same way: ``l - mean(l)``."""
    return logits - logits.mean(-1, keepdim=True)


@register
class DFME(RecoveryMethod):
    """``invert.method: dfme`` (see the module docstring)."""

    name = "dfme"

    def planned_images(self, num_classes: int) -> int | None:
        return None  # the draws depend on the API's answers

    def recover(self, api, index, state=None, on_step=None) -> Recovered:
        cfg, c, dev = self.cfg, self.cfg.dfme, self.device
        seed = derive_seed(self.seed, "dfme", index)
        rng = torch.Generator().manual_seed(seed)
        ways, n, g = api.num_classes, cfg.images_per_class, cfg.generator
        torch.manual_seed(seed)
        gen = Generator(g.latent_dim, self.channels, self.image_size, g.width).to(dev)
        gen = gen.to(memory_format=torch.channels_last)
        opt_g = torch.optim.Adam(gen.parameters(), lr=g.lr, betas=(0.5, 0.999))
        torch.manual_seed(derive_seed(seed, "student"))
        student = Conv4(self.channels, ways, self.image_size, hidden=c.student_width).to(dev)
        student = student.to(memory_format=torch.channels_last)
        opt_s = torch.optim.Adam(student.parameters(), lr=c.student_lr)
        est = ZeroOrderGradient(c.q, c.mu, torch.Generator().manual_seed(derive_seed(seed, "directions")))
        history = []

        def disagreement(pts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
            """``-|| l_A - l_S ||_1`` per image, ``[G, B]``: minimised, it maximises the disagreement."""
            with torch.no_grad():
                s = torch.stack([student(p.contiguous(memory_format=torch.channels_last)) for p in pts])
            return -(recovered_logits(probs) - centred(s)).abs().sum(-1)

        for it in range(c.iterations):
            gen.train()
            student.eval()
            for _ in range(c.generator_steps):
                x = gen(torch.randn(c.batch, g.latent_dim, generator=rng).to(dev))
                grad, loss, _ = est.estimate(api, x, disagreement)
                opt_g.zero_grad(set_to_none=True)
                (x * grad.detach()).flatten(1).sum(1).mean().backward()
                opt_g.step()
            student.train()
            for _ in range(c.student_steps):
                with torch.no_grad():
                    x = gen(torch.randn(c.batch, g.latent_dim, generator=rng).to(dev))
                target = recovered_logits(api.query(x))
                s_loss = (centred(student(x.contiguous(memory_format=torch.channels_last))) - target).abs().sum(-1).mean()
                opt_s.zero_grad(set_to_none=True)
                s_loss.backward()
                opt_s.step()
            history.append({"iteration": it, "disagreement": -loss.mean().item(), "student_l1": s_loss.item()})
        z, labels = self._draw(api, gen, rng)
        state = _state(gen, z, labels, g)
        state.history[:] = history
        x, probs = render(state, api)
        return Recovered(x.view(ways, n, *x.shape[1:]).cpu(), probs.view(ways, n, ways).cpu(), state, history)

    def _draw(self, api, gen: nn.Module, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent codes ``[N*n, latent]`` of images filed under the API's answer, class-major, and their labels."""
        c, n, ways = self.cfg.dfme, self.cfg.images_per_class, api.num_classes
        latent = self.cfg.generator.latent_dim
        batch = max(c.batch, ways * n)
        zs, ps = [], []
        for _ in range(c.draw_batches):
            z = torch.randn(batch, latent, generator=rng).to(self.device)
            with torch.no_grad():
                gen.train()
                zs.append(z)
                ps.append(api.query(gen(z)))
            top = torch.cat(ps).argmax(1)
            if all(int((top == k).sum()) >= n for k in range(ways)):
                break
        z, p = torch.cat(zs), torch.cat(ps)
        top, chosen = p.argmax(1), []
        for k in range(ways):
            mine = torch.nonzero(top == k).flatten()[:n]
            if len(mine) < n:  # a class the API rarely answers: the images most probable for it
                rest = torch.tensor([i for i in p[:, k].argsort(descending=True).tolist() if i not in set(mine.tolist())
                                     and all(i not in ch.tolist() for ch in chosen)][:n - len(mine)])
                mine = torch.cat([mine, rest.to(mine.device, torch.long)])
            chosen.append(mine)
        rows = torch.cat(chosen)
        return z[rows], torch.arange(ways, device=self.device).repeat_interleave(n)

    def boundary(self, apis, entries, generator) -> BoundaryOracle:
        return BoundaryOracle(list(apis), ZeroOrderGradient(self.cfg.dfme.q, self.cfg.dfme.mu, generator), "api")


def _state(gen: nn.Module, z: torch.Tensor, labels: torch.Tensor, g) -> InversionState:
    """An inversion state around an existing generator and chosen latent codes (distill continues from it)."""
    z = torch.nn.Parameter(z.detach().clone())
    opt = torch.optim.Adam([{"params": gen.parameters(), "lr": g.lr}, {"params": [z], "lr": g.lr_latent}],
                           betas=(0.5, 0.999))
    return InversionState(gen, z, labels, opt)
