"""What every stage module shares: its command line, params loading, and errors turned into one clear line.

``python -m dfml.pipeline.<stage> [--params FILE]``: the params file's folder is the repository the stage
works in (its artifacts' paths are relative to it), so ``--params ../other/params.yaml`` runs the stage of
that repository. A user error (:data:`USER_ERRORS`) prints one line naming the file or key and the fix and exits
2; a stop on the API image budget (finished work saved) exits :data:`~dfml.core.errors.EXIT_BUDGET` (3). No
traceback reaches a user for either.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from ..core.errors import (EXIT_BUDGET, APIReplyError, BudgetExhausted, BudgetStop, CheckpointBusy, DataError,
                           EngineError, ParamError)
from ..params import Params, load_params

USER_ERRORS = (ParamError, DataError, APIReplyError, FileNotFoundError, CheckpointBusy, EngineError)


def guarded(stage: str, work: Callable[[], None], errors: tuple[type[Exception], ...] = ()) -> None:
    """Run `work()`; a user error (:data:`USER_ERRORS` or one of `errors`) exits 2 with one message, a stop on
    the API image budget exits 3."""
    try:
        work()
    except (BudgetStop, BudgetExhausted) as exc:
        print(f"[{stage}] stopped: {exc}", file=sys.stderr)
        sys.exit(EXIT_BUDGET)
    except USER_ERRORS + errors as exc:
        print(f"[{stage}] error: {exc}", file=sys.stderr)
        sys.exit(2)


def parser(stage: str, description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of stage `stage` with the common ``--params``; a stage adds its own arguments."""
    p = argparse.ArgumentParser(prog=f"python -m dfml.pipeline.{stage}", description=description)
    p.add_argument("--params", default="params.yaml",
                   help="params file; its folder is the repository the stage works in (default: params.yaml)")
    return p


def enter(params_file: str) -> Params:
    """Load and check `params_file`, then work in its folder (artifact paths are relative to it)."""
    path = Path(params_file)
    params = load_params(path)
    os.chdir(path.resolve().parent)
    return params


def main(stage: str, body: Callable[[Params], None], description: str | None = None,
         argv: list[str] | None = None) -> None:
    """Parse ``--params``, check the whole file, run `body(params)` in its folder, errors as one line."""
    args = parser(stage, description).parse_args(argv)
    guarded(stage, lambda: body(enter(args.params)))


def main_named(stage: str, body: Callable[[str, Params], object], choices: list[str], what: str,
               description: str | None = None, argv: list[str] | None = None) -> None:
    """:func:`main` for a `foreach` stage (``<stage>@<name>``): the name comes first on the command line."""
    p = parser(stage, description)
    p.add_argument("name", choices=sorted(choices), help=what)
    args = p.parse_args(argv)
    guarded(f"{stage}@{args.name}", lambda: body(args.name, enter(args.params)))
