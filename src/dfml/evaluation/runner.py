"""One model's evaluation (stage `evaluate_model@<name>`); :mod:`.merge` gathers them (stage `evaluate`).

Every model meets the same seeded episodes (test: ``derive_seed(seed, "test", K)``,
meta-val for the lr choice: ``derive_seed(seed, "eval-val", K)`` per shot K), so
a change to one model's training reruns only that model's evaluation.

``metrics/eval/<name>.json``: ``{"model", "results": {"<K>shot": {"acc", "ci95"}}, "cost": {"api_images",
"seconds"} (of its training, from its checkpoint), "settings", "protocol", "seconds", "device"}``; ``plots/episodes/<name>.csv``: ``model, shot, episode, acc``.

In the mh scenario (several datasets in the prepared data) every dataset has its own episodes; ``results`` adds
``"datasets": {"<dataset>": {"<K>shot": {"acc", "ci95"}}}`` and its ``"<K>shot"`` entries are the mean over
datasets; the CSV gets a ``dataset`` column (``model, dataset, shot, episode, acc``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.episodes import sample_episodes
from ..data.prepared import load_prepared
from ..reporting.plots import write_csv
from ..utils import derive_seed, peak_rss_mb, resolve_device, seed_everything, timer, write_json
from .episodic import choose_lr, ci95, ci95_of_mean, episode_accuracies
from .models import MODELS

PREPARED = Path("data/prepared")
BN = "batch statistics of each support / query set (transductive, as in MAML)"
CI95 = "1.96 * std / sqrt(episodes)"
MEAN = "mean over datasets of their mean accuracies; ci95 sqrt(sum of squared per-dataset ci95) / datasets"


def model_json(name: str) -> Path:
    return Path("metrics/eval") / f"{name}.json"


def model_csv(name: str) -> Path:
    return Path("plots/episodes") / f"{name}.csv"


def evaluate_model(name: str, params: dict, root: Path = Path(".")) -> dict:
    """Adapt and test model `name` on the seeded meta-test episodes of every shot; write its two files; return
    its ``results``.

    With several datasets in the prepared data (the mh scenario), every dataset gets `evaluate.episodes` episodes
    per shot from its own meta-test classes only (seed ``derive_seed(seed, "test", dataset, K)``); ``results``
    then holds the mean over datasets per shot (``"<K>shot": {"acc", "ci95"}``, the interval of a mean of
    independent means, :func:`~.episodic.ci95_of_mean`) and each dataset's own under ``"datasets"``. A model that
    was not meta-learned gets the lr of `evaluate.lr_grid` with the best mean over datasets of meta-val accuracy.
    """
    root = Path(root)
    cfg, device, seed = params["evaluate"], resolve_device(params["device"]), params["seed"]
    seed_everything(derive_seed(seed, "evaluate"))
    data = load_prepared(root / PREPARED)
    ways, steps, batch = cfg["ways"], cfg["adapt_steps"], cfg["episode_batch"]
    datasets = data.datasets if data.multi else [None]  # None: the one dataset, seeds as they always were
    results, per_dataset, settings, rows = {}, {d: {} for d in datasets}, {"adapt_steps": steps}, []

    def names(*parts):  # seed names: the dataset joins them in mh only
        return [p for p in parts if p is not None]

    with timer() as t:
        cand = MODELS[name](params, data, device)
        settings.update(cand.info)
        for k in cfg["shots"]:
            tests = {d: sample_episodes(data, "test", cfg["episodes"], ways, k, cfg["query"],
                                        derive_seed(seed, *names("test", d, k)), dataset=d) for d in datasets}
            if cand.own_lr is not None:
                lr, how, table = cand.own_lr, "own inner lr (meta-learned)", None
            else:
                vals = [sample_episodes(data, "val", cfg["val_episodes"], ways, k, cfg["query"],
                                        derive_seed(seed, *names("eval-val", d, k)), dataset=d) for d in datasets]
                lr, table = choose_lr(lambda x: float(np.mean([episode_accuracies(
                    cand.model, cand.params, data, val, x, steps, batch, device).mean() for val in vals])),
                    cfg["lr_grid"])
                how = f"best of evaluate.lr_grid on {cfg['val_episodes']} meta-val episodes" + (
                    " per dataset (their mean)" if data.multi else "")
            for d, test in tests.items():
                acc = episode_accuracies(cand.model, cand.params, data, test, lr, steps, batch, device)
                per_dataset[d][f"{k}shot"] = {"acc": float(acc.mean()), "ci95": ci95(acc)}
                rows += [{"model": name, **({} if d is None else {"dataset": d}), "shot": k, "episode": e,
                          "acc": round(float(a), 3)} for e, a in enumerate(acc)]
                print(f"{name:>12s} {k}-shot{'' if d is None else f' {d}'}: {acc.mean():.2f} +- {ci95(acc):.2f} "
                      f"(lr {lr})")
            each = [per_dataset[d][f"{k}shot"] for d in datasets]
            results[f"{k}shot"] = {"acc": round(float(np.mean([r["acc"] for r in each])), 3),
                                   "ci95": round(ci95_of_mean([r["ci95"] for r in each]), 3)}
            settings[f"{k}shot"] = {"lr": lr, "chosen_by": how, **({"val_acc_by_lr": table} if table else {})}
    if data.multi:
        results["datasets"] = {d: {shot: {key: round(v, 3) for key, v in r.items()} for shot, r in res.items()}
                               for d, res in per_dataset.items()}
    protocol = {"episodes": cfg["episodes"], "ways": ways, "query_per_class": cfg["query"], "split": "test",
                "bn": BN, "ci95": CI95}
    if data.multi:
        protocol.update(datasets="+".join(data.datasets), episodes_are="per dataset, from its own test classes",
                        mean=MEAN)
    write_json(root / model_json(name), {"model": name, "results": results, "cost": cand.cost, "settings": settings,
                                         "protocol": protocol, "seconds": round(t["seconds"], 2),
                                         "peak_rss_mb": peak_rss_mb(),
                                         "device": str(device)})
    write_csv(rows, root / model_csv(name))
    return results
