"""Stage `distill`: BiDf-MKD meta knowledge distillation from the recovered tasks and the APIs.

Hu et al., ICML 2023, Sec. 3.3-3.5 (:class:`dfml.meta.bidf.BiDfTaskSampler`, :class:`dfml.meta.trainer.MetaTrainer`).
Resumable (:mod:`dfml.runtime.checkpoint`): every ``runtime.checkpoint_every.distill`` meta-iterations the whole run
(meta model, Adam, curve, best checkpoint, sampler and direction RNGs, task memory, changed inversion states with
their optimisers, ledger) is saved under ``checkpoints/distill``; killed, or stopped by the API image budget
(exit 3), the stage continues from there when run again. Writes ``models/bidf_mkd.pt``, ``metrics/distill.json``,
``metrics/cost/bidf_mkd.json`` (API images and seconds, inversion included) and the curve
(``plots/distill_curve.csv`` / ``.png``); the white-box variant (stage `whitebox_distill`) writes
``models/bidf_mkd_whitebox.pt`` and ``_whitebox`` files.
"""

from __future__ import annotations

import torch

from ..api.backends import open_apis
from ..api.inprocess import pool_digest
from ..api.base import BudgetExhausted
from ..api.budget import BudgetStop, budget_ledger, stop_message
from ..core.io import read_json, write_json
from ..core.runtime import peak_rss_mb, resolve_device
from ..core.seeding import derive_seed, rng_state, seed_everything, set_rng_state
from ..data.prepared import load_prepared
from ..evaluation.episodic import val_scorer
from ..inversion.invert import ImagePrior, load_state
from ..inversion.recovery import build_method
from ..inversion.variants import BLACKBOX, Variant
from ..meta.bidf import BiDfTaskSampler
from ..meta.trainer import MetaTrainer
from ..meta.undo import IterationUndo
from ..models import build_meta_model
from ..inversion.params import used as invert_used
from ..params import Params, result_params
from ..runtime.checkpoint import Checkpoint, file_digest, fingerprint
from . import paths
from .runs import save_run
from .stage import main


def distill(params: Params, variant: Variant = BLACKBOX) -> None:
    """Meta-train the variant's model from its bank and the APIs, resumably; see the module docstring."""
    params = variant.params(params)
    seed_everything(derive_seed(params.seed, "distill"))
    fp = fingerprint(result_params(params, "seed", "ways", "query", "distill"), invert_used(params.invert),
                     str(resolve_device(params.device)), file_digest(paths.bank(variant) / "index.json"),
                     pool_digest(paths.POOL), file_digest(paths.PREPARED / "index.json"))
    ck = Checkpoint(paths.checkpoints("distill", variant), fp, variant.stage("distill"))
    with ck.locked():
        _distill(params, variant, ck)


def _distill(params: Params, variant: Variant, ck: Checkpoint) -> None:
    cfg, icfg, device, seed = params.distill, params.invert, resolve_device(params.device), params.seed
    data = load_prepared(paths.PREPARED)
    saved = ck.load()
    invert = read_json(paths.invert_metrics(variant))
    if not invert.get("complete"):
        raise FileNotFoundError(f"{paths.invert_metrics(variant)} is not from a finished `invert` run (stopped, or "
                                "older than this code); run `dvc repro` (it reruns invert first)")
    ledger = budget_ledger(params.runtime.budget_images, params.runtime.budget_images_per_api)
    ledger.load_state_dict(invert["ledger"])  # the run's ledger: invert's spend first, so the budget left is the run's
    ledger.phase = "distill"
    apis = open_apis(paths.POOL, params.query, params.runtime.backend, params.runtime.http, ledger, device,
                     whitebox=icfg.exact_gradients)
    bank_dir = paths.bank(variant)
    entries = [torch.load(bank_dir / f"{a.name}.pt", weights_only=False) for a in apis]
    bank = [{"images": e["images"], "probs": e["probs"]} for e in entries]
    states = [load_state(e["state"], icfg.generator, data.channels, data.image_size, device) for e in entries]

    model = build_meta_model("conv4", data.channels, params.ways, data.image_size,
                             derive_seed(seed, "meta-init")).to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, "distill-sampler"))
    # boundary queries: the API with the method's zero-order estimator, or (surrogate) its clone, exactly
    oracle = build_method(icfg, data.channels, data.image_size, device, seed).boundary(
        apis, entries, torch.Generator().manual_seed(derive_seed(seed, "distill-directions")))
    sampler = BiDfTaskSampler(model, oracle.apis, bank, states, oracle.estimator, cfg, gen, device,
                              ImagePrior.from_cfg(icfg.prior))
    validate = val_scorer(model, data, params.ways, cfg.val_shots, cfg.val_query, cfg.val_episodes,
                          derive_seed(seed, "val-episodes"), cfg.inner_steps, cfg.inner_lr, 100, device, "distill")
    trainer = MetaTrainer(model, cfg.inner_steps, cfg.inner_lr, cfg.outer_lr, cfg.first_order, cfg.temperature,
                          validate, batched=params.runtime.batched(device))
    undo = IterationUndo(sampler, ledger, active=ledger.budget is not None or ledger.budget_per_api is not None)
    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
        sampler.load_state_dict(saved["sampler"])
        undo.changed = set(saved["changed"])
        ledger.load_state_dict(saved["ledger"])
        set_rng_state(saved["rng"])
        print(f"[distill] resuming from {ck.folder} at meta-iteration {trainer.iteration} of {cfg.iterations}; "
              f"{ledger.total:,} API images spent so far in the run", flush=True)

    def save() -> None:
        ck.save({"trainer": trainer.state_dict(), "sampler": sampler.state_dict(sorted(undo.changed)),
                 "changed": sorted(undo.changed), "ledger": ledger.state_dict(), "rng": rng_state()},
                {"iteration": trainer.iteration, "iterations": cfg.iterations, "api_images": ledger.total})

    def after_iteration(it: int) -> None:
        every = params.runtime.checkpoint_every.distill
        if every and it % every == 0 and it < cfg.iterations:
            save()
        undo.begin()

    undo.begin()
    try:
        trainer.run(cfg.iterations, sampler, cfg.val_every, desc="BiDf-MKD", after_iteration=after_iteration,
                    extra=lambda: {"api_images": ledger.total, "api_images_distill": ledger.per_phase["distill"]})
    except BudgetExhausted as exc:
        undo.rollback()  # the interrupted meta-iteration never happened (its images stay spent: ledger.discarded)
        save()
        write_json(paths.distill_metrics(variant), {"complete": False, "stopped": "API image budget exhausted",
                                                    "iterations_done": trainer.iteration,
                                                    **_spend(ledger, trainer.elapsed, device)})
        kept = (f"{trainer.iteration} of {cfg.iterations} meta-iterations, in {ck.folder}; "
                f"what was spent: {paths.distill_metrics(variant)}")
        raise BudgetStop(stop_message(exc, ledger, kept)) from exc
    info = {"arch": "conv4", "inner_lr": cfg.inner_lr, "inner_steps": cfg.inner_steps,
            "cost": {"api_images": ledger.total}}
    chosen = save_run(trainer, variant.model, info, paths.model(variant.model), paths.curve_csv(variant),
                      paths.curve_png(variant), variant.title, paths.steps_dir(variant))
    write_json(paths.distill_metrics(variant), {"complete": True, "iterations": cfg.iterations, **chosen,
                                                "boundary_queries_to": oracle.kind,
                                                **_spend(ledger, trainer.elapsed, device)})
    write_json(paths.cost_json(variant.model),
               {"api_images": ledger.total, "seconds": round(invert["seconds"] + trainer.elapsed, 2)})
    ck.finish()
    print(f"BiDf-MKD: best meta-val {chosen['best_val_acc']:.2f}% at iteration {chosen['best_iteration']}; "
          f"{ledger.per_phase['distill']:,} API images in distill, {ledger.total:,} in all")


def _spend(ledger, seconds: float, device) -> dict:
    return {"api_images_invert": ledger.per_phase["invert"], "api_images_distill": ledger.per_phase["distill"],
            "api_images_total": ledger.total, "ledger": ledger.summary(), "budget": ledger.budget_report(),
            "seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(), "device": str(device)}


if __name__ == "__main__":
    main("distill", distill, __doc__.splitlines()[0])
