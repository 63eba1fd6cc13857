"""Models that `evaluate` knows: name -> how to get its initialisation and its adaptation lr.

A meta-learned model adapts at its own inner learning rate; a model that was
not meta-learned (random initialisation) gets the best lr of `evaluate.lr_grid`
on meta-val episodes (DESIGN.md section 3, step 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.prepared import Prepared
from ..meta.runs import build_meta_model
from ..utils import derive_seed


@dataclass
class Candidate:
    """An initialisation to evaluate: the module (for its structure), its parameters, its own lr (or None)."""

    model: nn.Module
    params: dict
    own_lr: float | None
    info: dict


def _random(params: dict, data: Prepared, device: torch.device) -> Candidate:
    m = build_meta_model("conv4", data.channels, params["evaluate"]["ways"], data.image_size,
                         derive_seed(params["seed"], "meta-init")).to(device)
    return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, None, {"init": "random (seeded)"})


def _checkpoint(path: str) -> Callable[[dict, Prepared, torch.device], Candidate]:
    def load(params: dict, data: Prepared, device: torch.device) -> Candidate:
        ck = torch.load(Path(path), map_location=device, weights_only=False)
        m = build_meta_model(ck["arch"], data.channels, params["evaluate"]["ways"], data.image_size, 0).to(device)
        m.load_state_dict(ck["state_dict"])
        return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, ck["inner_lr"],
                         {"checkpoint": path, "best_iteration": ck["best_iteration"],
                          "meta_val_acc_at_choice": round(ck["best_val_acc"], 3)})

    return load


MODELS: dict[str, Callable[[dict, Prepared, torch.device], Candidate]] = {
    "random": _random,
    "maml_real": _checkpoint("models/maml_real.pt"),
    "bidf_mkd": _checkpoint("models/bidf_mkd.pt"),
}
