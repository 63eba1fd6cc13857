"""Taking a BiDf-MKD meta-iteration back when the API image budget stops it half-way."""

from __future__ import annotations

import copy

from ..api.base import QueryLedger
from ..core.seeding import rng_state, set_rng_state


class IterationUndo:
    """Takes a :class:`~dfml.meta.bidf.BiDfTaskSampler` back to the start of the current meta-iteration.

    A budget stop can come in the middle of a meta-iteration, after some of its
    boundary queries already changed inversion states and task memory. With
    `active`, :meth:`begin` (at the start of every iteration) keeps the random
    states, and the sampler's ``on_change`` hook keeps a copy of an API's state
    before its first change; :meth:`rollback` restores them and books the images
    sent in the lost part of the iteration as ``ledger.discarded`` (they stay
    spent). Either way it records which APIs' states ever changed (``changed``):
    only those need to go into a checkpoint.
    """

    def __init__(self, sampler, ledger: QueryLedger, active: bool):
        self.sampler, self.ledger, self.active = sampler, ledger, active
        self.changed: set[int] = set()
        self._saved: dict | None = None
        sampler.on_change = self._changing

    def begin(self) -> None:
        if self.active:
            self._saved = {"base": copy.deepcopy(self.sampler.state_dict(apis=[])), "apis": {}, "new": set(),
                           "rng": rng_state(), "sent": self.ledger.total}

    def _changing(self, a: int) -> None:
        saved = self._saved
        if saved is not None and a not in saved["apis"]:
            saved["apis"][a] = copy.deepcopy(self.sampler.state_dict(apis=[a]))
            if a not in self.changed:
                saved["new"].add(a)
        self.changed.add(a)

    def rollback(self) -> None:
        saved = self._saved
        if saved is None:
            raise RuntimeError("IterationUndo.rollback without begin (undo is active only with a budget)")
        for sd in saved["apis"].values():
            self.sampler.load_state_dict(sd)
        self.sampler.load_state_dict(saved["base"])
        set_rng_state(saved["rng"])
        self.changed -= saved["new"]
        self.ledger.discarded += self.ledger.total - saved["sent"]
        self._saved = None
