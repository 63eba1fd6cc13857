"""Stage `maml_real`: MAML (Finn et al., ICML 2017) on real meta-train images, the upper reference (not
data-free). Writes ``models/maml_real.pt``, ``metrics/maml_real.json``, ``metrics/cost/maml_real.json`` and its
meta-val curve."""

from __future__ import annotations

from ..core.io import write_json
from ..core.runtime import peak_rss_mb, resolve_device, timer
from ..core.seeding import derive_seed, seed_everything
from ..data.prepared import load_prepared
from ..evaluation.episodic import val_scorer
from ..meta.maml import real_task_sampler
from ..meta.trainer import MetaTrainer
from ..models import build_meta_model
from ..params import Params
from . import paths
from .runs import save_run
from .stage import main


def maml_real(params: Params) -> None:
    cfg, device, seed, ways = params.maml_real, resolve_device(params.device), params.seed, params.ways
    seed_everything(derive_seed(seed, "maml_real"))
    data = load_prepared(paths.PREPARED)
    model = build_meta_model("conv4", data.channels, ways, data.image_size, derive_seed(seed, "meta-init")).to(device)
    validate = val_scorer(model, data, ways, cfg.val_shots, cfg.val_query, cfg.val_episodes,
                          derive_seed(seed, "val-episodes"), cfg.inner_steps, cfg.inner_lr, 100, device, "maml_real")
    trainer = MetaTrainer(model, cfg.inner_steps, cfg.inner_lr, cfg.outer_lr, cfg.first_order, 1.0, validate,
                          batched=params.runtime.batched(device))
    tasks = real_task_sampler(data, ways, cfg.support_shots, cfg.query_shots, cfg.tasks_per_batch,
                              derive_seed(seed, "maml-tasks") % 1_000_000, device)
    with timer() as t:
        trainer.run(cfg.iterations, tasks, cfg.val_every, desc="MAML (real data)")
    info = {"arch": "conv4", "inner_lr": cfg.inner_lr, "inner_steps": cfg.inner_steps,
            "cost": {"api_images": 0}}
    chosen = save_run(trainer, "maml_real", info, paths.model("maml_real"), paths.MAML_CURVE_CSV,
                      paths.MAML_CURVE_PNG, "MAML on real meta-train images", paths.MAML_STEPS)
    write_json(paths.MAML_METRICS, {"iterations": cfg.iterations, **chosen, "first_order": cfg.first_order,
                                    "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
                                    "device": str(device)})
    write_json(paths.cost_json("maml_real"), {"api_images": 0, "seconds": round(t["seconds"], 2)})
    print(f"MAML (real): best meta-val {chosen['best_val_acc']:.2f}% at iteration {chosen['best_iteration']}")


if __name__ == "__main__":
    main("maml_real", maml_real, __doc__.splitlines()[0])
