#!/usr/bin/env bash
# Query / time trade-off of BiDf-MKD: a grid of zero-order directions per image (invert.q) x generator
# updates per API (invert.steps), queued as DVC experiments on top of the current commit, run one at a
# time, then plots/tradeoff.csv, plots/tradeoff_queries.png and plots/tradeoff_time.png over the workspace
# and every experiment with metrics/eval.json. Extra arguments go to the queueing (e.g. -S distill.iterations=100).
# Each point reruns invert, distill and evaluate (the pool and the data come from the DVC cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
[ -d .git ] || { echo "run inside a git checkout of this repository" >&2; exit 1; }
.venv/bin/dvc exp run --queue -S invert.q=2,5,10,20 -S invert.steps=20,40 "$@"  # 8 experiments (grid)
.venv/bin/dvc exp run --run-all --jobs 1  # failed ones are reported here and left out of the plots
.venv/bin/python stages/report.py --tradeoff
