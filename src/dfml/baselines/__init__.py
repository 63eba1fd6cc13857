"""Data-free baselines (DESIGN.md section 5): Best-API, Single-DFKD, Distill-Avg, from the recovered tasks of `invert`."""

from .bank import BankTask, load_bank, reported_accuracies
from .methods import BASELINES, HEADS, BaselineResult, Setting, average_states
from .run import run_baseline
from .students import distill_student, restricted_logits

__all__ = ["BASELINES", "HEADS", "BankTask", "BaselineResult", "Setting", "average_states", "distill_student",
           "load_bank", "reported_accuracies", "restricted_logits", "run_baseline"]
