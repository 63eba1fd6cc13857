"""`dfml serve` as a real process on loopback, the HTTP client against it, and a fake flaky server."""

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from aiohttp import web

from dfml.__main__ import main as dfml_main
from dfml.api import APIAccessError, APIReplyError, AnswerSettings, QueryLedger, make_answer, open_pool
from dfml.api.http import HTTPAPI, RetryPolicy, open_http_pool
from dfml.api.server import parse_images
from dfml.models import build_classifier

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
SHAPE = (1, 16, 16)
MAX_BATCH = 64
FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, max_total=5.0)
START_SECONDS = 60.0  # bound on a server process start (torch import on a busy core)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    """Two untrained conv4 APIs (5 and 3 classes, sharpened heads) in the pool checkpoint format."""
    folder = tmp_path_factory.mktemp("apis")
    names = []
    for i, classes in enumerate((5, 3)):
        torch.manual_seed(i)
        net = build_classifier("conv4", SHAPE[0], classes, SHAPE[1]).eval()
        with torch.no_grad():
            net.head.weight.mul_(20.0)
        name = f"api_{i:03d}"
        torch.save({"name": name, "arch": "conv4", "in_channels": SHAPE[0], "image_size": SHAPE[1],
                    "num_classes": classes, "heldout_acc": 0.0, "state_dict": net.state_dict()},
                   folder / f"{name}.pt")
        names.append({"name": name})
    (folder / "pool.json").write_text(json.dumps({"apis": names}))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(pool: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "DFML_API_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "dfml", "serve", "--pool", str(pool), "--port", str(port), "--device", "cpu",
           "--max-batch", str(MAX_BATCH), *extra]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/v1/apis", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1).ok:
                return
        time.sleep(0.1)
    pytest.fail(f"server not ready after {START_SECONDS} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def serving(pool: Path, log: Path, *extra: str):
    """A `dfml serve` process on a free loopback port: yields (base url, port, process); always stopped."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _launch(pool, port, log, *extra)
    try:
        _wait_ready(proc, url, log)
        yield url, port, proc
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def server(pool_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with serving(pool_dir, log) as (url, _, _):
        yield url, log


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("DFML_API_TOKEN", TOKEN)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _post(url, body, token=TOKEN, api="api_000"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url}/v1/apis/{api}/query", data=body, headers=headers, timeout=10)


def _images(n, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_listing_and_http_probs_equal_inprocess(server, pool_dir, token_env):
    url, log = server
    http_ledger, local_ledger = QueryLedger(), QueryLedger()
    remote = open_http_pool(url, http_ledger, chunk=1000, retry=FAST)
    local = open_pool(pool_dir, local_ledger, torch.device("cpu"), chunk=MAX_BATCH)
    assert [(a.name, a.num_classes, a.input_shape, a.chunk) for a in remote] == \
        [("api_000", 5, SHAPE, MAX_BATCH), ("api_001", 3, SHAPE, MAX_BATCH)]  # chunk capped at max_batch
    x = _images(150)
    for r, a in zip(remote, local):
        assert torch.allclose(r.query(x), a.query(x), atol=1e-6)
    assert http_ledger.summary() == local_ledger.summary() == {
        "total": 300, "calls": 6, "per_phase": {"default": 300}, "per_api": {"api_000": 150, "api_001": 150}}
    assert "api=api_001 images=22" in log.read_text()  # 150 = 64 + 64 + 22


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(server, token):
    url, _ = server
    for response in (_post(url, _npy(_images(2).numpy()), token=token),
                     requests.get(f"{url}/v1/apis", headers={"Authorization": f"Bearer {token}"}, timeout=10)):
        assert response.status_code == 401
        assert "bearer token" in response.json()["error"]


def test_client_stops_at_once_on_401_with_the_server_message(server, monkeypatch):
    url, _ = server
    monkeypatch.setenv("DFML_API_TOKEN", "wrong-token")
    with pytest.raises(APIAccessError, match="refused with HTTP 401: missing or wrong bearer token"):
        open_http_pool(url, QueryLedger(), retry=RetryPolicy(retries=3, backoff=5.0))  # no retry: no 5 s wait
    monkeypatch.delenv("DFML_API_TOKEN")
    with pytest.raises(APIAccessError, match="DFML_API_TOKEN is not set"):
        open_http_pool(url, QueryLedger())


def test_oversized_body_and_batch_are_413(server):
    url, _ = server
    listing = requests.get(f"{url}/v1/apis", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    limit = listing["limits"]["max_body_bytes"]
    assert listing["limits"]["max_batch"] == MAX_BATCH and listing["answer"] == {"mode": "probs"}
    too_big = _post(url, b"\0" * (limit + 1))
    assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["error"]
    too_many = _post(url, _npy(_images(MAX_BATCH + 1).numpy()))
    assert too_many.status_code == 413 and "send at most 64 images" in too_many.json()["error"]


def test_batch_over_max_is_413_even_when_the_body_fits(pool_dir):
    """With APIs of several input sizes the body cap follows the largest; the batch cap still holds."""
    api = open_pool(pool_dir, QueryLedger(), torch.device("cpu"))[0]
    with pytest.raises(web.HTTPRequestEntityTooLarge) as refused:
        parse_images(_npy(_images(9).numpy()), api, max_batch=8)
    assert refused.value.text.startswith("batch of 9 images exceeds max_batch = 8")
    assert parse_images(_npy(_images(8).numpy()), api, max_batch=8).shape == (8, *SHAPE)


@pytest.mark.parametrize("body,msg", [
    (_npy(np.random.rand(2, 3, 16, 16).astype(np.float32)), r"shape is \[2, 3, 16, 16\]"),
    (_npy(np.random.rand(2, 16, 16).astype(np.float32)), r"shape is \[2, 16, 16\]"),
    (_npy(np.zeros((0, 1, 16, 16), np.float32)), "B >= 1"),
    (_npy(np.random.rand(2, 1, 16, 16)), "dtype is '<f8'"),
    (_npy(np.full((2, 1, 16, 16), 1.5, np.float32)), r"within \[0, 1\]"),
    (_npy(np.full((2, 1, 16, 16), np.nan, np.float32)), "finite"),
    (b"garbage, not an array", "not a .npy file"),
    (_npy(np.random.rand(4, 1, 16, 16).astype(np.float32))[:300], "malformed .npy"),
])
def test_bad_bodies_are_400_saying_what_to_fix(server, body, msg):
    url, _ = server
    response = _post(url, body)
    assert response.status_code == 400
    assert re.search(msg, response.json()["error"])


def test_unknown_api_and_path_are_404_json(server):
    url, _ = server
    response = _post(url, _npy(_images(1).numpy()), api="api_999")
    assert response.status_code == 404 and "unknown API 'api_999'" in response.json()["error"]
    response = requests.get(f"{url}/v2/else", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 404 and "GET /v1/apis" in response.json()["error"]


def test_server_refuses_to_start_without_a_token(pool_dir, monkeypatch, capsys):
    monkeypatch.delenv("DFML_API_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        dfml_main(["serve", "--pool", str(pool_dir)])
    assert exit_info.value.code == 2
    assert "no API token: DFML_API_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["topk", "label", "rounded"])
def test_answer_modes_roundtrip_over_http(pool_dir, tmp_path, token_env, mode):
    settings = AnswerSettings(mode, topk=2, decimals=2)
    local = open_pool(pool_dir, QueryLedger(), torch.device("cpu"), chunk=MAX_BATCH, answer=settings)
    x = _images(40, seed=1)
    with serving(pool_dir, tmp_path / "serve.log", "--answer", mode, "--topk", "2", "--decimals", "2") as (url, _, _):
        remote = open_http_pool(url, QueryLedger(), retry=FAST, answer=mode)
        for r, a in zip(remote, local):
            out = r.query(x)
            assert torch.allclose(out, a.query(x), atol=1e-6)
            assert torch.allclose(out.sum(1), torch.ones(40), atol=1e-5)
        with pytest.raises(APIAccessError, match=f"answers in mode '{mode}', this run expects 'probs'"):
            open_http_pool(url, QueryLedger(), retry=FAST, answer="probs")


def test_client_retries_across_a_server_restart(pool_dir, tmp_path, token_env):
    log = tmp_path / "serve.log"
    with serving(pool_dir, log) as (url, port, proc):
        ledger = QueryLedger()
        api = open_http_pool(url, ledger, retry=RetryPolicy(retries=60, backoff=0.1, max_backoff=0.5,
                                                            max_total=START_SECONDS))[0]
        first = api.query(_images(10))
        proc.kill()  # dies mid-run, without a graceful shutdown
        proc.wait(timeout=10)
        restarted = _launch(pool_dir, port, log)
        try:
            second = api.query(_images(10))  # refused connections while it starts, then answered
        finally:
            _stop(restarted)
    assert torch.allclose(first, second, atol=1e-6)
    assert ledger.summary()["per_api"] == {"api_000": 20} and ledger.calls == 2


class FakeServer:
    """An aiohttp app on a loopback port in a background thread; `script` says how to answer each request."""

    def __init__(self, script):
        self.script, self.requests = script, 0
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/apis/{name}/query", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.loop.run_until_complete(web.SockSite(self.runner, self.sock).start())
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/apis/fake/query"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _handle(self, request):
        self.requests += 1
        n = np.load(io.BytesIO(await request.read())).shape[0]
        reply = self.script(self.requests, n)
        return await reply if asyncio.iscoroutine(reply) else reply

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def fake():
    servers = []

    def start(script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _uniform(n, classes=4, api="fake"):
    return web.json_response({"api": api, "mode": "probs", "probs": [[1 / classes] * classes] * n})


def _client(server, ledger, chunk=8, retry=FAST):
    return HTTPAPI(server.url, "fake", 4, SHAPE, ledger, make_answer(AnswerSettings()), TOKEN, chunk=chunk,
                   retry=retry)


def test_flaky_server_two_503_then_success_counts_images_once(fake):
    server = fake(lambda i, n: web.json_response({"error": "busy"}, status=503) if i <= 2 else _uniform(n))
    ledger = QueryLedger()
    out = _client(server, ledger).query(_images(5))
    assert torch.allclose(out, torch.full((5, 4), 0.25))
    assert server.requests == 3 and ledger.total == 5 and ledger.calls == 1


def test_timeout_is_retried_and_counted_once(fake):
    async def slow(n):
        await asyncio.sleep(0.5)
        return _uniform(n)

    server = fake(lambda i, n: slow(n) if i == 1 else _uniform(n))
    ledger = QueryLedger()
    api = HTTPAPI(server.url, "fake", 4, SHAPE, ledger, make_answer(AnswerSettings()), TOKEN, timeout=0.1, retry=FAST)
    assert api.query(_images(5)).shape == (5, 4)
    assert server.requests == 2 and ledger.total == 5 and ledger.calls == 1


def test_retries_are_bounded_and_4xx_is_not_retried(fake):
    down = fake(lambda i, n: web.json_response({"error": "overloaded"}, status=429))
    ledger = QueryLedger()
    start = time.monotonic()
    with pytest.raises(APIAccessError, match="after 4 attempts .* HTTP 429: overloaded"):
        _client(down, ledger).query(_images(3))
    assert down.requests == 4 and ledger.total == 0 and time.monotonic() - start < 5
    refused = fake(lambda i, n: web.json_response({"error": "API fake takes [B, 1, 16, 16]"}, status=400))
    with pytest.raises(APIAccessError, match=r"refused with HTTP 400: API fake takes \[B, 1, 16, 16\]"):
        _client(refused, ledger).query(_images(3))
    assert refused.requests == 1


@pytest.mark.parametrize("script,msg", [
    (lambda i, n: _uniform(n, classes=5), r"reply field 'probs' has shape \[3, 5\], expected \[B, 4\]"),
    (lambda i, n: _uniform(n + 1), r"expected a reply of shape \[3, 4\], got \[4, 4\]"),
    (lambda i, n: web.Response(text="<html>oops</html>", content_type="text/html"), "reply is not JSON"),
    (lambda i, n: _uniform(n, api="other"), "the reply is from API 'other'"),
])
def test_unusable_replies_raise_clear_errors(fake, script, msg):
    with pytest.raises(APIReplyError, match=f"API fake: {msg}"):
        _client(fake(script), QueryLedger()).query(_images(3))
