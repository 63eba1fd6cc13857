"""The API backend of a run, chosen by ``runtime.backend`` through :data:`BACKENDS`.

``inprocess`` opens the pool checkpoints in this process (the answer mode is
applied by :class:`~dfml.api.inprocess.InProcessAPI`); ``http`` reaches a ``dfml serve``
server at ``runtime.http.url`` with the token in ``$DFML_API_TOKEN``, and checks
that the server answers in the mode (and with the options) params.yaml expects.
Either way every API shares the run's :class:`~dfml.api.base.QueryLedger`, which
counts and budgets what is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..core.errors import ParamError
from .answers import AnswerSettings
from .base import BlackBoxAPI, QueryLedger
from .http import APIAccessError, RetryPolicy, open_http_pool
from .inprocess import open_pool
from .params import HTTPParams, QueryParams


def answer_settings(query: QueryParams) -> AnswerSettings:
    """The answer mode and its options from the ``query`` params section."""
    return AnswerSettings(query.answer, query.topk, query.decimals, query.label_smoothing)


def _inprocess(pool: Path, query: QueryParams, http: HTTPParams, ledger: QueryLedger, device: torch.device,
               whitebox: bool) -> list[BlackBoxAPI]:
    return open_pool(pool, ledger, device, query.chunk, whitebox=whitebox, answer=answer_settings(query))


def _http(pool: Path, query: QueryParams, http: HTTPParams, ledger: QueryLedger, device: torch.device,
          whitebox: bool) -> list[BlackBoxAPI]:
    want = answer_settings(query)
    retry = RetryPolicy(retries=http.retries, max_total=max(60.0, http.timeout * (http.retries + 1)))
    apis = open_http_pool(http.url, ledger, query.chunk, http.timeout, retry, answer=want.mode,
                          label_smoothing=want.label_smoothing, pool=pool)
    if not apis:
        raise APIAccessError(f"API server {http.url} lists no APIs")
    got = apis[0].answer.settings
    option = {"topk": "topk", "rounded": "decimals"}.get(want.mode)
    if option and getattr(got, option) != getattr(want, option):
        raise APIAccessError(f"API server {http.url} answers {want.mode} with {option} = {getattr(got, option)}, "
                             f"params.yaml has query.{option}: {getattr(want, option)}; make them match (set "
                             f"query.{option} or restart `dfml serve --answer {want.mode} --{option} ...`)")
    return apis


BACKENDS: dict[str, Callable[..., list[BlackBoxAPI]]] = {"inprocess": _inprocess, "http": _http}


def open_apis(pool: Path, query: QueryParams, backend: str, http: HTTPParams, ledger: QueryLedger,
              device: torch.device, whitebox: bool = False) -> list[BlackBoxAPI]:
    """Every API of the pool through `backend` (``runtime.backend``), counting into `ledger`, sorted by name.

    `pool` is the local pool folder (its ``pool.json``): the in-process backend opens its checkpoints; the
    HTTP backend checks that the server serves that pool (the digest of ``pool.json``). `whitebox`
    (``invert.gradient: exact``, the white-box reference) needs the weights, so only the in-process backend
    can give it.
    """
    if whitebox and backend != "inprocess":
        raise ParamError(f"invert.gradient: exact (the white-box reference) needs the API weights, which only "
                         f"runtime.backend: inprocess has; runtime.backend is {backend!r}. Use invert.gradient: zo "
                         "over HTTP, or the in-process backend")
    return BACKENDS[backend](pool, query, http, ledger, device, whitebox)
