"""Stage `invert`: recover a pseudo task (support and query images) from every API, through queries only.

The method is ``invert.method`` (:data:`dfml.inversion.methods.METHODS`): BiDf-MKD's inversion (Hu et al., ICML
2023, Sec. 3.2) by default, or the surrogate, DFME or CAKE recovery; one generator per API either way.
Resumable (:mod:`dfml.runtime.checkpoint`): each finished API is saved under ``checkpoints/invert``, and with
``bidf`` the API in progress too, every ``runtime.checkpoint_every.invert`` generator steps (the other methods
redo an unfinished API from its start, from the same per-API seed); killed, or stopped by the API image budget
(exit 3), the stage continues from there when run again.
With ``runtime.engine: ray`` the APIs are recovered on parallel workers (:mod:`dfml.inversion.fanout`; order-free
methods only), this process saving each finished API as it arrives; the bank is the same bit for bit.
Writes ``data/bank/<api>.pt`` (``images [N, n, C, H, W]``, ``probs [N, n, N]``, generator state)
atomically as one folder, ``metrics/invert.json`` and ``plots/invert_samples.png``; the white-box
variant (stage `whitebox_invert`) writes the same files with a ``_whitebox`` suffix.
"""

from __future__ import annotations

import shutil
import time

import torch
from tqdm import tqdm

from ..api.backends import open_apis
from ..api.inprocess import pool_digest
from ..api.base import BudgetExhausted, QueryLedger
from ..api.budget import BudgetStop, budget_ledger, stop_message
from ..core.io import read_json, write_json
from ..core.runtime import peak_rss_mb, resolve_device
from ..core.seeding import rng_state, seed_everything, set_rng_state
from ..inversion.fanout import RecoverJob, bank_entry, recover_on_workers, require_order_free
from ..inversion.invert import InversionState, more_steps
from ..inversion.recovery import build_method
from ..inversion.variants import BLACKBOX, Variant
from ..inversion.params import used as invert_used
from ..params import Params, result_params
from ..reporting.plots import image_grid_png
from ..runtime.checkpoint import Checkpoint, file_digest, fingerprint
from ..runtime.engine import ENGINES, Engine, open_engine
from . import paths
from .stage import main


def invert(params: Params, variant: Variant = BLACKBOX) -> None:
    """Invert every API of the pool into the variant's bank, resumably; see the module docstring."""
    params = variant.params(params)
    require_order_free(params.invert, ENGINES[params.runtime.engine])  # before any work
    cfg, device, seed = params.invert, resolve_device(params.device), params.seed
    seed_everything(seed)
    meta = read_json(paths.DATA_METRICS)
    fp = fingerprint(result_params(params, "seed", "query"), invert_used(params.invert), str(device),
                     pool_digest(paths.POOL), file_digest(paths.DATA_METRICS))
    ck = Checkpoint(paths.checkpoints("invert", variant), fp, variant.stage("invert"))
    with ck.locked(), open_engine(params.runtime, variant.stage("invert"), device) as engine:
        if engine.parallel:
            _invert_parallel(params, variant, cfg, device, seed, meta, ck, engine)
        else:
            _invert(params, variant, cfg, device, seed, meta, ck)


def _invert(params: Params, variant: Variant, cfg, device, seed: int, meta: dict, ck: Checkpoint) -> None:
    saved = ck.load()
    ledger = budget_ledger(params.runtime.budget_images, params.runtime.budget_images_per_api)
    ledger.phase = "invert"
    method = build_method(cfg, meta["channels"], meta["image_size"], device, seed)
    apis = open_apis(paths.POOL, params.query, params.runtime.backend, params.runtime.http, ledger, device,
                     whitebox=cfg.exact_gradients)
    done, seconds, finished = 0, 0.0, set()
    if saved is not None:
        done, seconds = saved["done"], saved["seconds"]
        finished = set(saved.get("finished", [a.name for a in apis[:done]]))  # a parallel run's may be past done
        ledger.load_state_dict(saved["ledger"])
        method.load_state_dict(saved["method"])  # a stream the APIs share continues where it stopped
        step = f", {apis[done].name} at step {len(saved['inversion']['history'])}" if saved["inversion"] else ""
        print(f"[invert] resuming from {ck.folder}: {len(finished)} of {len(apis)} APIs done{step}; "
              f"{ledger.total:,} API images spent so far", flush=True)
    start = time.perf_counter()
    whole: dict = {}  # the state at the last point where it was whole (before a step or the final answers)

    def save(n_done: int, state: InversionState | None) -> None:
        steps = len(state.history) if state is not None else 0
        ck.save({"done": n_done, "finished": sorted(finished),
                 "inversion": None if state is None else state.full_state_dict(),
                 "method": method.state_dict(), "ledger": ledger.state_dict(), "rng": rng_state(),
                 "seconds": seconds + time.perf_counter() - start},
                {"apis_done": n_done, "apis": len(apis), "steps_done_of_next": steps, "api_images": ledger.total})
        whole["saved_step"] = (n_done, steps)

    def on_step(i: int, state: InversionState) -> None:
        whole.update(method=method.state_dict(), rng=rng_state(),
                     buffers={k: v.clone() for k, v in state.generator.named_buffers()})
        k, every = len(state.history), params.runtime.checkpoint_every.invert
        if every and k % every == 0 and k > 0 and more_steps(state.history, cfg.bidf) \
                and whole.get("saved_step") != (i, k):
            save(i, state)

    for i in tqdm(range(done, len(apis)), desc=f"invert APIs ({cfg.method})", unit="api", initial=done,
                  total=len(apis)):
        api, state = apis[i], None
        if api.name in finished:  # finished by a parallel run (runtime.engine: ray) of the same params
            continue
        spent_before = ledger.total
        if method.steps_resumable:
            state = method.new_state(api, i)
            if saved is not None and saved["inversion"] is not None and i == done:
                state.load_full_state_dict(saved["inversion"])
                method.load_state_dict(saved["method"])  # the API's direction stream where it stopped
                set_rng_state(saved["rng"])
                whole["saved_step"] = (i, len(state.history))
        try:
            got = method.recover(api, i, state=state, on_step=(lambda st, i=i: on_step(i, st))
                                 if method.steps_resumable else None)
        except BudgetExhausted as exc:
            if method.steps_resumable:
                # back to where the state was whole: the refused query sent nothing and changed no weight, but its
                # directions were drawn and the generator's forward pass moved its BN running statistics
                method.load_state_dict(whole["method"])
                set_rng_state(whole["rng"])
                for name, buf in state.generator.named_buffers():
                    buf.copy_(whole["buffers"][name])
                where = f"{api.name} at step {len(state.history)} (of {_planned(cfg.bidf)})"
            else:  # the API is redone from its start: what it sent so far stays spent, and is booked as discarded
                ledger.discarded += ledger.total - spent_before
                state, where = None, f"{api.name} to be redone from its start"
            save(i, state)
            write_json(paths.invert_metrics(variant), {
                "complete": False, "stopped": "API image budget exhausted", "apis_done": i, "apis": len(apis),
                "method": cfg.method, **_spend(ledger, seconds + time.perf_counter() - start, device)})
            kept = (f"{i} of {len(apis)} APIs inverted, {where}, in {ck.folder}; what was spent: "
                    f"{paths.invert_metrics(variant)}")
            raise BudgetStop(stop_message(exc, ledger, kept)) from exc
        ck.save_part(api.name, bank_entry(api.name, got))
        finished.add(api.name)
        save(i + 1, None)
    _finish(apis, ck, ck.fp, cfg, ledger, seconds + time.perf_counter() - start, device, variant)


def _invert_parallel(params: Params, variant: Variant, cfg, device, seed: int, meta: dict, ck: Checkpoint,
                     engine: Engine) -> None:
    """`invert` with the APIs on parallel workers (:mod:`dfml.inversion.fanout`): the same bank, the same ledger.

    This process saves each finished API as it arrives (the checkpoint's ``finished``, which need not be a prefix
    of the APIs; ``done`` is the prefix); a rerun recovers only the others. The ledger is one
    :class:`~dfml.api.budget.LedgerBook` that every worker's queries go through.
    """
    saved, rt = ck.load(), params.runtime
    whitebox = cfg.exact_gradients
    # the driver's own clients: the API names and classes, and the backend checked before any work
    apis = open_apis(paths.POOL, params.query, rt.backend, rt.http, QueryLedger(), device, whitebox=whitebox)
    names = [a.name for a in apis]
    finished, seconds, partial = set(), 0.0, None
    method_state = build_method(cfg, meta["channels"], meta["image_size"], device, seed).state_dict()
    if saved is not None:
        seconds = saved["seconds"]
        finished = set(saved.get("finished", names[:saved["done"]]))
        if saved["inversion"] is not None:  # an in-process run's API in progress: it continues from its last step
            partial = {"name": names[saved["done"]], **{k: saved[k] for k in ("inversion", "method", "rng")}}
        print(f"[invert] resuming from {ck.folder}: {len(finished)} of {len(apis)} APIs done; "
              f"{saved['ledger']['total']:,} API images spent so far", flush=True)
    book = engine.book(saved["ledger"] if saved else None, rt.budget_images, rt.budget_images_per_api, "invert")
    start = time.perf_counter()

    def save() -> dict:
        spent = book.call("snapshot")
        done = next((i for i, n in enumerate(names) if n not in finished), len(names))
        ck.save({"done": done, "finished": sorted(finished),
                 "inversion": partial["inversion"] if partial else None,
                 "method": partial["method"] if partial else method_state,
                 "rng": partial["rng"] if partial else rng_state(), "ledger": spent,
                 "seconds": seconds + time.perf_counter() - start},
                {"apis_done": len(finished), "apis": len(names), "steps_done_of_next": 0, "api_images": spent["total"]})
        return spent

    bar = tqdm(desc=f"invert APIs ({cfg.method}, {engine.name})", unit="api", initial=len(finished), total=len(apis))

    def on_entry(name: str, entry: dict) -> None:
        nonlocal partial
        ck.save_part(name, entry)
        finished.add(name)
        if partial is not None and partial["name"] == name:
            partial = None
        save()
        bar.update()

    jobs = [RecoverJob(i, a.name, cfg, params.query, rt.backend, rt.http, meta["channels"], meta["image_size"],
                       seed, whitebox, book,
                       {k: partial[k] for k in ("inversion", "method", "rng")}
                       if partial and partial["name"] == a.name else None)
            for i, a in enumerate(apis) if a.name not in finished]
    try:
        stops = recover_on_workers(engine, jobs, engine.share_folder(paths.POOL), on_entry)
    except BaseException:  # a lost worker, an error in a job, ^C: what was spent until now goes into the checkpoint
        _try(save)
        raise
    finally:
        bar.close()
    ledger = budget_ledger(rt.budget_images, rt.budget_images_per_api)
    ledger.load_state_dict(book.call("summary"))
    if stops:
        save()
        write_json(paths.invert_metrics(variant), {
            "complete": False, "stopped": "API image budget exhausted", "apis_done": len(finished), "apis": len(apis),
            "method": cfg.method, **_spend(ledger, seconds + time.perf_counter() - start, device)})
        redo = sorted({e.api for e in stops})
        kept = (f"{len(finished)} of {len(apis)} APIs inverted, in {ck.folder} ({', '.join(redo)} to be redone from "
                f"{'its' if len(redo) == 1 else 'their'} start, as the parallel workers of runtime.engine: "
                f"{engine.name} do); what was spent: {paths.invert_metrics(variant)}")
        raise BudgetStop(stop_message(stops[0], ledger, kept))
    _finish(apis, ck, ck.fp, cfg, ledger, seconds + time.perf_counter() - start, device, variant)


def _try(fn) -> None:
    try:
        fn()
    except Exception:  # the engine is gone too: the last checkpoint stands
        pass


def _planned(cfg) -> str:
    """How many generator steps an API takes, in words."""
    if not cfg.extra_steps:
        return str(cfg.steps)
    return f"{cfg.steps}, up to {cfg.steps + cfg.extra_steps} while its agreement is below {cfg.target_agreement}"


def _method_keys(cfg) -> dict:
    """What metrics/invert.json says of the method: its name (and bidf's gradient, as it always did)."""
    return {"method": cfg.method, **({"gradient": cfg.bidf.gradient} if cfg.method == "bidf" else {})}


def _spend(ledger, seconds: float, device) -> dict:
    return {"api_images": ledger.total, "api_images_per_api": dict(sorted(ledger.per_api.items())),
            "ledger": ledger.summary(), "budget": ledger.budget_report(), "seconds": round(seconds, 2),
            "peak_rss_mb": peak_rss_mb(),
            "device": str(device)}


def _finish(apis, ck: Checkpoint, fp: str, cfg, ledger, seconds: float, device, variant: Variant) -> None:
    """Every API is done: the bank (atomically, as one folder), the plot, the metrics; then the checkpoint goes."""
    entries = [torch.load(ck.part(a.name), map_location="cpu", weights_only=True) for a in apis]
    agree = [(e.get("api_answers", e["probs"]).argmax(-1) == torch.arange(a.num_classes).unsqueeze(1)).float()
             .mean().item()
             for a, e in zip(apis, entries)]
    bank = paths.bank(variant)
    tmp = bank.with_name(f".{bank.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for a in apis:
        shutil.copyfile(ck.part(a.name), tmp / f"{a.name}.pt")
    write_json(tmp / "index.json", {"apis": [a.name for a in apis], "method": cfg.method, "fingerprint": fp})
    shutil.rmtree(bank, ignore_errors=True)
    tmp.rename(bank)
    samples = [e["images"] for e in entries[:6]]
    image_grid_png(samples, paths.invert_samples(variant),
                   title=f"recovered images: one row per API ({len(samples)} of {len(apis)}), classes left to right")
    agreement = 100 * sum(agree) / len(agree)
    steps = {a.name: len(e["history"]) for a, e in zip(apis, entries)}
    write_json(paths.invert_metrics(variant), {"complete": True, **_method_keys(cfg), **_spend(ledger, seconds, device),
                         "api_agreement_pct": round(agreement, 2),
                         "api_agreement_pct_per_api": {a.name: round(100 * g, 1) for a, g in zip(apis, agree)},
                         "generator_steps": sum(steps.values()), "generator_steps_per_api": steps})
    ck.finish()
    print(f"inverted {len(apis)} APIs with {ledger.total:,} API images; "
          f"the APIs give the target class to {agreement:.1f}% of recovered images")


if __name__ == "__main__":
    main("invert", invert, __doc__.splitlines()[0])
