"""The ``apis`` section: the pool the API owner trains (stage `pretrain`, the only code that sees weights)."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from ..core.schema import Distinct, Field, NonNegInt, PosFloat, PosInt, Section

ARCHS = ("conv4", "resnet10", "resnet18")
Arch = Literal["conv4", "resnet10", "resnet18"]


class PoolParams(Section):
    """The API pool the owner trains (`pretrain`, the only stage that sees weights)."""

    scenario: Literal["ss", "sh", "mh"] = Field(
        description="ss: every API `apis.arch` on data.dataset; sh: each API's architecture drawn by seed from "
                    "`apis.architectures`; mh: as sh, API i on the (i mod n)-th of data.datasets")
    count: PosInt = Field(description="APIs in the pool")
    arch: Arch = Field(description="every API's architecture (ss)")
    architectures: Annotated[list[Arch], at.MinLen(1), Distinct] = Field(description="drawn from in sh and mh")
    train_fraction: Annotated[float, at.Ge(0.05), at.Le(0.95)] = Field(
        description="share of each class's images an API trains on; it reports accuracy on the rest")
    epochs: PosInt = Field(description="training epochs per API")
    min_steps: NonNegInt = Field(
        description="at least this many optimizer steps per API: an API whose `apis.epochs` give fewer trains "
                    "for more epochs (0: `apis.epochs` for every API). For mh, whose datasets differ in images "
                    "per class (an Omniglot API has 80 training images, a MiniImageNet API 2,000)")
    batch_size: Annotated[int, at.Ge(2)] = Field(description="training batch")
    optimizer: Literal["auto", "adam", "sgd"] = Field(
        description="auto: Adam for conv4, SGD (momentum 0.9, weight decay 5e-4) for ResNets")
    lr: PosFloat = Field(description="training learning rate")

