"""The ``baselines`` section: the data-free baselines distilled from the recovered tasks."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
from ..core.schema import Field, PosFloat, PosInt, Section

BASELINE_NAMES = ("best_api", "single_dfkd", "distill_avg")


class StudentParams(Section):
    steps: PosInt = Field(description="Adam steps of tempered KL (distill_avg: per student)")
    lr: PosFloat = Field(description="Adam lr")
    batch_size: Annotated[int, at.Ge(2)] = Field(description="recovered images per step")
    temperature: PosFloat = Field(description="KD temperature")


class SingleDFKDParams(StudentParams):
    head: Literal["random", "zero"] = Field(
        description="the new N-way head on the distilled body: random (the seeded head of `random`) | zero")


class BaselinesParams(Section):
    """The data-free baselines' settings (which ones run: ``run.baselines``)."""

    best_api: StudentParams
    single_dfkd: SingleDFKDParams
    distill_avg: StudentParams
