"""HTTP server of an API pool (the API owner's side): ``dfml serve --pool models/apis``.

Every endpoint needs ``Authorization: Bearer <token>`` (the scheme name in any case); the token comes from
``--token-file`` or else the environment variable ``DFML_API_TOKEN``, and the
server refuses to start without one.

- ``GET /v1/apis`` -> ``{"apis": [{"name", "num_classes", "input_shape": [C, H, W],
  "query": "/v1/apis/<name>/query"}], "answer": {"mode", ...}, "pool_digest": <sha256 of the
  pool, :func:`dfml.api.inprocess.pool_digest`>, "limits": {"max_batch", "max_body_bytes",
  "dtype": "float32", "value_range": [0, 1], "read_timeout_s"}}``
- ``POST /v1/apis/<name>/query``, body: a ``.npy`` file of a float32 (little-endian,
  C or Fortran order) array ``[B, C, H, W]``, ``1 <= B <= max_batch``, finite values in
  [0, 1]; at most ``max_body_bytes`` = ``max_batch`` images of the largest input
  shape plus :data:`NPY_HEADER_BYTES`. Reply: JSON ``{"api": name, "mode": ...,
  <fields of the mode>}`` (:mod:`dfml.api.answers`). The body must arrive within
  ``--read-timeout`` seconds (default 30); its ``.npy`` header is checked (dtype, shape,
  length) before any array is built.

Errors are JSON ``{"error": "<what was wrong and what to fix>"}``: 401 missing or
wrong token, 413 body or batch too large, 400 malformed or truncated ``.npy``, wrong dtype,
shape or values, 404 unknown API or path, 405 wrong method, 408 body not received within
the read timeout, 500 a server fault.
Each request is logged with its API name and image count.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import io
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from aiohttp import web
from numpy.lib import format as npy_format

from ..api.answers import MODES, Answer, AnswerSettings, make_answer, to_json
from ..api.base import QueryLedger
from ..api.http import TOKEN_ENV
from ..api.inprocess import InProcessAPI, open_pool, pool_digest
from ..core.runtime import resolve_device

NPY_HEADER_BYTES = 1024  # allowance for the .npy header on top of the array bytes
NPY_MAGIC = b"\x93NUMPY"
DEFAULT_READ_TIMEOUT = 30.0  # seconds a client may take to send a request body
LOG = logging.getLogger("dfml.serve")
POOL = web.AppKey("pool", "PoolServer")


class PoolServer:
    """The pool behind the endpoints: APIs by name, answer mode, limits, token; model calls on one worker thread."""

    def __init__(self, apis: list[InProcessAPI], answer: Answer, token: str, max_batch: int, digest: str = "",
                 read_timeout: float = DEFAULT_READ_TIMEOUT):
        self.apis = {a.name: a for a in apis}
        self.read_timeout = read_timeout
        self.digest = digest
        self.answer = answer
        self.token = token
        self.max_batch = max_batch
        self.max_body = NPY_HEADER_BYTES + max_batch * 4 * max(math.prod(a.input_shape) for a in apis)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfml-model")

    def listing(self) -> dict:
        return {"apis": [{"name": a.name, "num_classes": a.num_classes, "input_shape": list(a.input_shape),
                          "query": f"/v1/apis/{a.name}/query"} for a in self.apis.values()],
                "answer": self.answer.describe(), "pool_digest": self.digest,
                "limits": {"max_batch": self.max_batch, "max_body_bytes": self.max_body, "dtype": "float32",
                           "value_range": [0, 1], "read_timeout_s": self.read_timeout}}

    def answer_batch(self, api: InProcessAPI, images: np.ndarray) -> dict:
        """Checked ``[B, C, H, W]`` float32 images -> JSON reply of the answer mode."""
        probs = api.query(torch.from_numpy(images))
        return {"api": api.name, **to_json(self.answer.encode(probs))}


def _npy_header(body: bytes, want: str) -> tuple[tuple, bool, np.dtype, int]:
    """The ``.npy`` header of `body`: (shape, fortran_order, dtype, header length); nothing of the data is read."""
    if not body.startswith(NPY_MAGIC):
        raise web.HTTPBadRequest(text=f"body is not a .npy file (no {NPY_MAGIC!r} magic); send np.save() of {want}")
    fp = io.BytesIO(body)
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0 are)")
    except (ValueError, OSError, EOFError) as exc:
        raise web.HTTPBadRequest(text=f"malformed .npy body ({exc}); send np.save() of {want}") from None
    return shape, fortran, dtype, fp.tell()


def parse_images(body: bytes, api: InProcessAPI, max_batch: int) -> np.ndarray:
    """Request body -> float32 array ``[B, C, H, W]`` of `api`'s input shape, or an HTTP 400 / 413 error.

    The header's dtype, shape (``1 <= B <= max_batch``) and the body's length are checked before any
    array is built, so a header declaring a huge array costs nothing.
    """
    want = f"a float32 [B, {', '.join(map(str, api.input_shape))}] array"
    shape, fortran, dtype, offset = _npy_header(body, want)
    if dtype != np.dtype("<f4"):
        raise web.HTTPBadRequest(text=f"array dtype is {dtype.str!r}, expected float32 ('<f4'); "
                                      "cast with .astype(np.float32)")
    if len(shape) != 4 or tuple(shape[1:]) != tuple(api.input_shape) or shape[0] < 1:
        raise web.HTTPBadRequest(text=f"array shape is {list(shape)}; API {api.name} takes {want}, B >= 1")
    if shape[0] > max_batch:
        raise web.HTTPRequestEntityTooLarge(max_batch, shape[0],
                                            text=f"batch of {shape[0]} images exceeds max_batch = "
                                                 f"{max_batch}; split it into smaller requests")
    expected = math.prod(shape) * dtype.itemsize
    if len(body) - offset != expected:
        raise web.HTTPBadRequest(text=f"malformed .npy body (wrong size): its header declares {list(shape)} "
                                      f"float32, {expected} data bytes, but {len(body) - offset} follow the "
                                      f"{offset}-byte header; send the whole np.save() output of {want}")
    flat = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset)
    images = np.array(flat.reshape(shape, order="F" if fortran else "C"), order="C")  # a writable copy
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise web.HTTPBadRequest(text="image values must be finite and within [0, 1]; clip them first")
    return images


def _authorised(request: web.Request, token: str) -> bool:
    """``Authorization: Bearer <token>`` with the server's token; the scheme name is case-insensitive (RFC 6750)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(" ").encode(), token.encode())


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error as JSON ``{"error": ...}`` (aiohttp's own 404 / 405 / 413 included), logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason
        if exc.status == 404 and exc.text.startswith("404: "):
            message = f"no endpoint {request.method} {request.path}; use GET /v1/apis or POST /v1/apis/<name>/query"
        LOG.warning("%s %s -> %d %s", request.method, request.path, exc.status, message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        response = web.json_response({"error": message}, status=exc.status, headers=headers)
        if exc.status == 408:
            response.force_close()  # Connection: close; aiohttp drains what follows for at most 10 s, then closes
        return response
    except Exception as exc:  # a server fault: say so, keep serving
        LOG.exception("%s %s -> 500", request.method, request.path)
        return web.json_response({"error": f"internal server error: {type(exc).__name__}: {exc}"}, status=500)


@web.middleware
async def bearer_auth(request: web.Request, handler):
    if not _authorised(request, request.app[POOL].token):
        raise web.HTTPUnauthorized(text="missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                                        f"with the token the server was started with ({TOKEN_ENV})")
    return await handler(request)


async def list_apis(request: web.Request) -> web.Response:
    return web.json_response(request.app[POOL].listing())


async def query_api(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    name = request.match_info["name"]
    if name not in pool.apis:
        raise web.HTTPNotFound(text=f"unknown API {name!r}; GET /v1/apis lists the {len(pool.apis)} served")
    if (request.content_length or 0) > pool.max_body:
        raise web.HTTPRequestEntityTooLarge(pool.max_body, request.content_length,
                                            text=f"body of {request.content_length} bytes exceeds max_body_bytes = "
                                                 f"{pool.max_body}; send at most {pool.max_batch} images a request")
    api = pool.apis[name]
    try:  # a slow or stalled client gives up its connection, not the server's
        body = await asyncio.wait_for(request.read(), pool.read_timeout)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=f"request body not received within the server's read timeout of "
                                          f"{pool.read_timeout:g} s; send the whole body at once, or ask the "
                                          "owner for a longer --read-timeout") from None
    images = parse_images(body, api, pool.max_batch)
    start = time.perf_counter()
    reply = await asyncio.get_running_loop().run_in_executor(pool.worker, pool.answer_batch, api, images)
    LOG.info("api=%s images=%d mode=%s %.0f ms (served %d)", name, images.shape[0], pool.answer.mode,
             1000 * (time.perf_counter() - start), api.ledger.per_api[name])
    return web.json_response(reply)


def build_app(pool: PoolServer) -> web.Application:
    """The aiohttp application serving `pool`; the body size cap is ``pool.max_body``."""
    app = web.Application(middlewares=[json_errors, bearer_auth], client_max_size=pool.max_body)
    app[POOL] = pool
    app.router.add_get("/v1/apis", list_apis)
    app.router.add_post("/v1/apis/{name}/query", query_api)
    return app


def load_token(token_file: Path | None) -> str:
    """The bearer token from `token_file` (stripped) or else ``$DFML_API_TOKEN``; ValueError if neither has one."""
    token = Path(token_file).read_text().strip() if token_file else os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        where = f"token file {token_file} is empty" if token_file else f"{TOKEN_ENV} is not set"
        raise ValueError(f"no API token: {where}; set {TOKEN_ENV} or pass --token-file (there is no default token)")
    return token


def add_serve_arguments(parser: argparse.ArgumentParser, pool: Path) -> None:
    """The options of `dfml serve`; `pool` is the default pool folder."""
    parser.add_argument("--pool", type=Path, default=pool, help=f"pool folder with pool.json (default: {pool})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--answer", choices=list(MODES), default="probs", help="answer mode (default: probs)")
    parser.add_argument("--topk", type=int, default=AnswerSettings.topk, help="classes per answer in topk mode")
    parser.add_argument("--decimals", type=int, default=AnswerSettings.decimals, help="decimals in rounded mode")
    parser.add_argument("--max-batch", type=int, default=1024, help="most images per request")
    parser.add_argument("--token-file", type=Path, help=f"file holding the bearer token (else ${TOKEN_ENV})")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                        help=f"seconds a client may take to send a request body, else 408 "
                             f"(default {DEFAULT_READ_TIMEOUT:g})")


def serve(args: argparse.Namespace) -> None:
    """Load the pool and serve it until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = load_token(args.token_file)
    if args.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
    if not (math.isfinite(args.read_timeout) and args.read_timeout > 0):
        raise ValueError(f"--read-timeout must be a number of seconds > 0, got {args.read_timeout}")
    device = resolve_device(args.device, key="--device")
    answer = make_answer(AnswerSettings(args.answer, args.topk, args.decimals))
    apis = open_pool(args.pool, QueryLedger(), device, chunk=args.max_batch)
    pool = PoolServer(apis, answer, token, args.max_batch, pool_digest(args.pool), args.read_timeout)
    LOG.info("serving %d APIs from %s on http://%s:%d, answer %s, max_batch %d, max_body_bytes %d, "
             "read timeout %g s", len(apis), args.pool, args.host, args.port, answer.describe(), args.max_batch,
             pool.max_body, args.read_timeout)
    web.run_app(build_app(pool), host=args.host, port=args.port, print=None, access_log=None,
                shutdown_timeout=5.0)
