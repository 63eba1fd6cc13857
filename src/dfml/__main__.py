"""Console entry point: ``dfml serve ...`` and ``dfml profile ...`` (or ``python -m dfml ...``)."""

from __future__ import annotations

import argparse
import sys

from . import profiles
from .api.server import add_serve_arguments, serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command; a bad setting exits 2 with one message."""
    parser = argparse.ArgumentParser(prog="dfml", description="black-box data-free meta-learning tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help="serve an API pool over HTTP (bearer token required)"))
    profiles.add_arguments(commands.add_parser("profile", help="run a named profile; results go to results/<name>/"))
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
        else:
            profiles.main(args)
    except (ValueError, FileNotFoundError, profiles.ProfileError) as exc:
        print(f"dfml {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
