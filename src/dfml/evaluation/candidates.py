"""What `evaluate` knows of a model: its initialisation, how it adapts, and what its training cost.

A meta-learned model adapts as it was meta-trained: its own inner learning rate and inner steps, read from its
checkpoint. A model that was not meta-learned (random initialisation, the distilled baselines) gets
`evaluate.adapt_steps` steps at the best lr of `evaluate.lr_grid` on meta-val episodes. The cost of a model is
the API images its training sent and its training wall seconds, inversion included, which the stage that made
the model writes into its checkpoint (``cost``), so a model's evaluation depends on one file,
``models/<name>.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..models import build_meta_model


@dataclass
class Candidate:
    """An initialisation to evaluate.

    Attributes:
        model: the module (for its structure); params: its parameters (detached).
        own_lr, own_steps: how a meta-learned model adapts (its inner lr and steps); None for the others.
        info: what the report says of it; cost: ``{"api_images"}`` of its training (the seconds are in
        ``metrics/cost/<name>.json``, not in the checkpoint: a checkpoint's bytes do not depend on the clock).
    """

    model: nn.Module
    params: dict
    own_lr: float | None
    own_steps: int | None
    info: dict
    cost: dict


Loader = Callable[[Path, int, int, int, torch.device], Candidate]


def _load(path: Path, channels: int, ways: int, image_size: int, device: torch.device) -> tuple[nn.Module, dict, dict]:
    """``(module, checkpoint, cost)`` of the checkpoint at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run dvc repro first (the stage that trains it)")
    ck = torch.load(path, map_location=device, weights_only=False)
    missing = [k for k in ("cost", "arch", "state_dict") if k not in ck]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (written by an older version): run `dvc repro` to "
                         "retrain it")
    m = build_meta_model(ck["arch"], channels, ways, image_size, 0).to(device)
    m.load_state_dict(ck["state_dict"])
    cost = {"api_images": int(ck["cost"]["api_images"])}
    return m, ck, cost


def meta_learned(path: Path, channels: int, ways: int, image_size: int, device: torch.device) -> Candidate:
    """A meta-learned checkpoint (``inner_lr``, ``inner_steps``, ``best_iteration``, ``best_val_acc``)."""
    m, ck, cost = _load(path, channels, ways, image_size, device)
    missing = [k for k in ("inner_lr", "inner_steps", "best_iteration", "best_val_acc") if k not in ck]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}, which a meta-learned checkpoint holds (written by an "
                         "older version, or not meta-learned): run `dvc repro` to retrain it")
    return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, ck["inner_lr"], ck["inner_steps"],
                     {"checkpoint": str(path), "best_iteration": ck["best_iteration"],
                      "meta_val_acc_at_choice": round(ck["best_val_acc"], 3)}, cost)


def distilled(path: Path, channels: int, ways: int, image_size: int, device: torch.device) -> Candidate:
    """A checkpoint that was not meta-learned (``info``; no inner settings): adapts at the best lr of the grid."""
    m, ck, cost = _load(path, channels, ways, image_size, device)
    return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, None, None,
                     {"checkpoint": str(path), **ck["info"]}, cost)


# run.evaluate name -> how its checkpoint models/<name>.pt is read (the stage that trains it writes it)
KINDS: dict[str, Loader] = {
    "random": distilled,
    "maml_real": meta_learned,
    "bidf_mkd": meta_learned,
    "bidf_mkd_whitebox": meta_learned,  # the white-box reference: stages whitebox_invert / whitebox_distill
    "best_api": distilled,
    "single_dfkd": distilled,
    "distill_avg": distilled,
}
