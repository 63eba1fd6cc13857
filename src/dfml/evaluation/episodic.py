"""Adapt-and-test on batches of real episodes, accuracy with a 95% interval.

Every model is adapted from its initialisation with plain SGD on the support
cross-entropy, BN using batch statistics of each support / query set
(transductive, as in MAML's evaluation), `steps` steps at a learning rate
chosen on meta-val episodes (a meta-learned model: its own inner settings).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.episodes import EpisodeIndex, episode_labels, sample_episodes
from ..data.prepared import Prepared
from ..meta.functional import Params, adapt_and_predict_batched
from ..core.seeding import derive_seed


def episode_accuracies(model: nn.Module, params: Params, data: Prepared, eps: EpisodeIndex, lr: float, steps: int,
                       batch: int, device: torch.device) -> np.ndarray:
    """Accuracy (percent) of each episode in `eps`, ``[E]``."""
    out = []
    ys = episode_labels(eps.ways, eps.shots).to(device)
    yq = episode_labels(eps.ways, eps.queries).to(device)
    for s in range(0, eps.support.shape[0], batch):
        sup, qry = eps.support[s:s + batch], eps.query[s:s + batch]
        e = sup.shape[0]
        xs = data.images[sup].to(device)  # uint8 [e, N*K, C, H, W]: float one episode at a time
        xq = data.images[qry].to(device)
        logits = adapt_and_predict_batched(model, params, xs, ys.expand(e, -1), xq, steps, lr)
        out.append((logits.argmax(-1) == yq).float().mean(1).mul(100).cpu())
    return torch.cat(out).numpy()


def choose_lr(score: Callable[[float], float], grid: list[float]) -> tuple[float, dict]:
    """Best learning rate of `grid` by `score(lr)` (meta-val accuracy); ties go to the first."""
    table = {str(lr): round(score(lr), 3) for lr in grid}
    best = max(grid, key=lambda lr: table[str(lr)])
    return best, table


def val_scorer(model: nn.Module, data: Prepared, ways: int, shots: int, queries: int, episodes: int, seed: int,
               steps: int, lr: float, batch: int, device: torch.device,
               keys: str = "evaluate") -> Callable[[Params], float]:
    """A ``params -> mean meta-val accuracy`` function on fixed seeded val episodes (for checkpoint choice).

    With several datasets (mh), `episodes` val episodes per dataset, each from that dataset's val classes only
    (seed ``derive_seed(seed, dataset)``), and the score is the mean over datasets of their mean accuracies.
    """
    if not data.multi:
        eps = sample_episodes(data, "val", episodes, ways, shots, queries, seed, keys)
        return lambda params: float(episode_accuracies(model, params, data, eps, lr, steps, batch, device).mean())
    per = [sample_episodes(data, "val", episodes, ways, shots, queries, derive_seed(seed, d), keys, dataset=d)
           for d in data.datasets]
    return lambda params: float(np.mean([episode_accuracies(model, params, data, eps, lr, steps, batch,
                                                            device).mean() for eps in per]))
