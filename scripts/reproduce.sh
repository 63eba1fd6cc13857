#!/usr/bin/env bash
# Install everything into .venv and run the main job: `dvc repro` on the default params.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
[ -d .git ] || { echo "run inside a git checkout of this repository" >&2; exit 1; }
.venv/bin/dvc repro "$@"
.venv/bin/dvc metrics show
