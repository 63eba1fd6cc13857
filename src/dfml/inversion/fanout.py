"""Recovering the APIs on parallel workers (``runtime.engine: ray``; :mod:`dfml.runtime.engine`).

Only an *order-free* method may fan out (:attr:`~dfml.inversion.methods.RecoveryMethod.order_free`: an API's
task does not depend on the APIs before it): ``surrogate``, ``dfme`` and ``cake`` always are (every random
stream derives from the API's index), ``bidf`` is with ``invert.bidf.directions: per_api`` or exact gradients,
and not with ``directions: shared`` (the release's one stream of directions drawn across the APIs in order).
:func:`require_order_free` refuses the others before any work.

Each API is one job (:func:`recover_job`): the worker opens its own API clients through the run's backend
(:func:`~dfml.api.backends.open_apis`: the pool's checkpoints, or the HTTP server) and recovers the API exactly as
the in-process loop does, so its bank entry is the same bit for bit. Every image it sends goes through the query
interface into the stage's one shared ledger (:class:`~dfml.api.budget.LedgerBook`; a Ray actor), which reserves
a query's images before anything is sent: the run's budgets are never passed, whatever the number of workers.
An API that a budget stops is given up (its images stay spent, booked as discarded) and redone from its start
when the stage runs again; an API that an in-process run left half-done (``bidf``'s within-API checkpoint)
continues from its last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..api.backends import open_apis
from ..api.base import BudgetExhausted
from ..api.budget import BookLedger
from ..api.params import HTTPParams, QueryParams
from ..core.errors import ParamError
from ..core.seeding import seed_everything, set_rng_state
from ..runtime.engine import Engine, local_folder
from .methods import Recovered
from .params import InvertParams
from .recovery import METHODS, build_method


def require_order_free(cfg: InvertParams, engine: type[Engine]) -> None:
    """ParamError when `engine` runs APIs in parallel and the method of `cfg` is not order free with it (raised
    before any file is read)."""
    method = METHODS[cfg.method]
    if engine.parallel and not method.order_free_for(cfg):
        why = f": {method.order_hint}," if method.order_hint else ";"
        raise ParamError(f"runtime.engine: {engine.name} recovers the APIs on parallel workers, in any order, but "
                         f"invert.method: {cfg.method} is not order free here{why} or set runtime.engine: inprocess")


def bank_entry(name: str, got: Recovered) -> dict:
    """What ``data/bank/<api>.pt`` holds for one API (and ``checkpoints/invert/<api>.pt`` once it is done)."""
    return {"api": name, "images": got.images, "probs": got.probs, "state": got.state.state_dict(),
            "history": got.history, **got.extra}


@dataclass(frozen=True)
class RecoverJob:
    """One API to recover on a worker: which (its index and name), the params, and the run's shared ledger.

    `partial` (the API left half-done by an in-process run): ``{"inversion", "method", "rng"}`` of its checkpoint.
    """

    index: int
    name: str
    cfg: InvertParams
    query: QueryParams
    backend: str
    http: HTTPParams
    channels: int
    image_size: int
    seed: int
    whitebox: bool
    book: Any
    partial: dict | None = None


def recover_job(job: RecoverJob, pool: Any, device: torch.device) -> dict:
    """Recover API `job.name` (a job of :meth:`~dfml.runtime.engine.Engine.map`; `pool`: the shared pool folder).

    Returns ``{"entry": bank entry}``, or ``{"stopped": BudgetExhausted's arguments}`` when a budget refused a
    query (the attempt is given up: the API is redone from its start).
    """
    seed_everything(job.seed)
    ledger = BookLedger(job.book, job.name)
    ledger.phase = "invert"
    apis = open_apis(local_folder(pool), job.query, job.backend, job.http, ledger, device, whitebox=job.whitebox)
    api = next(a for a in apis if a.name == job.name)
    method = build_method(job.cfg, job.channels, job.image_size, device, job.seed)
    state = None
    if method.steps_resumable:
        state = method.new_state(api, job.index)
        if job.partial is not None:  # as the in-process loop continues it
            state.load_full_state_dict(job.partial["inversion"])
            method.load_state_dict(job.partial["method"])
            set_rng_state(job.partial["rng"])
    try:
        got = method.recover(api, job.index, state=state)
    except BudgetExhausted as exc:
        ledger.end(kept=False)
        return {"stopped": (exc.api, exc.images, exc.spent, exc.budget, exc.scope)}
    ledger.sync()  # every count of this attempt is in the book; the driver keeps the attempt once it saved it
    return {"entry": bank_entry(api.name, got), "token": ledger.token}


def recover_on_workers(engine: Engine, jobs: list[RecoverJob], pool: Any,
                       on_entry: Callable[[str, dict], None]) -> list[BudgetExhausted]:
    """Run `jobs` on `engine`; `on_entry(name, entry)` for each API as it finishes (in the driver).

    After the first budget refusal no further API starts; those under way finish (or stop too). Returns the
    refusals (empty when every API finished)."""
    batch = engine.map(recover_job, ((j.name, j) for j in jobs), shared=pool)
    books = {j.name: j.book for j in jobs}
    stops = []
    for name, result in batch:
        if "stopped" in result:
            stops.append(BudgetExhausted(*result["stopped"]))
            batch.stop()
        else:
            # kept here, not on the worker: an API whose result never reaches this process (the stage stopped on
            # a lost worker first) stays an open attempt, its images booked as discarded, and is redone
            books[name].call("end", name, result["token"], True)
            on_entry(name, result["entry"])
    return stops
