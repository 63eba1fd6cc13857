"""Stage `pretrain`: the API owner trains the pool of per-task classifiers (the only stage that sees weights).

The pool follows ``apis.scenario`` (:data:`dfml.owner.pool.SCENARIOS`): ss, sh (architectures drawn by seed) or
mh. Writes ``models/apis/api_XXX.pt`` with ``pool.json``, and ``metrics/apis.json``.
"""

from __future__ import annotations

from ..core.io import write_json
from ..core.runtime import peak_rss_mb, resolve_device, timer
from ..core.seeding import seed_everything
from ..data.prepared import load_prepared
from ..owner.pool import build_pool, pool_index, pool_metrics
from ..params import Params
from . import paths
from .stage import main


def pretrain(params: Params) -> None:
    cfg, device = params.apis, resolve_device(params.device)
    seed_everything(params.seed)
    data = load_prepared(paths.PREPARED)
    datasets = data.datasets if data.multi else None
    paths.POOL.mkdir(parents=True, exist_ok=True)
    for old in paths.POOL.glob("api_*.pt"):
        old.unlink()
    with timer() as t:
        records = build_pool(data, cfg, params.ways, params.seed, paths.POOL, device)
    write_json(paths.POOL_INDEX, pool_index(cfg, datasets, records))
    write_json(paths.POOL_METRICS, {**pool_metrics(cfg, params.ways, datasets, records),
                                    "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
                                    "device": str(device)})
    accs = [r["heldout_acc"] for r in records]
    print(f"pool of {len(records)} APIs, held-out accuracy mean {100 * sum(accs) / len(accs):.1f}%")


if __name__ == "__main__":
    main("pretrain", pretrain, __doc__.splitlines()[0])
