"""Where and how long a stage runs: the device from params, wall seconds, peak memory."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import ParamError

DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cpu` / `cuda` / `cuda:N` as given.

    Raises ParamError (naming `key`) for another name, or for CUDA on a machine without it (or without GPU N).
    """
    if not isinstance(name, str) or not DEVICE.match(name):
        raise ParamError(f"{key}: must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamError(f"{key} is {name!r} but CUDA is not available on this machine; use auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParamError(f"{key} is {name!r} but this machine has {torch.cuda.device_count()} GPU(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}, auto or cpu")
    return dev


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB (``ru_maxrss``; imports included)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def timer() -> Iterator[dict]:
    """`with timer() as t: ...` then `t["seconds"]`."""
    out: dict = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
