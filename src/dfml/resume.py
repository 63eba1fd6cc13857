"""Resumable stages: checkpoints that carry a fingerprint of what decides the results, and budget stops.

A stage that may run long (`invert`, `distill`) saves its whole state now and
then into its own folder under ``checkpoints/`` (outside DVC's outs, so DVC
neither deletes it before a rerun nor caches it; it is gitignored). Every file
is written atomically (temp file, then rename), so a stage killed at any moment
(SIGKILL included) leaves the last complete checkpoint. Run again, the stage
continues from it and ends as an uninterrupted run would: every random state is
in the checkpoint. A checkpoint made with other params (its :func:`fingerprint`
differs) is ignored, and the stage says so. On success the stage writes its
outs, then removes its checkpoint folder.

When the run's API image budget runs out (:class:`~dfml.api.BudgetExhausted`)
a stage saves what it finished, writes what was spent and stops with
:data:`EXIT_BUDGET` and a :class:`BudgetStop` message saying how to continue.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api.base import BudgetExhausted, QueryLedger
from .config import OPERATIONAL_KEYS
from .utils import torch_save_atomic, write_json

CHECKPOINTS = Path("checkpoints")
FORMAT = 1  # bumped when the checkpoint layout changes: older ones are then ignored as stale
EXIT_BUDGET = 3


class BudgetStop(Exception):
    """A stage stopped on its API image budget with its finished work saved; the message says how to continue."""


def result_params(params: dict, *keys: str) -> dict:
    """The params under `keys` (top-level names) that decide results: :data:`OPERATIONAL_KEYS` left out."""
    out = copy.deepcopy({k: params[k] for k in keys})
    for dotted in OPERATIONAL_KEYS:
        section, _, key = dotted.partition(".")
        if section in out:
            out[section].pop(key, None)
    return out


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able `parts` (params, digests of inputs)."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    """sha256 of a file, None if it does not exist."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def rng_state() -> dict:
    """The global random states (torch CPU and CUDA, numpy, python)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(sd: dict) -> None:
    torch.set_rng_state(sd["torch"])
    if sd["cuda"]:
        torch.cuda.set_rng_state_all(sd["cuda"])
    kind, keys, pos, has_gauss, gauss = sd["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(sd["python"])


class Checkpoint:
    """The checkpoint folder of one stage: ``checkpoint.pt`` (the state), ``state.json`` (a readable summary)
    and named parts (e.g. one file per finished API), all tied to one fingerprint.

    Args:
        folder: e.g. ``checkpoints/invert``. fp: :func:`fingerprint` of what decides the results. stage: for messages.
    """

    FILE = "checkpoint.pt"

    def __init__(self, folder: Path, fp: str, stage: str):
        self.folder, self.fp, self.stage = Path(folder), fp, stage

    def load(self) -> dict | None:
        """The saved state, or None (nothing saved; or saved with other params or unreadable: then said and
        the folder is cleared, so no part of it is used)."""
        path = self.folder / self.FILE
        if not path.is_file():
            self.clear()  # parts without a state (killed before the first save) are not trusted
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file from an older torch or layout: start over rather than fail
            self._say(f"ignoring {path}: unreadable ({type(exc).__name__}: {exc}); starting over")
            self.clear()
            return None
        if state.get("fingerprint") != self.fp:
            self._say(f"ignoring the checkpoint in {self.folder}: it was made with other params or inputs "
                      f"(fingerprint {state.get('fingerprint')} != {self.fp}); starting over")
            self.clear()
            return None
        return state

    def save(self, state: dict, summary: dict) -> None:
        """Write `state` (torch-saveable, loadable with ``weights_only``) atomically, then the readable summary."""
        torch_save_atomic({**state, "fingerprint": self.fp}, self.folder / self.FILE)
        write_json(self.folder / "state.json", {"stage": self.stage, "fingerprint": self.fp, **summary})

    def save_part(self, name: str, obj: Any) -> None:
        torch_save_atomic(obj, self.folder / f"{name}.pt")

    def part(self, name: str) -> Path:
        return self.folder / f"{name}.pt"

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.folder.parent.is_dir() and not any(self.folder.parent.iterdir()):
            self.folder.parent.rmdir()  # no empty checkpoints/ left behind

    def _say(self, text: str) -> None:
        print(f"[{self.stage}] {text}", flush=True)


def budget_ledger(params: dict) -> QueryLedger:
    """A ledger with the run's budgets ``apis.budget_images`` and ``apis.budget_images_per_api``."""
    return QueryLedger(params["apis"]["budget_images"], params["apis"]["budget_images_per_api"])


def stop_message(exc: BudgetExhausted, ledger: QueryLedger, kept: str) -> str:
    """What was spent, what remains, what is kept and how to continue."""
    key = "apis.budget_images" if exc.scope == "run" else "apis.budget_images_per_api"
    phases = ", ".join(f"{phase} {n:,}" for phase, n in ledger.per_phase.items()) or "none yet"
    scope = "the run" if exc.scope == "run" else f"API {exc.api}"
    return (f"{exc}.\n"
            f"  spent: {ledger.total:,} API images in this run ({phases}); {scope}: {exc.spent:,} of "
            f"{key} = {exc.budget:,}, {exc.remaining:,} left\n"
            f"  kept: {kept}\n"
            f"  to continue: raise {key} and run `dvc repro` again; finished work is kept")


class IterationUndo:
    """Takes a :class:`~dfml.meta.bidf.BiDfTaskSampler` back to the start of the current meta-iteration.

    A budget stop can come in the middle of a meta-iteration, after some of its
    boundary queries already changed inversion states and task memory. With
    `active`, :meth:`begin` (at the start of every iteration) keeps the random
    states, and the sampler's ``on_change`` hook keeps a copy of an API's state
    before its first change; :meth:`rollback` restores them and books the images
    sent in the lost part of the iteration as ``ledger.discarded`` (they stay
    spent). Either way it records which APIs' states ever changed (``changed``):
    only those need to go into a checkpoint.
    """

    def __init__(self, sampler, ledger: QueryLedger, active: bool):
        self.sampler, self.ledger, self.active = sampler, ledger, active
        self.changed: set[int] = set()
        self._saved: dict | None = None
        sampler.on_change = self._changing

    def begin(self) -> None:
        if self.active:
            self._saved = {"base": copy.deepcopy(self.sampler.state_dict(apis=[])), "apis": {}, "new": set(),
                           "rng": rng_state(), "sent": self.ledger.total}

    def _changing(self, a: int) -> None:
        saved = self._saved
        if saved is not None and a not in saved["apis"]:
            saved["apis"][a] = copy.deepcopy(self.sampler.state_dict(apis=[a]))
            if a not in self.changed:
                saved["new"].add(a)
        self.changed.add(a)

    def rollback(self) -> None:
        saved = self._saved
        if saved is None:
            raise RuntimeError("IterationUndo.rollback without begin (undo is active only with a budget)")
        for sd in saved["apis"].values():
            self.sampler.load_state_dict(sd)
        self.sampler.load_state_dict(saved["base"])
        set_rng_state(saved["rng"])
        self.changed -= saved["new"]
        self.ledger.discarded += self.ledger.total - saved["sent"]
        self._saved = None
