"""The API backend of a run, chosen by ``apis.backend`` through :data:`BACKENDS`.

``inprocess`` opens the pool checkpoints in this process (the answer mode is
applied by :class:`~dfml.api.InProcessAPI`); ``http`` reaches a ``dfml serve``
server at ``apis.http.url`` with the token in ``$DFML_API_TOKEN``, and checks
that the server answers in the mode (and with the options) params.yaml expects.
Either way every API shares the run's :class:`~dfml.api.QueryLedger`, which
counts and budgets what is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import ParamError
from .answers import AnswerSettings
from .base import BlackBoxAPI, QueryLedger
from .http import APIAccessError, RetryPolicy, open_http_pool
from .inprocess import open_pool

POOL = Path("models/apis")


def answer_settings(apis_cfg: dict) -> AnswerSettings:
    """The answer mode and its options from the ``apis`` params section."""
    return AnswerSettings(apis_cfg["answer"], apis_cfg["topk"], apis_cfg["decimals"], apis_cfg["label_smoothing"])


def _inprocess(params: dict, ledger: QueryLedger, device: torch.device, whitebox: bool) -> list[BlackBoxAPI]:
    cfg = params["apis"]
    return open_pool(POOL, ledger, device, cfg["query_chunk"], whitebox=whitebox, answer=answer_settings(cfg))


def _http(params: dict, ledger: QueryLedger, device: torch.device, whitebox: bool) -> list[BlackBoxAPI]:
    cfg, http = params["apis"], params["apis"]["http"]
    want = answer_settings(cfg)
    retry = RetryPolicy(retries=http["retries"], max_total=max(60.0, http["timeout"] * (http["retries"] + 1)))
    apis = open_http_pool(http["url"], ledger, cfg["query_chunk"], http["timeout"], retry, answer=want.mode,
                          label_smoothing=want.label_smoothing)
    if not apis:
        raise APIAccessError(f"API server {http['url']} lists no APIs")
    got = apis[0].answer.settings
    option = {"topk": "topk", "rounded": "decimals"}.get(want.mode)
    if option and getattr(got, option) != getattr(want, option):
        raise APIAccessError(f"API server {http['url']} answers {want.mode} with {option} = {getattr(got, option)}, "
                             f"params.yaml has apis.{option}: {getattr(want, option)}; make them match (set "
                             f"apis.{option} or restart `dfml serve --answer {want.mode} --{option} ...`)")
    return apis


BACKENDS: dict[str, Callable[[dict, QueryLedger, torch.device, bool], list[BlackBoxAPI]]] = {
    "inprocess": _inprocess,
    "http": _http,
}


def open_apis(params: dict, ledger: QueryLedger, device: torch.device, whitebox: bool = False) -> list[BlackBoxAPI]:
    """Every API of the pool through the backend ``apis.backend``, counting into `ledger`, sorted by name.

    `whitebox` (``invert.gradient: exact``, the white-box reference) needs the
    weights, so only the in-process backend can give it.
    """
    backend = params["apis"]["backend"]
    if whitebox and backend != "inprocess":
        raise ParamError(f"invert.gradient: exact (the white-box reference) needs the API weights, which only "
                         f"apis.backend: inprocess has; apis.backend is {backend!r}. Use invert.gradient: zo "
                         "over HTTP, or the in-process backend")
    return BACKENDS[backend](params, ledger, device, whitebox)
