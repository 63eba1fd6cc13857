"""Stage `evaluate`: every model on the same seeded 600 meta-test episodes per shot, with 95% intervals."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import main  # noqa: E402
from dfml.data.episodes import sample_episodes  # noqa: E402
from dfml.data.prepared import load_prepared  # noqa: E402
from dfml.evaluation.episodic import choose_lr, ci95, episode_accuracies  # noqa: E402
from dfml.evaluation.models import MODELS  # noqa: E402
from dfml.reporting.plots import eval_bars_png, write_csv  # noqa: E402
from dfml.utils import derive_seed, resolve_device, seed_everything, timer, write_json  # noqa: E402


def run(params: dict) -> None:
    cfg, device, seed = params["evaluate"], resolve_device(params["device"]), params["seed"]
    seed_everything(derive_seed(seed, "evaluate"))
    data = load_prepared(Path("data/prepared"))
    ways, steps, batch = cfg["ways"], cfg["adapt_steps"], cfg["episode_batch"]
    test = {k: sample_episodes(data, "test", cfg["episodes"], ways, k, cfg["query"], derive_seed(seed, "test", k))
            for k in cfg["shots"]}
    val = {k: sample_episodes(data, "val", cfg["val_episodes"], ways, k, cfg["query"], derive_seed(seed, "eval-val", k))
           for k in cfg["shots"]}
    results, settings, rows = {}, {}, []
    with timer() as t:
        for name in cfg["models"]:
            cand = MODELS[name](params, data, device)
            results[name], settings[name] = {}, {"adapt_steps": steps, **cand.info}
            for k in cfg["shots"]:
                if cand.own_lr is not None:
                    lr, how = cand.own_lr, "own inner lr (meta-learned)"
                    table = None
                else:
                    lr, table = choose_lr(lambda x: float(episode_accuracies(
                        cand.model, cand.params, data, val[k], x, steps, batch, device).mean()), cfg["lr_grid"])
                    how = f"best of evaluate.lr_grid on {cfg['val_episodes']} meta-val episodes"
                acc = episode_accuracies(cand.model, cand.params, data, test[k], lr, steps, batch, device)
                results[name][f"{k}shot"] = {"acc": round(float(acc.mean()), 3), "ci95": round(ci95(acc), 3)}
                settings[name][f"{k}shot"] = {"lr": lr, "chosen_by": how, **({"val_acc_by_lr": table} if table else {})}
                rows += [{"model": name, "shot": k, "episode": e, "acc": round(float(a), 3)} for e, a in enumerate(acc)]
                print(f"{name:>10s} {k}-shot: {acc.mean():.2f} +- {ci95(acc):.2f} (lr {lr})")
    write_json(Path("metrics/eval.json"), results)
    write_json(Path("metrics/eval_settings.json"), {
        "episodes": cfg["episodes"], "ways": ways, "query_per_class": cfg["query"], "split": "test",
        "bn": "batch statistics of each support / query set (transductive, as in MAML)",
        "ci95": "1.96 * std / sqrt(episodes)", "seconds": round(t["seconds"], 2), "device": str(device),
        "models": settings})
    write_csv(rows, Path("plots/episodes.csv"))
    eval_bars_png(results, Path("plots/eval.png"))


if __name__ == "__main__":
    main("evaluate", run)
