"""What the baselines learn from: the pseudo tasks that `invert` recovered, and the owner's reported accuracies.

The baselines send no API query of their own: each API's recovered images and the
API's answers to them are read back from ``data/bank/<api>.pt`` (written by the
`invert` stage), so the API images a baseline costs are the inversion images of
the APIs whose bank entries it uses (``metrics/invert.json``, ``api_images_per_api``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class BankTask:
    """One API's recovered pseudo task, flattened class-major.

    Attributes:
        name: the API's name (``api_000``...).
        images: ``float32 [N*n, C, H, W]`` in ``[0, 1]``: n recovered images of each of the API's N classes.
        probs: ``float32 [N*n, N]``: the API's answer to each image (rows sum to one; the surrogate's
        clone's probabilities under ``invert.surrogate.bank_targets: clone``).
    """

    name: str
    images: torch.Tensor
    probs: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.probs.shape[-1]


def load_bank(folder: Path) -> list[BankTask]:
    """Every API's task in ``folder`` (``index.json`` order, i.e. the pool sorted by name).

    A bank entry holds ``images [N, n, C, H, W]`` and ``probs [N, n, N]``; both are
    flattened to ``[N*n, ...]`` here.
    """
    folder = Path(folder)
    index = folder / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no recovered tasks here; run `dvc repro invert` first")
    tasks = []
    for name in json.loads(index.read_text())["apis"]:
        entry = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=False)
        images, probs = entry["images"], entry["probs"]
        tasks.append(BankTask(name, images.flatten(0, 1).float(), probs.flatten(0, 1).float()))
    return tasks


def reported_accuracies(pool: Path) -> dict[str, float]:
    """``{api name: held-out accuracy}`` as the owner publishes it in ``pool.json`` (the same value as
    :attr:`dfml.api.InProcessAPI.reported_accuracy`, read from each checkpoint's ``heldout_acc``)."""
    index = Path(pool) / "pool.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no API pool here; run `dvc repro pretrain` first")
    return {a["name"]: float(a["heldout_acc"]) for a in json.loads(index.read_text())["apis"]}
