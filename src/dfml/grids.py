"""Grids: several DVC experiments that vary a few params of the default profile, gathered into one table.

A grid is ``profiles/grids/<name>.yaml``: a first comment block saying what it is, optionally ``profile`` (a profile
every run starts from) and ``base`` (dotted keys every run sets), ``product`` (each key's values; every combination
is a run) and ``extra`` (more runs, each a mapping of dotted keys to values). ``dfml grid run
<name>`` runs each as ``dvc exp run --temp --name <name>-<i> -S key=value ...`` (stages whose inputs did not change
come from DVC's run cache), then ``dfml grid collect <name>`` (also run at the end) writes ``results/<name>/``:

- ``summary.csv``: one row per run: ``method, answer, api_images, acc_1shot, ci95_1shot, acc_5shot, ci95_5shot,
  random_1shot, random_5shot`` (``bidf_mkd``'s meta-test figures and ``random``'s on the same episodes), then the
  run's overrides, its agreement, seconds and experiment;
- ``tradeoff_queries.png``: accuracy with 95% error bars against total API images (log x axis), one line per
  recovery method and answer mode, one panel per shot;
- ``runs/<name>-<i>/``: each run's ``metrics/eval.json``, ``invert.json``, ``distill.json``, ``maml_real.json``,
  ``params.yaml`` and the meta-val curves ``plots/distill_curve.csv`` and ``plots/maml_real_curve.csv``.

A run whose experiment is not in this repository (it ran in another clone or on another machine) but whose
``runs/<name>-<i>/`` is already under ``results/<name>/`` keeps its row: a grid's rows can be run a few at a time
(``--only``) in different sessions, each collect adding to the rows before it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .core.io import atomic_write_bytes
from .inversion.variants import BLACKBOX
from .pipeline import paths
from .profiles import RESULTS, ProfileError, _show, load_overlay, machine, overrides

GRIDS = Path("profiles/grids")
COLUMNS = ["method", "answer", "api_images", "acc_1shot", "ci95_1shot", "acc_5shot", "ci95_5shot", "random_1shot",
           "random_5shot"]
RUN_FILES = (paths.EVAL_JSON, paths.invert_metrics(BLACKBOX), paths.distill_metrics(BLACKBOX), paths.MAML_METRICS,
             Path("params.yaml"), paths.curve_csv(BLACKBOX), paths.MAML_CURVE_CSV)


def load_grid(name: str) -> list[dict]:
    """The runs of grid `name`: each a mapping of dotted params keys to values."""
    path = GRIDS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in GRIDS.glob("*.yaml"))
        raise ProfileError(f"no grid {name!r}: {path} does not exist; known grids: {', '.join(known) or 'none'}")
    spec = yaml.safe_load(path.read_text()) or {}
    product = spec.get("product") or {}
    runs = [dict(zip(product, values)) for values in itertools.product(*product.values())] if product else []
    runs += [dict(r) for r in spec.get("extra") or []]
    base = dict(_flat(load_overlay(spec["profile"])) if spec.get("profile") else {})
    base.update(spec.get("base") or {})
    return [{**base, **run} for run in runs]


def _flat(nested: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def run_grid(name: str, only: list[int] | None = None, dry_run: bool = False) -> list[list[str]]:
    """Run the grid's experiments one after the other (the `only` indices when given); return their commands."""
    from .params import validate
    from .profiles import merge

    runs = load_grid(name)
    unknown = sorted(set(only or []) - set(range(len(runs))))
    if unknown:
        raise ProfileError(f"--only {','.join(map(str, unknown))}: grid {name} has runs 0 to {len(runs) - 1} "
                           "(`dfml grid run NAME --dry-run` lists them in order)")
    base = yaml.safe_load(Path("params.yaml").read_text())
    cmds = []
    for i, flat in enumerate(runs):
        if only is not None and i not in only:
            continue
        validate(merge(base, _nested(flat)), f"params.yaml with run {i} of grid {name}")
        cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", f"{name}-{i}"]
        for item in overrides(_nested(flat)):
            cmd += ["-S", item]
        cmds.append(cmd)
    if dry_run:
        return cmds
    env = dict(os.environ)
    if env.get("DFML_DATA_MIRROR"):
        env["DFML_DATA_MIRROR"] = str(Path(env["DFML_DATA_MIRROR"]).resolve())
    for cmd in cmds:
        exp = cmd[cmd.index("--name") + 1]
        subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", exp], env=env, capture_output=True)
        print(f"[grid {name}] {shlex.join(cmd[1:])}", flush=True)
        start = time.time()
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise ProfileError(f"`dvc exp run` of {exp} failed (exit {proc.returncode}) after "
                               f"{time.time() - start:.0f} s; its output is above")
    collect_grid(name)
    return cmds


def _rev(exp: str) -> str | None:
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                         capture_output=True, text=True).stdout.split("\n")
    found = [line.split()[1] for line in out if line and line.split()[0].rsplit("/", 1)[-1] == exp]
    return found[-1] if found else None


def collect_grid(name: str) -> Path:
    """Write ``results/<name>/`` from the grid's finished experiments (see the module docstring)."""
    runs = load_grid(name)
    out = RESULTS / name
    rows = []
    for i, flat in enumerate(runs):
        exp = f"{name}-{i}"
        rev = _rev(exp)
        if rev:
            files = {str(p): _show(rev, str(p)) for p in RUN_FILES}
        else:  # collected before (another clone or machine): results/<name>/runs/<exp>/ holds its files
            kept = out / "runs" / exp
            files = {str(p): (kept / p).read_bytes() if (kept / p).is_file() else None for p in RUN_FILES}
        if files.get(str(paths.EVAL_JSON)) is None:
            print(f"[grid {name}] {exp}: no finished experiment; left out", file=sys.stderr)
            continue
        for path, data in files.items():
            if data is not None and rev:
                atomic_write_bytes(out / "runs" / exp / path, data)
        ev = json.loads(files[str(paths.EVAL_JSON)])
        inv = json.loads(files[RUN_FILES[1].as_posix()] or b"{}")
        dist = json.loads(files[RUN_FILES[2].as_posix()] or b"{}")
        params = yaml.safe_load(files["params.yaml"])
        maml = json.loads(files[RUN_FILES[3].as_posix()] or b"{}")
        model, rnd = ev.get("bidf_mkd", {}), ev.get("random", {})
        rows.append({"method": params["invert"]["method"], "answer": params["query"]["answer"],
                     "api_images": model.get("api_images", dist.get("api_images_total")),
                     "acc_1shot": model.get("1shot", {}).get("acc"), "ci95_1shot": model.get("1shot", {}).get("ci95"),
                     "acc_5shot": model.get("5shot", {}).get("acc"), "ci95_5shot": model.get("5shot", {}).get("ci95"),
                     "random_1shot": rnd.get("1shot", {}).get("acc"), "random_5shot": rnd.get("5shot", {}).get("acc"),
                     "overrides": " ".join(f"{k}={v}" for k, v in flat.items()),
                     "api_agreement_pct": inv.get("api_agreement_pct"), "api_images_invert": inv.get("api_images"),
                     "api_images_distill": dist.get("api_images_distill"),
                     "meta_val_best": dist.get("best_val_acc"), "maml_real_meta_val_best": maml.get("best_val_acc"),
                     "seconds": model.get("seconds"), "experiment": exp})
    if not rows:
        raise ProfileError(f"grid {name}: no run has finished; run `dfml grid run {name}` first")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "summary.csv", buf.getvalue().encode())
    if any(r["acc_1shot"] is not None for r in rows):
        tradeoff_png([r for r in rows if r["acc_1shot"] is not None], out / "tradeoff_queries.png")
    atomic_write_bytes(out / "run.json", (json.dumps({"grid": name, "command": f"dfml grid run {name}",
                                                       "runs": len(runs), "collected": len(rows),
                                                       "machine": machine()}, indent=2) + "\n").encode())
    return out


def tradeoff_png(rows: list[dict], path: Path) -> None:
    """Accuracy +- 95% CI against total API images (log x), one line per (method, answer), a panel per shot;
    random's accuracy (no API image) as a dashed reference."""
    from .reporting.plots import plt, save_png

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), squeeze=False)
    series = sorted({(r["method"], r["answer"]) for r in rows})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(sorted({m for m, _ in series}))}
    markers = dict(zip(["probs", "topk", "label", "rounded"], "os^D"))
    for ax, shot in zip(axes[0], ("1shot", "5shot")):
        for method, answer in series:
            part = sorted((r for r in rows if (r["method"], r["answer"]) == (method, answer)),
                          key=lambda r: r["api_images"])
            ax.errorbar([r["api_images"] for r in part], [r[f"acc_{shot}"] for r in part],
                        yerr=[r[f"ci95_{shot}"] for r in part], marker=markers.get(answer, "o"), capsize=3,
                        color=colors[method], linestyle="-" if answer == "probs" else ":",
                        label=f"{method}, {answer}")
        randoms = [r[f"random_{shot}"] for r in rows if r[f"random_{shot}"] is not None]
        if randoms:
            ax.axhline(sum(randoms) / len(randoms), color="grey", linestyle="--", label="random (no API image)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))  # 10,000 20,000 50,000 100,000 ...
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("total API images (invert + distill), log scale")
        ax.set_ylabel("bidf_mkd meta-test accuracy (%) +- 95% CI")
        ax.set_title(shot.replace("shot", "-shot"))
        ax.grid(alpha=.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=min(len(labels), 5), loc="lower center")  # below: off the data
    fig.subplots_adjust(bottom=0.11 + 0.045 * math.ceil(len(labels) / 5))
    save_png(fig, path)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the grids and what each is")
    r = sub.add_parser("run", help="run a grid's experiments and write results/<name>/")
    r.add_argument("name")
    r.add_argument("--only", help="comma-separated run indices, from 0 (default: all)")
    r.add_argument("--dry-run", action="store_true", help="check the params, print the commands, run nothing")
    c = sub.add_parser("collect", help="write results/<name>/ from the grid's finished experiments")
    c.add_argument("name")


def main(args) -> None:
    from .profiles import describe

    if args.action == "list":
        for path in sorted(GRIDS.glob("*.yaml")):
            print(f"{path.stem:28s} {len(load_grid(path.stem)):3d} runs  {describe(path)}")
    elif args.action == "collect":
        print(f"wrote {collect_grid(args.name)}")
    else:
        try:
            only = [int(i) for i in args.only.split(",")] if args.only else None
        except ValueError:
            raise ProfileError(f"--only {args.only}: give run indices separated by commas, e.g. --only 0,3") from None
        cmds = run_grid(args.name, only, args.dry_run)
        if args.dry_run:
            for cmd in cmds:
                print(shlex.join(cmd[1:]))
