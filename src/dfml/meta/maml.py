"""MAML on real meta-train images: the non-data-free upper reference (Finn et al., ICML 2017)."""

from __future__ import annotations

import torch

from ..data.episodes import episode_labels, sample_episodes
from ..data.prepared import Prepared
from ..utils import derive_seed
from .trainer import Task


def real_task_sampler(data: Prepared, ways: int, shots: int, query_shots: int, tasks: int, seed: int,
                      device: torch.device):
    """``iteration -> [Task]`` of real N-way tasks from the train split (CE inside and outside).

    With several datasets (mh), every task comes from one dataset's train classes, the datasets taken in turn.
    """
    ys = episode_labels(ways, shots).to(device)
    yq = episode_labels(ways, query_shots).to(device)

    def episodes(it: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(support, query) image indices of the tasks of meta-iteration `it`."""
        if not data.multi:
            eps = sample_episodes(data, "train", tasks, ways, shots, query_shots, seed * 1_000_003 + it, "maml_real")
            return list(zip(eps.support, eps.query))
        out = []
        for e in range(tasks):  # mh: each task from one dataset, the datasets in turn
            d = data.datasets[((it - 1) * tasks + e) % len(data.datasets)]
            eps = sample_episodes(data, "train", 1, ways, shots, query_shots, derive_seed(seed, it, e), "maml_real",
                                  dataset=d)
            out.append((eps.support[0], eps.query[0]))
        return out

    def make(it: int) -> list[Task]:
        out = []
        for sup, qry in episodes(it):
            xs = data.pixels(sup, device)
            xq = data.pixels(qry, device)
            out.append(Task(xs, ys, (xq, yq), "ce"))
        return out

    return make
