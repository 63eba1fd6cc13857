"""Models that `evaluate` knows: name -> how to get its initialisation, how it adapts, what its training cost.

A meta-learned model adapts at its own inner learning rate; a model that was not
meta-learned (random initialisation, the distilled baselines) gets the best lr of
`evaluate.lr_grid` on meta-val episodes (DESIGN.md section 3, step 5). The cost of
a model is the API images its training sent and its training wall seconds,
inversion included, read from the metrics files of the stages that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.prepared import Prepared
from ..meta.runs import build_meta_model
from ..utils import derive_seed, read_json, torch_save_atomic


@dataclass
class Candidate:
    """An initialisation to evaluate: the module (for its structure), its parameters, its own lr (or None)."""

    model: nn.Module
    params: dict
    own_lr: float | None
    info: dict


Loader = Callable[[dict, Prepared, torch.device], Candidate]


@dataclass(frozen=True)
class Cost:
    """Where a model's training cost is written: ``api_images`` as (metrics file, key), None for a model that
    sends no API image; ``seconds`` as (metrics file, key) pairs, summed (e.g. inversion + distillation)."""

    api_images: tuple[str, str] | None = None
    seconds: tuple[tuple[str, str], ...] = ()

    def files(self) -> list[str]:
        return sorted({f for f, _ in ([self.api_images] if self.api_images else []) + list(self.seconds)})

    def read(self, root: Path = Path(".")) -> dict:
        """``{"api_images": int, "seconds": float}`` from the metrics files under `root`."""
        def value(path: str, key: str):
            if not (Path(root) / path).is_file():
                raise FileNotFoundError(f"{path} not found (the training cost of an evaluated model): "
                                        "run dvc repro first")
            return read_json(Path(root) / path)[key]

        api = int(value(*self.api_images)) if self.api_images else 0
        return {"api_images": api, "seconds": round(sum(float(value(*s)) for s in self.seconds), 2)}


@dataclass(frozen=True)
class ModelSpec:
    """A model of `evaluate.models`: its loader and its cost."""

    load: Loader
    cost: Cost = field(default_factory=Cost)


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
                       "info": {"init": "random (seeded)"}}, path)
    return path


def _load(path: str, params: dict, data: Prepared, device: torch.device) -> tuple[nn.Module, dict]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run dvc repro first (the stage that trains it)")
    ck = torch.load(Path(path), map_location=device, weights_only=False)
    m = build_meta_model(ck["arch"], data.channels, params["evaluate"]["ways"], data.image_size, 0).to(device)
    m.load_state_dict(ck["state_dict"])
    return m, ck


def _meta_learned(path: str) -> Loader:
    """A meta-learned checkpoint (``inner_lr``, ``best_iteration``, ``best_val_acc``): adapts at its own lr."""
    def load(params: dict, data: Prepared, device: torch.device) -> Candidate:
        m, ck = _load(path, params, data, device)
        return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, ck["inner_lr"],
                         {"checkpoint": path, "best_iteration": ck["best_iteration"],
                          "meta_val_acc_at_choice": round(ck["best_val_acc"], 3)})

    return load


def _distilled(path: str) -> Loader:
    """A baseline checkpoint (``info``; no inner lr): adapts at the best lr of the grid."""
    def load(params: dict, data: Prepared, device: torch.device) -> Candidate:
        m, ck = _load(path, params, data, device)
        return Candidate(m, {k: v.detach() for k, v in m.named_parameters()}, None,
                         {"checkpoint": path, **ck["info"]})

    return load


INVERT_SECONDS = ("metrics/invert.json", "seconds")


def _baseline(name: str) -> ModelSpec:
    """`stages/baseline.py <name>`: ``models/<name>.pt``; API images and seconds in ``metrics/<name>.json``."""
    own = f"metrics/{name}.json"
    return ModelSpec(_distilled(f"models/{name}.pt"), Cost((own, "api_images"), (INVERT_SECONDS, (own, "seconds"))))


MODELS: dict[str, ModelSpec] = {
    "random": ModelSpec(_distilled(RANDOM)),
    "maml_real": ModelSpec(_meta_learned("models/maml_real.pt"), Cost(None, (("metrics/maml_real.json", "seconds"),))),
    "bidf_mkd": ModelSpec(_meta_learned("models/bidf_mkd.pt"),
                          Cost(("metrics/distill.json", "api_images_total"),
                               (INVERT_SECONDS, ("metrics/distill.json", "seconds")))),
    # white-box reference (exact input gradients): stages invert_whitebox / distill_whitebox; not in the default list
    "bidf_mkd_whitebox": ModelSpec(_meta_learned("models/bidf_mkd_whitebox.pt"),
                                   Cost(("metrics/distill_whitebox.json", "api_images_total"),
                                        (("metrics/invert_whitebox.json", "seconds"),
                                         ("metrics/distill_whitebox.json", "seconds")))),
    **{name: _baseline(name) for name in ("best_api", "single_dfkd", "distill_avg")},
}
