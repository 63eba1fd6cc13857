#!/usr/bin/env bash
# Query / time trade-off of BiDf-MKD: a grid of zero-order directions per image (invert.q, default 2,5,10,20) x
# generator updates per API (invert.steps, default 20,40), queued as DVC experiments on top of the current commit,
# run one at a time, then plots/tradeoff.csv, plots/tradeoff_queries.png and plots/tradeoff_time.png over the
# workspace and every experiment with metrics/eval.json. Q and STEPS choose the grid (comma-separated), e.g.
#   Q=1,2,5,10,20 STEPS=40 bash scripts/tradeoff.sh     # the grid measured for the README (5 points)
# Extra arguments go to the queueing (e.g. -S distill.iterations=100). Each point reruns invert, distill and
# bidf_mkd's evaluation (the pool, the data and the other models come from the DVC cache); on 2 CPU cores a point
# takes about 6 min (q=1) to 18 min (q=20).
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
[ -d .git ] || { echo "run inside a git checkout of this repository" >&2; exit 1; }
.venv/bin/dvc exp run --queue -S "invert.q=${Q:-2,5,10,20}" -S "invert.steps=${STEPS:-20,40}" "$@"  # the grid
.venv/bin/dvc exp run --run-all --jobs 1  # failed ones are reported here and left out of the plots
PYTHONPATH=src .venv/bin/python -m dfml.pipeline.report --tradeoff
