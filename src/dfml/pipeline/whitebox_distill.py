"""Stage `whitebox_distill`: `distill` from the white-box bank (:data:`dfml.inversion.variants.WHITEBOX`), into
``models/bidf_mkd_whitebox.pt`` and ``metrics/distill_whitebox.json``."""

from __future__ import annotations

from ..inversion.variants import WHITEBOX
from ..params import Params
from .distill import distill
from .stage import main


def whitebox_distill(params: Params) -> None:
    distill(params, WHITEBOX)


if __name__ == "__main__":
    main("whitebox_distill", whitebox_distill, __doc__.splitlines()[0])
