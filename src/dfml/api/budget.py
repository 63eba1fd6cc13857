"""Stopping a stage on the run's API image budget, with its finished work saved and a message to continue; and
the one ledger that parallel workers share (:class:`LedgerBook`, :class:`BookLedger`)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Protocol

from ..core.errors import EXIT_BUDGET, BudgetExhausted, BudgetStop
from .base import QueryLedger

__all__ = ["EXIT_BUDGET", "BudgetStop", "budget_ledger", "stop_message", "LedgerBook", "BookLedger"]


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


class Book(Protocol):
    """How a worker reaches the stage's :class:`LedgerBook`: ``call(method, *args, wait=True)`` (a direct call in
    this process, or a message to the Ray actor that holds it); with ``wait=False`` the call may return before it
    ran, but the calls of one worker still run in the order it made them."""

    def call(self, method: str, *args: Any, wait: bool = True) -> Any: ...


class LedgerBook:
    """One stage's :class:`QueryLedger`, shared by the workers that query APIs at the same time.

    Every query *reserves* its images before anything is sent (:meth:`reserve`, from
    :meth:`BookLedger.check`): a reservation is refused when the images spent, those reserved by queries still
    under way, and the new ones together would pass ``runtime.budget_images`` (or, for the API,
    ``runtime.budget_images_per_api``). Answered chunks turn reserved images into spent ones (:meth:`count`). So
    however many workers run, the images sent never pass a budget, just as in one process.

    Each API's work is an *attempt* (:meth:`begin` ... :meth:`end`). An attempt given up keeps its images spent,
    booked as ``discarded`` (as the in-process loop books an API it redoes): one a budget stopped (the API is
    redone from its start), and one whose worker died (the next :meth:`begin` of its API finds it open; what it
    had reserved may have been sent, so that is booked as spent too). :meth:`snapshot`, what a checkpoint saves,
    books the attempts still under way the same way: a run continued from it redoes them.
    """

    def __init__(self, state: dict | None, budget: int | None, budget_per_api: int | None, phase: str):
        self.ledger = budget_ledger(budget, budget_per_api)
        if state is not None:
            self.ledger.load_state_dict(state)
        self.ledger.phase = phase
        self.reserved: dict[str, int] = defaultdict(int)
        self.attempts: dict[str, list[int]] = {}  # api -> [token, images counted in this attempt]
        self._tokens = 0

    def begin(self, api: str) -> int:
        """A new attempt at `api`; its token. An attempt of `api` still open (its worker died) is given up, what
        it reserved booked as spent."""
        self._give_up(api, reserved_spent=True)
        self._tokens += 1
        self.attempts[api] = [self._tokens, 0]
        return self._tokens

    def reserve(self, api: str, n: int) -> tuple | None:
        """Hold `n` images for a query to `api`; None, or the refusal as :class:`BudgetExhausted`'s arguments."""
        refused = self.ledger.refusal(api, n, sum(self.reserved.values()), self.reserved[api])
        if refused is None:
            self.reserved[api] += n
        return refused

    def count(self, api: str, n: int, token: int) -> None:
        """`n` images of `api` were answered (a chunk); they are spent. A count of an attempt already given up
        is spent and discarded."""
        self.reserved[api] = max(0, self.reserved[api] - n)
        self.ledger.count(api, n)
        attempt = self.attempts.get(api)
        if attempt is not None and attempt[0] == token:
            attempt[1] += n
        else:
            self.ledger.discarded += n

    def end(self, api: str, token: int, kept: bool) -> None:
        """The attempt `token` at `api` is over: its work is `kept`, or given up (its images are discarded). What
        it still reserves was never answered, so it is not spent (as in one process)."""
        attempt = self.attempts.get(api)
        if attempt is None or attempt[0] != token:
            return
        if kept:
            del self.attempts[api]
            self.reserved.pop(api, None)
        else:
            self._give_up(api, reserved_spent=False)

    def _give_up(self, api: str, reserved_spent: bool) -> None:
        attempt = self.attempts.pop(api, None)
        held = self.reserved.pop(api, 0)
        if attempt is None:
            return
        self.ledger.discarded += attempt[1]
        if reserved_spent and held:
            self._book_spent(self.ledger, api, held)

    @staticmethod
    def _book_spent(ledger: QueryLedger, api: str, n: int) -> None:
        ledger.per_api[api] += n
        ledger.per_phase[ledger.phase] += n
        ledger.discarded += n

    def sync(self) -> None:
        """Nothing: a call a worker waits on, so that its earlier counts (sent without waiting) are booked."""

    def summary(self) -> dict:
        """The ledger's :meth:`~QueryLedger.summary`."""
        return self.ledger.summary()

    def snapshot(self) -> dict:
        """:meth:`summary` as if every attempt still under way were given up now (its images discarded, what it
        reserves spent): a run continued from a checkpoint redoes those APIs."""
        ledger = budget_ledger(None, None)
        ledger.load_state_dict(self.ledger.summary())
        ledger.phase = self.ledger.phase
        for api, (_, images) in self.attempts.items():
            ledger.discarded += images
            if self.reserved.get(api):
                self._book_spent(ledger, api, self.reserved[api])
        return ledger.summary()


class BookLedger(QueryLedger):
    """A worker's ledger for one attempt at one API: :meth:`check` reserves in the shared :class:`LedgerBook`
    (and raises :class:`BudgetExhausted` as a ledger of one process does), :meth:`count` books there; it also
    keeps its own counts (this attempt's).

    Args:
        book: the stage's book (:class:`Book`). api: the API of the attempt (its :meth:`LedgerBook.begin` is
            called here).
    """

    def __init__(self, book: Book, api: str):
        super().__init__()
        self.book, self.api = book, api
        self.token = book.call("begin", api)

    def check(self, api: str, n: int) -> None:
        refused = self.book.call("reserve", api, n)
        if refused is not None:
            raise BudgetExhausted(*refused)

    def count(self, api: str, n: int) -> None:
        super().count(api, n)
        self.book.call("count", api, n, self.token, wait=False)
        _test_crash(api, self.per_api[api])

    def end(self, kept: bool) -> None:
        """The attempt is over (waits until the book has every count of it)."""
        self.book.call("end", self.api, self.token, kept)

    def sync(self) -> None:
        """Wait until the book has every count of this attempt (the attempt stays open)."""
        self.book.call("sync")


CRASH_ENV = "DFML_TEST_CRASH"  # "<api>:<images>:<marker file>" (tests): a worker dies once mid-API


def _test_crash(api: str, images: int) -> None:
    """For the tests of lost workers: with ``$DFML_TEST_CRASH`` = ``<api>:<images>:<marker>``, the process ends
    at once (``os._exit``) when it has counted `images` or more for `api` and `marker` does not exist yet (it is
    created first, so the next attempt runs through)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    name, at, marker = spec.split(":", 2)
    if name == api and images >= int(at) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(17)
