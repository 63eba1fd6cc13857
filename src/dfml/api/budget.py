"""Stopping a stage on the run's API image budget, with its finished work saved and a message to continue."""

from __future__ import annotations

from ..core.errors import EXIT_BUDGET, BudgetExhausted, BudgetStop
from .base import QueryLedger

__all__ = ["EXIT_BUDGET", "BudgetStop", "budget_ledger", "stop_message"]


def budget_ledger(budget_images: int | None, budget_images_per_api: int | None) -> QueryLedger:
    """A ledger with the run's budgets (``runtime.budget_images``, ``runtime.budget_images_per_api``)."""
    return QueryLedger(budget_images, budget_images_per_api)


def stop_message(exc: BudgetExhausted, ledger: QueryLedger, kept: str) -> str:
    """What was spent, what remains, what is kept and how to continue."""
    key = "runtime.budget_images" if exc.scope == "run" else "runtime.budget_images_per_api"
    phases = ", ".join(f"{phase} {n:,}" for phase, n in ledger.per_phase.items()) or "none yet"
    scope = "the run" if exc.scope == "run" else f"API {exc.api}"
    return (f"{exc}.\n"
            f"  spent: {ledger.total:,} API images in this run ({phases}); {scope}: {exc.spent:,} of "
            f"{key} = {exc.budget:,}, {exc.remaining:,} left\n"
            f"  kept: {kept}\n"
            f"  to continue: raise {key} and run `dvc repro` again; finished work is kept")
