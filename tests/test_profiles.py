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
    overlay = {"data": {"dataset": "miniimagenet", "image_size": None}, "invert": {"bidf": {"mu": 0.005, "q": 2}},
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


def test_profile_run_takes_runtime_settings_only(monkeypatch):
    monkeypatch.chdir(ROOT)
    cmd = profiles.run_profile("paper-miniimagenet", dry_run=True, sets=["runtime.budget_images=1000"])
    assert cmd[-2:] == ["-S", "runtime.budget_images=1000"]
    with pytest.raises(ProfileError, match=r"-S invert\.bidf\.q=3: takes runtime\.KEY=VALUE"):
        profiles.run_profile("paper-miniimagenet", dry_run=True, sets=["invert.bidf.q=3"])
    with pytest.raises(ProfileError, match=r"runtime\.budget_images: must be"):
        profiles.run_profile("paper-miniimagenet", dry_run=True, sets=["runtime.budget_images=-1"])
    with pytest.raises(ProfileError, match=r"runtime\.budget: not a key of params\.yaml; fix the -S setting"):
        profiles.run_profile("paper-miniimagenet", dry_run=True, sets=["runtime.budget=5"])


def test_a_misspelt_profile_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "profiles" / "bad.yaml").write_text("# a typo\ninvert:\n  bidf:\n    qq: 3\n")
    with pytest.raises(ProfileError, match=r"invert\.bidf\.qq: not a key of params\.yaml"):
        profiles.run_profile("bad", dry_run=True)
    (tmp_path / "profiles" / "bad.yaml").write_text("# out of range\ninvert:\n  bidf:\n    q: 0\n")
    with pytest.raises(ProfileError, match=r"invert\.bidf\.q: must be an integer >= 1, got 0"):
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
    # collected again from the same experiment (dfml profile collect): the run's measured record is kept
    assert json.loads((repo / collect("demo") / "run.json").read_text()) == run
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


def test_grids_expand_and_collect_a_fake_experiment(tmp_path, monkeypatch):
    """A grid's runs (product, extra, profile and base) and its summary.csv from fake finished experiments."""
    from dfml import grids

    monkeypatch.chdir(ROOT)
    runs = grids.load_grid("recovery-methods")
    assert len(runs) == 4 * 4 + 4 and runs[0] == {"invert.method": "bidf", "query.answer": "probs"}
    lr = grids.load_grid("miniimagenet-inner-lr")
    assert all(r["data.dataset"] == "miniimagenet" and r["run.evaluate"] == ["random"] for r in lr)
    assert [r["distill.inner_lr"] for r in lr] == [0.1, 0.03]
    cmds = grids.run_grid("recovery-methods", only=[5], dry_run=True)
    assert cmds[0][cmds[0].index("--name") + 1] == "recovery-methods-5"
    assert "invert.method=surrogate" in cmds[0] and "query.answer=topk" in cmds[0]
    with pytest.raises(ProfileError, match=r"--only 2: grid miniimagenet-inner-lr has runs 0 to 1"):
        grids.run_grid("miniimagenet-inner-lr", only=[1, 2], dry_run=True)  # never silently skipped

    repo = tmp_path / "repo"
    (repo / "profiles" / "grids").mkdir(parents=True)
    (repo / "profiles" / "grids" / "g.yaml").write_text("# a grid\nproduct:\n  query.answer: [probs, label]\n")
    _git(repo, "init", "-q", "-b", "main")
    (repo / "params.yaml").write_text("seed: 0\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for i, answer in enumerate(["probs", "label"]):
        ev = {"bidf_mkd": {"1shot": {"acc": 70.0 + i, "ci95": 1.0}, "5shot": {"acc": 90.0, "ci95": 0.5},
                           "api_images": 1000 * (i + 1), "seconds": 10.0},
              "random": {"1shot": {"acc": 60.0, "ci95": 1.0}, "5shot": {"acc": 75.0, "ci95": 0.8}}}
        (repo / "metrics").mkdir(exist_ok=True)
        (repo / "metrics" / "eval.json").write_text(json.dumps(ev))
        (repo / "plots").mkdir(exist_ok=True)
        (repo / "plots" / "distill_curve.csv").write_text(f"iteration,val_acc\n0,{20 + i}\n")
        (repo / "params.yaml").write_text(yaml.safe_dump({"invert": {"method": "surrogate"}, "query": {"answer": answer}}))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"exp {i}")
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/g-{i}", rev)
    _git(repo, "reset", "-q", "--hard", head)
    monkeypatch.chdir(repo)
    out = grids.collect_grid("g")
    import csv

    rows = list(csv.DictReader((repo / out / "summary.csv").open()))
    assert [r["answer"] for r in rows] == ["probs", "label"]
    assert list(rows[0])[:9] == grids.COLUMNS
    assert rows[1]["acc_1shot"] == "71.0" and rows[1]["api_images"] == "2000" and rows[1]["random_5shot"] == "75.0"
    assert (repo / out / "tradeoff_queries.png").stat().st_size > 0
    assert (repo / out / "runs" / "g-1" / "metrics" / "eval.json").is_file()
    assert (repo / out / "runs" / "g-1" / "plots" / "distill_curve.csv").read_text() == "iteration,val_acc\n0,21\n"
    assert not (repo / out / "runs" / "g-1" / "plots" / "maml_real_curve.csv").exists()  # not in the experiment
    # the experiment refs gone (a fresh clone, another machine): a collect keeps the rows already collected
    before = (repo / out / "summary.csv").read_text()
    for i in range(2):
        _git(repo, "update-ref", "-d", f"refs/exps/{head[:2]}/{head[2:]}/g-{i}")
    assert (repo / grids.collect_grid("g") / "summary.csv").read_text() == before
    (repo / out / "runs" / "g-0" / "metrics" / "eval.json").unlink()  # no eval.json kept: that row is left out
    assert [r["answer"] for r in csv.DictReader((repo / grids.collect_grid("g") / "summary.csv").open())] == ["label"]
