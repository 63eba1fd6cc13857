"""Throughput benchmark: prints JSON figures for the current device (not a test).

    python benchmarks/bench.py [--device auto] [--seconds 20]

Measures, at fixed settings (Omniglot shape 1x28x28, 5-way, Conv4 APIs with
random weights, default inversion and distillation settings from params.yaml):
- API images/s of a bare `query` call (batches of 1024),
- API images/s and generator steps/s of zero-order inversion,
- BiDf-MKD meta-iterations/s, warm-up (bank queries) and with boundary queries,
- MAML (real-data style, CE tasks) meta-iterations/s,
- episodes/s of evaluation adaptation (5-way 5-shot, 15 queries, evaluate.adapt_steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.api.base import BlackBoxAPI, QueryLedger  # noqa: E402
from dfml.config import load_params  # noqa: E402
from dfml.meta.functional import adapt_and_predict_batched  # noqa: E402
from dfml.inversion.gradients import build_estimator  # noqa: E402
from dfml.inversion.invert import ce_group_loss, inversion_step, invert_api, new_state  # noqa: E402
from dfml.meta.bidf import BiDfTaskSampler  # noqa: E402
from dfml.meta.runs import build_meta_model  # noqa: E402
from dfml.meta.trainer import MetaTrainer, Task  # noqa: E402
from dfml.models import build_classifier  # noqa: E402
from dfml.utils import resolve_device  # noqa: E402


class RandomConv4API(BlackBoxAPI):
    def __init__(self, ledger, device, seed, chunk):
        super().__init__(f"bench_{seed}", 5, (1, 28, 28), ledger, chunk)
        torch.manual_seed(seed)
        self._net = build_classifier("conv4", 1, 5, 28).to(device).eval()
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=15.0, help="time per measurement")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    p = load_params(args.params)
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    icfg, dcfg = p["invert"], dict(p["distill"])
    ledger = QueryLedger()
    apis = [RandomConv4API(ledger, dev, s, p["apis"]["query_chunk"]) for s in range(4)]
    out = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "settings": {"q": icfg["q"], "images_per_class": icfg["images_per_class"],
                        "generator_width": icfg["generator_width"], "tasks_per_batch": dcfg["tasks_per_batch"],
                        "memory_tasks": dcfg["memory_tasks"], "inner_steps": dcfg["inner_steps"],
                        "boundary_steps": dcfg["boundary_steps"], "adapt_steps": p["evaluate"]["adapt_steps"]}}

    x = torch.rand(1024, 1, 28, 28, device=dev)
    r, _ = rate(lambda: apis[0].query(x), args.seconds, sync)
    out["api_query_images_per_s"] = round(r * 1024, 1)

    est = build_estimator(icfg, torch.Generator().manual_seed(0))
    st = new_state(5, icfg["images_per_class"], 1, 28, icfg, 0, dev)
    before = ledger.total
    r, n = rate(lambda: inversion_step(st, apis[0], est, ce_group_loss), args.seconds, sync)
    out["inversion_steps_per_s"] = round(r, 3)
    out["inversion_api_images_per_s"] = round(r * (ledger.total - before) / (n + 1), 1)

    bank, states = [], []
    small = dict(icfg, steps=2)
    for i, api in enumerate(apis):
        imgs, probs, s = invert_api(api, icfg["images_per_class"], 1, 28, small, est, i, dev)
        bank.append({"images": imgs, "probs": probs}); states.append(s)
    model = build_meta_model("conv4", 1, 5, 28, 0).to(dev)
    for label, after in (("bidf_warmup", 10**9), ("bidf_boundary", 0)):
        sampler = BiDfTaskSampler(model, apis, bank, states, est, dict(dcfg, boundary_after=after),
                                  torch.Generator().manual_seed(0), dev)
        trainer = MetaTrainer(model, dcfg["inner_steps"], dcfg["inner_lr"], dcfg["outer_lr"], dcfg["first_order"],
                              dcfg["temperature"], lambda q: 0.0)
        before = ledger.total
        r, n = rate(lambda: trainer.step(sampler(1)), args.seconds, sync)
        out[f"{label}_meta_iterations_per_s"] = round(r, 3)
        out[f"{label}_api_images_per_iteration"] = round((ledger.total - before) / (n + 1), 1)

    m = p["maml_real"]
    xs, xq = torch.rand(25, 1, 28, 28, device=dev), torch.rand(m["query_shots"] * 5, 1, 28, 28, device=dev)
    ys = torch.arange(5, device=dev).repeat_interleave(5)
    yq = torch.arange(5, device=dev).repeat_interleave(m["query_shots"])
    trainer = MetaTrainer(model, m["inner_steps"], m["inner_lr"], m["outer_lr"], m["first_order"], 1.0, lambda q: 0.0)
    r, _ = rate(lambda: trainer.step([Task(xs, ys, (xq, yq), "ce")] * m["tasks_per_batch"]), args.seconds, sync)
    out["maml_meta_iterations_per_s"] = round(r, 3)

    e = 20
    ex = torch.rand(e, 25, 1, 28, 28, device=dev)
    ey = ys.expand(e, -1)
    eq = torch.rand(e, 75, 1, 28, 28, device=dev)
    params = dict(model.named_parameters())
    r, _ = rate(lambda: adapt_and_predict_batched(model, params, ex, ey, eq, p["evaluate"]["adapt_steps"], 0.1),
                args.seconds, sync)
    out["eval_5shot_episodes_per_s"] = round(r * e, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
