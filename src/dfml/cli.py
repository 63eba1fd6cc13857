"""Shared entry-point plumbing for `stages/*.py`: argument parsing, params, clean errors."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .api.base import APIReplyError, BudgetExhausted
from .config import ParamError, load_params
from .data.archives import DataError
from .resume import EXIT_BUDGET, BudgetStop
from .variants import VARIANTS, Variant

USER_ERRORS = (ParamError, DataError, APIReplyError, FileNotFoundError)


def guarded(stage: str, work: Callable[[], None], errors: tuple[type[Exception], ...] = ()) -> None:
    """Run `work()`; a user error (:data:`USER_ERRORS` or one of `errors`) exits 2 with one message, a stop on
    the API image budget (finished work saved) exits :data:`~dfml.resume.EXIT_BUDGET` (3)."""
    try:
        work()
    except (BudgetStop, BudgetExhausted) as exc:
        print(f"[{stage}] stopped: {exc}", file=sys.stderr)
        sys.exit(EXIT_BUDGET)
    except USER_ERRORS + errors as exc:
        print(f"[{stage}] error: {exc}", file=sys.stderr)
        sys.exit(2)


def stage_parser(script: str, description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``stages/<script>.py`` with the common ``--params``; a stage adds its own."""
    parser = argparse.ArgumentParser(prog=f"stages/{script}.py", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def main(stage: str, body: Callable[[dict], None]) -> None:
    """Parse ``--params``, validate the whole file, run `body(params)`; user errors exit 2 with one message."""
    args = stage_parser(stage).parse_args()
    guarded(stage, lambda: body(load_params(args.params)))


def variant_main(stage: str, body: Callable[[dict, Variant], None]) -> None:
    """:func:`main` for the stages that exist per BiDf-MKD variant (``--variant blackbox|whitebox``,
    :data:`dfml.variants.VARIANTS`): `body(params, variant)`."""
    parser = stage_parser(stage)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="blackbox",
                        help="blackbox: the method (default); whitebox: the exact-gradient reference")
    args = parser.parse_args()
    name = stage if args.variant == "blackbox" else f"whitebox_{stage}"
    guarded(name, lambda: body(load_params(args.params), VARIANTS[args.variant]))
