"""Score meta-learned checkpoints on many fresh meta-val episodes, paired: choosing between whole runs.

`distill` picks its checkpoint on `distill.val_episodes` (100) meta-val episodes,
enough to rank the checkpoints of one run but not to rank two runs (a 1-shot
reading moves by about +-2 points). :func:`score_on_val` adapts every
checkpoint as it was meta-trained (its own inner lr and steps) on the same
seeded meta-**val** episodes (never meta-test) and gives each one's accuracy and
its paired difference to the first, with 95% intervals: choices are made on
meta-val only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.seeding import derive_seed
from ..core.stats import ci95
from ..data.episodes import sample_episodes
from ..data.prepared import Prepared
from .candidates import meta_learned
from .episodic import episode_accuracies
from .params import EvaluateParams


def score_on_val(paths: list[Path], cfg: EvaluateParams, seed: int, ways: int, data: Prepared, episodes: int,
                 shots: list[int], device: torch.device, lrs: list[float] | None = None) -> dict:
    """``{"<K>shot": {row: {"acc", "ci95", "minus_first", "minus_first_ci95"}}}`` over `episodes` meta-val
    episodes per shot (seed ``derive_seed(seed, "score-val", K)``); `paths` are meta-learned checkpoints
    (``models/bidf_mkd.pt``, ``models/maml_real.pt`` or copies of them from other experiments).

    A row is a checkpoint adapted at its own inner lr (row: the path). With `lrs`, each checkpoint also adapts
    at each of those lrs (row ``"<path> @ lr <lr>"``, its own inner steps): does a meta-learned model adapt better
    at another lr than the one it was meta-trained with? The first row (the first path, own lr) is the reference.
    """
    cands = {str(p): meta_learned(Path(p), data.channels, ways, data.image_size, device) for p in paths}
    out = {}
    for k in shots:
        eps = sample_episodes(data, "val", episodes, ways, k, cfg.query, derive_seed(seed, "score-val", k), "evaluate")
        accs = {}
        for p, c in cands.items():
            for lr in [c.own_lr, *(x for x in lrs or [] if x != c.own_lr)]:
                row = p if lr == c.own_lr else f"{p} @ lr {lr:g}"
                accs[row] = episode_accuracies(c.model, c.params, data, eps, lr, c.own_steps, cfg.episode_batch,
                                               device)
        first = accs[str(paths[0])]
        out[f"{k}shot"] = {p: {"acc": round(float(a.mean()), 3), "ci95": round(ci95(a), 3),
                               "minus_first": round(float((a - first).mean()), 3),
                               "minus_first_ci95": round(ci95(a - first), 3)} for p, a in accs.items()}
    return out


def format_scores(scores: dict, episodes: int) -> str:
    """The table :func:`score_on_val` returns, as markdown."""
    lines = [f"meta-val accuracy (%) on {episodes} episodes per shot, paired with the first checkpoint", "",
             "| checkpoint | shot | accuracy | minus the first |", "|---|---|---|---|"]
    for shot, rows in scores.items():
        for i, (p, r) in enumerate(rows.items()):
            diff = "" if i == 0 else f"{r['minus_first']:+.2f} +- {r['minus_first_ci95']:.2f}"
            lines.append(f"| `{p}` | {shot} | {r['acc']:.2f} +- {r['ci95']:.2f} | {diff} |")
    return "\n".join(lines)
