"""Stage `maml_real`: MAML on real meta-train images, the upper reference (not data-free)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import main  # noqa: E402
from dfml.data.prepared import load_prepared  # noqa: E402
from dfml.evaluation.episodic import val_scorer  # noqa: E402
from dfml.meta.maml import real_task_sampler  # noqa: E402
from dfml.meta.runs import build_meta_model, save_run  # noqa: E402
from dfml.meta.trainer import MetaTrainer  # noqa: E402
from dfml.utils import derive_seed, peak_rss_mb, resolve_device, seed_everything, timer, write_json  # noqa: E402


def run(params: dict) -> None:
    cfg, device, seed = params["maml_real"], resolve_device(params["device"]), params["seed"]
    seed_everything(derive_seed(seed, "maml_real"))
    data = load_prepared(Path("data/prepared"))
    ways = params["apis"]["ways"]
    model = build_meta_model("conv4", data.channels, ways, data.image_size, derive_seed(seed, "meta-init")).to(device)
    validate = val_scorer(model, data, ways, cfg["val_shots"], cfg["val_query"], cfg["val_episodes"],
                          derive_seed(seed, "val-episodes"), cfg["inner_steps"], cfg["inner_lr"], 100, device,
                          "maml_real")
    trainer = MetaTrainer(model, cfg["inner_steps"], cfg["inner_lr"], cfg["outer_lr"], cfg["first_order"], 1.0,
                          validate)
    tasks = real_task_sampler(data, ways, cfg["shots"], cfg["query_shots"], cfg["tasks_per_batch"],
                              derive_seed(seed, "maml-tasks") % 1_000_000, device)
    with timer() as t:
        trainer.run(cfg["iterations"], tasks, cfg["val_every"], desc="MAML (real data)")
    info = {"arch": "conv4", "inner_lr": cfg["inner_lr"], "inner_steps": cfg["inner_steps"],
            "cost": {"api_images": 0, "seconds": round(t["seconds"], 2)}}
    chosen = save_run(trainer, "maml_real", info, Path("models/maml_real.pt"), Path("plots/maml_real_curve.csv"),
                      Path("plots/maml_real_curve.png"), "MAML on real meta-train images")
    write_json(Path("metrics/maml_real.json"), {"iterations": cfg["iterations"], **chosen,
                                                "first_order": cfg["first_order"],
                                                "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
                                                "device": str(device)})
    print(f"MAML (real): best meta-val {chosen['best_val_acc']:.2f}% at iteration {chosen['best_iteration']}")


if __name__ == "__main__":
    main("maml_real", run)
