"""Score meta-learned checkpoints on many fresh meta-val episodes, paired with the first (choose between runs).

    python scripts/score_val.py models/bidf_mkd.pt other_run.pt [...] [--episodes 1000] [--shots 1 5]

A checkpoint of another DVC experiment: `dvc exp apply <exp>` and copy its models/bidf_mkd.pt, or take the md5
that `git show <exp ref>:dvc.lock` gives for it from the DVC cache. Needs data/prepared (`dvc repro prepare`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import guarded, stage_parser  # noqa: E402
from dfml.config import load_params  # noqa: E402
from dfml.data.prepared import load_prepared  # noqa: E402
from dfml.evaluation.rescore import format_scores, score_on_val  # noqa: E402
from dfml.utils import resolve_device, write_json  # noqa: E402


def main(args) -> None:
    params = load_params(args.params)
    missing = [p for p in args.checkpoints if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(map(str, missing))}: no such checkpoint (a models/*.pt of a "
                                "meta-learned run: bidf_mkd, bidf_mkd_whitebox or maml_real)")
    data = load_prepared(Path("data/prepared"))
    scores = score_on_val(args.checkpoints, params, data, args.episodes, args.shots,
                          resolve_device(params["device"]))
    print(format_scores(scores, args.episodes))
    if args.out:
        write_json(args.out, {"episodes": args.episodes, "split": "val", "scores": scores})


if __name__ == "__main__":
    parser = stage_parser("score_val", __doc__.splitlines()[0])
    parser.prog = "scripts/score_val.py"
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=1000, help="meta-val episodes per shot (default 1000)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1], help="shots (default: 1)")
    parser.add_argument("--out", type=Path, help="also write the scores as JSON here")
    a = parser.parse_args()
    guarded("score_val", lambda: main(a))
