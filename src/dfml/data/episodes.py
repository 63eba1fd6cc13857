"""Seeded N-way K-shot episode sampling from real classes.

An episode's support set is ``[N*K, C, H, W]`` with labels ``[N*K]`` in
``0..N-1`` (class-major order), its query set ``[N*Q, C, H, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ParamError
from .prepared import Prepared


@dataclass
class EpisodeIndex:
    """Image indices of E episodes: ``support [E, N*K]``, ``query [E, N*Q]`` (int64)."""

    support: torch.Tensor
    query: torch.Tensor
    ways: int
    shots: int
    queries: int


def sample_episodes(data: Prepared, split: str, episodes: int, ways: int, shots: int, queries: int,
                    seed: int, keys: str = "evaluate", dataset: str | None = None) -> EpisodeIndex:
    """Draw `episodes` episodes from the classes of `split`, reproducibly from `seed`.

    With `dataset` (the mh scenario), only that dataset's classes of `split` are drawn.
    Raises ParamError (naming the params section `keys`) when the split has fewer
    than `ways` classes or a class has fewer than `shots + queries` images.
    """
    classes = data.split_classes(split, dataset)
    if len(classes) < ways:
        which = f"{dataset}'s {split}" if dataset else split
        raise ParamError(f"{which} split has {len(classes)} classes, fewer than {ways} ways; "
                         f"lower the ways or keep more classes (data.subset.classes_per_split)")
    need = shots + queries
    small = [data.class_names[c] for c in classes if len(data.by_class[c]) < need]
    if small:
        raise ParamError(f"{split} split: {len(small)} classes have fewer than shots + queries = {need} images "
                         f"(e.g. {small[0]!r}); lower the shots or queries in params section `{keys}`")
    gen = torch.Generator().manual_seed(seed)
    sup = torch.empty(episodes, ways * shots, dtype=torch.long)
    qry = torch.empty(episodes, ways * queries, dtype=torch.long)
    cls_t = torch.tensor(classes)
    for e in range(episodes):
        chosen = cls_t[torch.randperm(len(classes), generator=gen)[:ways]]
        s_rows, q_rows = [], []
        for c in chosen.tolist():
            pool = data.by_class[c]
            pick = pool[torch.randperm(len(pool), generator=gen)[:need]]
            s_rows.append(pick[:shots])
            q_rows.append(pick[shots:])
        sup[e] = torch.cat(s_rows)
        qry[e] = torch.cat(q_rows)
    return EpisodeIndex(sup, qry, ways, shots, queries)


def episode_labels(ways: int, per_class: int, episodes: int | None = None) -> torch.Tensor:
    """Class-major labels ``[N*per_class]`` (or ``[E, N*per_class]`` when `episodes` is given)."""
    y = torch.arange(ways).repeat_interleave(per_class)
    return y if episodes is None else y.expand(episodes, -1).clone()
