"""MAML on real meta-train images: the non-data-free upper reference (Finn et al., ICML 2017)."""

from __future__ import annotations

import torch

from ..core.seeding import derive_seed
from ..data.episodes import episode_labels, sample_episodes
from ..data.prepared import Prepared
from .trainer import Task


def real_task_sampler(data: Prepared, ways: int, shots: int | list[int], query_shots: int, tasks: int, seed: int,
                      device: torch.device):
    """``iteration -> [Task]`` of real N-way tasks from the train split (CE inside and outside).

    `shots` is the support size of every task, or a list each task draws one from (seed
    ``derive_seed(seed, "shots", it, e)``: the same for any resume point), as ``distill.support_shots``.
    With several datasets (mh), every task comes from one dataset's train classes, the datasets taken in turn.
    """
    yq = episode_labels(ways, query_shots).to(device)

    def shots_of(it: int, e: int) -> int:
        if isinstance(shots, int):
            return shots
        gen = torch.Generator().manual_seed(derive_seed(seed, "shots", it, e))
        return int(shots[int(torch.randint(len(shots), (1,), generator=gen))])

    def episodes(it: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(support, query) image indices of the tasks of meta-iteration `it`."""
        if not data.multi and isinstance(shots, int):
            eps = sample_episodes(data, "train", tasks, ways, shots, query_shots, seed * 1_000_003 + it, "maml_real")
            return list(zip(eps.support, eps.query))
        out = []
        for e in range(tasks):  # mh: each task from one dataset, the datasets in turn
            d = data.datasets[((it - 1) * tasks + e) % len(data.datasets)] if data.multi else None
            eps = sample_episodes(data, "train", 1, ways, shots_of(it, e), query_shots, derive_seed(seed, it, e),
                                  "maml_real", dataset=d)
            out.append((eps.support[0], eps.query[0]))
        return out

    def make(it: int) -> list[Task]:
        out = []
        for sup, qry in episodes(it):
            ys = episode_labels(ways, len(sup) // ways).to(device)
            out.append(Task(data.pixels(sup, device), ys, (data.pixels(qry, device), yq), "ce"))
        return out

    return make
