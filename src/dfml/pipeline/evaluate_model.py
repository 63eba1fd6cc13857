"""Stage `evaluate_model@<name>`: one model of ``run.evaluate`` on the same seeded meta-test episodes
(:mod:`dfml.evaluation.protocol`); stage `evaluate` merges them.

    python -m dfml.pipeline.evaluate_model <name> [--params params.yaml]

``metrics/eval/<name>.json``: ``{"model", "results": {"<K>shot": {"acc", "ci95"}}, "cost": {"api_images"} (of
its training, from its checkpoint), "settings", "protocol", "seconds", "peak_rss_mb",
"device"}``; ``plots/episodes/<name>.csv``: ``model, [dataset,] shot, episode, acc``.
"""

from __future__ import annotations

from ..core.io import write_csv, write_json
from ..core.runtime import peak_rss_mb, resolve_device, timer
from ..core.seeding import derive_seed, seed_everything
from ..data.prepared import load_prepared
from ..evaluation.candidates import KINDS
from ..evaluation.protocol import evaluate_candidate
from ..params import Params
from . import paths
from .stage import main_named


def evaluate_model(name: str, params: Params) -> dict:
    """Evaluate model `name` (``models/<name>.pt``); write its two files; return its ``results``."""
    device, seed = resolve_device(params.device), params.seed
    seed_everything(derive_seed(seed, "evaluate"))
    data = load_prepared(paths.PREPARED)
    with timer() as t:
        cand = KINDS[name](paths.model(name), data.channels, params.ways, data.image_size, device)
        ev = evaluate_candidate(name, cand, data, params.evaluate, params.ways, seed, device)
    write_json(paths.eval_json(name), {"model": name, "results": ev.results, "cost": cand.cost,
                                       "settings": ev.settings, "protocol": ev.protocol,
                                       "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
                                       "device": str(device)})
    write_csv(ev.rows, paths.episodes_csv(name))
    return ev.results


def cli(argv: list[str] | None = None) -> None:
    main_named("evaluate_model", evaluate_model, list(KINDS), "the model (models/<name>.pt)", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    cli()
