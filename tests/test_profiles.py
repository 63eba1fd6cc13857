"""Profiles: params overlays run as one DVC experiment, whose results are copied to results/<name>/ on main."""

import json
import subprocess

import pytest
import yaml

from conftest import ROOT
from dfml import profiles
from dfml.profiles import ProfileError, collect, merge, overrides


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_every_shipped_profile_is_valid_and_described(monkeypatch):
    monkeypatch.chdir(ROOT)
    names = sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml"))
    assert {"miniimagenet-cpu", "omniglot-every-model", "paper-cifar-fs", "paper-miniimagenet"} <= set(names)
    for name in names:
        cmd = profiles.run_profile(name, dry_run=True)
        assert cmd[1:6] == ["-m", "dvc", "exp", "run", "--temp"] and cmd[cmd.index("--name") + 1] == name
        assert profiles.describe(ROOT / "profiles" / f"{name}.yaml"), f"{name}: no first comment saying what it is"


def test_overrides_round_trip_through_yaml():
    overlay = {"data": {"dataset": "miniimagenet", "image_size": None}, "invert": {"mu": 0.005, "q": 2},
               "run": {"evaluate": ["random", "bidf_mkd"], "baselines": []}, "distill": {"support_shots": [1, 5]}}
    args = overrides(overlay)
    assert "run.evaluate=[random, bidf_mkd]" in args and "data.image_size=null" in args and "run.baselines=[]" in args
    back = {}
    for item in args:
        key, value = item.split("=", 1)
        node = back
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    assert back == overlay


def test_a_misspelt_profile_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "bad.yaml").write_text("# a typo\ninvert:\n  qq: 3\n")
    with pytest.raises(ProfileError, match=r"invert\.qq: not a key of params\.yaml"):
        profiles.run_profile("bad", dry_run=True)
    (tmp_path / "profiles" / "bad.yaml").write_text("# out of range\ninvert:\n  q: 0\n")
    with pytest.raises(ProfileError, match=r"invert\.q: must be an integer >= 1, got 0"):
        profiles.run_profile("bad", dry_run=True)
    with pytest.raises(ProfileError, match="no profile 'absent'.*known profiles: bad"):
        profiles.run_profile("absent", dry_run=True)
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_collect_copies_a_fake_experiment_into_results(tmp_path, monkeypatch):
    """A fake DVC experiment (a commit under refs/exps) -> results/<name>/ with its files and run.json."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "params.yaml").write_text("seed: 0\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    files = {"metrics/eval.json": {"random": {"1shot": {"acc": 40.0, "ci95": 1.0}}},
             "metrics/eval_settings.json": {"episodes": 600, "resources": {"random": {"seconds": 3.5,
                                                                                     "peak_rss_mb": 900.0}}},
             "metrics/data.json": {"dataset": "miniimagenet", "seconds": 12.0, "peak_rss_mb": 1300.0},
             "metrics/apis.json": {"count": 10, "seconds": 700.0, "peak_rss_mb": 2000.0},
             "plots/episodes.csv": "model,shot,episode,acc\nrandom,1,0,40.0\n", "plots/summary.md": "# Results\n"}
    for path, content in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content if isinstance(content, str) else json.dumps(content))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "exp")
    exp = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/demo", exp)
    _git(repo, "reset", "-q", "--hard", head)  # the workspace is left as it was: only the ref holds the results
    monkeypatch.chdir(repo)
    out = collect("demo", run={"wall_seconds": 99.0})
    assert out == profiles.RESULTS / "demo"
    for path, content in files.items():
        got = (repo / out / path).read_text()
        assert got == (content if isinstance(content, str) else json.dumps(content))
    run = json.loads((repo / out / "run.json").read_text())
    assert run["experiment"] == exp and run["wall_seconds"] == 99.0
    assert run["stages"] == {"prepare": {"seconds": 12.0, "peak_rss_mb": 1300.0},
                             "pretrain": {"seconds": 700.0, "peak_rss_mb": 2000.0},
                             "evaluate_model@random": {"seconds": 3.5, "peak_rss_mb": 900.0}}
    assert not (repo / out / "metrics" / "invert.json").exists()  # absent in the experiment: absent here
    # an experiment that did not finish (no eval.json) is refused, and the old results stay whole
    (repo / "broken").write_text("x")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "broken")
    broken = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    with pytest.raises(ProfileError, match="has no metrics/eval.json.*did not finish"):
        collect("demo", rev=broken)
    assert (repo / out / "metrics" / "eval.json").is_file()
    with pytest.raises(ProfileError, match="no DVC experiment named 'other'"):
        collect("other")
