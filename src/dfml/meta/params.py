"""The ``distill`` (BiDf-MKD, Sec. 3.3-3.5) and ``maml_real`` (MAML on real images) sections."""

from __future__ import annotations

from typing import Annotated

import annotated_types as at

from ..core.schema import Field, NonNegFloat, NonNegInt, PosFloat, PosInt, Section

Shots = PosInt | Annotated[list[PosInt], at.MinLen(1)]


def largest(shots: int | list[int]) -> int:
    """The largest support size of a task (``support_shots`` may be a list to draw from)."""
    return max(shots) if isinstance(shots, list) else shots


class MetaValParams(Section):
    """What the outer loops share: the meta-learning schedule and the meta-val episodes the checkpoint is chosen on."""

    iterations: PosInt = Field(description="meta-iterations")
    tasks_per_batch: PosInt = Field(description="tasks per meta-batch (API tasks in distill)")
    inner_steps: PosInt = Field(description="inner SGD steps; the model adapts with as many at evaluation")
    inner_lr: PosFloat = Field(description="inner lr; the model adapts at it at evaluation")
    outer_lr: PosFloat = Field(description="Adam lr of the meta update")
    first_order: bool = Field(description="first-order meta-gradient (the release: second order)")
    support_shots: Shots = Field(description="support images per class of a task; a list: each task draws one")
    query_shots: PosInt = Field(description="query images per class of a task")
    val_every: PosInt = Field(description="meta-iterations between meta-val scores")
    val_episodes: PosInt = Field(description="meta-val episodes the checkpoint is chosen on")
    val_shots: PosInt = Field(description="support images per class of a meta-val episode")
    val_query: PosInt = Field(description="query images per class of a meta-val episode")


class DistillParams(MetaValParams):
    """BiDf-MKD meta knowledge distillation (Sec. 3.3-3.5; stage `distill`)."""

    memory_tasks: NonNegInt = Field(description="memory-replay tasks per meta-batch")
    temperature: PosFloat = Field(description="KD temperature")
    boundary_lambda: NonNegFloat = Field(description="weight of the boundary term (Eq. 7)")
    boundary_after: NonNegInt = Field(description="boundary query recovery from this meta-iteration on")
    boundary_steps: NonNegInt = Field(description="zero-order re-inversion steps per boundary query set")
    memory_size: PosInt = Field(description="recovered images kept per (API, class)")
    augment: bool = Field(description="random small affine deformations of memory-task images (no API cost)")
    permute_classes: bool = Field(description="API tasks put the API's classes in a random order per task")


class MamlParams(MetaValParams):
    """MAML (Finn et al., ICML 2017) on real meta-train images: the upper reference, not data-free."""

    """MAML (Finn et al., ICML 2017) on real meta-train images: the upper reference, not data-free."""
