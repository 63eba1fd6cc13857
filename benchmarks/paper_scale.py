"""Wall-time estimate of the paper-scale profiles from measured per-step figures (not a test).

    python benchmarks/paper_scale.py [--device auto] [--seconds 10] [--out results/bench/paper_scale.json]
    python benchmarks/paper_scale.py --tiny      # a quick check that the script runs (figures meaningless)

For each of ``profiles/paper-cifar-fs.yaml`` (32 px) and ``profiles/paper-miniimagenet.yaml`` (84 px), merged
into ``params.yaml`` exactly as ``dfml profile run`` merges them, it times on this device, with random weights
and random images of the profile's shape (time does not depend on what the pixels are):

- ``pretrain_step_s``: one optimiser step of one Conv4 API on a batch of ``apis.batch_size`` images;
- ``invert_step_s``: one zero-order BiDf-MKD generator step (``invert.images_per_class`` x 5 images,
  ``(q + 1)`` API images each);
- ``distill_warmup_iteration_s`` and ``distill_boundary_iteration_s``: one BiDf-MKD meta-iteration before and
  after ``distill.boundary_after`` (boundary queries: the API images and the zero-order re-inversion);
- ``maml_real_iteration_s``: one MAML meta-iteration on CE tasks (``maml_real``'s settings);
- ``eval_episode_s``: one 5-shot evaluation episode (``evaluate.adapt_steps`` steps, 15 queries per class).

and multiplies them by the counts the profile implies (``apis.count`` x ``apis.epochs`` x steps per epoch,
``apis.count`` x ``invert.bidf.steps``, the meta-iterations of ``distill``, ``whitebox_distill`` and
``maml_real``, 600 episodes x 2 shots x 7 models). On 8 GPUs the per-API stages (``pretrain``, ``invert``,
``whitebox_invert``) divide by 8 (``runtime.engine: ray``, one API per GPU); the meta-learning stages run one
after another on one GPU each, as ``dvc repro`` runs them. Left out (small beside the rest): ``prepare``, the
three data-free baselines, meta-val evaluations during meta-training (``val_every``; added as episodes), the
white-box inversion (exact gradients, about 1/(q+1) of the zero-order cost). ``whitebox_distill`` is counted at
the warm-up cost (its boundary gradients are exact, with no zero-order queries).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench import RandomConv4API, rate  # noqa: E402
from dfml.api.base import QueryLedger  # noqa: E402
from dfml.core.io import write_json  # noqa: E402
from dfml.core.runtime import resolve_device  # noqa: E402
from dfml.inversion.gradients import build_estimator  # noqa: E402
from dfml.inversion.invert import ImagePrior, ce_group_loss, inversion_step, invert_api, new_state  # noqa: E402
from dfml.meta.bidf import BiDfTaskSampler  # noqa: E402
from dfml.meta.functional import adapt_and_predict_batched  # noqa: E402
from dfml.meta.trainer import MetaTrainer, Task  # noqa: E402
from dfml.models import build_classifier, build_meta_model  # noqa: E402
from dfml.params import Params, validate  # noqa: E402
from dfml.profiles import load_overlay, machine, merge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"paper-cifar-fs": (3, 32, 600), "paper-miniimagenet": (3, 84, 500)}  # channels, px, images per class
WAYS, QUERY, GPUS, EVAL_EPISODES, MODELS = 5, 15, 8, 600, 7


def profile_params(name: str) -> Params:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return validate(merge(base, load_overlay(name)), f"params.yaml with profiles/{name}.yaml")


def _tiny(p: Params) -> Params:
    """The same code paths at a size that runs in seconds (for --tiny)."""
    upd = {"invert": p.invert.model_copy(update={
               "images_per_class": 8, "generator": p.invert.generator.model_copy(update={"width": 16}),
               "bidf": p.invert.bidf.model_copy(update={"q": 2})}),
           "distill": p.distill.model_copy(update={"inner_steps": 1, "memory_size": 8, "support_shots": 2,
                                                   "query_shots": 3}),
           "maml_real": p.maml_real.model_copy(update={"inner_steps": 1, "query_shots": 3})}
    return p.model_copy(update=upd)


def measure(p: Params, channels: int, size: int, dev: torch.device, seconds: float) -> dict:
    """Seconds per step of each stage's unit of work (see the module docstring)."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    inv, dist, mr = p.invert, p.distill, p.maml_real
    out = {}

    net = build_classifier(p.apis.arch, channels, WAYS, size).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=p.apis.lr, momentum=0.9)
    x = torch.rand(p.apis.batch_size, channels, size, size, device=dev)
    y = torch.randint(WAYS, (p.apis.batch_size,), device=dev)

    def train_step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    out["pretrain_step_s"] = 1 / rate(train_step, seconds, sync)[0]

    ledger = QueryLedger()
    apis = [RandomConv4API(ledger, dev, s, p.query.chunk, channels, size) for s in range(2)]
    est = build_estimator(inv.bidf, torch.Generator().manual_seed(0))
    st = new_state(WAYS, inv.images_per_class, channels, size, inv.generator, 0, dev)
    before = ledger.total
    r, n = rate(lambda: inversion_step(st, apis[0], est, ce_group_loss), seconds, sync)
    out["invert_step_s"] = 1 / r
    out["invert_api_images_per_step"] = (ledger.total - before) // (n + 1)

    bank, states = [], []
    short = inv.bidf.model_copy(update={"steps": 1, "extra_steps": 0})
    for i, api in enumerate(apis):
        imgs, probs, s = invert_api(api, inv.images_per_class, channels, size, short, inv.generator, ImagePrior(),
                                    est, i, dev)
        bank.append({"images": imgs, "probs": probs}); states.append(s)
    model = build_meta_model(p.apis.arch, channels, WAYS, size, 0).to(dev)
    for label, after in (("distill_warmup", 10**9), ("distill_boundary", 0)):
        sampler = BiDfTaskSampler(model, apis, bank, states, est, dist.model_copy(update={"boundary_after": after}),
                                  torch.Generator().manual_seed(0), dev)
        trainer = MetaTrainer(model, dist.inner_steps, dist.inner_lr, dist.outer_lr, dist.first_order,
                              dist.temperature, lambda q: 0.0)
        before = ledger.total
        r, n = rate(lambda: trainer.step(sampler(1)), seconds, sync)
        out[f"{label}_iteration_s"] = 1 / r
        out[f"{label}_api_images_per_iteration"] = (ledger.total - before) // (n + 1)

    shots = max(dist.support_shots) if isinstance(dist.support_shots, list) else dist.support_shots
    xs = torch.rand(WAYS * shots, channels, size, size, device=dev)
    ys = torch.arange(WAYS, device=dev).repeat_interleave(shots)
    xq = torch.rand(WAYS * mr.query_shots, channels, size, size, device=dev)
    yq = torch.arange(WAYS, device=dev).repeat_interleave(mr.query_shots)
    trainer = MetaTrainer(model, mr.inner_steps, mr.inner_lr, mr.outer_lr, mr.first_order, 1.0, lambda q: 0.0)
    out["maml_real_iteration_s"] = 1 / rate(lambda: trainer.step([Task(xs, ys, (xq, yq), "ce")] * mr.tasks_per_batch),
                                            seconds, sync)[0]

    e = 8
    ex = torch.rand(e, WAYS * 5, channels, size, size, device=dev)
    ey = torch.arange(WAYS, device=dev).repeat_interleave(5).expand(e, -1)
    eq = torch.rand(e, WAYS * QUERY, channels, size, size, device=dev)
    params = dict(model.named_parameters())
    r, _ = rate(lambda: adapt_and_predict_batched(model, params, ex, ey, eq, p.evaluate.adapt_steps, 0.1),
                seconds, sync)
    out["eval_episode_s"] = 1 / (r * e)
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}


def estimate(p: Params, per_class: int, f: dict) -> dict:
    """Hours of each stage on 1 GPU and on 8, from the per-step figures `f` and the counts `p` implies."""
    dist, mr = p.distill, p.maml_real
    steps_per_epoch = math.ceil(WAYS * round(p.apis.train_fraction * per_class) / p.apis.batch_size)
    warm = min(dist.boundary_after, dist.iterations)
    val = (dist.iterations // dist.val_every + 1) * dist.val_episodes + (mr.iterations // mr.val_every + 1) \
        * mr.val_episodes
    seconds = {
        "pretrain": p.apis.count * p.apis.epochs * steps_per_epoch * f["pretrain_step_s"],
        "invert": p.apis.count * p.invert.bidf.steps * f["invert_step_s"],
        "distill": warm * f["distill_warmup_iteration_s"]
        + (dist.iterations - warm) * f["distill_boundary_iteration_s"],
        "whitebox_distill": dist.iterations * f["distill_warmup_iteration_s"],
        "maml_real": mr.iterations * f["maml_real_iteration_s"],
        "evaluation_and_meta_val": (EVAL_EPISODES * 2 * MODELS + val) * f["eval_episode_s"],
    }
    per_api = {"pretrain", "invert"}
    one = sum(seconds.values())
    eight = sum(s / GPUS if k in per_api else s for k, s in seconds.items())
    return {"counts": {"pretrain_steps": p.apis.count * p.apis.epochs * steps_per_epoch,
                       "invert_steps": p.apis.count * p.invert.bidf.steps,
                       "distill_iterations": dist.iterations, "boundary_iterations": dist.iterations - warm,
                       "maml_real_iterations": mr.iterations, "evaluation_episodes": EVAL_EPISODES * 2 * MODELS + val},
            "stage_hours_1_device": {k: round(s / 3600, 2) for k, s in seconds.items()},
            "hours_1_device": round(one / 3600, 1), "hours_8_devices": round(eight / 3600, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    ap.add_argument("--tiny", action="store_true", help="a quick run at toy sizes (checks the script, not a figure)")
    ap.add_argument("--out", type=Path, help="also write the JSON here (e.g. results/bench/paper_scale.json)")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    out = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(), "tiny": args.tiny,
           "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "devices_for_the_8_device_estimate": GPUS, "profiles": {}}
    for name, (channels, size, per_class) in PROFILES.items():
        p = profile_params(name)
        if args.tiny:
            p = _tiny(p)
        figures = measure(p, channels, size, dev, args.seconds)
        est = estimate(p, per_class, figures)
        est["commands"] = {
            "1_gpu": f"dfml profile run {name}",
            "8_gpus": f"dfml profile run {name} -S runtime.engine=ray -S runtime.ray.gpus_per_worker=1 "
                      f"-S runtime.ray.workers={GPUS}"}
        out["profiles"][name] = {"image_size": size, "images_per_class": per_class, "per_step": figures, **est}
        print(f"[{name}] {json.dumps(figures)}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    if args.out:
        write_json(args.out, out)


if __name__ == "__main__":
    main()
