"""Shared entry-point plumbing for `stages/*.py`: argument parsing, params, clean errors."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .api.base import APIReplyError
from .config import ParamError, load_params
from .data.archives import DataError

USER_ERRORS = (ParamError, DataError, APIReplyError, FileNotFoundError)


def main(stage: str, body: Callable[[dict], None]) -> None:
    """Parse ``--params``, validate the whole file, run `body(params)`; user errors exit 2 with one message."""
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        body(params)
    except USER_ERRORS as exc:
        print(f"[{stage}] error: {exc}", file=sys.stderr)
        sys.exit(2)
