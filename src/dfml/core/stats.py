"""95% confidence intervals of mean accuracies."""

from __future__ import annotations

import math

import numpy as np


def ci95(acc) -> float:
    """Half-width of the normal 95% interval of the mean: ``1.96 * std / sqrt(n)`` (std with ddof=0, as MAML)."""
    acc = np.asarray(acc, dtype=np.float64)
    return float(1.96 * acc.std() / math.sqrt(len(acc)))


def ci95_of_mean(cis: list[float]) -> float:
    """Half-width of the 95% interval of the mean of D independent per-dataset means, from their half-widths:
    ``sqrt(sum ci_d^2) / D`` (the mh scenario's mean over datasets)."""
    if len(cis) == 1:
        return float(cis[0])
    return float(math.sqrt(sum(c * c for c in cis)) / len(cis))
