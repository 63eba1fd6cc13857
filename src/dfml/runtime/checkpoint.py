"""Resumable stages: checkpoints that carry a fingerprint of what decides the results, under a lock.

A stage that may run long (`invert`, `distill`) saves its whole state now and then into its own folder under
``checkpoints/`` (outside DVC's outs, so DVC neither deletes it before a rerun nor caches it; it is
gitignored). Every file is written atomically (temp file, then rename), so a stage killed at any moment
(SIGKILL included) leaves the last complete checkpoint. Run again, the stage continues from it and ends as an
uninterrupted run would: every random state is in the checkpoint. A checkpoint made with other params (its
:func:`fingerprint` differs) is ignored, and the stage says so. On success the stage writes its outs, then
removes its checkpoint folder.

One run at a time: :meth:`Checkpoint.locked` holds an exclusive lock on the folder for the whole stage, so a
second run of the same stage stops at once with a message instead of sharing (and corrupting) the folder.
Clearing removes the manifest (``checkpoint.pt``) first: a clear killed half-way leaves parts without a
manifest, which the next run does not trust.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..core.errors import CheckpointBusy
from ..core.io import torch_save_atomic, write_json

FORMAT = 2  # bumped when the checkpoint layout changes: older ones are then ignored as stale


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able `parts` (params, digests of inputs)."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str | None:
    """sha256 of a file, None if it does not exist."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


class Checkpoint:
    """The checkpoint folder of one stage: ``checkpoint.pt`` (the state, the manifest of the folder),
    ``state.json`` (a readable summary) and named parts (e.g. one file per finished API), all tied to one
    fingerprint.

    Args:
        folder: e.g. ``checkpoints/invert``. fp: :func:`fingerprint` of what decides the results. stage: for messages.
    """

    FILE = "checkpoint.pt"
    LOCK = ".lock"

    def __init__(self, folder: Path, fp: str, stage: str):
        self.folder, self.fp, self.stage = Path(folder), fp, stage

    @contextmanager
    def locked(self) -> Iterator["Checkpoint"]:
        """Hold the stage's lock (``<folder>/.lock``) for the block; CheckpointBusy if another process holds it.
        On a clean exit of the block the folder (lock file included) is gone when :meth:`finish` was called."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.folder / self.LOCK, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CheckpointBusy(f"another run of `{self.stage}` (pid {holder}) is using {self.folder}; wait for "
                                     "it to finish or stop it, then run again") from None
            raise
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield self
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def load(self) -> dict | None:
        """The saved state, or None (nothing saved; or saved with other params or unreadable: then said and
        the folder is cleared, so no part of it is used)."""
        path = self.folder / self.FILE
        if not path.is_file():
            self.clear()  # parts without a manifest (killed before the first save, or mid-clear) are not trusted
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
        """Remove what the folder holds, the manifest first (crash-safe: see the module docstring); the lock stays."""
        (self.folder / self.FILE).unlink(missing_ok=True)
        if self.folder.is_dir():
            for item in self.folder.iterdir():
                if item.name != self.LOCK:
                    shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)

    def finish(self) -> None:
        """The stage is done: remove the folder, and ``checkpoints/`` when nothing else is left in it."""
        self.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.folder.parent.is_dir() and not any(self.folder.parent.iterdir()):
            self.folder.parent.rmdir()

    def _say(self, text: str) -> None:
        print(f"[{self.stage}] {text}", flush=True)
