#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (unit tests and the end-to-end dvc repro).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
.venv/bin/python -m pytest -q --durations=10 "$@"
