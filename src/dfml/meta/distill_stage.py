"""The `distill` stage: BiDf-MKD meta knowledge distillation from the recovered tasks and the APIs.

Hu et al., ICML 2023, Sec. 3.3-3.5 (:class:`dfml.meta.bidf.BiDfTaskSampler`, :class:`dfml.meta.trainer.MetaTrainer`).
Resumable (:mod:`dfml.resume`): every `distill.checkpoint_every` meta-iterations the whole run (meta model,
Adam, curve, best checkpoint, sampler and direction RNGs, task memory, changed inversion states with
their optimisers, ledger) is saved under ``checkpoints/distill``; killed, or stopped by the API image
budget (exit 3), the stage continues from there when run again. Writes ``models/bidf_mkd.pt``,
``metrics/distill.json`` and the curve (``plots/distill_curve.csv`` / ``.png``); the white-box variant
(:data:`dfml.variants.VARIANTS`) writes ``models/bidf_mkd_whitebox.pt`` and ``_whitebox`` files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..api import BudgetExhausted, open_apis
from ..data.prepared import load_prepared
from ..evaluation.episodic import val_scorer
from ..inversion.gradients import build_estimator
from ..inversion.invert import ImagePrior, load_state
from ..resume import (BudgetStop, Checkpoint, IterationUndo, budget_ledger, file_digest, fingerprint, result_params,
                      rng_state, set_rng_state, stop_message)
from ..utils import derive_seed, peak_rss_mb, read_json, resolve_device, seed_everything, write_json
from ..variants import VARIANTS, Variant
from .bidf import BiDfTaskSampler
from .runs import build_meta_model, save_run
from .trainer import MetaTrainer

TITLES = {"bidf_mkd": "BiDf-MKD (data-free, black-box)",
          "bidf_mkd_whitebox": "BiDf-MKD white-box reference (exact input gradients)"}


def run_distill(params: dict, variant: Variant = VARIANTS["blackbox"]) -> None:
    """Meta-train `variant.model` from `variant.bank` and the APIs, resumably; see the module docstring."""
    params = variant.params(params)
    cfg, icfg, device = params["distill"], params["invert"], resolve_device(params["device"])
    seed = params["seed"]
    seed_everything(derive_seed(seed, "distill"))
    data = load_prepared(Path("data/prepared"))
    fp = fingerprint(result_params(params, "seed", "data", "apis", "invert", "distill"), str(device),
                     file_digest(variant.bank / "index.json"), file_digest(Path("models/apis/pool.json")))
    ck = Checkpoint(variant.checkpoints("distill"), fp, "distill")
    saved = ck.load()
    invert = read_json(variant.invert_metrics)
    if not invert.get("complete"):
        raise FileNotFoundError(f"{variant.invert_metrics} is not from a finished `invert` run (stopped, or older than "
                                "this code); run `dvc repro` (it reruns invert first)")
    ledger = budget_ledger(params)  # the run's ledger: invert's spend first, so the budget left is the run's
    ledger.load_state_dict(invert["ledger"])
    ledger.phase = "distill"
    apis = open_apis(params, ledger, device, whitebox=icfg["gradient"] == "exact")
    entries = [torch.load(variant.bank / f"{a.name}.pt", weights_only=False) for a in apis]
    bank = [{"images": e["images"], "probs": e["probs"]} for e in entries]
    states = [load_state(e["state"], icfg, data.channels, data.image_size, device) for e in entries]

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
    undo = IterationUndo(sampler, ledger, active=ledger.budget is not None or ledger.budget_per_api is not None)
    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
        sampler.load_state_dict(saved["sampler"])
        undo.changed = set(saved["changed"])
        ledger.load_state_dict(saved["ledger"])
        set_rng_state(saved["rng"])
        print(f"[distill] resuming from {ck.folder} at meta-iteration {trainer.iteration} of {cfg['iterations']}; "
              f"{ledger.total:,} API images spent so far in the run", flush=True)

    def save() -> None:
        ck.save({"trainer": trainer.state_dict(), "sampler": sampler.state_dict(sorted(undo.changed)),
                 "changed": sorted(undo.changed), "ledger": ledger.state_dict(), "rng": rng_state()},
                {"iteration": trainer.iteration, "iterations": cfg["iterations"], "api_images": ledger.total})

    def after_iteration(it: int) -> None:
        every = cfg["checkpoint_every"]
        if every and it % every == 0 and it < cfg["iterations"]:
            save()
        undo.begin()

    undo.begin()
    try:
        trainer.run(cfg["iterations"], sampler, cfg["val_every"], desc="BiDf-MKD", after_iteration=after_iteration,
                    extra=lambda: {"api_images": ledger.total, "api_images_distill": ledger.per_phase["distill"]})
    except BudgetExhausted as exc:
        undo.rollback()  # the interrupted meta-iteration never happened (its images stay spent: ledger.discarded)
        save()
        write_json(variant.distill_metrics, {"complete": False, "stopped": "API image budget exhausted",
                             "iterations_done": trainer.iteration, **_spend(ledger, trainer.elapsed, device)})
        kept = (f"{trainer.iteration} of {cfg['iterations']} meta-iterations, in {ck.folder}; "
                f"what was spent: {variant.distill_metrics}")
        raise BudgetStop(stop_message(exc, ledger, kept)) from exc
    info = {"arch": "conv4", "inner_lr": cfg["inner_lr"], "inner_steps": cfg["inner_steps"],
            "cost": {"api_images": ledger.total, "seconds": round(invert["seconds"] + trainer.elapsed, 2)}}
    chosen = save_run(trainer, variant.model, info, variant.model_path, variant.curve_csv, variant.curve_png,
                      TITLES[variant.model])
    write_json(variant.distill_metrics, {"complete": True, "iterations": cfg["iterations"], **chosen,
                         **_spend(ledger, trainer.elapsed, device)})
    ck.clear()
    print(f"BiDf-MKD: best meta-val {chosen['best_val_acc']:.2f}% at iteration {chosen['best_iteration']}; "
          f"{ledger.per_phase['distill']:,} API images in distill, {ledger.total:,} in all")


def _spend(ledger, seconds: float, device) -> dict:
    return {"api_images_invert": ledger.per_phase["invert"], "api_images_distill": ledger.per_phase["distill"],
            "api_images_total": ledger.total, "ledger": ledger.summary(), "budget": ledger.budget_report(),
            "seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(), "device": str(device)}
