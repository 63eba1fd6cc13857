"""The results report: summary table and paired differences (golden numbers), and the trade-off from
hand-written `dvc exp show --json` output in the DVC 3.x shape."""

import json
import math
import subprocess

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from PIL import Image

from dfml.pipeline import paths
from dfml.pipeline import report as stage
from dfml.reporting import report
from dfml.reporting.report import ReportError, collect, paired_differences, tradeoff, update_readme

EVAL = {
    "random": {"1shot": {"acc": 65.0, "ci95": 1.5}, "5shot": {"acc": 85.0, "ci95": 0.5}},  # no api_images, seconds
    "maml_real": {"1shot": {"acc": 82.5, "ci95": 4.24}, "5shot": {"acc": 95.0, "ci95": 0.0},
                  "api_images": 0, "seconds": 120.5},
    "bidf_mkd": {"1shot": {"acc": 75.0, "ci95": 6.93}, "5shot": {"acc": 92.5, "ci95": 3.46},
                 "api_images": 552000, "seconds": 357.1},
}
# acc per (model, shot) over episodes 0, 1, ...; random has a 5-shot episode 2 that bidf_mkd lacks (not shared).
EPISODES = {
    ("bidf_mkd", 1): [60, 70, 80, 90], ("random", 1): [50, 70, 60, 80], ("maml_real", 1): [70, 80, 80, 100],
    ("bidf_mkd", 5): [90, 95], ("random", 5): [85, 85, 0], ("maml_real", 5): [95, 95],
}


def _workspace(tmp_path, results=EVAL):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "plots").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps(results))
    rows = [{"model": m, "shot": k, "episode": e, "acc": a} for (m, k), accs in EPISODES.items()
            for e, a in enumerate(accs)]
    pd.DataFrame(rows).to_csv(tmp_path / "plots/episodes.csv", index=False)
    return tmp_path


def _assert_png(path):
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_paired_differences_golden(tmp_path):
    diffs = paired_differences(pd.read_csv(_workspace(tmp_path) / "plots/episodes.csv"))
    # bidf_mkd - random, 1-shot: [10, 0, 20, 10], mean 10, population std sqrt(50); 5-shot: [5, 10] (episode 2
    # is not shared), std 2.5; bidf_mkd - maml_real: [-10, -10, 0, -10] (std sqrt(18.75)) and [-5, 0].
    want = {("random", 1): (4, 10.0, 1.96 * math.sqrt(50) / 2), ("random", 5): (2, 7.5, 1.96 * 2.5 / math.sqrt(2)),
            ("maml_real", 1): (4, -7.5, 1.96 * math.sqrt(18.75) / 2),
            ("maml_real", 5): (2, -2.5, 1.96 * 2.5 / math.sqrt(2))}
    got = {(r.model, r.shot): (r.episodes, r.mean_diff, r.ci95) for r in diffs.itertuples()}
    assert got.keys() == want.keys()
    for key, (n, mean, ci) in want.items():
        assert got[key][0] == n and got[key][1:] == pytest.approx((mean, ci))


def test_summary_writes_table_and_paired_differences(tmp_path, monkeypatch):
    root = _workspace(tmp_path)
    monkeypatch.chdir(root)
    stage.summary(None)
    md = (root / "plots/summary.md").read_text()
    assert "| model | 1-shot | 5-shot | API images | seconds |" in md
    assert "| `random` | 65.00 +- 1.50 | 85.00 +- 0.50 |  |  |" in md  # missing api_images / seconds: blank
    assert "| `maml_real` | 82.50 +- 4.24 | 95.00 +- 0.00 | 0 | 120.5 |" in md
    assert "| `bidf_mkd` | 75.00 +- 6.93 | 92.50 +- 3.46 | 552,000 | 357.1 |" in md
    assert "| `random` | 1-shot | 4 | +10.00 | [+3.07, +16.93] |" in md  # 10 -+ 6.93
    assert "| `random` | 5-shot | 2 | +7.50 | [+4.04, +10.96] |" in md  # 7.5 -+ 3.46
    assert "| `maml_real` | 1-shot | 4 | -7.50 | [-11.74, -3.26] |" in md  # -7.5 -+ 4.24
    assert "| `maml_real` | 5-shot | 2 | -2.50 | [-5.96, +0.96] |" in md
    _assert_png(root / "plots/summary.png")


def test_readme_rewritten_only_between_both_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- summary:start -->\nold table\n<!-- summary:end -->\nrest\n")
    assert update_readme(readme, "| new |")
    assert readme.read_text() == "intro\n<!-- summary:start -->\n| new |\n<!-- summary:end -->\nrest\n"
    readme.write_text("intro\n<!-- summary:start -->\nno end marker\n")
    assert not update_readme(readme, "| new |")
    assert readme.read_text() == "intro\n<!-- summary:start -->\nno end marker\n"


def _rev(rev, name, params, results=None, error=None, executor=None):
    """One revision in `dvc exp show --json` (DVC 3.x): params and metrics under their file, "data" each."""
    metrics = {} if results is None else {"metrics/eval.json": {"data": results}}
    entry = {"rev": rev, "name": name, "error": error,
             "data": {"rev": rev, "timestamp": None, "params": {"params.yaml": {"data": params}},
                      "metrics": metrics, "deps": {}, "outs": {}, "meta": {}}}
    return entry, executor


def _params(q, steps):
    return {"seed": 0, "invert": {"method": "bidf", "bidf": {"q": q, "steps": steps}, "images_per_class": 20},
            "query": {"answer": "probs"}, "distill": {"iterations": 300}}


def _results(bidf_acc, api, seconds):
    bidf = {"1shot": {"acc": bidf_acc, "ci95": 0.9}, "5shot": {"acc": bidf_acc + 10, "ci95": 0.5},
            "api_images": api, "seconds": seconds}
    return {"random": {"1shot": {"acc": 60.0, "ci95": 1.0}, "5shot": {"acc": 70.0, "ci95": 0.8}, "api_images": 0},
            "maml_real": {"1shot": {"acc": 80.0, "ci95": 0.7}, "5shot": {"acc": 90.0, "ci95": 0.3}},  # no api_images
            "bidf_mkd": bidf}


def _exp_show(*baselines):
    out = []
    for (base, _), exps in baselines:
        out.append({**base, "experiments": [{"revs": [e], "executor": ex, "name": e["name"]} for e, ex in exps]
                    or None})
    return out


EVAL_JSON = str(paths.EVAL_JSON)  # the metrics file `dvc exp show` lists, as stage `report` names it
SHA = "4d1b930d9364be0fed7560adf043378dcbba3623"
EXP_SHOW = _exp_show(
    (_rev("workspace", None, _params(5, 40), _results(72.0, 24000, 200.0)), []),
    (_rev(SHA, "main", _params(5, 40), _results(71.0, 24000, 210.0)), [  # same params as the workspace: dropped
        _rev("a" * 40, "fast", _params(2, 20), _results(65.0, 6000, None),  # seconds unknown
             executor={"state": "success"}),
        _rev("b" * 40, "fast-again", _params(2, 20), _results(66.0, 6000, 50.0)),  # duplicate params: dropped
        _rev("c" * 40, None, _params(10, 20), _results(74.0, 22000, 300.0)),  # no name: short sha
        _rev("d" * 40, "broken", _params(99, 40), _results(50.0, 1, 1.0), error={"msg": "Experiment run failed"},
             executor={"state": "failed"}),
        _rev("e" * 40, "waiting", _params(3, 40), executor={"state": "queued"}),
        _rev("f" * 40, "running", _params(4, 40), _results(1.0, 1, 1.0), executor={"state": "running"}),
    ]),
)


def test_collect_rows_dedup_and_skips():
    rows = collect(EXP_SHOW, EVAL_JSON)
    assert [(r["experiment"], r["model"], r["shot"]) for r in rows] == [
        (e, m, k) for e in ("workspace", "fast", "ccccccc") for m in ("random", "bidf_mkd") for k in (1, 5)]
    assert rows[2] == {"experiment": "workspace", "model": "bidf_mkd", "shot": 1, "method": "bidf", "answer": "probs",
                       "q": 5, "steps": 40,
                       "images_per_class": 20, "iterations": 300, "api_images": 24000, "seconds": 200.0,
                       "acc": 72.0, "ci95": 0.9}
    assert math.isnan(rows[7]["seconds"]) and rows[7]["api_images"] == 6000 and rows[7]["acc"] == 75.0


def test_tradeoff_writes_csv_and_plots(tmp_path):
    tradeoff(EXP_SHOW, tmp_path, EVAL_JSON)
    df = pd.read_csv(tmp_path / "tradeoff.csv")
    assert list(df.columns) == ["experiment", "model", "shot", "method", "answer", "q", "steps", "images_per_class", "iterations",
                                "api_images", "seconds", "acc", "ci95"]
    bidf = df[df["model"] == "bidf_mkd"].set_index(["experiment", "shot"])
    assert bidf.loc[("ccccccc", 5), ["q", "steps", "api_images", "seconds", "acc", "ci95"]].tolist() == [
        10, 20, 22000, 300.0, 84.0, 0.5]
    assert bidf["seconds"].isna().sum() == 2  # "fast": blank in the CSV
    assert df[df["model"] == "random"]["api_images"].eq(0).all() and len(df) == 12
    for name in ("tradeoff_queries.png", "tradeoff_time.png"):
        _assert_png(tmp_path / name)


def test_zero_api_models_are_reference_lines_not_log_points():
    df = pd.DataFrame(collect(EXP_SHOW, EVAL_JSON), columns=report.TRADEOFF_COLUMNS).astype({"seconds": float})
    fig, ax = plt.subplots()
    report._panel(ax, df[df["shot"] == 1], "seconds", "s", {"random": "k", "bidf_mkd": "r"})
    lines = {line.get_label(): line for line in ax.get_lines()}
    points = {bars.get_label(): bars.lines[0] for bars in ax.containers}
    assert ax.get_xscale() == "log"
    assert sorted(points) == ["bidf_mkd"]
    assert sorted(points["bidf_mkd"].get_xdata()) == [200.0, 300.0]  # "fast" has no seconds: not drawn
    assert set(lines["random (no API images)"].get_ydata()) == {60.0}
    plt.close(fig)


def test_no_api_images_anywhere_is_a_clear_error(tmp_path):
    old = _exp_show((_rev("workspace", None, _params(5, 40), {"random": EVAL["random"]}), []))
    assert collect(old, EVAL_JSON) == []
    with pytest.raises(ReportError, match="no experiment has a metrics/eval.json with api_images"):
        tradeoff(old, tmp_path, EVAL_JSON)


def test_stage_errors_exit_2_with_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        stage.cli(["--summary"])
    assert exc.value.code == 2
    assert "metrics/eval.json not found: run dvc repro first" in capsys.readouterr().err
    monkeypatch.setattr(report.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 253, "", "ERROR: you are not inside of a DVC repository\n"))
    with pytest.raises(SystemExit) as exc:
        stage.cli(["--tradeoff"])
    assert exc.value.code == 2
    assert "`dvc exp show --json` failed (exit 253): ERROR: you are not inside of a DVC repository" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv,summary,tradeoff_", [
    ([], True, True), (["--summary"], True, False), (["--tradeoff"], False, True),
    (["--readme"], True, False), (["--tradeoff", "--readme"], True, True),
])
def test_stage_flags(argv, summary, tradeoff_):
    args = stage.parse_args(argv)
    assert (args.summary, args.tradeoff) == (summary, tradeoff_)
