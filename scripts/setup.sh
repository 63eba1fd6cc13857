#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned project: `setup.sh` for running the pipeline,
# `setup.sh --test` with the test extras too (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test]"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${EXTRAS}"
