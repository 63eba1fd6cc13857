"""Stage `distill`: BiDf-MKD meta knowledge distillation from the recovered tasks and the APIs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from dfml.api import QueryLedger, open_pool  # noqa: E402
from dfml.cli import main  # noqa: E402
from dfml.data.prepared import load_prepared  # noqa: E402
from dfml.evaluation.episodic import val_scorer  # noqa: E402
from dfml.inversion.gradients import build_estimator  # noqa: E402
from dfml.inversion.invert import ImagePrior, load_state  # noqa: E402
from dfml.meta.bidf import BiDfTaskSampler  # noqa: E402
from dfml.meta.runs import build_meta_model, save_run  # noqa: E402
from dfml.meta.trainer import MetaTrainer  # noqa: E402
from dfml.utils import derive_seed, read_json, resolve_device, seed_everything, timer, write_json  # noqa: E402


def run(params: dict) -> None:
    cfg, icfg, device = params["distill"], params["invert"], resolve_device(params["device"])
    seed = params["seed"]
    seed_everything(derive_seed(seed, "distill"))
    data = load_prepared(Path("data/prepared"))
    ledger = QueryLedger()
    ledger.phase = "distill"
    apis = open_pool(Path("models/apis"), ledger, device, params["apis"]["query_chunk"],
                     whitebox=icfg["gradient"] == "exact")
    entries = [torch.load(Path("data/bank") / f"{a.name}.pt", weights_only=False) for a in apis]
    bank = [{"images": e["images"], "probs": e["probs"]} for e in entries]
    states = [load_state(e["state"], icfg, data.channels, data.image_size, device) for e in entries]
    invert_images = read_json(Path("metrics/invert.json"))["api_images"]

    model = build_meta_model("conv4", data.channels, params["apis"]["ways"], data.image_size,
                             derive_seed(seed, "meta-init")).to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, "distill-sampler"))
    estimator = build_estimator(icfg, torch.Generator().manual_seed(derive_seed(seed, "distill-directions")))
    sampler = BiDfTaskSampler(model, apis, bank, states, estimator, cfg, gen, device,
                              ImagePrior.from_cfg(icfg))
    validate = val_scorer(model, data, params["apis"]["ways"], cfg["val_shots"], cfg["val_query"], cfg["val_episodes"],
                          derive_seed(seed, "val-episodes"), cfg["inner_steps"], cfg["inner_lr"], 100, device,
                          "distill")
    trainer = MetaTrainer(model, cfg["inner_steps"], cfg["inner_lr"], cfg["outer_lr"], cfg["first_order"],
                          cfg["temperature"], validate)
    with timer() as t:
        trainer.run(cfg["iterations"], sampler, cfg["val_every"], desc="BiDf-MKD",
                    extra=lambda: {"api_images": invert_images + ledger.total,
                                   "api_images_distill": ledger.total})
    info = {"arch": "conv4", "inner_lr": cfg["inner_lr"], "inner_steps": cfg["inner_steps"]}
    chosen = save_run(trainer, "bidf_mkd", info, Path("models/bidf_mkd.pt"), Path("plots/distill_curve.csv"),
                      Path("plots/distill_curve.png"), "BiDf-MKD (data-free, black-box)")
    write_json(Path("metrics/distill.json"), {
        "iterations": cfg["iterations"], **chosen,
        "api_images_invert": invert_images, "api_images_distill": ledger.total,
        "api_images_total": invert_images + ledger.total,
        "seconds": round(t["seconds"], 2), "device": str(device)})
    print(f"BiDf-MKD: best meta-val {chosen['best_val_acc']:.2f}% at iteration {chosen['best_iteration']}; "
          f"{ledger.total:,} API images in distill, {invert_images + ledger.total:,} in all")


if __name__ == "__main__":
    main("distill", run)
