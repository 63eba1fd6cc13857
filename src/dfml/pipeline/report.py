"""Stage `report`: the results summary of the workspace, and (by hand) the query / time trade-off across DVC
experiments.

    python -m dfml.pipeline.report [--summary] [--tradeoff] [--readme] [--params params.yaml]

No flag: both parts. ``--readme`` also rewrites the README's results table between the summary markers
(implies ``--summary``). The trade-off runs ``dvc exp show --json``, so it is run by hand (or by
``scripts/tradeoff.sh``), not inside ``dvc repro``.

Summary: ``metrics/eval.json`` and ``plots/episodes.csv`` -> ``plots/summary.md`` (accuracy +- 95% CI, API images
and seconds of every model per shot; the paired difference of ``bidf_mkd`` against every other model on the
shared episodes; for a dataset the paper reports, its quoted rows and the protocol differences) and
``plots/summary.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..core.io import atomic_write_bytes, read_json
from ..params import Params, load_params
from ..reporting.paper import paper_section
from ..reporting.plots import eval_bars_png
from ..reporting.report import (README_MARKERS, ReportError, exp_show, paired_differences, shot_results,
                                summary_markdown, summary_table, tradeoff, update_readme)
from . import paths
from .stage import guarded


def summary(params: Params | None, readme: bool = False) -> None:
    """Write ``plots/summary.md`` and ``plots/summary.png``; with `readme`, the README's results table too.

    `params` (None without a params file) only adds the protocol rows beside the paper's figures.
    """
    if not paths.EVAL_JSON.is_file():
        raise FileNotFoundError(f"{paths.EVAL_JSON} not found: run dvc repro first")
    if not paths.EPISODES_CSV.is_file():
        raise FileNotFoundError(f"{paths.EPISODES_CSV} not found: run dvc repro first")
    results = read_json(paths.EVAL_JSON)
    diffs = paired_differences(pd.read_csv(paths.EPISODES_CSV))
    dataset = read_json(paths.DATA_METRICS)["dataset"] if paths.DATA_METRICS.is_file() else ""
    text = summary_markdown(results, diffs, str(paths.EVAL_JSON), str(paths.EPISODES_CSV),
                            paper=paper_section(dataset, results, params))
    atomic_write_bytes(paths.SUMMARY_MD, text.encode())
    eval_bars_png({m: {**{f"{k}shot": v for k, v in shot_results(e).items()},
                       **({"datasets": e["datasets"]} if "datasets" in e else {})} for m, e in results.items()},
                  paths.SUMMARY_PNG)
    if readme and not update_readme(paths.README, summary_table(results)):
        print(f"{paths.README}: no {' / '.join(README_MARKERS)} markers; left unchanged", file=sys.stderr)


def tradeoff_report() -> None:
    """``plots/tradeoff.csv`` and the trade-off plots from every DVC experiment of this repository."""
    df = tradeoff(exp_show(Path(".")), paths.TRADEOFF_DIR, str(paths.EVAL_JSON))
    print(f"{paths.TRADEOFF_DIR / 'tradeoff.csv'}: {len(df)} rows from {df['experiment'].nunique()} experiment(s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The part flags; with neither --summary nor --tradeoff (nor --readme), both parts run."""
    parser = argparse.ArgumentParser(prog="python -m dfml.pipeline.report", description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="plots/summary.md and plots/summary.png")
    parser.add_argument("--tradeoff", action="store_true",
                        help="plots/tradeoff.csv, tradeoff_queries.png, tradeoff_time.png (runs dvc exp show)")
    parser.add_argument("--params", default="params.yaml", help="params file; its folder is the repository")
    parser.add_argument("--readme", action="store_true",
                        help="also rewrite the README table between <!-- summary:start/end --> (implies --summary)")
    args = parser.parse_args(argv)
    chosen = args.summary or args.tradeoff or args.readme
    args.summary, args.tradeoff = args.summary or args.readme or not chosen, args.tradeoff or not chosen
    return args


def run(args: argparse.Namespace) -> None:
    path = Path(args.params)
    params = load_params(path) if path.is_file() else None
    os.chdir(path.resolve().parent)
    if args.summary:
        summary(params, readme=args.readme)
    if args.tradeoff:
        tradeoff_report()


def cli(argv: list[str] | None = None) -> None:
    """Entry point: user errors (no metrics yet, dvc failing) exit 2 with one message."""
    args = parse_args(argv)
    guarded("report", lambda: run(args), (ReportError,))


if __name__ == "__main__":
    cli()
