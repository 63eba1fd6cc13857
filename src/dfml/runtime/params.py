"""The ``runtime`` section: settings that never change results, so no stage lists them in dvc.yaml and no
checkpoint fingerprint holds them (changing them reruns nothing)."""

from __future__ import annotations

from typing import Literal

from ..api.params import HTTPParams
from ..core.schema import Field, NonNegInt, PosInt, Section


class CheckpointEvery(Section):
    invert: NonNegInt = Field(description="generator steps between checkpoints within one API (0: when an API is "
                                          "done only)")
    distill: NonNegInt = Field(description="meta-iterations between checkpoints (0: none; a budget stop still saves)")


class RuntimeParams(Section):
    """How a run is carried out, never what it computes: backend, budgets, checkpoints (no stage
    lists it)."""

    backend: Literal["inprocess", "http"] = Field(
        description="inprocess: the pool's checkpoints run in this process; http: a `dfml serve` server (both "
                    "answer alike, bit for bit)")
    http: HTTPParams
    budget_images: PosInt | None = Field(description="API images for the whole run (invert + distill); null: no cap")
    budget_images_per_api: PosInt | None = Field(description="API images per API for the whole run; null: no cap")
    checkpoint_every: CheckpointEvery
