"""Named profiles: a params overlay run as one DVC experiment, its results committed under ``results/<name>/``.

A profile is ``profiles/<name>.yaml``: a part of ``params.yaml`` (same keys, same nesting) with the values
that make the profile, and a first comment block that says what it is. ``dfml profile run <name>``:

1. merges the overlay into ``params.yaml`` and checks the result (a bad key stops it before any work);
2. runs ``dvc exp run --temp --name <name> -S key=value ...`` (the workspace is left as it is; every
   stage output goes to the DVC cache, the experiment to a git ref that is never published);
3. copies the experiment's results into ``results/<name>/`` (:func:`collect`): the metrics and plots of
   :data:`RESULT_FILES` that it has, its ``params.yaml`` and ``dvc.lock``, and ``run.json`` (the command,
   the code's commit, wall seconds, seconds and peak memory of every stage, the machine).

Only ``main`` is published, so ``results/<name>/`` is what users and the README read; commit it.
``dfml profile collect <name> [--rev REV]`` redoes step 3 from an experiment that already ran.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


import yaml

from .baselines.params import BASELINE_NAMES
from .core.errors import ParamError
from .core.io import atomic_write_bytes, write_json
from .inversion.variants import BLACKBOX, WHITEBOX
from .params import validate
from .pipeline import paths

PROFILES = Path("profiles")
RESULTS = Path("results")
# What a profile's results hold, when its experiment wrote them (paths in the experiment = paths in results/<name>/)
_STAGE_METRICS = {paths.DATA_METRICS: "prepare", paths.POOL_METRICS: "pretrain",
                  paths.invert_metrics(BLACKBOX): "invert", paths.distill_metrics(BLACKBOX): "distill",
                  paths.MAML_METRICS: "maml_real", paths.invert_metrics(WHITEBOX): "whitebox_invert",
                  paths.distill_metrics(WHITEBOX): "whitebox_distill",
                  **{paths.model_metrics(b): f"baseline@{b}" for b in BASELINE_NAMES}}
RESULT_FILES = tuple(str(p) for p in (
    paths.EVAL_JSON, paths.EVAL_SETTINGS, *_STAGE_METRICS, paths.EPISODES_CSV, paths.SUMMARY_MD, paths.SUMMARY_PNG,
    paths.EVAL_PNG, *(f(v) for v in (BLACKBOX, WHITEBOX) for f in (paths.invert_samples, paths.curve_csv,
                                                                    paths.curve_png)),
    paths.MAML_CURVE_CSV, paths.MAML_CURVE_PNG, Path("params.yaml"), Path("dvc.lock")))
REQUIRED = tuple(str(p) for p in (paths.EVAL_JSON, paths.EVAL_SETTINGS, paths.DATA_METRICS, paths.EPISODES_CSV,
                                  paths.SUMMARY_MD, Path("params.yaml")))


class ProfileError(RuntimeError):
    """A profile cannot be run or collected; the message says why and what to do."""


def profile_path(name: str) -> Path:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise ProfileError(f"no profile {name!r}: {path} does not exist; known profiles: {', '.join(known) or 'none'}")
    return path


def describe(path: Path) -> str:
    """The first comment block of a profile file, without the ``#``."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(lines)


def load_overlay(name: str) -> dict:
    path = profile_path(name)
    try:
        overlay = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(overlay, dict):
        raise ProfileError(f"{path}: must be a mapping of params.yaml sections, got {type(overlay).__name__}")
    return overlay


def merge(base: dict, overlay: dict, path: str = "") -> dict:
    """`base` with `overlay`'s values put in (nested mappings merged key by key; a copy).

    Raises ProfileError for an overlay key that `base` lacks (a misspelt key would otherwise be ignored).
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in out:
            raise ProfileError(f"{dotted}: not a key of params.yaml; fix the profile")
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = merge(out[key], value, dotted)
        else:
            out[key] = copy.deepcopy(value)
    return out


def overrides(overlay: dict, path: str = "") -> list[str]:
    """``key=value`` arguments of ``dvc exp run -S`` for every leaf of `overlay` (values as flow YAML)."""
    out = []
    for key, value in overlay.items():
        dotted = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict):
            out += overrides(value, dotted)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            out.append(f"{dotted}={text.removesuffix('...').strip()}")
    return out


def _git(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ProfileError(f"`git {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def experiment_rev(name: str) -> str:
    """The commit of DVC experiment `name` made from the current HEAD (else from any commit, if only one)."""
    head = _git("rev-parse", "HEAD").strip()
    refs = [line.split() for line in _git("for-each-ref", "--format=%(refname) %(objectname)",
                                          "refs/exps").splitlines()]
    mine = [(ref, sha) for ref, sha in refs if ref.rsplit("/", 1)[-1] == name]
    for ref, sha in mine:
        if ref.startswith(f"refs/exps/{head[:2]}/{head[2:]}/"):
            return sha
    if len(mine) == 1:
        return mine[0][1]
    if not mine:
        raise ProfileError(f"no DVC experiment named {name!r}: run `dfml profile run {name}` first")
    raise ProfileError(f"{len(mine)} experiments named {name!r} from other commits than HEAD; pass --rev")


def _show(rev: str, path: str) -> bytes | None:
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def stage_resources(files: dict[str, bytes]) -> dict:
    """``{stage: {"seconds", "peak_rss_mb"}}`` from the metrics files a run wrote (what each stage measured)."""
    out = {}
    for path, stage in _STAGE_METRICS.items():
        if str(path) in files:
            m = json.loads(files[str(path)])
            out[stage] = {k: m[k] for k in ("seconds", "peak_rss_mb") if k in m}
    if str(paths.EVAL_SETTINGS) in files:
        for model, res in json.loads(files[str(paths.EVAL_SETTINGS)]).get("resources", {}).items():
            out[f"evaluate_model@{model}"] = res
    return out


def collect(name: str, rev: str | None = None, run: dict | None = None) -> Path:
    """Write ``results/<name>/`` from the experiment commit `rev` (default: :func:`experiment_rev`).

    Every file of :data:`RESULT_FILES` the experiment has is copied; :data:`REQUIRED` ones must be there.
    ``run.json`` gets `run` (what :func:`run_profile` measured) and each stage's seconds and peak memory.
    Collected again from the same experiment without `run` (``dfml profile collect``, say after this list of
    files grew), the run's record already in ``results/<name>/run.json`` (command, commit, wall time, machine)
    is kept. The folder is replaced as a whole (written beside it, then renamed): never half old, half new.
    """
    rev = rev or experiment_rev(name)
    files = {p: data for p in RESULT_FILES if (data := _show(rev, p)) is not None}
    missing = [p for p in REQUIRED if p not in files]
    if missing:
        raise ProfileError(f"experiment {rev[:10]} has no {', '.join(missing)}: it did not finish; rerun it")
    out = RESULTS / name
    if run is None and (out / "run.json").is_file():
        before = json.loads((out / "run.json").read_text())
        if before.get("experiment") == rev:
            run = {k: v for k, v in before.items() if k not in ("profile", "experiment", "stages")}
    tmp = out.with_name(f".{name}.tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    for path, data in files.items():
        atomic_write_bytes(tmp / path, data)
    write_json(tmp / "run.json", {"profile": name, "experiment": rev, **(run or {}),
                                  "stages": stage_resources(files)})
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def runtime_overlay(sets: list[str]) -> dict:
    """``["runtime.engine=ray", ...]`` as an overlay; only ``runtime.*`` keys, which never change results (a
    result setting belongs in the profile file, so that ``results/<name>/`` stays what the profile says)."""
    overlay: dict = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("runtime.") or key == "runtime.":
            raise ProfileError(f"-S {item}: takes runtime.KEY=VALUE (settings that never change results, e.g. "
                               "-S runtime.engine=ray); change any other key in the profile's own file")
        node = overlay
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overlay


def run_profile(name: str, dry_run: bool = False, sets: list[str] | None = None) -> Path | list[str]:
    """Check, run and collect profile `name` (see the module docstring); return ``results/<name>``.

    `sets`: ``runtime.KEY=VALUE`` settings for this run only (:func:`runtime_overlay`). With `dry_run`, only
    check the merged params and return the ``dvc exp run`` command.
    """
    overlay, extra = load_overlay(name), runtime_overlay(sets or [])
    base = yaml.safe_load(Path("params.yaml").read_text())
    merged = merge(base, overlay)
    try:
        merged = merge(merged, extra)
    except ProfileError as exc:
        raise ProfileError(str(exc).replace("fix the profile", "fix the -S setting")) from exc
    try:
        validate(merged, f"params.yaml with {PROFILES / (name + '.yaml')}")
    except ParamError as exc:
        raise ProfileError(str(exc)) from exc
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name]
    for item in overrides(overlay) + overrides(extra):
        cmd += ["-S", item]
    if dry_run:
        return cmd
    env = dict(os.environ)
    if env.get("DFML_DATA_MIRROR"):  # the experiment runs in .dvc/tmp/exps/...: a relative mirror would not resolve
        env["DFML_DATA_MIRROR"] = str(Path(env["DFML_DATA_MIRROR"]).resolve())
    head = _git("rev-parse", "HEAD").strip()
    dirty = [line[3:] for line in _git("status", "--porcelain").splitlines()
             if not line[3:].startswith(str(RESULTS))]
    subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", name], env=env, capture_output=True)
    print(f"[profile {name}] {shlex.join(cmd[1:])}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, env=env)
    wall = time.time() - start
    if proc.returncode != 0:
        raise ProfileError(f"`dvc exp run` of profile {name} failed (exit {proc.returncode}) after {wall:.0f} s; "
                           "its output is above")
    run = {"command": shlex.join(["dfml", "profile", "run", name] + [f"-S{s}" for s in sets or []]),
           "code_commit": head, "uncommitted_changes": dirty,
           "wall_seconds": round(wall, 1), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
           "machine": machine()}
    exp_params = _show(experiment_rev(name), "params.yaml")
    if exp_params is not None and yaml.safe_load(exp_params) != merged:
        raise ProfileError(f"the experiment's params.yaml differs from params.yaml + {name}.yaml: a -S value was "
                           "read otherwise than meant; check the profile's values")
    return collect(name, run=run)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the profiles and what each is")
    for action, text in (("run", "run a profile as a DVC experiment and write results/<name>/"),
                         ("collect", "write results/<name>/ from an experiment that already ran")):
        p = sub.add_parser(action, help=text)
        p.add_argument("name")
        if action == "run":
            p.add_argument("--dry-run", action="store_true", help="check the params, print the command, run nothing")
            p.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="runtime.KEY=VALUE",
                           help="a runtime setting for this run (never a result setting), e.g. runtime.engine=ray")
        else:
            p.add_argument("--rev", help="the experiment's commit (default: the experiment named <name>)")


def main(args) -> None:
    if args.action == "list":
        for path in sorted(PROFILES.glob("*.yaml")):
            print(f"{path.stem:28s} {describe(path)}")
        return
    if args.action == "collect":
        print(f"wrote {collect(args.name, args.rev)}")
        return
    out = run_profile(args.name, dry_run=args.dry_run, sets=args.sets)
    print(" ".join(shlex.quote(c) for c in out) if args.dry_run else f"wrote {out}; commit it to publish it")
