"""One model's evaluation (stage `evaluate_model@<name>`); :mod:`.merge` gathers them (stage `evaluate`).

Every model meets the same seeded episodes (test: ``derive_seed(seed, "test", K)``,
meta-val for the lr choice: ``derive_seed(seed, "eval-val", K)`` per shot K), so
a change to one model's training reruns only that model's evaluation.

``metrics/eval/<name>.json``: ``{"model", "results": {"<K>shot": {"acc", "ci95"}}, "cost": {"api_images",
"seconds"} (of its training, from its checkpoint), "settings", "protocol", "seconds", "device"}``; ``plots/episodes/<name>.csv``: ``model, shot, episode, acc``.
"""

from __future__ import annotations

from pathlib import Path

from ..data.episodes import sample_episodes
from ..data.prepared import load_prepared
from ..reporting.plots import write_csv
from ..utils import derive_seed, resolve_device, seed_everything, timer, write_json
from .episodic import choose_lr, ci95, episode_accuracies
from .models import MODELS

PREPARED = Path("data/prepared")
BN = "batch statistics of each support / query set (transductive, as in MAML)"
CI95 = "1.96 * std / sqrt(episodes)"


def model_json(name: str) -> Path:
    return Path("metrics/eval") / f"{name}.json"


def model_csv(name: str) -> Path:
    return Path("plots/episodes") / f"{name}.csv"


def evaluate_model(name: str, params: dict, root: Path = Path(".")) -> dict:
    """Adapt and test model `name` on the seeded meta-test episodes of every shot; write its two files; return
    its ``results``."""
    root = Path(root)
    cfg, device, seed = params["evaluate"], resolve_device(params["device"]), params["seed"]
    seed_everything(derive_seed(seed, "evaluate"))
    data = load_prepared(root / PREPARED)
    ways, steps, batch = cfg["ways"], cfg["adapt_steps"], cfg["episode_batch"]
    results, settings, rows = {}, {"adapt_steps": steps}, []
    with timer() as t:
        cand = MODELS[name](params, data, device)
        settings.update(cand.info)
        for k in cfg["shots"]:
            test = sample_episodes(data, "test", cfg["episodes"], ways, k, cfg["query"], derive_seed(seed, "test", k))
            if cand.own_lr is not None:
                lr, how, table = cand.own_lr, "own inner lr (meta-learned)", None
            else:
                val = sample_episodes(data, "val", cfg["val_episodes"], ways, k, cfg["query"],
                                      derive_seed(seed, "eval-val", k))
                lr, table = choose_lr(lambda x: float(episode_accuracies(
                    cand.model, cand.params, data, val, x, steps, batch, device).mean()), cfg["lr_grid"])
                how = f"best of evaluate.lr_grid on {cfg['val_episodes']} meta-val episodes"
            acc = episode_accuracies(cand.model, cand.params, data, test, lr, steps, batch, device)
            results[f"{k}shot"] = {"acc": round(float(acc.mean()), 3), "ci95": round(ci95(acc), 3)}
            settings[f"{k}shot"] = {"lr": lr, "chosen_by": how, **({"val_acc_by_lr": table} if table else {})}
            rows += [{"model": name, "shot": k, "episode": e, "acc": round(float(a), 3)} for e, a in enumerate(acc)]
            print(f"{name:>12s} {k}-shot: {acc.mean():.2f} +- {ci95(acc):.2f} (lr {lr})")
    protocol = {"episodes": cfg["episodes"], "ways": ways, "query_per_class": cfg["query"], "split": "test",
                "bn": BN, "ci95": CI95}
    write_json(root / model_json(name), {"model": name, "results": results, "cost": cand.cost, "settings": settings,
                                         "protocol": protocol, "seconds": round(t["seconds"], 2),
                                         "device": str(device)})
    write_csv(rows, root / model_csv(name))
    return results
