#!/usr/bin/env bash
# Paper-scale BiDf-MKD on CIFAR-FS (API-SS: 100 Conv4 APIs, 32 px), the reference settings of
# DESIGN.md section 3. For a CUDA GPU (device: auto picks it); days of work on a CPU.
# Runs as a DVC experiment, so `dvc exp show` / `dvc metrics diff` compare it with the default profile.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/dvc exp run -n cifar-fs-paper \
  -S data.dataset=cifar-fs \
  -S apis.count=100 -S apis.ways=5 -S apis.arch=conv4 -S apis.epochs=60 -S apis.batch_size=128 -S apis.lr=0.01 \
  -S invert.q=100 -S invert.mu=0.005 -S invert.steps=200 -S invert.extra_steps=0 -S invert.images_per_class=30 \
  -S invert.generator_width=128 -S invert.lr_generator=0.001 -S invert.tv_weight=0.0 \
  -S distill.iterations=60000 -S distill.tasks_per_batch=4 -S distill.inner_steps=10 -S distill.inner_lr=0.01 \
  -S distill.outer_lr=0.001 -S distill.first_order=false -S distill.support_shots=5 -S distill.query_shots=15 \
  -S distill.boundary_lambda=1.0 -S distill.boundary_after=4000 -S distill.memory_size=600 \
  -S distill.val_every=1000 -S distill.val_episodes=600 \
  -S maml_real.iterations=60000 -S maml_real.inner_steps=10 -S maml_real.inner_lr=0.01 \
  -S maml_real.first_order=false -S maml_real.val_every=1000 -S maml_real.val_episodes=600 \
  -S evaluate.adapt_steps=10 -S evaluate.lr_grid=[0.01,0.03,0.1] "$@"
