"""Throughput benchmark: prints JSON figures for the current device (not a test).

    python benchmarks/bench.py [--device auto] [--seconds 20]
    python benchmarks/bench.py --http [--pool models/apis]    # HTTP vs in-process only

Measures, at fixed settings (image shape from --image, Omniglot's 1x28x28 by default; 5-way, Conv4 APIs with
random weights, default inversion and distillation settings from params.yaml):
- API images/s of a bare `query` call (batches of 1024),
- images/s of training a Conv4 API as `pretrain` does (Adam, batches of apis.batch_size),
- API images/s and generator steps/s of zero-order inversion,
- BiDf-MKD meta-iterations/s, warm-up (bank queries) and with boundary queries, and the warm-up
  with the other meta-gradient order (second order when params say first, and back), and
  `second_order_time_ratio` (second-order over first-order seconds per warm-up iteration, loop),
- MAML (real-data style, CE tasks) meta-iterations/s,
- each meta-iteration figure also with the meta-batch vmapped (`*_vmap_*`: `MetaTrainer(batched=True)`,
  what `runtime.vmap: on` runs),
- episodes/s of evaluation adaptation (5-way 5-shot, 15 queries, evaluate.adapt_steps).

With --http it measures only the HTTP backend against the in-process one, over the
trained pool (--pool): per answer mode it starts `python -m dfml serve` on a free
loopback port with a random DFML_API_TOKEN, waits until `GET /v1/apis` answers, and
times `query` of the same 6,000 seeded images in [0, 1] (chunks of 1024, after a
warm-up call) in-process and through `open_http_pool`; the server is always stopped.
The server and this process share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.api.answers import AnswerSettings  # noqa: E402
from dfml.api.base import BlackBoxAPI, QueryLedger  # noqa: E402
from dfml.api.http import TOKEN_ENV, open_http_pool  # noqa: E402
from dfml.api.inprocess import open_pool  # noqa: E402
from dfml.core.runtime import resolve_device  # noqa: E402
from dfml.meta.functional import adapt_and_predict_batched  # noqa: E402
from dfml.inversion.gradients import build_estimator  # noqa: E402
from dfml.inversion.invert import ImagePrior, ce_group_loss, inversion_step, invert_api, new_state  # noqa: E402
from dfml.meta.bidf import BiDfTaskSampler  # noqa: E402
from dfml.meta.trainer import MetaTrainer, Task  # noqa: E402
from dfml.models import build_classifier, build_meta_model  # noqa: E402
from dfml.params import load_params  # noqa: E402
from dfml.pipeline.paths import POOL  # noqa: E402


class RandomConv4API(BlackBoxAPI):
    """A 5-way Conv4 API with random weights (seeded), served as InProcessAPI serves: ``[B, C, H, W]`` images in,
    ``[B, 5]`` probabilities out, every image counted in `ledger`."""

    def __init__(self, ledger, device, seed, chunk, channels: int = 1, size: int = 28):
        super().__init__(f"bench_{seed}", 5, (channels, size, size), ledger, chunk)
        torch.manual_seed(seed)
        self._net = build_classifier("conv4", channels, 5, size).to(device).to(memory_format=torch.channels_last).eval()
        self._device = device

    @torch.no_grad()
    def _answer(self, images):
        return torch.softmax(self._net(images.to(self._device)), 1)


def rate(fn, seconds: float, sync) -> tuple[float, int]:
    fn(); sync()  # warm up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(); n += 1
    sync()
    return n / (time.perf_counter() - start), n


ROOT = Path(__file__).resolve().parents[1]
HTTP_IMAGES, HTTP_CHUNK, HTTP_MODES = 6000, 1024, ("probs", "label")
READY_TIMEOUT = 120.0  # seconds for `dfml serve` to load the pool and answer GET /v1/apis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(pool: Path, mode: str, device: str, token: str, log) -> tuple[subprocess.Popen, str]:
    """`python -m dfml serve` on a free loopback port; returns the process and its base URL once it answers."""
    port = free_port()
    env = dict(os.environ, **{TOKEN_ENV: token},
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "dfml", "serve", "--pool", str(pool.resolve()),
                             "--host", "127.0.0.1", "--port", str(port), "--answer", mode,
                             "--max-batch", str(HTTP_CHUNK), "--device", device],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, ""
        try:
            if requests.get(f"{url}/v1/apis", headers={"Authorization": f"Bearer {token}"}, timeout=2).ok:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return proc, ""


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_vs_inprocess(pool: Path, device: str, dev: torch.device, seconds: float, sync) -> dict:
    """API images/s of `query` in-process and over HTTP, per answer mode, on the same batch."""
    if not (pool / "pool.json").is_file():
        raise SystemExit(f"{pool / 'pool.json'}: no trained API pool; --http needs one (dvc repro pretrain)")
    images = torch.rand(HTTP_IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    token = secrets.token_hex(16)
    os.environ[TOKEN_ENV] = token  # read by open_http_pool
    out = {"pool": str(pool), "images": HTTP_IMAGES, "chunk": HTTP_CHUNK}
    for mode in HTTP_MODES:
        local = open_pool(pool, QueryLedger(), dev, HTTP_CHUNK, answer=AnswerSettings(mode))[0]
        if tuple(local.input_shape) != tuple(images.shape[1:]):
            raise SystemExit(f"API {local.name} takes {list(local.input_shape)} images, the benchmark sends "
                             f"{list(images.shape[1:])}")
        with tempfile.TemporaryFile("w+") as log:
            proc, url = start_server(pool, mode, device, token, log)
            try:
                if not url:
                    log.seek(0)
                    tail = log.read()[-2000:]
                    state = f"exited with code {proc.returncode}" if proc.poll() is not None else \
                        f"did not answer within {READY_TIMEOUT:.0f} s"
                    raise SystemExit(f"dfml serve {state}; its output ends:\n{tail}")
                remote = {a.name: a for a in open_http_pool(url, QueryLedger(), HTTP_CHUNK, answer=mode)}[local.name]
                r_local, _ = rate(lambda: local.query(images), seconds, sync)
                r_http, _ = rate(lambda: remote.query(images), seconds, sync)
                same = torch.equal(local.query(images).cpu(), remote.query(images).cpu())
            finally:
                stop_server(proc)
        out[mode] = {"api": local.name, "inprocess_images_per_s": round(r_local * HTTP_IMAGES, 1),
                     "http_images_per_s": round(r_http * HTTP_IMAGES, 1),
                     "http_overhead_factor": round(r_local / r_http, 2), "answers_identical": same}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=15.0, help="time per measurement")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--http", action="store_true",
                    help="measure only the HTTP backend (a `dfml serve` process) against the in-process one")
    ap.add_argument("--pool", type=Path, default=POOL, help="trained API pool served with --http")
    ap.add_argument("--image", default="1x28", metavar="CxS",
                    help="image shape: channels x side (1x28 Omniglot, 3x84 MiniImageNet / CUB)")
    args = ap.parse_args()
    try:
        C, S = (int(v) for v in args.image.lower().split("x"))
    except ValueError:
        ap.error(f"--image {args.image!r}: give channels x side, e.g. 1x28 or 3x84")
    p = load_params(args.params)
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    inv, dcfg = p.invert, p.distill
    icfg = inv.bidf  # the default recovery method's settings
    ledger = QueryLedger()
    apis = [RandomConv4API(ledger, dev, s, p.query.chunk, C, S) for s in range(4)]
    out = {"device": str(dev), "image": [C, S, S], "torch": torch.__version__, "threads": torch.get_num_threads(),
           "settings": {"q": icfg.q, "images_per_class": inv.images_per_class,
                        "generator_width": inv.generator.width, "tasks_per_batch": dcfg.tasks_per_batch,
                        "memory_tasks": dcfg.memory_tasks, "support_shots": dcfg.support_shots,
                        "inner_steps": dcfg.inner_steps,
                        "boundary_steps": dcfg.boundary_steps, "adapt_steps": p.evaluate.adapt_steps,
                        "meta_gradient": "first_order" if dcfg.first_order else "second_order"}}
    if args.http:
        out["http_vs_inprocess"] = http_vs_inprocess(args.pool, args.device, dev, args.seconds, sync)
        print(json.dumps(out, indent=2))
        return

    x = torch.rand(1024, C, S, S, device=dev)
    r, _ = rate(lambda: apis[0].query(x), args.seconds, sync)
    out["api_query_images_per_s"] = round(r * 1024, 1)

    net = build_classifier("conv4", C, 5, S).to(dev).train()  # what `pretrain` runs: Adam on batches of apis.batch_size
    opt = torch.optim.Adam(net.parameters(), p.apis.lr)
    xb, yb = x[:p.apis.batch_size], torch.arange(p.apis.batch_size, device=dev) % 5

    def train_step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    r, _ = rate(train_step, args.seconds, sync)
    out["api_train_images_per_s"] = round(r * p.apis.batch_size, 1)

    est = build_estimator(icfg, torch.Generator().manual_seed(0))
    st = new_state(5, inv.images_per_class, C, S, inv.generator, 0, dev)
    before = ledger.total
    r, n = rate(lambda: inversion_step(st, apis[0], est, ce_group_loss), args.seconds, sync)
    out["inversion_steps_per_s"] = round(r, 3)
    out["inversion_api_images_per_s"] = round(r * (ledger.total - before) / (n + 1), 1)

    bank, states = [], []
    small = icfg.model_copy(update={"steps": 2, "extra_steps": 0})  # random-weight APIs: no extra steps for low agreement
    for i, api in enumerate(apis):
        imgs, probs, s = invert_api(api, inv.images_per_class, C, S, small, inv.generator, ImagePrior(), est, i,
                                    dev)
        bank.append({"images": imgs, "probs": probs}); states.append(s)
    model = build_meta_model("conv4", C, 5, S, 0).to(dev)
    other = "second_order" if dcfg.first_order else "first_order"
    runs = [(label + vm, after, first, bool(vm))
            for label, after, first in (("bidf_warmup", 10**9, dcfg.first_order), ("bidf_boundary", 0, dcfg.first_order),
                                        (f"bidf_warmup_{other}", 10**9, not dcfg.first_order))
            for vm in ("", "_vmap")]  # each as the loop, then with the meta-batch vmapped (runtime.vmap: on)
    for label, after, first, batched in runs:
        sampler = BiDfTaskSampler(model, apis, bank, states, est, dcfg.model_copy(update={"boundary_after": after}),
                                  torch.Generator().manual_seed(0), dev)
        for a, entry in enumerate(bank):  # random-weight APIs answer nearly one class; a trained pool answers
            for c in range(entry["images"].shape[0]):  # the aimed class for most images: file the bank that way,
                sampler.memory.add(a, c, entry["images"][c])  # so memory tasks run as in `distill`
        trainer = MetaTrainer(model, dcfg.inner_steps, dcfg.inner_lr, dcfg.outer_lr, first,
                              dcfg.temperature, lambda q: 0.0, batched=batched)
        before = ledger.total
        r, n = rate(lambda: trainer.step(sampler(1)), args.seconds, sync)
        out[f"{label}_meta_iterations_per_s"] = round(r, 3)
        out[f"{label}_api_images_per_iteration"] = round((ledger.total - before) / (n + 1), 1)
    per_it = {order: 1 / out[key] for order, key in
              (("first_order" if dcfg.first_order else "second_order", "bidf_warmup_meta_iterations_per_s"),
               (other, f"bidf_warmup_{other}_meta_iterations_per_s"))}
    out["second_order_time_ratio"] = round(per_it["second_order"] / per_it["first_order"], 3)  # loop, warm-up

    m = p.maml_real
    xs, xq = torch.rand(25, C, S, S, device=dev), torch.rand(m.query_shots * 5, C, S, S, device=dev)
    ys = torch.arange(5, device=dev).repeat_interleave(5)
    yq = torch.arange(5, device=dev).repeat_interleave(m.query_shots)
    for label, batched in (("maml", False), ("maml_vmap", True)):
        trainer = MetaTrainer(model, m.inner_steps, m.inner_lr, m.outer_lr, m.first_order, 1.0, lambda q: 0.0,
                              batched=batched)
        r, _ = rate(lambda: trainer.step([Task(xs, ys, (xq, yq), "ce")] * m.tasks_per_batch), args.seconds, sync)
        out[f"{label}_meta_iterations_per_s"] = round(r, 3)

    e = 20
    ex = torch.rand(e, 25, C, S, S, device=dev)
    ey = ys.expand(e, -1)
    eq = torch.rand(e, 75, C, S, S, device=dev)
    params = dict(model.named_parameters())
    r, _ = rate(lambda: adapt_and_predict_batched(model, params, ex, ey, eq, p.evaluate.adapt_steps, 0.1),
                args.seconds, sync)
    out["eval_5shot_episodes_per_s"] = round(r * e, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
