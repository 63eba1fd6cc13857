"""The ``invert`` section: pseudo-task recovery from each API (BiDf-MKD Sec. 3.2)."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from ..core.schema import Field, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class InvertParams(Section):
    """Pseudo-task recovery from each API (BiDf-MKD Sec. 3.2; stage `invert`)."""

    gradient: Literal["zo", "exact"] = Field(
        description="zo: forward differences through the API (black-box); exact: the white-box reference")
    q: PosInt = Field(description="random directions per image; each step costs (q + 1) API images per image")
    mu: PosFloat = Field(description="forward-difference step")
    steps: PosInt = Field(description="generator updates per API")
    extra_steps: NonNegInt = Field(description="up to this many more for an API whose agreement is below "
                                               "target_agreement (0: none)")
    target_agreement: Annotated[float, at.Ge(0), at.Le(1)] = Field(
        description="share of the last batch the API answered as the class aimed at")
    images_per_class: Annotated[int, at.Ge(2)] = Field(
        description="recovered images per class (support and query sets are drawn from them)")
    latent_dim: PosInt = Field(description="generator input size")
    generator_width: Annotated[int, at.Ge(4)] = Field(
        description="generator channels (release: 128; the cost grows as width^2)")
    tv_weight: NonNegFloat = Field(description="total-variation image prior (no API cost)")
    l2_weight: NonNegFloat = Field(description="squared l2 image prior (no API cost)")
    l1_weight: NonNegFloat = Field(description="l1 image prior: dark background, few bright strokes (no API cost)")
    lr_generator: PosFloat = Field(description="Adam lr of the generator")
    lr_latent: PosFloat = Field(description="Adam lr of the latent codes")
