"""Stage `prepare`: read the dataset archives (mirror or download, checksummed), split classes, write
``data/prepared`` and ``metrics/data.json``.

ss and sh read one dataset (``data.dataset``); mh reads every dataset of ``data.datasets`` and brings them to one
common format (:mod:`dfml.data.combine`). Every dataset's inputs are checked first (a missing or wrong archive
stops the stage before any decoding).
"""

from __future__ import annotations

import numpy as np

from ..core.io import write_json
from ..core.runtime import peak_rss_mb, timer
from ..data.combine import combine, common_format
from ..data.prepared import save_prepared, subsample
from ..data.sources import SPLITS, get_source
from ..params import Params
from . import paths
from .stage import main


def _splits_line(summary: dict) -> str:
    return ", ".join(f"{s} {v['classes']} classes / {v['images']} images" for s, v in summary.items())


def prepare(params: Params) -> None:
    cfg, seed = params.data, params.seed
    names = cfg.used()
    with timer() as t:
        for name in names:
            get_source(name).preflight(cfg, paths.DOWNLOADS)
        if not cfg.datasets:
            source = get_source(cfg.dataset)
            ds = source.load(cfg, cfg.image_size or source.image_size, paths.DOWNLOADS, seed)
            ds = subsample(ds, cfg.subset.classes_per_split, cfg.subset.images_per_class)
            summary = save_prepared(ds, paths.PREPARED, cfg.dataset)
            metrics = {"dataset": cfg.dataset, "image_size": int(ds.images.shape[2]),
                       "channels": int(ds.images.shape[1]), **summary}
            message = f"prepared {cfg.dataset}: " + _splits_line(summary)
        else:
            size, channels = common_format(names, cfg.image_size)
            parts = {}
            for name in names:
                ds = get_source(name).load(cfg, size, paths.DOWNLOADS, seed)
                parts[name] = subsample(ds, cfg.subset.classes_per_split, cfg.subset.images_per_class)
            ds, tags = combine(parts, channels)
            label = "+".join(names)
            summary = save_prepared(ds, paths.PREPARED, label, tags)
            per_dataset = {}
            for name, part in parts.items():
                counts = np.bincount(part.labels, minlength=len(part.class_names))
                per_dataset[name] = {s: {"classes": len(part.splits[s]), "images": int(counts[part.splits[s]].sum())}
                                     for s in SPLITS}
            metrics = {"dataset": label, "image_size": size, "channels": channels, **summary, "datasets": per_dataset}
            message = "\n".join([f"prepared {label} at {size} px, {channels} channel(s): {_splits_line(summary)}"]
                                + [f"  {name}: {_splits_line(v)}" for name, v in per_dataset.items()])
    write_json(paths.DATA_METRICS, {**metrics, "seconds": round(t["seconds"], 2), "peak_rss_mb": peak_rss_mb()})
    print(message)


if __name__ == "__main__":
    main("prepare", prepare, __doc__.splitlines()[0])
