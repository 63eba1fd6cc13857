"""The ``data`` section: which real images, at what size, and which classes go to which split."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from ..core.schema import Distinct, Field, Section

DATASET_NAMES = ("omniglot", "cifar-fs", "cub", "miniimagenet", "folder")
Dataset = Literal["omniglot", "cifar-fs", "cub", "miniimagenet", "folder"]
MIN_IMAGE_SIZE = 16  # Conv4 halves the size four times; the generator upsamples twice (a multiple of 4)


class Subset(Section):
    """Smoke configs: the first classes of each split and the first images of each class, cut before decoding."""

    classes_per_split: Annotated[int, at.Ge(2)] | None = Field(
        description="keep only the first n classes of each split (null: all)")
    images_per_class: Annotated[int, at.Ge(2)] | None = Field(
        description="keep only the first n real images of each class (null: all); a cap on real data, unlike "
                    "invert.images_per_class (recovered images)")


class FolderData(Section):
    """``data.dataset: folder``: your own images, one folder per class."""

    root: str | None = Field(description="a folder holding one folder per class, images anywhere below it")
    train: Annotated[list[str], at.MinLen(1)] | None = Field(description="class folders of meta-train (null: drawn)")
    val: Annotated[list[str], at.MinLen(1)] | None = Field(description="class folders of meta-val (null: drawn)")
    test: Annotated[list[str], at.MinLen(1)] | None = Field(description="class folders of meta-test (null: drawn)")
    fractions: Annotated[list[Annotated[float, at.Ge(0), at.Le(1)]], at.MinLen(3), at.MaxLen(3)] = Field(
        description="[train, val, test] shares of the class folders when the lists are null (seeded draw)",
        json_schema_extra={"accepts": "three numbers in [0, 1]"})


class MiniImageNetData(Section):
    source: str | None = Field(description="a MiniImageNet folder or archive; null: "
                                           "$DFML_DATA_MIRROR/miniimagenet/mini-imagenet-500.zip")


class DataParams(Section):
    """Which real images, at what size, split how (read by `prepare` only; later stages read
    ``data/prepared``)."""

    dataset: Dataset = Field(description="the dataset of the ss and sh scenarios")
    datasets: Annotated[list[Dataset], at.MinLen(2), Distinct] | None = Field(
        description="the mh scenario's datasets (two or more; null in ss and sh)")
    image_size: Annotated[int, at.Ge(MIN_IMAGE_SIZE), at.Le(512), at.MultipleOf(4)] | None = Field(
        description="side in pixels (null: the dataset's own: omniglot 28, cifar-fs 32, cub, miniimagenet and "
                    "folder 84; mh: the largest)")
    rotations: bool = Field(description="omniglot: rotated copies as extra classes")
    subset: Subset
    folder: FolderData
    miniimagenet: MiniImageNetData


    def used(self) -> list[str]:
        """The datasets a run reads: ``datasets`` in mh, else ``[dataset]``."""
        return list(self.datasets) if self.datasets else [self.dataset]
