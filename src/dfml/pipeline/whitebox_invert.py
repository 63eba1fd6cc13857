"""Stage `whitebox_invert`: `invert` with exact input gradients (the white-box reference,
:data:`dfml.inversion.variants.WHITEBOX`), into ``data/bank_whitebox`` and ``metrics/invert_whitebox.json``."""

from __future__ import annotations

from ..inversion.variants import WHITEBOX
from ..params import Params
from .invert import invert
from .stage import main


def whitebox_invert(params: Params) -> None:
    invert(params, WHITEBOX)


if __name__ == "__main__":
    main("whitebox_invert", whitebox_invert, __doc__.splitlines()[0])
