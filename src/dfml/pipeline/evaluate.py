"""Stage `evaluate`: the merge of the per-model evaluations, the files the report and `dvc metrics` read.

``metrics/eval.json``: per model of ``run.evaluate`` (in that order) each shot's ``{"acc", "ci95"}`` plus
``api_images`` (from ``metrics/eval/<name>.json``) and ``seconds`` of its training (from
``metrics/cost/<name>.json``, written by the stage that trains it);
``metrics/eval_settings.json``: the protocol, every model's adaptation settings and what each evaluation cost
(``resources``: seconds and peak memory); ``plots/episodes.csv``: every model's per-episode accuracies;
``plots/eval.png``: the accuracies as bars.
"""

from __future__ import annotations

import pandas as pd

from ..core.io import atomic_write_bytes, read_json, write_json
from ..params import Params
from ..reporting.plots import eval_bars_png
from . import paths
from .stage import main


def evaluate(params: Params) -> dict:
    """Gather the per-model files of ``run.evaluate`` and each model's training cost; return eval.json's content."""
    names = params.run.evaluate
    per_model = {}
    for name in names:
        path = paths.eval_json(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: model {name!r} of run.evaluate has no evaluation; run "
                                    "dvc repro")
        if not paths.cost_json(name).is_file():
            raise FileNotFoundError(f"{paths.cost_json(name)} not found: the training cost of model {name!r} of "
                                    "run.evaluate is written by the stage that trains it; run dvc repro")
        per_model[name] = {**read_json(path), "seconds_trained": read_json(paths.cost_json(name))["seconds"]}
    protocols = {name: m["protocol"] for name, m in per_model.items()}
    if len({repr(p) for p in protocols.values()}) > 1:
        raise ValueError(f"the per-model evaluations used different episodes ({protocols}); run dvc repro")
    results = {name: {**m["results"], "api_images": m["cost"]["api_images"],
                      "seconds": m["seconds_trained"]} for name, m in per_model.items()}
    devices = sorted({m["device"] for m in per_model.values()})
    write_json(paths.EVAL_JSON, results)
    write_json(paths.EVAL_SETTINGS, {
        **protocols[names[0]], "seconds": round(sum(m["seconds"] for m in per_model.values()), 2),
        "device": ", ".join(devices), "models": {name: m["settings"] for name, m in per_model.items()},
        "resources": {name: {k: m[k] for k in ("seconds", "peak_rss_mb") if k in m} for name, m in per_model.items()}})
    episodes = pd.concat([pd.read_csv(paths.episodes_csv(name)) for name in names], ignore_index=True)
    atomic_write_bytes(paths.EPISODES_CSV, episodes.to_csv(index=False).encode())
    eval_bars_png(results, paths.EVAL_PNG)
    return results


if __name__ == "__main__":
    main("evaluate", evaluate, __doc__.splitlines()[0])
