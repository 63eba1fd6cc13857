"""The house: each dvc.yaml stage is one module of its name, packages import only downwards, code deps are
derived from imports (and current), artifact paths are written once."""

import ast
import re

import yaml

from conftest import ROOT
from dfml.pipeline import deps, paths

SRC = ROOT / "src" / "dfml"
# bottom first: a package may import its own modules and those of packages before it, never after
LAYERS = ["core", "models", "data", "api", "owner", "runtime", "inversion", "meta", "baselines", "evaluation",
          "reporting", "params", "pipeline", "profiles", "grids", "__main__"]


def _package(path):
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_packages(path):
    """The top-level dfml packages a module imports (relative or absolute)."""
    found = set()
    here = path.relative_to(SRC).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from . import x` at the top of dfml
                    parts = [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "dfml":
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(parts[0])
            else:
                found.update(a.name for a in node.names)
    return found


def test_no_package_imports_one_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    wrong = []
    for path in SRC.rglob("*.py"):
        mine = _package(path)
        if mine == "__init__":
            continue
        for other in _imported_packages(path):
            if other in rank and rank[other] > rank[mine]:
                wrong.append(f"{path.relative_to(ROOT)} ({mine}) imports {other}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)
    assert set(LAYERS) >= {_package(p) for p in SRC.rglob("*.py")} - {"__init__"}


def test_every_stage_is_one_module_of_its_name():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(deps.STAGES)
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        assert re.fullmatch(rf"PYTHONPATH=src python -m dfml\.pipeline\.{name}( \$\{{item\}}| --\w+)?", cmd), cmd
        assert (SRC / "pipeline" / f"{name}.py").is_file()
    assert not (ROOT / "stages").exists()


def test_dvc_yaml_code_deps_are_the_derived_ones():
    """`python -m dfml.pipeline.deps --write` regenerates them; a new import must not leave a stage's deps short."""
    assert deps.update(write=False) == [], "run: python -m dfml.pipeline.deps --write"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        listed = [d for d in stages[name].get("do", stages[name])["deps"] if str(d).startswith("src/")]
        for f in deps.code_files(name):
            assert any(f == type(f)(d) or f.is_relative_to(d) for d in listed), f"{name}: {f} not covered"


def test_derived_closure_follows_real_imports():
    mods = deps.closure("dfml.pipeline.invert")
    assert {"dfml.inversion.invert", "dfml.api.backends", "dfml.core.losses", "dfml.params"} <= mods
    assert "dfml.meta.bidf" not in mods and "dfml.data.sources" not in mods  # invert needs no dataset code


def test_artifact_paths_are_written_once():
    """Only pipeline/paths.py spells out artifact paths; stage outs in dvc.yaml are those paths."""
    pattern = re.compile(r"""["'](?:data|models|metrics|plots|checkpoints)/[\w./{}-]*["']""")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "paths.py" or path.parent.name == "data" and path.name == "params.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and '"""' not in code and "``" not in code and "f\"" not in code[:2]:
                if re.search(r"^\s*(\w+\s*=|return|open|Path\()", code) or "Path(\"" in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "artifact paths outside pipeline/paths.py:\n" + "\n".join(offenders)
    outs = set()
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind) or []:
                outs.add(entry if isinstance(entry, str) else next(iter(entry)))
    known = {str(v) for k, v in vars(paths).items() if k.isupper() and hasattr(v, "parts")}
    known |= {str(f(v)) for f in (paths.bank, paths.invert_metrics, paths.invert_samples, paths.distill_metrics,
                                  paths.curve_csv, paths.curve_png) for v in __import__(
        "dfml.inversion.variants", fromlist=["VARIANTS"]).VARIANTS.values()}
    known |= {str(f(n)) for n in ("random", "maml_real", "bidf_mkd", "bidf_mkd_whitebox")
              for f in (paths.model, paths.cost_json)}
    steps = [paths.MAML_STEPS] + [paths.steps_dir(v) for v in __import__(
        "dfml.inversion.variants", fromlist=["VARIANTS"]).VARIANTS.values()]
    known |= {str(d / "metrics.json") for d in steps} | {str(d / "plots" / "metrics") for d in steps}
    templated = {o for o in outs if "${item}" in o}
    assert outs - templated <= known, sorted(outs - templated - known)
    assert templated == {"models/${item}.pt", "metrics/${item}.json", "metrics/cost/${item}.json",
                         "metrics/eval/${item}.json", "plots/episodes/${item}.csv"}
    for name in ("best_api",):
        assert str(paths.model(name)) == "models/best_api.pt" and str(paths.model_metrics(name)) == "metrics/best_api.json"
    assert str(paths.eval_json("x")) == "metrics/eval/x.json" and str(paths.episodes_csv("x")) == "plots/episodes/x.csv"


def test_no_plain_out_turns_off_the_run_cache():
    """A plain out with ``cache: false`` makes DVC skip the run-cache for its whole stage (DVC docs, "Run Cache"):
    every file kept in git must be declared under ``metrics:`` or ``plots:``; ``report``'s markdown is the one
    exception (it is neither, and the stage takes a second)."""
    uncached = []
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        for entry in stage.get("do", stage).get("outs") or []:
            if isinstance(entry, dict) and next(iter(entry.values())).get("cache") is False:
                uncached.append(f"{name}: {next(iter(entry))}")
    assert uncached == ["report: plots/summary.md"]
