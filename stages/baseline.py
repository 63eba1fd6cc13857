"""Stage `baseline@<name>`: one data-free baseline (best_api, single_dfkd, distill_avg) from the recovered tasks.

    python stages/baseline.py <name> [--params params.yaml]

Reads `data/bank` (no API query), `models/apis/pool.json` (reported accuracies) and
`metrics/invert.json`; writes `models/<name>.pt` and `metrics/<name>.json`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.baselines import BASELINES, run_baseline  # noqa: E402
from dfml.cli import guarded, stage_parser  # noqa: E402
from dfml.config import load_params  # noqa: E402


def work(name: str, params_file: str) -> None:
    m = run_baseline(name, load_params(params_file))
    print(f"{name}: final KD loss {m['final_loss']:.4f}, agreement with the APIs {m['agreement_pct']:.1f}% on their "
          f"recovered images, {m['seconds']:.1f} s; {m['api_images']:,} API images (spent by invert)")


if __name__ == "__main__":
    parser = stage_parser("baseline", __doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BASELINES), help="the baseline (its params: baselines.<name>)")
    args = parser.parse_args()
    guarded(f"baseline {args.name}", lambda: work(args.name, args.params))
