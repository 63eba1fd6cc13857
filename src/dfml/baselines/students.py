"""Data-free knowledge distillation of a student from recovered images and the APIs' answers to them.

One loop serves every baseline: a student whose head has ``A*N`` outputs learns
from the images of A APIs, each image's KD loss taken on the softmax restricted to
the N columns its API owns (API a: columns ``[a*N, (a+1)*N)``). With A = 1 this is
ordinary KD of one N-way student from one API.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from ..core.losses import kd_loss
from .params import StudentParams


def restricted_logits(logits: torch.Tensor, owner: torch.Tensor, ways: int) -> torch.Tensor:
    """The columns each sample's API owns.

    Args:
        logits: ``[B, A*N]`` student logits over the union of the APIs' classes.
        owner: ``[B]`` int64, the API (``0..A-1``) that answered each sample.
        ways: N, the classes of each API.
    Returns:
        ``[B, N]``: row b is ``logits[b, owner[b]*N:(owner[b]+1)*N]``.
    """
    return logits.view(logits.shape[0], -1, ways)[torch.arange(logits.shape[0], device=logits.device), owner]


def minibatches(n: int, batch: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """`steps` index batches ``[min(batch, n)]`` from ``0..n-1``: consecutive passes over seeded
    permutations (every index once per pass; a batch may straddle two passes)."""
    b = min(batch, n)
    perms = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(steps * b / n))])
    yield from perms[:steps * b].view(steps, b)


def distill_student(student: nn.Module, images: torch.Tensor, probs: torch.Tensor, owner: torch.Tensor,
                    cfg: StudentParams, gen: torch.Generator, device: torch.device, desc: str = "KD") -> dict:
    """Train `student` in place: ``cfg.steps`` Adam steps (lr ``cfg.lr``) of the tempered KL
    ``KD(student restricted to the owner's columns, API answer)`` on minibatches of ``cfg.batch_size``.

    Args:
        student: ``[B, C, H, W] -> [B, A*N]`` (BN on batch statistics).
        images: ``[M, C, H, W]`` recovered images (CPU); probs: ``[M, N]`` the APIs' answers to them.
        owner: ``[M]`` int64, the API of each image (all zeros for one API).
        cfg: ``steps``, ``lr``, ``batch_size``, ``temperature``.
        gen: seeds the minibatch order.
    Returns:
        ``{"steps", "initial_loss", "final_loss" (mean of the last tenth of the steps, at least one),
        "agreement_pct"}``; agreement: images whose top class under the student (restricted) is the API's.
    """
    ways = probs.shape[-1]
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    student.train()
    losses = []
    for idx in tqdm(minibatches(len(images), cfg.batch_size, cfg.steps, gen), total=cfg.steps, desc=desc,
                    unit="step", leave=False):
        x = images[idx].to(device).contiguous(memory_format=torch.channels_last)
        logits = restricted_logits(student(x), owner[idx].to(device), ways)
        loss = kd_loss(logits, probs[idx].to(device), cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": cfg.steps, "initial_loss": round(losses[0], 5), "final_loss": round(sum(tail) / len(tail), 5),
            "agreement_pct": round(agreement(student, images, probs, owner, cfg.batch_size, device), 2)}


@torch.no_grad()
def agreement(student: nn.Module, images: torch.Tensor, probs: torch.Tensor, owner: torch.Tensor, batch: int,
              device: torch.device) -> float:
    """Percent of `images` ``[M, C, H, W]`` whose restricted top class agrees with the API's, in
    ``ceil(M / batch)`` near-equal batches of a fixed shuffle (BN uses their statistics, so the batches mix
    classes and APIs as training minibatches do; no batch of one image)."""
    hits = 0
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for idx in order.tensor_split(math.ceil(len(images) / batch)):
        x = images[idx].to(device).contiguous(memory_format=torch.channels_last)
        top = restricted_logits(student(x), owner[idx].to(device), probs.shape[-1]).argmax(-1)
        hits += (top.cpu() == probs[idx].argmax(-1)).sum().item()
    return 100.0 * hits / len(images)
