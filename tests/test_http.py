"""`dfml serve` as a real process on loopback, the HTTP client against it, and a fake flaky server."""

import asyncio
import contextlib
import io
import json
import os
import re
import select
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
from dfml.api.answers import AnswerSettings, make_answer
from dfml.api.base import APIReplyError, QueryLedger
from dfml.api.http import HTTPAPI, APIAccessError, RetryPolicy, open_http_pool
from dfml.api.inprocess import open_pool, pool_digest
from dfml.owner.server import parse_images
from dfml.models import build_classifier

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"
SHAPE = (1, 16, 16)
MAX_BATCH = 64
FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, max_total=5.0)
START_SECONDS = 60.0  # bound on a server process start (torch import on a busy core)


def _write_pool(folder: Path, seed: int = 0) -> Path:
    """Two untrained conv4 APIs (5 and 3 classes, sharpened heads) in the pool checkpoint format."""
    names = []
    for i, classes in enumerate((5, 3)):
        torch.manual_seed(seed + i)
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


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    return _write_pool(tmp_path_factory.mktemp("apis"))


@pytest.fixture(scope="module")
def other_pool_dir(tmp_path_factory):
    """A pool trained with other params (seeds): the same API names and shapes, other weights."""
    return _write_pool(tmp_path_factory.mktemp("other_apis"), seed=100)


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


def test_listing_carries_the_pool_digest_and_the_client_checks_it(server, pool_dir, other_pool_dir, token_env):
    url, _ = server
    listing = requests.get(f"{url}/v1/apis", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    served, other = pool_digest(pool_dir), pool_digest(other_pool_dir)
    assert listing["pool_digest"] == served != other
    other_apis = open_pool(other_pool_dir, QueryLedger(), torch.device("cpu"))
    shapes = [(a.name, a.num_classes, a.input_shape) for a in other_apis]
    assert [(a["name"], a["num_classes"], tuple(a["input_shape"])) for a in listing["apis"]] == shapes
    accepted = open_http_pool(url, QueryLedger(), retry=FAST, pool=pool_dir)  # the same pool
    assert [a.name for a in accepted] == ["api_000", "api_001"]
    with pytest.raises(APIAccessError, match="serves another pool") as refused:
        open_http_pool(url, QueryLedger(), retry=FAST, pool=other_pool_dir)
    message = str(refused.value)
    assert served in message and other in message and f"dfml serve --pool {other_pool_dir}" in message


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(server, scheme):
    url, _ = server
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    assert requests.get(f"{url}/v1/apis", headers=headers, timeout=10).status_code == 200
    response = requests.post(f"{url}/v1/apis/api_000/query", data=_npy(_images(2).numpy()), headers=headers,
                             timeout=10)
    assert response.status_code == 200 and len(response.json()["probs"]) == 2


def test_another_scheme_is_401(server):
    url, _ = server
    for value in (f"Basic {TOKEN}", f"Bearer{TOKEN}", TOKEN):
        response = requests.get(f"{url}/v1/apis", headers={"Authorization": value}, timeout=10)
        assert response.status_code == 401 and "bearer token" in response.json()["error"]


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


def _npy_header(shape, descr="<f4") -> bytes:
    """A .npy header declaring `shape`, without any data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("body,status,msg", [
    (_npy_header((2 ** 40, 1, 16, 16)) + b"\0" * 64, 413, "batch of 1099511627776 images exceeds max_batch = 64"),
    (_npy_header((MAX_BATCH, 1, 16, 16)) + b"\0" * 100, 400, r"wrong size.*65536 data bytes, but 100 follow"),
    (_npy_header((2 ** 62,)), 400, r"shape is \[4611686018427387904\]"),
    (_npy_header((2, 1, 2 ** 31, 2 ** 31)), 400, r"shape is \[2, 1, 2147483648, 2147483648\]"),
    (_npy_header((2 ** 40, 1, 16, 16), "<f8"), 400, "dtype is '<f8'"),
])
def test_huge_declared_shapes_are_refused_from_the_header(server, body, status, msg):
    url, _ = server
    response = _post(url, body)
    assert response.status_code == status and re.search(msg, response.json()["error"])
    assert _post(url, _npy(_images(2).numpy())).status_code == 200  # and the server still serves


def test_body_size_is_checked_against_the_header_before_loading(pool_dir):
    api = open_pool(pool_dir, QueryLedger(), torch.device("cpu"))[0]
    with pytest.raises(web.HTTPBadRequest) as refused:  # B <= max_batch, and still nothing allocated
        parse_images(_npy_header((2 ** 40, 1, 16, 16)) + b"\0" * 64, api, max_batch=2 ** 41)
    assert "wrong size" in refused.value.text and "but 64 follow" in refused.value.text
    whole = _npy(_images(4).numpy())
    for body in (whole[:-1], whole[:-1024], whole + b"\0" * 4):  # truncated, or with bytes after the array
        with pytest.raises(web.HTTPBadRequest) as refused:
            parse_images(body, api, max_batch=8)
        assert "malformed .npy body (wrong size)" in refused.value.text and "4096 data bytes" in refused.value.text
    fortran = _npy(np.asfortranarray(_images(3).numpy()))
    assert np.array_equal(parse_images(fortran, api, max_batch=8), _images(3).numpy())


def test_truncated_body_is_400(server):
    url, _ = server
    response = _post(url, _npy(_images(4).numpy())[:-10])
    assert response.status_code == 400
    assert re.search(r"wrong size.*4096 data bytes, but 4086 follow", response.json()["error"])


def _raw_post(port: int, body_length: int) -> socket.socket:
    """A raw connection that has sent the headers of a query of `body_length` bytes, and no body yet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall((f"POST /v1/apis/api_000/query HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/x-npy\r\n"
                  f"Content-Length: {body_length}\r\n\r\n").encode())
    return sock


def _read_reply(sock: socket.socket) -> tuple[int, dict, bytes]:
    """Status, JSON body and headers of the reply on `sock` (read up to its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"connection closed before a reply: {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail(f"connection closed inside the reply: {data + body!r}")
    return int(head.split()[1]), json.loads(body), head


def test_slow_or_stalled_clients_get_408_and_do_not_hold_the_server(pool_dir, tmp_path):
    body = _npy(_images(2).numpy())
    with serving(pool_dir, tmp_path / "serve.log", "--read-timeout", "1") as (url, port, _):
        stalled = _raw_post(port, len(body))
        start = time.monotonic()
        stalled.sendall(body[:len(body) // 2])  # half the body, then nothing
        assert _post(url, body).status_code == 200  # others are served meanwhile
        status, reply, head = _read_reply(stalled)
        elapsed = time.monotonic() - start
        stalled.close()
        assert status == 408 and 0.9 <= elapsed < 8 and b"connection: close" in head.lower()
        assert "read timeout of 1 s" in reply["error"] and "--read-timeout" in reply["error"]

        trickling = _raw_post(port, len(body))  # 16 bytes every 0.1 s: the body would take 14 s
        start, sent = time.monotonic(), 0
        while not select.select([trickling], [], [], 0.1)[0] and time.monotonic() - start < 8:
            trickling.sendall(body[sent:sent + 16])
            sent += 16
        status, reply, _ = _read_reply(trickling)
        trickling.close()
        assert status == 408 and time.monotonic() - start < 8 and sent < len(body)
        assert _post(url, body).status_code == 200


@pytest.mark.parametrize("argv,msg", [
    (["--device", "cuda"], "dfml serve: error: --device is 'cuda' but CUDA is not available on this machine; "
                           "use auto or cpu"),
    (["--device", "gpu"], "dfml serve: error: --device: must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (["--read-timeout", "0"], "dfml serve: error: --read-timeout must be a number of seconds > 0, got 0.0"),
])
def test_bad_serve_options_exit_2_with_one_line(pool_dir, token_env, monkeypatch, capsys, argv, msg):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        dfml_main(["serve", "--pool", str(pool_dir), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == msg + "\n" and "params.yaml" not in err


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


def test_total_time_is_bounded_by_max_total(fake):
    """Each attempt's timeout shrinks to the time left: a 1.5 s answer is not waited for with 0.5 s left."""
    async def slow(n):
        await asyncio.sleep(1.5)
        return _uniform(n)

    ledger = QueryLedger()
    api = _client(fake(lambda i, n: slow(n)), ledger,
                  retry=RetryPolicy(retries=50, backoff=0.05, max_backoff=0.1, max_total=0.5))
    api.timeout = 5.0
    start = time.monotonic()
    with pytest.raises(APIAccessError, match=r"no answer from POST .* after 1 attempts in [\d.]+ s; last: .*Timeout"):
        api.query(_images(3))
    assert time.monotonic() - start < 1.2 and ledger.total == 0
    busy = fake(lambda i, n: web.json_response({"error": "busy"}, status=503))
    start = time.monotonic()
    with pytest.raises(APIAccessError, match="HTTP 503: busy"):
        _client(busy, ledger, retry=RetryPolicy(retries=1000, backoff=0.05, max_backoff=0.1, max_total=0.5)
                ).query(_images(3))
    assert time.monotonic() - start < 1.5 and 2 <= busy.requests < 20 and ledger.total == 0


def test_backoff_doubles_and_retry_after_is_honoured_up_to_max_backoff(fake):
    arrivals = []

    def script(i, n):
        arrivals.append(time.monotonic())
        if i <= 3:
            return web.json_response({"error": "busy"}, status=503)
        if i == 4:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0.3"})
        if i == 5:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "100"})
        return _uniform(n)

    ledger = QueryLedger()
    server = fake(script)
    out = _client(server, ledger, retry=RetryPolicy(retries=5, backoff=0.05, max_backoff=0.4, max_total=10)
                  ).query(_images(3))
    gaps = np.diff(arrivals)
    assert out.shape == (3, 4) and server.requests == 6 and ledger.total == 3 and ledger.calls == 1
    assert [round(g, 2) >= want for g, want in zip(gaps, (0.05, 0.1, 0.2, 0.3, 0.4))] == [True] * 5
    assert gaps[-1] < 1.5  # Retry-After: 100 waited max_backoff = 0.4 s, not 100 s


@pytest.mark.parametrize("script,msg", [
    (lambda i, n: _uniform(n, classes=5), r"reply field 'probs' has shape \[3, 5\], expected \[B, 4\]"),
    (lambda i, n: _uniform(n + 1), r"expected a reply of shape \[3, 4\], got \[4, 4\]"),
    (lambda i, n: web.Response(text="<html>oops</html>", content_type="text/html"), "reply is not JSON"),
    (lambda i, n: _uniform(n, api="other"), "the reply is from API 'other'"),
])
def test_unusable_replies_raise_clear_errors(fake, script, msg):
    with pytest.raises(APIReplyError, match=f"API fake: {msg}"):
        _client(fake(script), QueryLedger()).query(_images(3))
