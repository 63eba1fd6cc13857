"""Stage `random_init`: the seeded meta-model initialisation, saved as the `random` model (`models/random.pt`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import main  # noqa: E402
from dfml.evaluation.models import save_random_init  # noqa: E402


if __name__ == "__main__":
    main("random_init", lambda params: save_random_init(params, Path(".")))
