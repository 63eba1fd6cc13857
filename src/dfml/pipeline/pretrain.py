"""Stage `pretrain`: the API owner trains the pool of per-task classifiers (the only stage that sees weights).

The pool follows ``apis.scenario`` (:data:`dfml.owner.pool.SCENARIOS`): ss, sh (architectures drawn by seed) or
mh. Every API's task (classes, seed) is drawn first; then each API trains as one job of ``runtime.engine``
(:mod:`dfml.runtime.engine`: here one after another, or on Ray workers), and this process writes the files, the
same whichever engine. Writes ``models/apis/api_XXX.pt`` with ``pool.json``, and ``metrics/apis.json``.
"""

from __future__ import annotations

from tqdm import tqdm

from ..core.io import write_json
from ..core.runtime import peak_rss_mb, resolve_device, timer
from ..core.seeding import seed_everything
from ..data.prepared import load_prepared
from ..owner.pool import TrainJob, plan_tasks, pool_index, pool_metrics, save_api, task_data, train_task
from ..params import Params
from ..runtime.engine import open_engine
from . import paths
from .stage import main


def pretrain(params: Params) -> None:
    cfg, device = params.apis, resolve_device(params.device)
    seed_everything(params.seed)
    data = load_prepared(paths.PREPARED)
    datasets = data.datasets if data.multi else None
    tasks = {t.name: t for t in plan_tasks(data, cfg, params.ways, params.seed)}
    records = {}
    with open_engine(params.runtime, "pretrain", device) as engine, timer() as t:
        paths.POOL.mkdir(parents=True, exist_ok=True)
        for old in paths.POOL.glob("api_*.pt"):
            old.unlink()
        jobs = ((name, TrainJob(task, task_data(data, task.classes), cfg)) for name, task in tasks.items())
        for name, (state, acc) in tqdm(engine.map(train_task, jobs), desc=f"pretrain APIs ({engine.name})",
                                       unit="api", total=len(tasks)):
            records[name] = save_api(paths.POOL, data, tasks[name], state, acc)
    records = [records[name] for name in tasks]
    write_json(paths.POOL_INDEX, pool_index(cfg, datasets, records))
    write_json(paths.POOL_METRICS, {**pool_metrics(cfg, params.ways, datasets, records),
                                    "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb(),
                                    "device": str(device)})
    accs = [r["heldout_acc"] for r in records]
    print(f"pool of {len(records)} APIs, held-out accuracy mean {100 * sum(accs) / len(accs):.1f}%")


if __name__ == "__main__":
    main("pretrain", pretrain, __doc__.splitlines()[0])
