"""Stage `random_init`: the seeded meta-model initialisation that `distill` and `maml_real` start from
(``derive_seed(seed, "meta-init")``), saved as the `random` model (``models/random.pt``), in the checkpoint
format of the baselines, and its cost (none) in ``metrics/cost/random.json``."""

from __future__ import annotations

from ..core.io import read_json, torch_save_atomic, write_json
from ..core.seeding import derive_seed
from ..models import build_meta_model
from ..params import Params
from . import paths
from .stage import main


def random_init(params: Params) -> None:
    data = read_json(paths.DATA_METRICS)
    m = build_meta_model("conv4", data["channels"], params.ways, data["image_size"],
                         derive_seed(params.seed, "meta-init"))
    torch_save_atomic({"name": "random", "arch": "conv4", "state_dict": m.state_dict(),
                       "info": {"init": "random (seeded)"}, "cost": {"api_images": 0}},
                      paths.model("random"))
    write_json(paths.cost_json("random"), {"api_images": 0, "seconds": 0.0})


if __name__ == "__main__":
    main("random_init", random_init, __doc__.splitlines()[0])
