"""The merge of the per-model evaluations (stage `evaluate`): the files the report and `dvc metrics` read.

``metrics/eval.json``: per model of `evaluate.models` (in that order) each shot's ``{"acc", "ci95"}`` plus
``api_images`` and ``seconds`` of its training (from ``metrics/eval/<name>.json``);
``metrics/eval_settings.json``: the protocol and every model's adaptation settings; ``plots/episodes.csv``: every
model's per-episode accuracies; ``plots/eval.png``: the accuracies as bars.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..reporting.plots import eval_bars_png
from ..utils import atomic_write_bytes, read_json, write_json
from .runner import model_csv, model_json


def merge(params: dict, root: Path = Path(".")) -> dict:
    """Gather the per-model files of `evaluate.models` (in that order) and each model's training cost into the
    merged outputs; return ``metrics/eval.json``'s content."""
    root = Path(root)
    names = params["evaluate"]["models"]
    per_model = {}
    for name in names:
        path = root / model_json(name)
        if not path.is_file():
            raise FileNotFoundError(f"{model_json(name)} not found: model {name!r} of evaluate.models has no "
                                    f"evaluation; run dvc repro (and list {name!r} in dvc.yaml's evaluate_model)")
        per_model[name] = read_json(path)
    protocols = {name: m["protocol"] for name, m in per_model.items()}
    if len({repr(p) for p in protocols.values()}) > 1:
        raise ValueError(f"the per-model evaluations used different episodes ({protocols}); run dvc repro")
    results = {name: {**m["results"], **m["cost"]} for name, m in per_model.items()}
    devices = sorted({m["device"] for m in per_model.values()})
    write_json(root / "metrics/eval.json", results)
    write_json(root / "metrics/eval_settings.json", {
        **protocols[names[0]], "seconds": round(sum(m["seconds"] for m in per_model.values()), 2),
        "device": ", ".join(devices), "models": {name: m["settings"] for name, m in per_model.items()},
        "resources": {name: {k: m[k] for k in ("seconds", "peak_rss_mb") if k in m} for name, m in per_model.items()}})
    episodes = pd.concat([pd.read_csv(root / model_csv(name)) for name in names], ignore_index=True)
    atomic_write_bytes(root / "plots/episodes.csv", episodes.to_csv(index=False).encode())
    eval_bars_png(results, root / "plots/eval.png")
    return results
