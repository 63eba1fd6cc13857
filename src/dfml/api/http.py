"""HTTP client backend: APIs served by ``dfml serve`` (:mod:`dfml.owner.server`), behind the same query interface.

Each chunk of images goes out as one ``POST <base>/v1/apis/<name>/query`` with a
``.npy`` float32 body and ``Authorization: Bearer $DFML_API_TOKEN``; the JSON
answer is decoded by the server's answer mode (:mod:`dfml.api.answers`).
Timeouts, connection errors, 429 and 5xx are retried with exponential backoff
(:class:`RetryPolicy`: a bounded number of attempts and a bounded total time);
any other 4xx stops at once with the server's error message. A chunk counts in
the ledger once, when its answer arrives, however many attempts it took.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import torch

from .answers import Answer, make_answer, settings_from_description
from .base import APIReplyError, BlackBoxAPI, QueryLedger
from .inprocess import pool_digest

TOKEN_ENV = "DFML_API_TOKEN"
LOG = logging.getLogger("dfml.http")


class APIAccessError(APIReplyError):
    """An API could not be used: no token, a refused request (4xx), or no answer within the retry budget."""


@dataclass(frozen=True)
class RetryPolicy:
    """At most `retries` extra attempts, waiting ``min(backoff * 2**i, max_backoff)`` before retry i
    (or the server's ``Retry-After``, capped the same); no attempt runs past `max_total` seconds
    after the first one started."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_total: float = 60.0

    def wait(self, attempt: int, response: requests.Response | None) -> float:
        after = response.headers.get("Retry-After", "") if response is not None else ""
        base = float(after) if after.replace(".", "", 1).isdigit() else self.backoff * 2 ** attempt
        return min(base, self.max_backoff)


def token_from_env() -> str:
    """The bearer token in ``$DFML_API_TOKEN``; APIAccessError if it is unset or empty."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise APIAccessError(f"{TOKEN_ENV} is not set: export the bearer token the API server was started with")
    return token


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _server_error(response: requests.Response) -> str:
    """The server's ``{"error": ...}`` message, else the start of its body."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason


def send(session: requests.Session, method: str, url: str, who: str, policy: RetryPolicy, timeout: float,
         **kwargs) -> requests.Response:
    """One HTTP request with retries; the 200 response, else APIAccessError saying why (`who` names the API).

    Hand-written rather than ``urllib3.util.Retry`` on the session's adapter: Retry has no deadline (each
    attempt runs the full `timeout` again, so `policy.max_total` could not bound the total time, nor shrink
    the last attempt's timeout to the time left), retries the first failure with no backoff (urllib3 2.x),
    and its exhausted-retries error loses the attempt count and the server's last message.
    """
    start = time.monotonic()
    for attempt in range(policy.retries + 1):
        left = policy.max_total - (time.monotonic() - start)
        response = None
        try:
            response = session.request(method, url, timeout=max(min(timeout, left), 1e-3), **kwargs)
        except (requests.Timeout, requests.ConnectionError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return response
            problem = f"HTTP {response.status_code}: {_server_error(response)}"
            if not _retryable(response.status_code):
                raise APIAccessError(f"{who}: {method} {url} refused with {problem}")
        wait = policy.wait(attempt, response)
        if attempt == policy.retries or time.monotonic() - start + wait >= policy.max_total:
            break
        LOG.warning("%s: attempt %d failed (%s); retrying in %.2f s", who, attempt + 1, problem, wait)
        time.sleep(wait)
    raise APIAccessError(f"{who}: no answer from {method} {url} after {attempt + 1} attempts in "
                         f"{time.monotonic() - start:.1f} s; last: {problem}")


def _json(response: requests.Response, who: str) -> object:
    try:
        return response.json()
    except ValueError:
        raise APIReplyError(f"{who}: reply is not JSON (content-type {response.headers.get('Content-Type')!r}, "
                            f"starts {response.content[:60]!r})") from None


class HTTPAPI(BlackBoxAPI):
    """One API behind ``POST url`` (a query endpoint of ``dfml serve``).

    Images must lie in [0, 1], the range the server accepts (the zero-order
    estimator clips its probes to it); anything else is refused before sending.
    """

    def __init__(self, url: str, name: str, num_classes: int, input_shape: tuple[int, int, int],
                 ledger: QueryLedger, answer: Answer, token: str, chunk: int = 1024, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(), session: requests.Session | None = None):
        super().__init__(name, num_classes, input_shape, ledger, chunk)
        self.url, self.answer, self.timeout, self.retry = url, answer, timeout, retry
        self._token = token
        self._session = session or requests.Session()

    def _answer(self, images: torch.Tensor) -> torch.Tensor:
        who = f"API {self.name}"
        if images.min() < 0 or images.max() > 1:
            raise ValueError(f"{who}: images must lie in [0, 1], got {images.min():.4f}..{images.max():.4f}")
        buf = io.BytesIO()
        np.save(buf, images.detach().cpu().numpy().astype("<f4"), allow_pickle=False)
        response = send(self._session, "POST", self.url, who, self.retry, self.timeout, data=buf.getvalue(),
                        headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/x-npy"})
        reply = _json(response, who)
        if isinstance(reply, dict) and reply.get("api") != self.name:
            raise APIReplyError(f"{who}: the reply is from API {reply.get('api')!r}")
        return self.answer.decode(reply, self.num_classes, self.name).to(images.device)


def open_http_pool(base_url: str, ledger: QueryLedger, chunk: int = 1024, timeout: float = 30.0,
                   retry: RetryPolicy = RetryPolicy(), answer: str | None = None,
                   label_smoothing: float = 0.0, pool: Path | None = None) -> list[HTTPAPI]:
    """Every API listed by ``GET <base_url>/v1/apis``, as :class:`HTTPAPI` sharing one connection pool.

    The answer mode and its options come from the listing; `answer`, if given,
    must match it. `chunk` is capped at the server's ``max_batch``. The token is
    read from ``$DFML_API_TOKEN``. With `pool` (the run's local pool folder, which DVC tracks), the server
    must serve exactly that pool: its listing's ``pool_digest`` must equal :func:`pool_digest` of `pool`.
    """
    token = token_from_env()
    session = requests.Session()
    base_url = base_url.rstrip("/")
    url = f"{base_url}/v1/apis"
    who = f"API server {base_url}"
    listing = _json(send(session, "GET", url, who, retry, timeout,
                         headers={"Authorization": f"Bearer {token}"}), who)
    try:
        settings = settings_from_description(listing["answer"], label_smoothing)
        chunk = min(chunk, int(listing["limits"]["max_batch"]))
        specs = [(a["name"], int(a["num_classes"]), tuple(map(int, a["input_shape"])), base_url + a["query"])
                 for a in listing["apis"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise APIReplyError(f"{who}: malformed listing at {url} ({type(exc).__name__}: {exc})") from None
    if answer is not None and answer != settings.mode:
        raise APIAccessError(f"{who} answers in mode {settings.mode!r}, this run expects {answer!r}")
    if pool is not None:
        mine, theirs = pool_digest(pool), listing.get("pool_digest")
        if theirs is None:
            raise APIAccessError(f"{who} does not report a pool_digest, so it cannot be checked to serve this "
                                 f"run's pool {pool} (pool_digest {mine}); restart it with a current `dfml serve "
                                 f"--pool {pool}`")
        if theirs != mine:
            raise APIAccessError(f"{who} serves another pool than this run's {pool}: the server's pool_digest is "
                                 f"{theirs}, the local pool's is {mine}; restart the server on this pool "
                                 f"(`dfml serve --pool {pool}`), or point this run at a copy of the pool the "
                                 "server serves")
    mode = make_answer(settings)
    return [HTTPAPI(query_url, name, n, shape, ledger, mode, token, chunk, timeout, retry, session)
            for name, n, shape, query_url in specs]
