"""The code each stage depends on, derived from its imports: ``dvc.yaml``'s code deps are written from here.

A stage's code is the import closure of its module (``dfml.pipeline.<stage>``, every ``dfml`` module it imports,
directly or not, and the packages around them), read from the source with :mod:`ast` (nothing is imported).
A package folder whose every module is in the closure is listed as the folder. ``python -m
dfml.pipeline.deps --write`` puts these lists into ``dvc.yaml`` (the entries under ``src/``; data deps are kept);
without ``--write`` it only checks, and exits 1 (as a test fails) when ``dvc.yaml`` is out of date, so a new import can never leave a stage's deps
short and reruns stay exact.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # the src/ folder
ROOT = SRC.parent

# dvc.yaml stage (the part before @) -> its module in dfml.pipeline
STAGES = {s: s for s in ("check_params", "prepare", "pretrain", "invert", "whitebox_invert", "distill", "whitebox_distill",
                         "maml_real", "baseline", "random_init", "evaluate_model", "evaluate", "report")}


def module_file(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for cand in (base / "__init__.py", base.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def direct_imports(module: str) -> set[str]:
    """The ``dfml`` modules `module` imports (``from .x import y`` gives ``x`` and ``x.y`` when that is a module),
    with the packages that hold them."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "dfml":
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dfml")
    out = set()
    for name in found:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i])))
    return out


def closure(module: str) -> set[str]:
    """Every ``dfml`` module that running `module` imports, `module` included."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(direct_imports(m))
    return seen


# files a module reads at run time (not imports): they count as that module's code
READS = {"dfml.data.sources": [Path("src/dfml/data/splits")]}


def docstring_only(path: Path) -> bool:
    """A module of nothing but its docstring (a package's ``__init__.py``): no change to it changes results."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def code_files(stage: str) -> set[Path]:
    """The files (relative to the repository root) of stage `stage`'s closure, docstring-only modules left out,
    and what its modules read."""
    mods = closure(f"dfml.pipeline.{STAGES[stage]}")
    files = {module_file(m) for m in mods}
    return ({f.relative_to(ROOT) for f in files if not docstring_only(f)}
            | {f for m in mods for f in READS.get(m, [])})


def compress(files: set[Path]) -> list[str]:
    """`files` with every folder whose .py files (recursively, split lists and data aside) all appear listed as
    the folder; sorted."""
    files = set(files)
    folders = sorted({f.parent for f in files}, key=lambda p: len(p.parts))
    chosen: list[Path] = []
    for folder in folders:
        if any(folder.is_relative_to(c) for c in chosen) or folder == Path("src"):
            continue
        every = {p.relative_to(ROOT) for p in (ROOT / folder).rglob("*.py")
                 if "__pycache__" not in p.parts and not docstring_only(p)}
        if every <= files and folder != Path("src/dfml"):
            chosen.append(folder)
    out = {str(c) for c in chosen} | {str(f) for f in files if not any(f.is_relative_to(c) for c in chosen)}
    out = {o for o in out if not any(Path(o).is_relative_to(c) and Path(o) != c for c in chosen)}
    return sorted(out)


def stage_deps(stage: str) -> list[str]:
    return compress(code_files(stage))


def _dvc_yaml():
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    return yaml


def update(dvc_yaml: Path = ROOT / "dvc.yaml", write: bool = True) -> list[str]:
    """Put each stage's derived code deps in `dvc_yaml` (its ``src/`` entries; other deps stay, after them);
    return the stages whose deps were out of date."""
    yaml = _dvc_yaml()
    doc = yaml.load(dvc_yaml.read_text())
    stale = []
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        if name not in STAGES:
            continue
        old = list(body.get("deps") or [])
        code = stage_deps(name)
        keep = [d for d in old if not str(d).startswith("src/")]
        new = code + keep
        if [str(d) for d in old] != new:
            stale.append(name)
            body["deps"] = new
    if write and stale:
        import io

        buf = io.StringIO()
        yaml.dump(doc, buf)
        dvc_yaml.write_text(buf.getvalue())
    return stale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfml.pipeline.deps", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update dvc.yaml (default: only check)")
    args = parser.parse_args(argv)
    stale = update(write=args.write)
    if stale and not args.write:
        print(f"dvc.yaml: the code deps of {', '.join(stale)} are out of date; run python -m dfml.pipeline.deps "
              "--write", file=sys.stderr)
        sys.exit(1)
    print(f"dvc.yaml: {'updated ' + ', '.join(stale) if stale else 'code deps up to date'}")


if __name__ == "__main__":
    main()
