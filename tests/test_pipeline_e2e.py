"""End to end: the real `dvc repro` on a tiny config in a temporary git repo (needs the Omniglot archives)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT  # noqa: E402

TINY = {
    "data": {"classes_per_split": 12, "images_per_class": 10},
    "apis": {"count": 3, "epochs": 3},
    "invert": {"q": 2, "steps": 3, "images_per_class": 4, "generator_width": 8, "latent_dim": 16},
    "distill": {"iterations": 4, "tasks_per_batch": 2, "memory_tasks": 1, "inner_steps": 1, "support_shots": 2,
                "query_shots": 2, "boundary_after": 2, "boundary_steps": 1, "val_every": 2, "val_episodes": 4,
                "val_query": 3},
    "maml_real": {"iterations": 4, "tasks_per_batch": 2, "inner_steps": 1, "shots": 2, "query_shots": 2,
                  "val_every": 2, "val_episodes": 4, "val_query": 3},
    "evaluate": {"shots": [1, 2], "query": 3, "episodes": 10, "val_episodes": 4, "adapt_steps": 2,
                 "lr_grid": [0.1, 0.3]},
}


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


def _run(cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.mark.slow
def test_dvc_repro_tiny_chain(tmp_path):
    mirror = _mirror()
    if mirror is None:
        pytest.fail("Omniglot archives not found: set DFML_DATA_MIRROR to a folder with omniglot/images_*.zip")
    repo = tmp_path / "repo"
    keep = ["pyproject.toml", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "src", "stages"]
    repo.mkdir()
    for name in keep:
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
         if src.is_dir() else shutil.copy2(src, repo / name))
    (repo / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy2(ROOT / ".dvc" / ".gitignore", repo / ".dvc" / ".gitignore")
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = dict(os.environ, DFML_DATA_MIRROR=str(mirror), DVC_SITE_CACHE_DIR=str(tmp_path / "site-cache"),
               DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q", "-b", "main"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny"], repo, env)
    _run(dvc + ["repro"], repo, env)

    shown = json.loads(_run(dvc + ["metrics", "show", "--json"], repo, env))
    metrics = next(iter(shown.values()))["data"]
    ev = metrics["metrics/eval.json"]["data"]
    assert set(ev) == {"random", "maml_real", "bidf_mkd"}
    for model in ev.values():
        for shot in ("1shot", "2shot"):
            assert 0.0 <= model[shot]["acc"] <= 100.0 and model[shot]["ci95"] >= 0.0
    inv = metrics["metrics/invert.json"]["data"]
    assert inv["api_images"] == 3 * ((2 + 1) * 5 * 4 * 3 + 5 * 4)  # APIs * ((q+1) * batch * steps + batch)
    dist = metrics["metrics/distill.json"]["data"]
    assert dist["api_images_total"] == inv["api_images"] + dist["api_images_distill"] > inv["api_images"]
    episodes = (repo / "plots" / "episodes.csv").read_text().splitlines()
    assert len(episodes) == 1 + 3 * 2 * 10

    # nothing changed: nothing runs
    assert "didn't change, skipping" in _run(dvc + ["repro"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny results"], repo, env)
    # an evaluation param reruns evaluation only
    out = _run(dvc + ["exp", "run", "-S", "evaluate.adapt_steps=3"], repo, env)
    assert "Running stage 'evaluate'" in out
    for stage in ("prepare", "pretrain", "invert", "distill", "maml_real"):
        assert f"Running stage '{stage}'" not in out
    # a distill param reruns distill and evaluate, never invert
    out = _run(dvc + ["exp", "run", "-S", "distill.inner_lr=0.05"], repo, env)
    assert "Running stage 'distill'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'invert'" not in out and "Running stage 'pretrain'" not in out
    diff = json.loads(_run(dvc + ["metrics", "diff", "--json"], repo, env))
    assert "metrics/eval.json" in diff


def test_bad_param_stops_a_stage_before_work(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["invert"]["q"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = subprocess.run([sys.executable, str(ROOT / "stages" / "invert.py"), "--params", str(bad)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "invert.q: must be an integer >= 1, got 0" in out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()
