"""Models that `evaluate` knows: name -> how to get its initialisation, how it adapts, what its training cost.

A meta-learned model adapts at its own inner learning rate; a model that was not
meta-learned (random initialisation, the distilled baselines) gets the best lr of
`evaluate.lr_grid` on meta-val episodes (DESIGN.md section 3, step 5). The cost of
a model is the API images its training sent and its training wall seconds,
inversion included, which the stage that made the model writes into its checkpoint
(``cost``), so a model's evaluation depends on one file, ``models/<name>.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.prepared import Prepared
from ..meta.runs import build_meta_model
from ..utils import derive_seed, read_json, torch_save_atomic


@dataclass
class Candidate:
    """An initialisation to evaluate: the module (for its structure), its parameters, its own lr (or None), and
    what its training cost (``{"api_images", "seconds"}``, inversion included; written by the stage that made it)."""

    model: nn.Module
    params: dict
    own_lr: float | None
    info: dict
    cost: dict


Loader = Callable[[dict, Prepared, torch.device], Candidate]

RANDOM = "models/random.pt"


def save_random_init(params: dict, root: Path) -> Path:
    """Write the `random` model: the seeded meta-model initialisation that `distill` and `maml_real` start from
    (``derive_seed(seed, "meta-init")``), in the checkpoint format of the baselines (``root/models/random.pt``)."""
    data = read_json(root / "metrics/data.json")
    m = build_meta_model("conv4", data["channels"], params["evaluate"]["ways"], data["image_size"],
                         derive_seed(params["seed"], "meta-init"))
    path = root / RANDOM
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic({"name": "random", "arch": "conv4", "state_dict": m.state_dict(),
                       "info": {"init": "random (seeded)"}, "cost": {"api_images": 0, "seconds": 0.0}}, path)
    return path


def _load(path: str, params: dict, data: Prepared, device: torch.device) -> tuple[nn.Module, dict, dict]:
    """``(module, checkpoint, cost)`` of the checkpoint at `path`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run dvc repro first (the stage that trains it)")
    ck = torch.load(Path(path), map_location=device, weights_only=False)
    if "cost" not in ck:
        raise ValueError(f"{path} does not say what its training cost (written by an older version): "
                         "run `dvc repro` to retrain it")
    m = build_meta_model(ck["arch"], data.channels, params["evaluate"]["ways"], data.image_size, 0).to(device)
    m.load_state_dict(ck["state_dict"])
    cost = {"api_images": int(ck["cost"]["api_images"]), "seconds": round(float(ck["cost"]["seconds"]), 2)}
    return m, ck, cost


def meta_learned(path: str) -> Loader:
    """A meta-learned checkpoint (``inner_lr``, ``best_iteration``, ``best_val_acc``): adapts at its own lr."""
    def load(params: dict, data: Prepared, device: torch.device) -> Candidate:
        m, ck, cost = _load(path, params, data, device)
        return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, ck["inner_lr"],
                         {"checkpoint": path, "best_iteration": ck["best_iteration"],
                          "meta_val_acc_at_choice": round(ck["best_val_acc"], 3)}, cost)

    return load


def _distilled(path: str) -> Loader:
    """A checkpoint that was not meta-learned (``info``; no inner lr): adapts at the best lr of the grid."""
    def load(params: dict, data: Prepared, device: torch.device) -> Candidate:
        m, ck, cost = _load(path, params, data, device)
        return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, None,
                         {"checkpoint": path, **ck["info"]}, cost)

    return load


# name -> loader of models/<name>.pt, made by the stage that trains it (evaluate_model@<name> depends on that file)
MODELS: dict[str, Loader] = {
    "random": _distilled(RANDOM),
    "maml_real": meta_learned("models/maml_real.pt"),
    "bidf_mkd": meta_learned("models/bidf_mkd.pt"),
    # white-box reference (exact input gradients): stages whitebox_invert / whitebox_distill (whitebox.run)
    "bidf_mkd_whitebox": meta_learned("models/bidf_mkd_whitebox.pt"),
    **{name: _distilled(f"models/{name}.pt") for name in ("best_api", "single_dfkd", "distill_avg")},
}
