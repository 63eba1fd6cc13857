"""The evaluation protocol: one model on the seeded meta-test episodes of every shot, adapted as chosen for it.

Every model meets the same seeded episodes (test: ``derive_seed(seed, "test", K)``, meta-val for the lr choice:
``derive_seed(seed, "eval-val", K)`` per shot K). A meta-learned model adapts as it was meta-trained (its own
inner lr and steps, from its checkpoint); any other model takes ``evaluate.adapt_steps`` steps at the lr of
``evaluate.lr_grid`` that scores best on ``evaluate.val_episodes`` meta-val episodes.

In the mh scenario (several datasets in the prepared data) every dataset has its own episodes from its own
meta-test classes (seed ``derive_seed(seed, "test", dataset, K)``); the per-shot result is the mean over datasets
with the interval of a mean of independent means (:func:`~dfml.core.stats.ci95_of_mean`), each dataset's own
under ``"datasets"``, and the lr grid is scored on the mean over datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.seeding import derive_seed
from ..core.stats import ci95, ci95_of_mean
from ..data.episodes import sample_episodes
from ..data.prepared import Prepared
from .candidates import Candidate
from .episodic import choose_lr, episode_accuracies
from .params import EvaluateParams

BN = "batch statistics of each support / query set (transductive, as in MAML)"
CI95 = "1.96 * std / sqrt(episodes)"
MEAN = "mean over datasets of their mean accuracies; ci95 sqrt(sum of squared per-dataset ci95) / datasets"


@dataclass
class Evaluation:
    """What :func:`evaluate_candidate` measured.

    Attributes:
        results: ``{"<K>shot": {"acc", "ci95"}}`` (mh: plus ``"datasets"``); settings: how the model adapted;
        protocol: the episodes; rows: per-episode accuracies ``{"model", ["dataset",] "shot", "episode", "acc"}``.
    """

    results: dict
    settings: dict
    protocol: dict
    rows: list[dict]


def evaluate_candidate(name: str, cand: Candidate, data: Prepared, cfg: EvaluateParams, ways: int, seed: int,
                       device: torch.device) -> Evaluation:
    """Adapt and test `cand` on the seeded meta-test episodes of every shot of ``cfg.shots``."""
    batch = cfg.episode_batch
    datasets = data.datasets if data.multi else [None]  # None: the one dataset, seeds as they always were
    results, per_dataset, rows = {}, {d: {} for d in datasets}, []
    if cand.own_lr is not None:
        steps = cand.own_steps
        settings = {"adapt_steps": steps, "adapt_steps_from": "the model's checkpoint (its meta-training inner steps)"}
    else:
        steps = cfg.adapt_steps
        settings = {"adapt_steps": steps, "adapt_steps_from": "evaluate.adapt_steps"}
    settings.update(cand.info)

    def names(*parts):  # seed names: the dataset joins them in mh only
        return [p for p in parts if p is not None]

    for k in cfg.shots:
        tests = {d: sample_episodes(data, "test", cfg.episodes, ways, k, cfg.query,
                                    derive_seed(seed, *names("test", d, k)), dataset=d) for d in datasets}
        if cand.own_lr is not None:
            lr, how, table = cand.own_lr, "own inner lr (meta-learned)", None
        else:
            vals = [sample_episodes(data, "val", cfg.val_episodes, ways, k, cfg.query,
                                    derive_seed(seed, *names("eval-val", d, k)), dataset=d) for d in datasets]
            lr, table = choose_lr(lambda x: float(np.mean([episode_accuracies(
                cand.model, cand.params, data, val, x, steps, batch, device).mean() for val in vals])), cfg.lr_grid)
            how = f"best of evaluate.lr_grid on {cfg.val_episodes} meta-val episodes" + (
                " per dataset (their mean)" if data.multi else "")
        for d, test in tests.items():
            acc = episode_accuracies(cand.model, cand.params, data, test, lr, steps, batch, device)
            per_dataset[d][f"{k}shot"] = {"acc": float(acc.mean()), "ci95": ci95(acc)}
            rows += [{"model": name, **({} if d is None else {"dataset": d}), "shot": k, "episode": e,
                      "acc": round(float(a), 3)} for e, a in enumerate(acc)]
            print(f"{name:>12s} {k}-shot{'' if d is None else f' {d}'}: {acc.mean():.2f} +- {ci95(acc):.2f} (lr {lr})")
        each = [per_dataset[d][f"{k}shot"] for d in datasets]
        results[f"{k}shot"] = {"acc": round(float(np.mean([r["acc"] for r in each])), 3),
                               "ci95": round(ci95_of_mean([r["ci95"] for r in each]), 3)}
        settings[f"{k}shot"] = {"lr": lr, "chosen_by": how, **({"val_acc_by_lr": table} if table else {})}
    if data.multi:
        results["datasets"] = {d: {shot: {key: round(v, 3) for key, v in r.items()} for shot, r in res.items()}
                               for d, res in per_dataset.items()}
    protocol = {"episodes": cfg.episodes, "ways": ways, "query_per_class": cfg.query, "split": "test", "bn": BN,
                "ci95": CI95}
    if data.multi:
        protocol.update(datasets="+".join(data.datasets), episodes_are="per dataset, from its own test classes",
                        mean=MEAN)
    return Evaluation(results, settings, protocol, rows)
