"""Console entry point: ``dfml serve ...`` (or ``python -m dfml serve ...``)."""

from __future__ import annotations

import argparse
import sys

from .api.server import add_serve_arguments, serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command; a bad setting exits 2 with one message."""
    parser = argparse.ArgumentParser(prog="dfml", description="black-box data-free meta-learning tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help="serve an API pool over HTTP (bearer token required)"))
    args = parser.parse_args(argv)
    try:
        serve(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dfml {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
