"""Workers benchmark: wall seconds of `pretrain` and `invert` per ``runtime.engine`` setting (not a test).

    python benchmarks/workers.py [--out results/bench/workers.json] [--rounds 2] [--apis 4] [--threads 1]
    python benchmarks/workers.py --tiny        # a smoke run on the tests' tiny config (seconds, not minutes)

Needs the Omniglot archives in ``$DFML_DATA_MIRROR`` (``prepare`` runs first, once). Works in a temporary
folder: the repository's ``params.yaml`` with ``apis.count`` set to ``--apis`` and ``invert.bidf.directions:
per_api`` (order free: the only bidf setting Ray may run), optionally fewer epochs (``--epochs``) and generator
steps (``--steps``). Then, for each round, in an order that rotates from round to round (so that no setting
always runs first or last on a machine whose load drifts), each setting runs ``pretrain`` and then ``invert``
in a fresh workspace, as ``python -m dfml.pipeline.<stage>`` subprocesses:

- ``inprocess``: the stages' own loop, with ``OMP_NUM_THREADS=--threads``;
- ``ray-1``, ``ray-2``: ``runtime.engine: ray`` with 1 and 2 workers of ``cpus_per_worker: --threads``.

Each run's files are compared with the first run's: ``models/apis/*`` and ``data/bank/*`` byte for byte and
``metrics/invert.json`` but its seconds and memory. The torch thread count is the same in every setting, so the
outputs must be identical; the script exits 1 when they are not. Printed (and written to ``--out``) as JSON:
the setup, the machine, every run's wall seconds (the whole subprocess: Python and torch imports and, for Ray,
starting a local Ray and its workers) and the stage's own ``seconds`` metric (counted after ``ray.init``),
the median wall seconds per setting and stage, and whether the outputs were identical. Figures from a machine
busy with other work say little about scaling; the JSON records the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# the tests' tiny config (tests/test_pipeline_e2e.py), for --tiny
TINY = {"data": {"subset": {"classes_per_split": 12, "images_per_class": 10}},
        "apis": {"count": 3, "epochs": 3},
        "invert": {"images_per_class": 4, "generator": {"width": 8, "latent_dim": 16},
                   "bidf": {"q": 2, "steps": 3, "extra_steps": 0}},
        "distill": {"support_shots": 2, "query_shots": 2, "val_shots": 1, "val_query": 3},  # params checked whole
        "maml_real": {"support_shots": 2, "query_shots": 2, "val_shots": 1, "val_query": 3},
        "evaluate": {"shots": [1, 2], "query": 3}}
SETTINGS = {"inprocess": {"engine": "inprocess"},
            "ray-1": {"engine": "ray", "ray": {"workers": 1}},
            "ray-2": {"engine": "ray", "ray": {"workers": 2}}}
STAGES = ("pretrain", "invert")


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _params(args) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    over = copy.deepcopy(TINY) if args.tiny else {"apis": {"count": args.apis}}
    _merge(over, {"invert": {"method": "bidf", "bidf": {"directions": "per_api"}},
                  "runtime": {"budget_images": None, "budget_images_per_api": None,
                              "ray": {"address": None, "cpus_per_worker": args.threads, "gpus_per_worker": 0.0}}})
    if args.epochs is not None:
        _merge(over, {"apis": {"epochs": args.epochs}})
    if args.steps is not None:
        _merge(over, {"invert": {"bidf": {"steps": args.steps}}})
    return _merge(params, over)


def _env(args) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(args.threads),
                DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0")


def _run(stage: str, work: Path, env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", f"dfml.pipeline.{stage}"], cwd=work, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{stage} in {work} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return wall


def _digests(work: Path) -> dict:
    files = sorted((work / "models" / "apis").iterdir()) + sorted((work / "data" / "bank").iterdir())
    out = {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    inv = json.loads((work / "metrics" / "invert.json").read_text())
    out["metrics/invert.json"] = {k: v for k, v in inv.items() if k not in ("seconds", "peak_rss_mb")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the JSON here (e.g. results/bench/workers.json)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each setting, in rotating order (default 2)")
    ap.add_argument("--apis", type=int, default=4, help="apis.count (default 4)")
    ap.add_argument("--epochs", type=int, help="apis.epochs (default: params.yaml's)")
    ap.add_argument("--steps", type=int, help="invert.bidf.steps (default: params.yaml's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads: OMP_NUM_THREADS in process, runtime.ray.cpus_per_worker on Ray (default 1)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny config, one round: a smoke run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.rounds = 1
    if not os.environ.get("DFML_DATA_MIRROR"):
        sys.exit("set DFML_DATA_MIRROR to the folder with omniglot/images_*.zip (prepare reads the archives there)")
    import ray
    import torch

    base = Path(tempfile.mkdtemp(prefix="dfml-workers-"))
    env, params = _env(args), _params(args)
    load = [os.getloadavg()[0]]
    try:
        prep = base / "prepared"
        prep.mkdir()
        (prep / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        prepare_s = _run("prepare", prep, env)
        runs, reference, identical = [], None, True
        names = list(SETTINGS)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                work = base / f"{name}-{r}"
                for item in ("data/prepared", "metrics/data.json"):
                    (work / item).parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if (prep / item).is_dir() else shutil.copy2)(prep / item, work / item)
                (work / "params.yaml").write_text(yaml.safe_dump(
                    _merge(copy.deepcopy(params), {"runtime": SETTINGS[name]}), sort_keys=False))
                for stage in STAGES:
                    wall = _run(stage, work, env)
                    metric = "apis.json" if stage == "pretrain" else "invert.json"
                    seconds = json.loads((work / "metrics" / metric).read_text())["seconds"]
                    runs.append({"setting": name, "round": r, "stage": stage, "wall_s": round(wall, 2),
                                 "stage_seconds": seconds})
                    print(f"{name} round {r} {stage}: {wall:.1f} s wall ({seconds} s in the stage)", file=sys.stderr)
                got = _digests(work)
                if reference is None:
                    reference = got
                elif got != reference:
                    identical = False
                    print(f"{name} round {r}: outputs differ from the first run's", file=sys.stderr)
        load.append(os.getloadavg()[0])
        median = {name: {stage: round(statistics.median(x["wall_s"] for x in runs
                                                          if x["setting"] == name and x["stage"] == stage), 2)
                         for stage in STAGES} for name in SETTINGS}
        report = {
            "setup": {"tiny": args.tiny, "apis": params["apis"]["count"], "epochs": params["apis"]["epochs"],
                      "bidf_steps": params["invert"]["bidf"]["steps"], "threads": args.threads,
                      "rounds": args.rounds, "settings": SETTINGS, "prepare_wall_s": round(prepare_s, 2)},
            "machine": {"cpus": os.cpu_count(), "load_average_1min": [round(x, 2) for x in load],
                        "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                        "platform": platform.platform()},
            "runs": runs, "median_wall_s": median, "outputs_identical": identical,
            "note": "wall_s: the whole stage subprocess (imports; with Ray: a local Ray started and stopped); "
                    "stage_seconds: the stage's own metric, after ray.init (the workers' own start, importing "
                    "torch, is in it)"}
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        return 0 if identical else 1
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
