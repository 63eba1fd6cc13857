"""Stage `baseline@<name>`: one data-free baseline (best_api, single_dfkd, distill_avg) from the recovered tasks.

    python -m dfml.pipeline.baseline <name> [--params params.yaml]

Reads ``data/bank`` (no API query), ``models/apis/pool.json`` (the owner's reported accuracies) and
``metrics/invert.json``; writes ``models/<name>.pt`` (``{"name", "arch": "conv4", "state_dict", "info",
"cost": {"api_images"}}``, the N-way initialisation), ``metrics/cost/<name>.json`` (its API images and seconds,
inversion included) and ``metrics/<name>.json``: ``api_images`` (the `invert` images of the APIs whose recovered
tasks it used: no query is sent here), ``seconds`` (this training alone), the steps, losses and agreement of training.
"""

from __future__ import annotations

from ..baselines.bank import load_bank, reported_accuracies
from ..baselines.methods import BASELINES, Setting
from ..core.io import read_json, torch_save_atomic, write_json
from ..core.runtime import peak_rss_mb, resolve_device, timer
from ..core.seeding import derive_seed, seed_everything
from ..inversion.variants import BLACKBOX
from ..params import Params
from . import paths
from .stage import main_named


def baseline(name: str, params: Params) -> dict:
    """Train baseline `name` with ``params.baselines.<name>``; write its checkpoint and metrics; return them."""
    device = resolve_device(params.device)
    seed_everything(derive_seed(params.seed, "baseline", name))
    invert = read_json(paths.invert_metrics(BLACKBOX))
    per_api = invert["api_images_per_api"]
    setting = Setting(load_bank(paths.bank(BLACKBOX)), reported_accuracies(paths.POOL), params.seed, device)
    with timer() as t:
        result = BASELINES[name](setting, getattr(params.baselines, name))
    api_images = sum(per_api[a] for a in result.apis)
    cost = {"api_images": api_images, "seconds": round(invert["seconds"] + t["seconds"], 2)}
    torch_save_atomic({"name": name, "arch": "conv4", "state_dict": result.state_dict, "info": result.info,
                       "cost": {"api_images": api_images}}, paths.model(name))
    write_json(paths.cost_json(name), cost)
    metrics = {"api_images": api_images, "apis_used": len(result.apis), **result.info,
               **result.training, "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
               "device": str(device)}
    write_json(paths.model_metrics(name), metrics)
    print(f"{name}: final KD loss {metrics['final_loss']:.4f}, agreement with the APIs {metrics['agreement_pct']:.1f}% "
          f"on their recovered images, {metrics['seconds']:.1f} s; {api_images:,} API images (spent by invert)")
    return metrics


def cli(argv: list[str] | None = None) -> None:
    main_named("baseline", baseline, list(BASELINES), "the baseline (its params: baselines.<name>)", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    cli()
