"""The two BiDf-MKD runs of the pipeline, defined once: the method and its white-box reference.

* ``blackbox`` (model ``bidf_mkd``): the recovery ``invert.method`` names (BiDf-MKD's zero-order inversion by
  default), then BiDf-MKD's distillation: the method itself.
* ``whitebox`` (model ``bidf_mkd_whitebox``): BiDf-MKD's inversion with exact input gradients
  (``invert.bidf.gradient`` forced to ``exact``), the white-box reference of the paper (CIFAR-FS 37.66 / 51.16). Opt-in through
  ``run.whitebox`` (stages ``whitebox_invert`` and ``whitebox_distill``). Its files carry the suffix
  ``_whitebox`` (:mod:`dfml.pipeline.paths`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

P = TypeVar("P")


@dataclass(frozen=True)
class Variant:
    """One BiDf-MKD run: its model name, the gradient it forces (None: params decide) and its file suffix."""

    name: str
    model: str
    gradient: str | None
    suffix: str
    title: str

    def params(self, params: P) -> P:
        """`params` (a :class:`dfml.params.Params`) as this variant needs them: the white-box reference is
        BiDf-MKD's inversion (``invert.method: bidf``) with ``invert.bidf.gradient`` forced."""
        if self.gradient is None:
            return params
        inv = params.invert
        bidf = inv.bidf.model_copy(update={"gradient": self.gradient})
        return params.model_copy(update={"invert": inv.model_copy(update={"method": "bidf", "bidf": bidf})})

    def stage(self, stage: str) -> str:
        """The dvc.yaml stage of this variant: ``invert`` or ``whitebox_invert``."""
        return stage if self.gradient is None else f"{self.name}_{stage}"


VARIANTS = {"blackbox": Variant("blackbox", "bidf_mkd", None, "", "BiDf-MKD (data-free, black-box)"),
            "whitebox": Variant("whitebox", "bidf_mkd_whitebox", "exact", "_whitebox",
                                "BiDf-MKD white-box reference (exact input gradients)")}
BLACKBOX, WHITEBOX = VARIANTS["blackbox"], VARIANTS["whitebox"]
