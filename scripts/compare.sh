#!/usr/bin/env bash
# Every model side by side: the default `dvc repro` trains and evaluates random, maml_real and bidf_mkd (about
# 15 min on 2 CPU cores); this adds the data-free baselines best_api, single_dfkd and distill_avg as one DVC
# experiment in the workspace. Only their baseline@<name> and evaluate_model@<name> stages, the merge and the
# report run (about 5 min more on 2 CPU cores). Extra arguments go to `dvc exp run` (e.g. -S seed=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
[ -d .git ] || { echo "run inside a git checkout of this repository" >&2; exit 1; }
.venv/bin/dvc exp run -S 'baselines.run=[best_api,single_dfkd,distill_avg]' \
    -S 'evaluate.models=[random,maml_real,bidf_mkd,best_api,single_dfkd,distill_avg]' "$@"
.venv/bin/dvc metrics show metrics/eval.json
cat plots/summary.md
