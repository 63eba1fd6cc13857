"""Stage `report`: the results summary of the workspace and the query / time trade-off across DVC experiments.

    python stages/report.py [--summary] [--tradeoff] [--readme]

No flag: both parts. `--readme` also rewrites the README table between the summary
markers (implies `--summary`). The trade-off runs `dvc exp show --json`, so it is run
by hand (or by scripts/tradeoff.sh), not inside `dvc repro`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import guarded  # noqa: E402
from dfml.config import load_params  # noqa: E402
from dfml.reporting.report import ReportError, run_summary, run_tradeoff  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The part flags; with neither --summary nor --tradeoff (nor --readme), both parts run."""
    parser = argparse.ArgumentParser(prog="stages/report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="plots/summary.md and plots/summary.png")
    parser.add_argument("--tradeoff", action="store_true",
                        help="plots/tradeoff.csv, tradeoff_queries.png, tradeoff_time.png (runs dvc exp show)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--readme", action="store_true",
                        help="also rewrite the README table between <!-- summary:start/end --> (implies --summary)")
    args = parser.parse_args(argv)
    chosen = args.summary or args.tradeoff or args.readme
    args.summary, args.tradeoff = args.summary or args.readme or not chosen, args.tradeoff or not chosen
    return args


def run(args: argparse.Namespace) -> None:
    if args.summary:
        params = load_params(args.params) if Path(args.params).is_file() else None  # only for the paper's protocol rows
        run_summary(readme=args.readme, params=params)
    if args.tradeoff:
        run_tradeoff()


def cli(argv: list[str] | None = None) -> None:
    """Entry point: user errors (no metrics yet, dvc failing) exit 2 with one message."""
    args = parse_args(argv)
    guarded("report", lambda: run(args), (ReportError,))


if __name__ == "__main__":
    cli()
