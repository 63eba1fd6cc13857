"""Losses on API answers, shared by inversion, meta-learning and the baselines.

APIs answer probabilities, not logits, so a teacher distribution at temperature T
is ``softmax(log p / T)`` (equal to the API's own tempered softmax when p came
from logits). Everything is computed from log-probabilities.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

EPS = 1e-8


def teacher_log_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[B, N]`` API probabilities -> ``[B, N]`` tempered log-probabilities."""
    return F.log_softmax(torch.log(probs.clamp_min(EPS)) / temperature, dim=-1)


def kd_per_sample(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(p_T || p_S) * T^2`` per sample, ``[..., B, N] -> [..., B]`` (Hinton et al., 2015).

    A true KL divergence between temperature-softened distributions: zero when
    the two agree, positive otherwise (unlike ``F.kl_div`` on probabilities).
    """
    t = teacher_log_probs(teacher_probs, temperature)
    s = F.log_softmax(student_logits / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Batch mean of :func:`kd_per_sample`; a scalar."""
    return kd_per_sample(student_logits, teacher_probs, temperature).mean()


def ce_on_probs(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of API answers ``[..., B, N]`` against target labels ``[B]``: ``[..., B]``."""
    p = probs.clamp_min(EPS).log()
    return -p.gather(-1, labels.expand(p.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def boundary_loss(api_probs: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                  lam: float, temperature: float = 1.0) -> torch.Tensor:
    """Boundary query loss of BiDf-MKD (Hu et al., ICML 2023, Eq. 7), per sample ``[..., B]``.

    ``CE(A(x), y) - lam * eta * KD(F(x; theta_i), A(x))`` with ``eta = 1`` where the
    adapted model and the API agree on the top class, else 0. Minimising it keeps
    x in class y for the API while pushing it to where the student starts to
    disagree: the API's decision boundary.
    """
    eta = (student_logits.argmax(-1) == api_probs.argmax(-1)).to(api_probs.dtype)
    return ce_on_probs(api_probs, labels) - lam * eta * kd_per_sample(student_logits, api_probs, temperature)
