"""Stage `evaluate_model@<name>` / `evaluate`: models on the same seeded 600 meta-test episodes per shot.

    python stages/evaluate.py --model <name>   # one model -> metrics/eval/<name>.json, plots/episodes/<name>.csv
    python stages/evaluate.py                  # merge evaluate.models -> metrics/eval.json, eval_settings.json,
                                               #   plots/episodes.csv, plots/eval.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import guarded, stage_parser  # noqa: E402
from dfml.config import load_params  # noqa: E402
from dfml.evaluation.models import MODELS  # noqa: E402
from dfml.evaluation.merge import merge  # noqa: E402
from dfml.evaluation.runner import evaluate_model  # noqa: E402

if __name__ == "__main__":
    parser = stage_parser("evaluate", __doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), help="evaluate this model only (default: the merge)")
    args = parser.parse_args()
    if args.model:
        guarded(f"evaluate {args.model}", lambda: evaluate_model(args.model, load_params(args.params)))
    else:
        guarded("evaluate", lambda: merge(load_params(args.params)))
