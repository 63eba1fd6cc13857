"""Seeds: every random stream of a run derives from the params' seed by name; random states for checkpoints."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def derive_seed(seed: int, *names: object) -> int:
    """A stable child seed in ``[0, 2**63)`` from a parent seed and names (FNV-1a; no use of python's hash())."""
    text = ":".join([str(seed), *map(str, names)])
    h = 1469598103934665603
    for ch in text.encode():
        h = ((h ^ ch) * 1099511628211) % (2**63)
    return h


def rng_state() -> dict:
    """The global random states (torch CPU and CUDA, numpy, python), loadable with ``weights_only``."""
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
