"""Stage `distill` (and `whitebox_distill` with --variant whitebox): BiDf-MKD meta knowledge distillation.

    python stages/distill.py [--variant blackbox|whitebox] [--params params.yaml]

The work is :func:`dfml.meta.distill_stage.run_distill` (resumable; exit 3 on the API image budget).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import variant_main  # noqa: E402
from dfml.meta.distill_stage import run_distill as run  # noqa: E402

if __name__ == "__main__":
    variant_main("distill", run)
