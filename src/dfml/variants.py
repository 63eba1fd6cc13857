"""The two BiDf-MKD runs of the pipeline and where each keeps its files.

* ``blackbox`` (model ``bidf_mkd``): ``invert.gradient`` as params say (``zo`` by default), the method itself.
* ``whitebox`` (model ``bidf_mkd_whitebox``, DESIGN.md section 5): the same code with exact input gradients
  (``invert.gradient`` forced to ``exact``), the white-box reference of the paper (CIFAR-FS 37.66 / 51.16).
  Opt-in through ``whitebox.run`` (stages ``whitebox_invert`` and ``whitebox_distill``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from .resume import CHECKPOINTS


@dataclass(frozen=True)
class Variant:
    """One BiDf-MKD run: its model name, the gradient it forces (None: params decide) and its file names."""

    model: str
    gradient: str | None
    suffix: str

    def params(self, params: dict) -> dict:
        """`params` with ``invert.gradient`` as this variant needs it (a copy; `params` is left alone)."""
        if self.gradient is None:
            return params
        out = copy.deepcopy(params)
        out["invert"]["gradient"] = self.gradient
        return out

    @property
    def bank(self) -> Path:
        return Path(f"data/bank{self.suffix}")

    @property
    def invert_metrics(self) -> Path:
        return Path(f"metrics/invert{self.suffix}.json")

    @property
    def invert_samples(self) -> Path:
        return Path(f"plots/invert{self.suffix}_samples.png")

    @property
    def distill_metrics(self) -> Path:
        return Path(f"metrics/distill{self.suffix}.json")

    @property
    def model_path(self) -> Path:
        return Path(f"models/{self.model}.pt")

    @property
    def curve_csv(self) -> Path:
        return Path(f"plots/distill{self.suffix}_curve.csv")

    @property
    def curve_png(self) -> Path:
        return Path(f"plots/distill{self.suffix}_curve.png")

    def checkpoints(self, stage: str) -> Path:
        return CHECKPOINTS / f"{stage}{self.suffix}"


VARIANTS = {"blackbox": Variant("bidf_mkd", None, ""), "whitebox": Variant("bidf_mkd_whitebox", "exact", "_whitebox")}
