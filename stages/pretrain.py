"""Stage `pretrain`: the API owner trains the pool of per-task classifiers (the only stage that sees weights).

The pool follows `apis.scenario` (dfml.api.owner.SCENARIOS): ss, sh (architectures drawn by seed) or mh.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.api.owner import build_pool, pool_index, pool_metrics  # noqa: E402
from dfml.cli import main  # noqa: E402
from dfml.data.prepared import load_prepared  # noqa: E402
from dfml.utils import peak_rss_mb, resolve_device, seed_everything, timer, write_json  # noqa: E402


def run(params: dict) -> None:
    cfg, device = params["apis"], resolve_device(params["device"])
    seed_everything(params["seed"])
    data = load_prepared(Path("data/prepared"))
    out = Path("models/apis")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("api_*.pt"):
        old.unlink()
    with timer() as t:
        records = build_pool(data, cfg, params["seed"], out, device)
    write_json(out / "pool.json", pool_index(cfg, records))
    write_json(Path("metrics/apis.json"), {**pool_metrics(cfg, records), "seconds": round(t["seconds"], 2),
                                           "peak_rss_mb": peak_rss_mb(), "device": str(device)})
    accs = [r["heldout_acc"] for r in records]
    print(f"pool of {len(records)} APIs, held-out accuracy mean {100 * sum(accs) / len(accs):.1f}%")


if __name__ == "__main__":
    main("pretrain", run)
