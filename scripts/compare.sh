#!/usr/bin/env bash
# Every model side by side: the default `dvc repro` trains and evaluates random, maml_real and bidf_mkd (about
# 15 min on 2 CPU cores); this adds the data-free baselines best_api, single_dfkd and distill_avg and the white-box
# reference bidf_mkd_whitebox as one DVC experiment in the workspace. Only their stages (baseline@<name>,
# whitebox_invert / whitebox_distill, evaluate_model@<name>), the merge and the report run (about 15 min more on
# 2 CPU cores). Extra arguments go to `dvc exp run` (e.g. -S seed=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"  # stage commands call `python`: the venv's
[ -d .git ] || { echo "run inside a git checkout of this repository" >&2; exit 1; }
.venv/bin/dvc exp run -S 'baselines.run=[best_api,single_dfkd,distill_avg]' -S 'whitebox.run=[bidf_mkd_whitebox]' \
    -S 'evaluate.models=[random,maml_real,bidf_mkd,bidf_mkd_whitebox,best_api,single_dfkd,distill_avg]' "$@"
.venv/bin/dvc metrics show metrics/eval.json
cat plots/summary.md
