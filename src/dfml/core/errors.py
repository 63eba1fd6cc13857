"""Errors a user can fix (each message names the key, file or value and the fix; stages exit 2 on them), and
the API image budget stop (exit 3)."""

EXIT_BUDGET = 3  # the exit code of a stage stopped by the API image budget


class ParamError(ValueError):
    """A bad value in params.yaml; the message names the key and the fix."""


class DataError(RuntimeError):
    """A dataset archive or folder is missing, truncated or wrong; the message says where and how to fix it."""


class CheckpointBusy(RuntimeError):
    """Another run of the same stage holds its checkpoint folder."""


class EngineError(RuntimeError):
    """The engine of ``runtime.engine`` cannot run the stage's work (Ray missing or unreachable, a worker lost);
    the message names the key and the fix, and says what finished work is kept."""


class BudgetStop(Exception):
    """A stage stopped on its API image budget with its finished work saved; the message says how to continue."""


class APIReplyError(RuntimeError):
    """An API answered something that is not a batch of class probabilities."""


class BudgetExhausted(RuntimeError):
    """A query would take the run past its API image budget; nothing of it was sent.

    Attributes: ``api`` (the API asked), ``images`` (the query's size), ``spent``
    (images the run has sent so far), ``budget`` and ``remaining`` of the budget that
    stopped it, ``scope`` (``"run"`` or ``"per API"``).
    """

    def __init__(self, api: str, images: int, spent: int, budget: int, scope: str):
        self.api, self.images, self.spent, self.budget, self.scope = api, images, spent, budget, scope
        self.remaining = budget - spent
        where = "the run" if scope == "run" else f"API {api}"
        super().__init__(f"API image budget exhausted: a query of {images:,} images to API {api} would take "
                         f"{where} to {spent + images:,} images, past its budget of {budget:,} "
                         f"({spent:,} spent, {self.remaining:,} left); nothing of it was sent")
