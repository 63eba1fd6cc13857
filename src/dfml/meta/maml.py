"""MAML on real meta-train images: the non-data-free upper reference (Finn et al., ICML 2017)."""

from __future__ import annotations

import torch

from ..data.episodes import episode_labels, sample_episodes
from ..data.prepared import Prepared
from .trainer import Task


def real_task_sampler(data: Prepared, ways: int, shots: int, query_shots: int, tasks: int, seed: int,
                      device: torch.device):
    """``iteration -> [Task]`` of real N-way tasks from the train split (CE inside and outside)."""
    ys = episode_labels(ways, shots).to(device)
    yq = episode_labels(ways, query_shots).to(device)
    shape = data.images.shape[1:]

    def make(it: int) -> list[Task]:
        eps = sample_episodes(data, "train", tasks, ways, shots, query_shots, seed * 1_000_003 + it, "maml_real")
        out = []
        for e in range(tasks):
            xs = data.images[eps.support[e]].view(-1, *shape).to(device)
            xq = data.images[eps.query[e]].view(-1, *shape).to(device)
            out.append(Task(xs, ys, (xq, yq), "ce"))
        return out

    return make
