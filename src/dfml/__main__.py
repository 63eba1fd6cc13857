"""Console entry point: ``dfml serve``, ``dfml profile``, ``dfml grid`` and ``dfml score-val`` (or ``python -m dfml
...``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import grids, profiles
from .core.errors import ParamError


def score_val(args) -> None:
    """Score meta-learned checkpoints on fresh meta-val episodes, paired with the first (choose between runs)."""
    from .core.io import write_json
    from .core.runtime import resolve_device
    from .data.prepared import load_prepared
    from .evaluation.rescore import format_scores, score_on_val
    from .params import load_params
    from .pipeline import paths

    params = load_params(args.params)
    missing = [p for p in args.checkpoints if not p.is_file()]
    args.checkpoints = [p.resolve() for p in args.checkpoints]
    os.chdir(Path(args.params).resolve().parent)  # the repository of --params, as the pipeline's stages do
    if args.lrs and min(args.lrs) <= 0:
        raise ValueError(f"--lrs {' '.join(map(str, args.lrs))}: every lr must be above 0")
    if missing:
        raise FileNotFoundError(f"{', '.join(map(str, missing))}: no such checkpoint (a models/*.pt of a "
                                "meta-learned run: bidf_mkd, bidf_mkd_whitebox or maml_real)")
    data = load_prepared(paths.PREPARED)
    scores = score_on_val(args.checkpoints, params.evaluate, params.seed, params.ways, data, args.episodes,
                          args.shots, resolve_device(params.device), args.lrs)
    print(format_scores(scores, args.episodes))
    if args.out:
        write_json(args.out, {"episodes": args.episodes, "split": "val", "lrs": args.lrs, "scores": scores})


def _score_val_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", type=Path, help="models/*.pt of meta-learned runs (the first is the "
                                                             "reference; copies from other experiments too)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--episodes", type=int, default=1000, help="meta-val episodes per shot (default 1000)")
    p.add_argument("--shots", type=int, nargs="+", default=[1], help="shots (default: 1)")
    p.add_argument("--lrs", type=float, nargs="+", help="also adapt each checkpoint at these lrs (its own inner "
                                                        "steps) instead of its own inner lr")
    p.add_argument("--out", type=Path, help="also write the scores as JSON here")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command; a bad setting exits 2 with one message."""
    from .owner.server import add_serve_arguments, serve
    from .pipeline.paths import POOL

    parser = argparse.ArgumentParser(prog="dfml", description="black-box data-free meta-learning tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help="serve an API pool over HTTP (bearer token required)"), POOL)
    profiles.add_arguments(commands.add_parser("profile", help="run a named profile; results go to results/<name>/"))
    grids.add_arguments(commands.add_parser("grid", help="run a grid of experiments; results go to results/<name>/"))
    _score_val_arguments(commands.add_parser("score-val", help="score checkpoints on fresh meta-val episodes, paired"))
    args = parser.parse_args(argv)
    run = {"serve": serve, "profile": profiles.main, "grid": grids.main, "score-val": score_val}[args.command]
    try:
        run(args)
    except (ValueError, FileNotFoundError, ParamError, profiles.ProfileError) as exc:
        print(f"dfml {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
