"""Speed of two commits side by side: each commit's own ``benchmarks/bench.py``, alternated (not a test).

    python benchmarks/compare_commits.py BASE [HEAD] [--rounds 3] [--seconds 10] [--out results/bench/speedup.json]

Each commit is exported with ``git archive`` into a temporary folder and its own ``benchmarks/bench.py`` runs
there on its own ``params.yaml`` (the same default settings, which the script checks: q, generator width,
tasks, shots, inner steps... must agree, else it stops), with this venv's Python. The two commits alternate,
BASE, HEAD, BASE, HEAD, ... for ``--rounds`` rounds, so that a machine whose speed drifts over the day slows
both alike; each figure is the median over rounds, and the ratio is HEAD / BASE of the medians (above 1:
HEAD is faster). Every round's figures are kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dfml.core.io import write_json  # noqa: E402
from dfml.profiles import machine  # noqa: E402

RATES = ["api_query_images_per_s", "inversion_steps_per_s", "bidf_warmup_meta_iterations_per_s",
         "bidf_boundary_meta_iterations_per_s", "bidf_warmup_second_order_meta_iterations_per_s",
         "maml_meta_iterations_per_s", "eval_5shot_episodes_per_s"]


def export(rev: str, into: Path) -> str:
    """Write commit `rev`'s tree into `into`; return its full hash."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                         text=True)
    if sha.returncode != 0:
        sys.exit(f"compare_commits: {rev!r} is not a commit of this repository ({sha.stderr.strip()})")
    archive = subprocess.run(["git", "archive", sha.stdout.strip()], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    if not (into / "benchmarks" / "bench.py").exists():
        sys.exit(f"compare_commits: {rev} has no benchmarks/bench.py")
    return sha.stdout.strip()


def bench(tree: Path, seconds: float, device: str) -> dict:
    out = subprocess.run([sys.executable, "benchmarks/bench.py", "--seconds", str(seconds), "--device", device],
                         cwd=tree, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare_commits: bench.py of {tree.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("head", nargs="?", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="time per figure per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="dfml-compare-") as tmp:
        trees = {name: Path(tmp) / name for name in ("base", "head")}
        shas = {name: export(getattr(args, name), trees[name]) for name in trees}
        runs: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.rounds):
            for name in ("base", "head"):
                runs[name].append(bench(trees[name], args.seconds, args.device))
                print(f"round {r + 1}/{args.rounds} {name}: " + ", ".join(
                    f"{k} {runs[name][-1].get(k)}" for k in RATES), file=sys.stderr, flush=True)
    settings = {name: runs[name][0]["settings"] for name in runs}
    if settings["base"] != settings["head"]:
        sys.exit(f"compare_commits: the two commits benchmark different settings: {settings}")
    median = {name: {k: statistics.median(run[k] for run in runs[name]) for k in RATES if k in runs[name][0]}
              for name in runs}
    ratio = {k: round(median["head"][k] / median["base"][k], 3) for k in median["head"] if k in median["base"]}
    for name in runs:  # second order against first order, per iteration, in each commit
        m = median[name]
        if m.get("bidf_warmup_second_order_meta_iterations_per_s"):
            m["second_order_time_ratio"] = round(m["bidf_warmup_meta_iterations_per_s"]
                                                 / m["bidf_warmup_second_order_meta_iterations_per_s"], 3)
    out = {"base": {"rev": args.base, "commit": shas["base"]}, "head": {"rev": args.head, "commit": shas["head"]},
           "rounds": args.rounds, "seconds_per_figure": args.seconds, "order": "base, head alternately",
           "device": args.device, "machine": machine(), "settings": settings["head"],
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
           "wall_seconds": round(time.time() - start, 1),
           "median": median, "speedup_head_over_base": ratio, "runs": runs}
    print(json.dumps({k: out[k] for k in ("base", "head", "median", "speedup_head_over_base")}, indent=2))
    if args.out:
        write_json(args.out, out)


if __name__ == "__main__":
    main()
