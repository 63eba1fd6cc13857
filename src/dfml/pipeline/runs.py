"""What the two meta-training stages (`distill`, `maml_real`) share: saving a run (the checkpoint chosen on
meta-val and the last one, the curve as CSV and PNG) and meta-val scoring of a meta model."""

from __future__ import annotations

from pathlib import Path

from ..core.io import torch_save_atomic, write_csv
from ..meta.trainer import MetaTrainer
from ..reporting.plots import step_metrics, training_curve_png


def save_run(trainer: MetaTrainer, name: str, info: dict, model_path: Path, curve_csv: Path, curve_png: Path,
             title: str, steps_dir: Path) -> dict:
    """Write the checkpoint (``info`` + best and last weights), the curve as CSV, PNG and DVCLive step metrics
    (`steps_dir`); return the choice made."""
    torch_save_atomic({"name": name, **info, "state_dict": trainer.best["state_dict"],
                       "best_iteration": trainer.best["iteration"], "best_val_acc": trainer.best["val_acc"],
                       "last_state_dict": trainer.last["state_dict"]}, model_path)
    df = write_csv(trainer.curve, curve_csv)
    training_curve_png(df, title, curve_png)
    step_metrics(trainer.curve, steps_dir)
    return {"best_iteration": trainer.best["iteration"], "best_val_acc": round(trainer.best["val_acc"], 3),
            "last_val_acc": trainer.curve[-1]["val_acc"]}
