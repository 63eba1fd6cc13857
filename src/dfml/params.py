"""``params.yaml`` as one typed model: every section's model (beside the code that owns it), the rules that
tie sections together, and error messages that name the key, what it accepts and what was found.

:func:`load_params` reads and checks the whole file before any stage does heavy work; a bad file raises
:class:`~dfml.core.errors.ParamError` listing every problem (stages print it and exit 2). An unknown key gets
a spelling suggestion. :func:`parameter_table` writes the README's table from the same models.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import yaml
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from .api.params import QueryParams
from .baselines.params import BASELINE_NAMES, BaselinesParams
from .core.errors import ParamError
from .core.runtime import DEVICE
from .core.schema import Field, Section, Seed, accepts
from .data.params import DataParams
from .evaluation.params import EvaluateParams, RunParams
from .inversion.params import InvertParams
from .meta.params import DistillParams, MamlParams, largest
from .owner.params import PoolParams
from .runtime.params import RuntimeParams

__all__ = ["Params", "ParamError", "load_params", "validate", "parameter_table", "result_params", "RESULT_SECTIONS"]

# Sections whose values never change results: in no stage's dvc.yaml params and in no checkpoint fingerprint
RUNTIME_SECTIONS = ("runtime",)


class Params(Section):
    """The whole of params.yaml."""

    seed: Seed = Field(description="the one seed every random stream derives from (by name)")
    device: Annotated[str, at.MinLen(1)] = Field(
        description="auto (CUDA when present) | cpu | cuda | cuda:N",
        json_schema_extra={"accepts": "'auto', 'cpu', 'cuda' or 'cuda:N'"})
    ways: Annotated[int, at.Ge(2)] = Field(description="N of every task: each API's classes, the meta model's "
                                                       "outputs, the classes of an episode")
    data: DataParams
    apis: PoolParams
    query: QueryParams
    runtime: RuntimeParams
    invert: InvertParams
    distill: DistillParams
    maml_real: MamlParams
    baselines: BaselinesParams
    evaluate: EvaluateParams
    run: RunParams

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if not DEVICE.match(v):
            raise ValueError(f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v

    @model_validator(mode="after")
    def _across_sections(self) -> "Params":
        errs = cross_checks(self)
        if errs:
            raise ValueError("\n".join(errs))
        return self


RESULT_SECTIONS = tuple(k for k in Params.model_fields if k not in RUNTIME_SECTIONS)


def cross_checks(p: Params) -> list[str]:
    """The rules between keys of different sections; each message names the keys and the fix."""
    errs = []
    models, run = p.run.evaluate, p.run.baselines
    untrained = [m for m in models if m in BASELINE_NAMES and m not in run]
    if untrained:
        errs.append(f"run.evaluate lists {', '.join(untrained)}, which run.baselines does not train: add "
                    f"{'it' if len(untrained) == 1 else 'them'} to run.baselines")
    if "bidf_mkd_whitebox" in models and "bidf_mkd_whitebox" not in p.run.whitebox:
        errs.append("run.evaluate lists bidf_mkd_whitebox, which run.whitebox does not train: set "
                    "run.whitebox to [bidf_mkd_whitebox]")
    exact = p.invert.exact_gradients
    if (p.run.whitebox or exact) and p.runtime.backend != "inprocess":
        errs.append(f"runtime.backend: the white-box reference reads input gradients, which backend "
                    f"{p.runtime.backend!r} cannot give; use runtime.backend: inprocess (or invert.bidf.gradient: "
                    "zo and run.whitebox: [])")
    need = largest(p.distill.support_shots) + p.distill.query_shots
    if need > p.invert.images_per_class:
        errs.append(f"invert.images_per_class ({p.invert.images_per_class}) must be at least "
                    f"distill.support_shots (the largest) + distill.query_shots ({need})")
    if p.query.answer == "topk" and p.query.topk >= p.ways:
        errs.append(f"query.topk ({p.query.topk}) must be below ways ({p.ways}): a top-{p.query.topk} answer of "
                    f"{p.ways} classes is the whole distribution; use query.answer: probs, or a smaller topk")
    errs += _data_checks(p)
    return errs


def _data_checks(p: Params) -> list[str]:
    errs, data = [], p.data
    if p.apis.scenario == "mh" and not data.datasets:
        errs.append("data.datasets: the mh scenario needs two or more datasets (e.g. [omniglot, miniimagenet]); "
                    "set it, or use apis.scenario: sh for one dataset (data.dataset)")
    if p.apis.scenario != "mh" and data.datasets:
        errs.append(f"data.datasets is {data.datasets} but apis.scenario is {p.apis.scenario!r}, which reads "
                    "data.dataset only: set data.datasets to null, or apis.scenario to mh")
    if "folder" in data.used() and not data.folder.root:
        errs.append("data.folder.root: must name a folder of class folders when the run reads dataset 'folder'")
    cap = data.subset.images_per_class
    if cap is not None:
        needs = {"evaluate.shots (the largest) + evaluate.query": max(p.evaluate.shots) + p.evaluate.query,
                 "distill.val_shots + distill.val_query": p.distill.val_shots + p.distill.val_query,
                 "maml_real.support_shots (the largest) + maml_real.query_shots":
                     largest(p.maml_real.support_shots) + p.maml_real.query_shots,
                 "maml_real.val_shots + maml_real.val_query": p.maml_real.val_shots + p.maml_real.val_query}
        short = {k: v for k, v in needs.items() if v > cap}
        if short:
            what, n = max(short.items(), key=lambda kv: kv[1])
            errs.append(f"data.subset.images_per_class ({cap}) must be at least {n}, what {what} takes from one "
                        f"class; raise it (or null: all images), or lower those keys")
    return errs


# ---------------------------------------------------------------- errors in words

# Keys of earlier versions of params.yaml -> where they live now (an old file gets "moved to ..." hints)
MOVED = {
    "apis.ways": "ways", "evaluate.ways": "ways", "apis.datasets": "data.datasets",
    "data.classes_per_split": "data.subset.classes_per_split", "data.images_per_class": "data.subset.images_per_class",
    "apis.answer": "query.answer", "apis.topk": "query.topk", "apis.decimals": "query.decimals",
    "apis.label_smoothing": "query.label_smoothing", "apis.query_chunk": "query.chunk",
    "apis.backend": "runtime.backend", "apis.http": "runtime.http", "apis.budget_images": "runtime.budget_images",
    "apis.budget_images_per_api": "runtime.budget_images_per_api",
    "invert.checkpoint_every": "runtime.checkpoint_every.invert",
    "distill.checkpoint_every": "runtime.checkpoint_every.distill", "maml_real.shots": "maml_real.support_shots",
    "evaluate.models": "run.evaluate", "baselines.run": "run.baselines", "whitebox": "run.whitebox",
    "invert.gradient": "invert.bidf.gradient", "invert.q": "invert.bidf.q", "invert.mu": "invert.bidf.mu",
    "invert.steps": "invert.bidf.steps", "invert.extra_steps": "invert.bidf.extra_steps",
    "invert.target_agreement": "invert.bidf.target_agreement", "invert.latent_dim": "invert.generator.latent_dim",
    "invert.generator_width": "invert.generator.width", "invert.lr_generator": "invert.generator.lr",
    "invert.lr_latent": "invert.generator.lr_latent", "invert.tv_weight": "invert.prior.tv",
    "invert.l2_weight": "invert.prior.l2", "invert.l1_weight": "invert.prior.l1",
}

def _field_path(loc: tuple) -> tuple[list[str], BaseModel | None, Any]:
    """The field names of `loc` (pydantic's union and list tags dropped), the model class holding the last one
    and its FieldInfo."""
    model, names, info = Params, [], None
    for part in loc:
        if isinstance(part, str) and model is not None and part in model.model_fields:
            names.append(part)
            info = model.model_fields[part]
            ann = info.annotation
            args = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type)]
            model = next((a for a in args if issubclass(a, BaseModel)), None)
        elif names and isinstance(part, int):
            continue
        elif names:
            break
    return names, model, info


def _lookup(raw: Any, names: list[str]) -> Any:
    for n in names:
        raw = raw.get(n) if isinstance(raw, dict) else None
    return raw


def _model_at(names: list[str]) -> type[BaseModel]:
    model = Params
    for n in names:
        ann = model.model_fields[n].annotation
        model = next(a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel))
    return model


def describe_errors(exc: ValidationError, raw: Any) -> list[str]:
    """One line per bad key: ``key: must be <what it accepts>, got <value>`` (unknown keys with a suggestion)."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent_names, _, _ = _field_path(loc[:-1])
            known = list(_model_at(parent_names).model_fields)
            key = str(loc[-1])
            close = difflib.get_close_matches(key, known, n=1)
            dotted = ".".join([*parent_names, key])
            if dotted in MOVED:
                lines.append(f"{dotted}: moved to {MOVED[dotted]} (params.yaml changed shape: see docs/parameters.md)")
                continue
            hint = f" (did you mean '{'.'.join([*parent_names, close[0]])}'?)" if close else \
                f" (known keys: {', '.join(known)})"
            lines.append(f"{dotted}: unknown key{hint}; remove it or fix its spelling")
            continue
        names, _, info = _field_path(loc)
        dotted = ".".join(names) or "params.yaml"
        if kind == "missing":
            lines.append(f"{dotted}: missing; add it to params.yaml (docs/parameters.md lists every key)")
            continue
        if kind == "value_error" and not names:  # a rule across sections: the message says it all
            for line in str(err["ctx"]["error"]).splitlines():
                lines.append(line)
            continue
        if dotted in seen:
            continue
        seen.add(dotted)
        value = _lookup(raw, names)
        if kind == "value_error":
            lines.append(f"{dotted}: {err['ctx']['error']}")
        elif info is not None and isinstance(value, dict) is False and kind in ("model_type", "dict_type"):
            lines.append(f"{dotted}: must be {accepts(info)}, got {value!r}")
        else:
            want = accepts(info) if info is not None else err["msg"]
            lines.append(f"{dotted}: must be {want}, got {value!r}")
    return lines


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """`raw` (the parsed YAML) as :class:`Params`; ParamError listing every problem otherwise."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source}: must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = describe_errors(exc, raw)
        raise ParamError(f"{source} has {len(lines)} bad value(s):\n  - " + "\n  - ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml (or another file)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path} not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamError(f"{path} is not valid YAML: {exc}") from None
    return validate(raw, str(path))


def result_params(params: Params, *sections: str) -> dict:
    """The sections named (top-level keys) as plain data, for checkpoint fingerprints: runtime sections never
    count (they cannot change results)."""
    return {k: (v.model_dump() if isinstance(v := getattr(params, k), BaseModel) else v)
            for k in sections if k not in RUNTIME_SECTIONS}


# ---------------------------------------------------------------- the README's parameter table

def _rows(model: type[BaseModel], prefix: str, values: Any) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        sub = next((a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
        value = values.get(name) if isinstance(values, dict) else None
        if sub is not None:
            rows += _rows(sub, key + ".", value)
        else:
            rows.append((key, yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip(),
                         accepts(info), info.description or ""))
    return rows


def parameter_table(params_file: Path = Path("params.yaml")) -> str:
    """Markdown: every key of params.yaml with its default value, what it accepts and what it does."""
    values = yaml.safe_load(Path(params_file).read_text())
    lines = ["| key | default | accepts | what it does |", "| --- | --- | --- | --- |"]
    for key, default, want, what in _rows(Params, "", values):
        lines.append(f"| `{key}` | `{default}` | {want} | {what.replace('|', '/')} |")
    return "\n".join(lines)



def section_table() -> str:
    """Markdown: each section of params.yaml, what it is and its keys (the README's short table)."""
    lines = ["| section | what it sets | keys |", "| --- | --- | --- |"]
    top = [name for name, info in Params.model_fields.items() if _section_model(info) is None]
    lines.append(f"| (top level) | the run's seed, device and task size | {', '.join(f'`{k}`' for k in top)} |")
    for name, info in Params.model_fields.items():
        model = _section_model(info)
        if model is not None:
            first = (model.__doc__ or "").strip().split("\n\n")[0]
            what = " ".join(line.strip() for line in first.splitlines()).rstrip(".").replace("``", "`")
            keys = ", ".join(f"`{k}`" for k in model.model_fields)
            lines.append(f"| `{name}` | {what} | {keys} |")
    return "\n".join(lines)


def _section_model(info) -> type[BaseModel] | None:
    ann = info.annotation
    return next((a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)


MARKERS = ("<!-- params:start -->", "<!-- params:end -->")
TABLES = {Path("README.md"): lambda params_file: section_table(),
          Path("docs/parameters.md"): parameter_table}


def write_tables(params_file: Path = Path("params.yaml")) -> list[Path]:
    """Put the generated tables between the params markers of the README (sections) and docs/parameters.md
    (every key); return the files whose markers are missing."""
    missing = []
    for doc, table in TABLES.items():
        text = doc.read_text() if doc.is_file() else ""
        start, end = MARKERS
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            missing.append(doc)
            continue
        doc.write_text(text[:i + len(start)] + "\n" + table(params_file) + "\n" + text[j:])
    return missing


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        missing = write_tables()
        sys.exit(f"no {' / '.join(MARKERS)} markers in {', '.join(map(str, missing))}" if missing else 0)
    print(parameter_table())
