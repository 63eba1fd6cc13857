"""End to end: the real `dvc repro` on a tiny config in a temporary git repo (needs the Omniglot archives)."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT  # noqa: E402

TINY = {
    "data": {"subset": {"classes_per_split": 12, "images_per_class": 10}},
    "apis": {"count": 3, "epochs": 3},
    "invert": {"images_per_class": 4, "generator": {"width": 8, "latent_dim": 16},
               "bidf": {"q": 2, "steps": 3, "extra_steps": 0},
               "surrogate": {"rounds": 2, "images_per_round": 16, "clone_width": 8, "clone_steps": 5, "clone_batch": 8,
                             "generator_steps": 2},
               "dfme": {"iterations": 2, "batch": 8, "student_steps": 2, "student_width": 8, "draw_batches": 2},
               "cake": {"steps": 2}},
    "distill": {"iterations": 4, "tasks_per_batch": 2, "memory_tasks": 1, "inner_steps": 1, "support_shots": 2,
                "query_shots": 2, "boundary_after": 2, "boundary_steps": 1, "val_every": 2, "val_episodes": 4,
                "val_query": 3},
    "maml_real": {"iterations": 4, "tasks_per_batch": 2, "inner_steps": 1, "support_shots": 2, "query_shots": 2,
                  "val_every": 2, "val_episodes": 4, "val_query": 3},
    "baselines": {"best_api": {"steps": 3, "batch_size": 8}, "single_dfkd": {"steps": 3, "batch_size": 8},
                  "distill_avg": {"steps": 2, "batch_size": 8}},
    "evaluate": {"shots": [1, 2], "query": 3, "episodes": 10, "val_episodes": 4, "adapt_steps": 2,
                 "lr_grid": [0.1, 0.3]},
}
MODELS = ["random", "maml_real", "bidf_mkd", "bidf_mkd_whitebox", "best_api", "single_dfkd", "distill_avg"]
BASELINES = ["best_api", "single_dfkd", "distill_avg"]


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


def _mirror() -> Path | None:
    env = os.environ.get("DFML_DATA_MIRROR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "omniglot" / "images_background.zip").is_file():
            return cand.resolve()
    return None


def _stages_run(out: str) -> set[str]:
    """The stages dvc printed as running."""
    return set(re.findall(r"Running stage '([^']+)'", out))


def _assert_ran(out: str, expected: set[str]) -> None:
    """Exactly `expected` ran, plus `report` (which reruns whenever metrics/eval.json changes) and `check_params`
    (whenever the `run` lists change)."""
    ran = _stages_run(out)
    assert expected <= ran <= expected | {"report", "check_params"}, f"ran {sorted(ran)}, expected {sorted(expected)}"


def _changed_by(repo: Path, env: dict, override: dict) -> set[str]:
    """The stages `dvc status` finds changed once params.yaml takes `override` (params.yaml restored after)."""
    path = repo / "params.yaml"
    saved = path.read_text()
    path.write_text(yaml.safe_dump(_merge(yaml.safe_load(saved), override), sort_keys=False))
    try:
        return set(json.loads(_run(DVC + ["status", "--json"], repo, env)))
    finally:
        path.write_text(saved)


def _run(cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def tiny_params(*overrides: dict) -> dict:
    """The repository's params.yaml with :data:`TINY` and then each of `overrides` merged in."""
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), copy.deepcopy(TINY))
    for over in overrides:
        params = _merge(params, copy.deepcopy(over))
    return params


def tiny_env(tmp_path: Path, **extra: str) -> dict:
    """Environment for stage and dvc subprocesses: data mirror, DVC site cache under `tmp_path`, the venv's
    python first on PATH, a git identity; plus `extra`."""
    mirror = _mirror()
    if mirror is None:
        pytest.fail("Omniglot archives not found: set DFML_DATA_MIRROR to a folder with omniglot/images_*.zip")
    return dict(os.environ, DFML_DATA_MIRROR=str(mirror), DVC_SITE_CACHE_DIR=str(tmp_path / "site-cache"),
                DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
                **extra)


def make_tiny_repo(tmp_path: Path, params: dict | None = None, **extra_env: str) -> tuple[Path, dict]:
    """A temporary git repo (committed) with the project's code and `params` (default: :func:`tiny_params`):
    ``(repo, env)``."""
    repo = tmp_path / "repo"
    keep = ["pyproject.toml", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "src"]
    repo.mkdir()
    for name in keep:
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
         if src.is_dir() else shutil.copy2(src, repo / name))
    (repo / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy2(ROOT / ".dvc" / ".gitignore", repo / ".dvc" / ".gitignore")
    (repo / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    env = tiny_env(tmp_path, **extra_env)
    _run(["git", "init", "-q", "-b", "main"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny"], repo, env)
    return repo, env


DVC = [sys.executable, "-m", "dvc"]


@pytest.mark.slow
def test_dvc_repro_tiny_chain(tmp_path):
    repo, env = make_tiny_repo(tmp_path, OMP_NUM_THREADS="1")  # tiny tensors: threads only contend
    dvc = DVC
    _run(dvc + ["repro"], repo, env)

    default = yaml.safe_load((ROOT / "params.yaml").read_text())["run"]["evaluate"]
    assert default == MODELS[:3]  # the default run evaluates random, maml_real and bidf_mkd
    shown = json.loads(_run(dvc + ["metrics", "show", "--json"], repo, env))
    metrics = next(iter(shown.values()))["data"]
    ev = metrics["metrics/eval.json"]["data"]
    assert list(ev) == MODELS[:3]
    for model in ev.values():
        for shot in ("1shot", "2shot"):
            assert 0.0 <= model[shot]["acc"] <= 100.0 and model[shot]["ci95"] >= 0.0
    inv = metrics["metrics/invert.json"]["data"]
    assert inv["api_images"] == 3 * ((2 + 1) * 5 * 4 * 3 + 5 * 4)  # APIs * ((q+1) * batch * steps + batch)
    dist = metrics["metrics/distill.json"]["data"]
    assert dist["api_images_total"] == inv["api_images"] + dist["api_images_distill"] > inv["api_images"]
    # what each model's training cost: API images and seconds, inversion included
    assert ev["random"]["api_images"] == ev["maml_real"]["api_images"] == 0 == ev["random"]["seconds"]
    assert ev["bidf_mkd"]["api_images"] == dist["api_images_total"]
    assert ev["bidf_mkd"]["seconds"] == pytest.approx(inv["seconds"] + dist["seconds"], abs=0.02)
    assert not any((repo / "models" / f"{name}.pt").exists() for name in BASELINES + ["bidf_mkd_whitebox"])
    assert len((repo / "plots" / "episodes.csv").read_text().splitlines()) == 1 + 3 * 2 * 10

    # nothing changed: nothing runs
    assert "didn't change, skipping" in _run(dvc + ["repro"], repo, env)
    # DVC's run-cache covers every training stage (none has a plain out with cache: false, tests/test_layout.py):
    # models deleted from the workspace come back from the cache, and nothing trains again
    for name in ("random", "maml_real", "bidf_mkd"):
        (repo / "models" / f"{name}.pt").unlink()
    out = _run(dvc + ["repro"], repo, env)
    assert _stages_run(out) == set(), out
    assert {"random_init", "maml_real", "distill"} <= set(re.findall(r"Stage '([^']+)' is cached", out)), out
    # defect 8: a misspelt model name stops the run with params.yaml's message, not DVC's "No such file"
    saved = (repo / "params.yaml").read_text()
    bad = yaml.safe_load(saved)
    bad["run"]["evaluate"] = ["random", "bidf-mkd"]
    (repo / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    out = subprocess.run(dvc + ["repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    (repo / "params.yaml").write_text(saved)
    assert out.returncode != 0 and "No such file" not in out.stdout + out.stderr
    assert "run.evaluate: must be a non-empty list, each one of 'random'" in out.stdout + out.stderr
    # the failed check removed its marker (DVC clears a stage's outs before it runs): with the params fixed, the
    # next repro brings back that check alone, from the run-cache (it passed with these params before)
    rerun = _run(dvc + ["repro"], repo, env)
    assert _stages_run(rerun) == set() and re.findall(r"Stage '([^']+)' is cached", rerun) == ["check_params"]
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny results"], repo, env)
    # an evaluation setting invalidates every model's evaluation (and the report, which states the protocol)
    assert _changed_by(repo, env, {"evaluate": {"adapt_steps": 3}}) == {f"evaluate_model@{m}" for m in MODELS[:3]} \
        | {"report"}
    assert _changed_by(repo, env, {"run": {"evaluate": MODELS[:2]}}) == {"evaluate", "check_params"}  # the merge
    # a distill param invalidates distill alone (then, through its checkpoint, bidf_mkd's evaluation), never invert
    assert _changed_by(repo, env, {"distill": {"inner_lr": 0.05}}) == {"distill", "report"}
    # another recovery method's params rerun nothing (dvc.yaml reads invert.${invert.method} only)
    assert _changed_by(repo, env, {"invert": {"surrogate": {"rounds": 3}, "cake": {"q": 5}}}) == set()
    # runtime settings never change results: nothing reruns
    assert _changed_by(repo, env, {"runtime": {"budget_images": 10**9, "checkpoint_every": {"invert": 3, "distill": 7},
                                               "http": {"timeout": 5}}}) == set()

    # the every-model profile's experiment: adding the baselines and the white-box reference trains and
    # evaluates them, and nothing else
    out = _run(dvc + ["exp", "run", "-S", f"run.baselines=[{','.join(BASELINES)}]",
                      "-S", "run.whitebox=[bidf_mkd_whitebox]", "-S", f"run.evaluate=[{','.join(MODELS)}]"],
               repo, env)
    wb = "bidf_mkd_whitebox"
    _assert_ran(out, {f"{s}@{m}" for m in BASELINES for s in ("baseline", "evaluate_model")} | {"evaluate"}
                | {f"whitebox_invert@{wb}", f"whitebox_distill@{wb}", f"evaluate_model@{wb}"})
    ev = json.loads((repo / "metrics" / "eval.json").read_text())
    assert list(ev) == MODELS
    # exact gradients: one API image per image and step (no directions), and the same distillation
    inv_wb = json.loads((repo / "metrics" / "invert_whitebox.json").read_text())
    dist_wb = json.loads((repo / "metrics" / "distill_whitebox.json").read_text())
    assert inv_wb["gradient"] == "exact" and inv_wb["api_images"] == 3 * (5 * 4 * 3 + 5 * 4)
    assert dist_wb["api_images_total"] == inv_wb["api_images"] + dist_wb["api_images_distill"] == ev[wb]["api_images"]
    assert dist_wb["iterations"] == TINY["distill"]["iterations"] and (repo / "data" / "bank_whitebox").is_dir()
    left = json.loads((repo / "metrics" / "invert.json").read_text())  # the black-box run is left alone
    assert (left["gradient"], left["ledger"], left["seconds"]) == ("zo", inv["ledger"], inv["seconds"])
    assert ev["best_api"]["api_images"] == inv["api_images"] // 3
    assert ev["single_dfkd"]["api_images"] == ev["distill_avg"]["api_images"] == inv["api_images"]
    for name in BASELINES:
        own = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert own["steps"] == TINY["baselines"][name]["steps"] and own["final_loss"] >= 0
        assert ev[name]["seconds"] == pytest.approx(inv["seconds"] + own["seconds"], abs=0.02)
    assert len((repo / "plots" / "episodes.csv").read_text().splitlines()) == 1 + len(MODELS) * 2 * 10
    assert "| `distill_avg` |" in (repo / "plots" / "summary.md").read_text()
    assert "| `bidf_mkd_whitebox` |" in (repo / "plots" / "summary.md").read_text()
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "every model"], repo, env)

    # one baseline's param reruns that baseline and its evaluation only (a real experiment)
    out = _run(dvc + ["exp", "run", "-S", "baselines.best_api.steps=4"], repo, env)
    _assert_ran(out, {"baseline@best_api", "evaluate_model@best_api", "evaluate"})
    assert json.loads((repo / "metrics" / "best_api.json").read_text())["steps"] == 4
    diff = json.loads(_run(dvc + ["metrics", "diff", "--json"], repo, env))
    assert "metrics/eval.json" in diff and "metrics/best_api.json" in diff


def stage_cmd(stage: str, *args: str) -> list[str]:
    """The command of a stage module, as dvc.yaml runs it (with the repository's src first on the path)."""
    return [sys.executable, "-m", f"dfml.pipeline.{stage}", *args]


def run_stage(stage: str, work: Path, env: dict, code: int = 0, timeout: float = 400) -> str:
    """Run `stage` in `work` (this checkout's src on PYTHONPATH); its output, once it exits with `code`."""
    out = subprocess.run(stage_cmd(stage), cwd=work, env=dict(env, PYTHONPATH=str(ROOT / "src")),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == code, f"{stage} exited {out.returncode}, not {code}:\n{out.stdout[-3000:]}\n" \
                                   f"{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def stage_env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), **extra)


def test_bad_param_stops_a_stage_before_work(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["invert"]["bidf"]["q"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = subprocess.run(stage_cmd("invert", "--params", str(bad)), cwd=tmp_path, env=stage_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "invert.bidf.q: must be an integer >= 1, got 0" in out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_params_from_another_folder_work_in_that_folder(tmp_path):
    """Defect 14: `--params` from another folder wrote outputs into the current folder; the stage now works in
    the params file's folder, as the error hint says."""
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (repo / "metrics").mkdir()
    (repo / "metrics" / "data.json").write_text('{"channels": 1, "image_size": 28}')
    out = subprocess.run(stage_cmd("random_init", "--params", str(repo / "params.yaml")), cwd=elsewhere,
                         env=stage_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (repo / "models" / "random.pt").is_file() and not any(elsewhere.iterdir())


@pytest.mark.slow
def test_dvc_repro_tiny_miniimagenet_subset(tmp_path):
    """The whole chain at MiniImageNet's 84 px on a subset of the data mirror's archive (6 classes per split,
    20 images each, cut before decoding)."""
    mirror = _mirror()
    if mirror is None or not (mirror / "miniimagenet" / "mini-imagenet-500.zip").is_file():
        pytest.fail("the MiniImageNet archive is not in the data mirror: set DFML_DATA_MIRROR")
    params = tiny_params({"data": {"dataset": "miniimagenet", "subset": {"classes_per_split": 6,
                                                                        "images_per_class": 20}},
                          "apis": {"count": 2, "epochs": 2}, "invert": {"bidf": {"steps": 2}, "prior": {"l1": 0.0}}})
    repo, env = make_tiny_repo(tmp_path, params, OMP_NUM_THREADS="1")
    _run(DVC + ["repro"], repo, env)
    data = json.loads((repo / "metrics" / "data.json").read_text())
    assert (data["dataset"], data["image_size"], data["channels"]) == ("miniimagenet", 84, 3)
    assert {s: data[s] for s in ("train", "val", "test")} == {s: {"classes": 6, "images": 120}
                                                              for s in ("train", "val", "test")}
    assert data["peak_rss_mb"] > 0
    import numpy as np

    images = np.load(repo / "data" / "prepared" / "images.npy", mmap_mode="r")
    assert images.dtype == np.uint8 and images.shape == (360, 3, 84, 84)
    ev = json.loads((repo / "metrics" / "eval.json").read_text())
    assert list(ev) == MODELS[:3] and all(0 <= ev[m]["1shot"]["acc"] <= 100 for m in ev)
    assert json.loads((repo / "metrics" / "invert.json").read_text())["api_images"] == 2 * (3 * 5 * 4 * 2 + 5 * 4)
