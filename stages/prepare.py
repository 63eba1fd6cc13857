"""Stage `prepare`: fetch the dataset archives (mirror or download, checksummed) and split classes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import main  # noqa: E402
from dfml.data.prepared import save_prepared, subsample  # noqa: E402
from dfml.data.sources import get_source  # noqa: E402
from dfml.utils import timer, write_json  # noqa: E402


def run(params: dict) -> None:
    cfg = dict(params["data"], seed=params["seed"])
    source = get_source(cfg["dataset"])
    with timer() as t:
        ds = source.load(cfg, cfg["image_size"] or source.image_size, Path("data/downloads"))
        ds = subsample(ds, cfg["classes_per_split"], cfg["images_per_class"])
        summary = save_prepared(ds, Path("data/prepared"), cfg["dataset"])
    write_json(Path("metrics/data.json"), {"dataset": cfg["dataset"], "image_size": int(ds.images.shape[2]),
                                           "channels": int(ds.images.shape[1]), **summary,
                                           "seconds": round(t["seconds"], 2)})
    print(f"prepared {cfg['dataset']}: " + ", ".join(f"{s} {v['classes']} classes / {v['images']} images"
                                                      for s, v in summary.items()))


if __name__ == "__main__":
    main("prepare", run)
