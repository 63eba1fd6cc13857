"""Load `params.yaml` and check every key before any heavy work starts.

Each stage reads the sections it needs through :func:`load_params`, which checks
the whole file against :data:`SCHEMA`: an unknown key, a wrong type or a value out
of range raises :class:`ParamError` naming the key and how to fix it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml


class ParamError(ValueError):
    """A bad value in params.yaml; the message names the key and the fix."""


@dataclass(frozen=True)
class Spec:
    """What one key accepts: python types, an optional check and what it says."""

    types: tuple
    check: Callable[[Any], bool] | None = None
    want: str = ""
    nullable: bool = False


def _num(lo=None, hi=None, integer=False, lo_open=False):
    types = (int,) if integer else (int, float)

    def check(v):
        if isinstance(v, bool):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    rng = []
    if lo is not None:
        rng.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        rng.append(f"<= {hi}")
    kind = "an integer" if integer else "a number"
    return Spec(types, check, f"{kind} {' and '.join(rng)}".strip())


def _int(lo=None, hi=None):
    return _num(lo, hi, integer=True)


def _pos(integer=False):
    return _num(0, None, integer=integer, lo_open=True)


def _choice(*options):
    return Spec((str,), lambda v: v in options, "one of " + ", ".join(map(repr, options)))


def _list_of(inner: Spec, nonempty=True):
    def check(v):
        if nonempty and not v:
            return False
        return all(isinstance(x, inner.types) and not isinstance(x, bool) and (inner.check is None or inner.check(x)) for x in v)

    return Spec((list,), check, f"a {'non-empty ' if nonempty else ''}list, each {inner.want or inner.types[0].__name__}")


def _int_or_list(lo: int) -> Spec:
    """An integer >= lo, or a non-empty list of them."""
    one = _int(lo)
    lst = _list_of(one)
    return Spec((int, list), lambda v: (lst.check(v) if isinstance(v, list) else one.check(v)),
                f"{one.want}, or a non-empty list of them")


def _opt(spec: Spec) -> Spec:
    return Spec(spec.types, spec.check, spec.want + " or null", nullable=True)


_BOOL = Spec((bool,), None, "true or false")
_STR = Spec((str,), None, "a string")
ARCHS = ("conv4", "resnet10", "resnet18")
DATASET_NAMES = ("omniglot", "cifar-fs", "cub", "miniimagenet", "folder")
# dfml.api.BACKENDS and dfml.api.MODES (kept in step by tests/test_stage_runs.py)
BACKENDS = ("inprocess", "http")
ANSWERS = ("probs", "topk", "label", "rounded")
# Keys that change how a run is carried out, never its results (the http backend answers exactly as the in-process
# one): not in dvc.yaml's params lists, so changing them reruns nothing, and not in checkpoint fingerprints
# (tests/test_stage_runs.py checks that every other key of the sections a stage reads is listed in dvc.yaml).
OPERATIONAL_KEYS = ("apis.backend", "apis.http", "apis.budget_images", "apis.budget_images_per_api",
                    "invert.checkpoint_every", "distill.checkpoint_every")
# dfml.evaluation.models.MODELS (kept in step by tests/test_baselines.py)
EVAL_MODELS = ("random", "maml_real", "bidf_mkd", "bidf_mkd_whitebox", "best_api", "single_dfkd", "distill_avg")
# dfml.baselines.BASELINES (kept in step by tests/test_baselines.py)
BASELINE_NAMES = ("best_api", "single_dfkd", "distill_avg")

SCHEMA: dict[str, Any] = {
    "seed": _int(0),
    "device": Spec((str,), lambda v: v in ("auto", "cpu") or v.startswith("cuda"), "'auto', 'cpu' or 'cuda[:N]'"),
    "data": {
        "dataset": _choice(*DATASET_NAMES),
        "image_size": _opt(_int(8, 512)),
        "rotations": _BOOL,
        "classes_per_split": _opt(_int(2)),
        "images_per_class": _opt(_int(2)),
        "folder": {"root": _opt(_STR), "train": _opt(_list_of(_STR)), "val": _opt(_list_of(_STR)),
                   "test": _opt(_list_of(_STR)), "fractions": _list_of(_num(0, 1))},
        "miniimagenet": {"source": _opt(_STR)},
    },
    "apis": {
        "scenario": _choice("ss", "sh", "mh"),
        "count": _int(1),
        "ways": _int(2),
        "arch": _choice(*ARCHS),
        "architectures": _list_of(_choice(*ARCHS)),
        "datasets": _list_of(_choice(*DATASET_NAMES)),
        "train_fraction": _num(0.05, 0.95),
        "epochs": _int(1),
        "batch_size": _int(1),
        "optimizer": _choice("auto", "adam", "sgd"),
        "lr": _pos(),
        "backend": _choice(*BACKENDS),
        "answer": _choice(*ANSWERS),
        "topk": _int(1),
        "decimals": _int(0, 12),
        "label_smoothing": Spec((int, float), lambda v: not isinstance(v, bool) and 0 <= v < 1,
                                "a number >= 0 and < 1"),
        "http": {"url": Spec((str,), lambda v: v.startswith(("http://", "https://")), "an http:// or https:// URL"),
                 "timeout": _pos(),
                 "retries": _int(0, 20)},
        "budget_images": _opt(_int(1)),
        "budget_images_per_api": _opt(_int(1)),
        "query_chunk": _int(1),
    },
    "invert": {
        "gradient": _choice("zo", "exact"),
        "q": _int(1),
        "mu": _pos(),
        "steps": _int(1),
        "extra_steps": _int(0),
        "target_agreement": _num(0, 1),
        "images_per_class": _int(2),
        "latent_dim": _int(1),
        "generator_width": _int(4),
        "tv_weight": _num(0),
        "l2_weight": _num(0),
        "l1_weight": _num(0),
        "lr_generator": _pos(),
        "lr_latent": _pos(),
        "checkpoint_every": _int(0),
    },
    "distill": {
        "iterations": _int(1),
        "tasks_per_batch": _int(1),
        "memory_tasks": _int(0),
        "inner_steps": _int(1),
        "inner_lr": _pos(),
        "outer_lr": _pos(),
        "first_order": _BOOL,
        "temperature": _pos(),
        "support_shots": _int_or_list(1),
        "query_shots": _int(1),
        "boundary_lambda": _num(0),
        "boundary_after": _int(0),
        "boundary_steps": _int(0),
        "memory_size": _int(1),
        "augment": _BOOL,
        "permute_classes": _BOOL,
        "checkpoint_every": _int(0),
        "val_every": _int(1),
        "val_episodes": _int(1),
        "val_shots": _int(1),
        "val_query": _int(1),
    },
    "maml_real": {
        "iterations": _int(1),
        "tasks_per_batch": _int(1),
        "inner_steps": _int(1),
        "inner_lr": _pos(),
        "outer_lr": _pos(),
        "first_order": _BOOL,
        "shots": _int(1),
        "query_shots": _int(1),
        "val_every": _int(1),
        "val_episodes": _int(1),
        "val_shots": _int(1),
        "val_query": _int(1),
    },
    "baselines": {
        "run": _list_of(_choice(*BASELINE_NAMES), nonempty=False),
        "best_api": {"steps": _int(1), "lr": _pos(), "batch_size": _int(2), "temperature": _pos()},
        "single_dfkd": {"steps": _int(1), "lr": _pos(), "batch_size": _int(2), "temperature": _pos(),
                        "head": _choice("zero", "random")},
        "distill_avg": {"steps": _int(1), "lr": _pos(), "batch_size": _int(2), "temperature": _pos()},
    },
    "whitebox": {
        "run": _list_of(_choice("bidf_mkd_whitebox"), nonempty=False),
    },
    "evaluate": {
        "models": _list_of(_choice(*EVAL_MODELS)),
        "ways": _int(2),
        "shots": _list_of(_int(1)),
        "query": _int(1),
        "episodes": _int(2),
        "val_episodes": _int(2),
        "adapt_steps": _int(1),
        "lr_grid": _list_of(_pos()),
        "episode_batch": _int(1),
    },
}


def _check(node: Any, spec: Any, path: str, errors: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(node, dict):
            errors.append(f"{path}: must be a mapping with keys {sorted(spec)}, got {type(node).__name__}")
            return
        for key in node:
            if key not in spec:
                close = difflib.get_close_matches(str(key), list(spec), n=1)
                hint = f" (did you mean '{_join(path, close[0])}'?)" if close else f" (known keys: {', '.join(spec)})"
                errors.append(f"{_join(path, key)}: unknown key{hint}; remove it or fix its spelling")
        for key, sub in spec.items():
            if key not in node:
                errors.append(f"{_join(path, key)}: missing; add it to params.yaml (see the README's parameter table)")
            else:
                _check(node[key], sub, _join(path, key), errors)
        return
    if node is None:
        if not spec.nullable:
            errors.append(f"{path}: must be {spec.want}, got null")
        return
    ok = isinstance(node, spec.types) and not (isinstance(node, bool) and bool not in spec.types)
    if ok and spec.check is not None:
        ok = spec.check(node)
    if not ok:
        errors.append(f"{path}: must be {spec.want}, got {node!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def validate(params: dict, source: str = "params.yaml") -> dict:
    """Check `params` against SCHEMA plus cross-key rules; raise ParamError listing every problem."""
    errors: list[str] = []
    _check(params, SCHEMA, "", errors)
    if not errors:
        errors += _cross_checks(params)
    if errors:
        raise ParamError(f"{source} has {len(errors)} bad value(s):\n  - " + "\n  - ".join(errors))
    return params


def _cross_checks(p: dict) -> list[str]:
    errs = []
    if p["evaluate"]["ways"] != p["apis"]["ways"]:
        errs.append(f"evaluate.ways ({p['evaluate']['ways']}) must equal apis.ways ({p['apis']['ways']}): "
                    "the meta model's head has apis.ways outputs")
    models = p["evaluate"]["models"]
    if len(set(models)) != len(models):
        errs.append(f"evaluate.models lists a model twice ({models}); list each once")
    run = p["baselines"]["run"]
    if len(set(run)) != len(run):
        errs.append(f"baselines.run lists a baseline twice ({run}); list each once")
    untrained = [m for m in models if m in BASELINE_NAMES and m not in run]
    if untrained:
        errs.append(f"evaluate.models lists {', '.join(untrained)}, which baselines.run does not train: add "
                    f"{'it' if len(untrained) == 1 else 'them'} to baselines.run (or run scripts/compare.sh)")
    if "bidf_mkd_whitebox" in models and "bidf_mkd_whitebox" not in p["whitebox"]["run"]:
        errs.append("evaluate.models lists bidf_mkd_whitebox, which whitebox.run does not train: set "
                    "whitebox.run to [bidf_mkd_whitebox] (or run scripts/compare.sh)")
    if p["whitebox"]["run"] and p["apis"]["backend"] != "inprocess":
        errs.append(f"whitebox.run: the white-box reference reads input gradients, which apis.backend "
                    f"{p['apis']['backend']!r} cannot give; use apis.backend: inprocess or set whitebox.run to []")
    shots = p["distill"]["support_shots"]
    need = max(shots if isinstance(shots, list) else [shots]) + p["distill"]["query_shots"]
    if need > p["invert"]["images_per_class"]:
        errs.append(f"invert.images_per_class ({p['invert']['images_per_class']}) must be at least "
                    f"distill.support_shots (the largest) + distill.query_shots ({need})")
    errs += _scenario_checks(p)
    used = scenario_datasets(p)
    where = "data.dataset is" if p["apis"]["scenario"] != "mh" else "apis.datasets lists"
    if "folder" in used and not p["data"]["folder"]["root"]:
        errs.append(f"data.folder.root: must name a folder of class folders when {where} 'folder'")
    return errs


def scenario_datasets(p: dict) -> list[str]:
    """The datasets a run uses: ``[data.dataset]`` in the ss and sh scenarios, ``apis.datasets`` in mh."""
    return list(p["apis"]["datasets"]) if p["apis"]["scenario"] == "mh" else [p["data"]["dataset"]]


def _scenario_checks(p: dict) -> list[str]:
    """The keys of `apis.scenario` (DESIGN.md section 4): sh draws from apis.architectures, mh also needs two or
    more distinct apis.datasets (the schema already refuses unknown names in either list)."""
    apis, errs = p["apis"], []
    if apis["scenario"] == "ss":
        return errs
    archs = apis["architectures"]
    if len(set(archs)) != len(archs):
        errs.append(f"apis.architectures lists an architecture twice ({archs}); list each once")
    if apis["scenario"] == "mh":
        ds = apis["datasets"]
        if len(set(ds)) != len(ds):
            errs.append(f"apis.datasets lists a dataset twice ({ds}); list each once")
        elif len(ds) < 2:
            errs.append(f"apis.datasets: the mh scenario needs at least 2 datasets, got {ds}; list two or more "
                        "(e.g. [omniglot, cifar-fs]), or use apis.scenario: sh for one dataset (data.dataset)")
    return errs


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml (or another file); return the nested dict."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found; run from the repository root or pass --params")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path} is not valid YAML: {exc}") from exc
    return validate(params, str(path))
