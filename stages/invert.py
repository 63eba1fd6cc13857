"""Stage `invert` (and `whitebox_invert` with --variant whitebox): recover a pseudo task from every API.

    python stages/invert.py [--variant blackbox|whitebox] [--params params.yaml]

The work is :func:`dfml.inversion.stage.run_invert` (resumable; exit 3 on the API image budget).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import variant_main  # noqa: E402
from dfml.inversion.stage import run_invert as run  # noqa: E402

if __name__ == "__main__":
    variant_main("invert", run)
