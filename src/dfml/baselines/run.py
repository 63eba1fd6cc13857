"""Run one baseline the way its DVC stage does: read the bank, train, write the checkpoint and the metrics."""

from __future__ import annotations

from pathlib import Path

from ..utils import derive_seed, peak_rss_mb, read_json, resolve_device, seed_everything, timer, torch_save_atomic, write_json
from .bank import load_bank, reported_accuracies
from .methods import BASELINES, Setting

BANK = Path("data/bank")
POOL = Path("models/apis")
INVERT_METRICS = Path("metrics/invert.json")


def checkpoint_path(name: str) -> Path:
    return Path("models") / f"{name}.pt"


def metrics_path(name: str) -> Path:
    return Path("metrics") / f"{name}.json"


def run_baseline(name: str, params: dict, root: Path = Path(".")) -> dict:
    """Train baseline `name` with ``params["baselines"][name]`` under `root`; return its metrics.

    Writes ``models/<name>.pt`` (``{"name", "arch": "conv4", "state_dict", "info", "cost"}``, the
    N-way initialisation; ``cost``: its API images and seconds, inversion included) and ``metrics/<name>.json``: ``api_images`` (the `invert`
    images of the APIs whose recovered tasks it used: no query is sent here),
    ``seconds`` (this training alone), the steps, losses and agreement of training.
    """
    root = Path(root)
    device = resolve_device(params["device"])
    seed_everything(derive_seed(params["seed"], "baseline", name))
    invert = read_json(root / INVERT_METRICS)
    per_api = invert["api_images_per_api"]
    setting = Setting(load_bank(root / BANK), reported_accuracies(root / POOL), params["seed"], device)
    with timer() as t:
        result = BASELINES[name](setting, params["baselines"][name])
    api_images = sum(per_api[a] for a in result.apis)
    cost = {"api_images": api_images, "seconds": round(invert["seconds"] + t["seconds"], 2)}
    torch_save_atomic({"name": name, "arch": "conv4", "state_dict": result.state_dict, "info": result.info,
                       "cost": cost}, root / checkpoint_path(name))
    metrics = {"api_images": api_images, "apis_used": len(result.apis), **result.info,
               **result.training, "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
               "device": str(device)}
    write_json(root / metrics_path(name), metrics)
    return metrics
