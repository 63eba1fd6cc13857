"""The results report: a summary of the workspace's evaluation and the query / time trade-off across experiments.

Summary (:func:`summary_markdown`, written by stage `report`): ``metrics/eval.json`` and ``plots/episodes.csv`` ->
``plots/summary.md`` (accuracy +- 95% CI, API images and seconds of every model per
shot; the paired difference of :data:`REFERENCE` against every other model on the
shared episodes) and ``plots/summary.png`` (the same accuracies as bars). In the mh
scenario both have a row (group) per dataset, then the mean over datasets.

Trade-off (:func:`tradeoff`): ``dvc exp show --json`` -> :func:`collect` (one row
per experiment x model x shot) -> ``plots/tradeoff.csv`` and :func:`plot_tradeoff`
(accuracy against total API images and against wall seconds).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from matplotlib import ticker

from ..core.io import atomic_write_bytes, write_csv
from ..core.stats import ci95, ci95_of_mean
from ..inversion.variants import VARIANTS
from .plots import SHOT_KEY, plt, save_png
REFERENCE = "bidf_mkd"
README_MARKERS = ("<!-- summary:start -->", "<!-- summary:end -->")

# tradeoff.csv: a column per params.yaml key that sets the API cost or the training time.
PARAM_COLUMNS: dict[str, tuple[str, ...]] = {
    "method": ("invert", "method"),
    "answer": ("query", "answer"),
    "q": ("invert", "bidf", "q"),
    "steps": ("invert", "bidf", "steps"),
    "images_per_class": ("invert", "images_per_class"),
    "iterations": ("distill", "iterations"),
}
TRADEOFF_COLUMNS = ["experiment", "model", "shot", *PARAM_COLUMNS, "api_images", "seconds", "acc", "ci95"]
# tradeoff_<name>.png: the x column and its axis label.
TRADEOFF_AXES: dict[str, tuple[str, str]] = {
    "queries": ("api_images", "total API images (invert + distill), log scale"),
    "time": ("seconds", "training wall seconds (inversion included), log scale"),
}


class ReportError(RuntimeError):
    """The report cannot be made (no experiment to show, `dvc exp show` failed); the message says why."""


# ---------------------------------------------------------------- reading metrics/eval.json

def shot_results(entry: dict) -> dict[int, dict]:
    """``{"1shot": {"acc", "ci95"}, "api_images": ..}`` -> ``{1: {"acc", "ci95"}}`` (the shot entries only)."""
    return {int(m.group(1)): v for k, v in entry.items() if (m := SHOT_KEY.match(k))}


def _optional(entry: dict, key: str) -> float:
    """`entry[key]` as a float, NaN when absent or null."""
    value = entry.get(key)
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------- summary

def _fmt_count(value: float) -> str:
    """``552,000``; blank for NaN."""
    return "" if math.isnan(value) else f"{value:,.0f}"


def _fmt_seconds(value: float) -> str:
    """``357.1``; blank for NaN."""
    return "" if math.isnan(value) else f"{value:,.1f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _acc_cells(per_shot: dict, shots: list[int]) -> list[str]:
    return [f"{per_shot[k]['acc']:.2f} +- {per_shot[k]['ci95']:.2f}" if k in per_shot else "" for k in shots]


def summary_table(results: dict) -> str:
    """Markdown: a row per model; accuracy +- 95% CI per shot, API images, training seconds (blank when unknown).

    mh (a model has ``"datasets"``): a ``dataset`` column, a row per model and dataset, then the model's mean
    over datasets (the ``"<K>shot"`` entries) as ``mean``.
    """
    shots = sorted({k for entry in results.values() for k in shot_results(entry)})
    multi = any("datasets" in entry for entry in results.values())
    rows = []
    for model, entry in results.items():
        cost = [_fmt_count(_optional(entry, "api_images")), _fmt_seconds(_optional(entry, "seconds"))]
        if not multi:
            rows.append([f"`{model}`", *_acc_cells(shot_results(entry), shots), *cost])
            continue
        for dataset, own in (entry.get("datasets") or {}).items():
            rows.append([f"`{model}`", dataset, *_acc_cells(shot_results(own), shots), *cost])
        rows.append([f"`{model}`", "**mean**", *_acc_cells(shot_results(entry), shots), *cost])
    return _markdown(["model", *(["dataset"] if multi else []), *(f"{k}-shot" for k in shots), "API images",
                      "seconds"], rows)


def paired_differences(episodes: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per other model and shot: mean of ``acc[reference] - acc[model]`` over the shared episodes and its
    95% half-width ``1.96 * std / sqrt(n)`` (population std, as :func:`~dfml.evaluation.episodic.ci95`).

    mh (`episodes` has a ``dataset`` column; episodes are numbered per dataset): a row per dataset, then a
    ``mean`` row: the mean over datasets of their mean differences with the interval of a mean of independent
    means (:func:`~dfml.evaluation.episodic.ci95_of_mean`), as the mean accuracies of ``metrics/eval.json``.
    """
    if "dataset" not in episodes:
        return _paired(episodes, ["shot", "episode"], reference)
    per = _paired(episodes, ["dataset", "shot", "episode"], reference)
    rows = []
    for (model, shot), part in per.groupby(["model", "shot"], sort=False):
        rows += part.to_dict("records")
        if part["dataset"].nunique() > 1:
            rows.append({"model": model, "dataset": "mean", "shot": shot, "episodes": int(part["episodes"].sum()),
                         "mean_diff": float(part["mean_diff"].mean()), "ci95": ci95_of_mean(list(part["ci95"]))})
    return pd.DataFrame(rows, columns=["model", "dataset", "shot", "episodes", "mean_diff", "ci95"])


def _paired(episodes: pd.DataFrame, index: list[str], reference: str) -> pd.DataFrame:
    """:func:`paired_differences` on the groups of `index` without its last level (the episode)."""
    wide = episodes.pivot(index=index, columns="model", values="acc")
    groups, rows = index[:-1], []
    if reference in wide:
        for model in (m for m in episodes["model"].unique() if m != reference):
            for key, part in wide.groupby(level=groups):
                key = dict(zip(groups, key if isinstance(key, tuple) else (key,)))
                diff = (part[reference] - part[model]).dropna().to_numpy()
                if len(diff):
                    rows.append({"model": model, **key, "shot": int(key["shot"]), "episodes": len(diff),
                                 "mean_diff": float(diff.mean()), "ci95": ci95(diff)})
    return pd.DataFrame(rows, columns=["model", *groups, "episodes", "mean_diff", "ci95"])


def paired_table(diffs: pd.DataFrame, reference: str = REFERENCE) -> str:
    """Markdown: a row per (model, shot) with the mean paired difference and its 95% interval (mh: per dataset
    and their mean)."""
    multi = "dataset" in diffs
    rows = [[f"`{r.model}`", *([f"**{r.dataset}**" if r.dataset == "mean" else r.dataset] if multi else []),
             f"{r.shot}-shot", str(r.episodes), f"{r.mean_diff:+.2f}",
             f"[{r.mean_diff - r.ci95:+.2f}, {r.mean_diff + r.ci95:+.2f}]"] for r in diffs.itertuples()]
    return _markdown([f"`{reference}` minus", *(["dataset"] if multi else []), "shot", "episodes",
                      "mean difference", "95% interval"], rows)


def summary_markdown(results: dict, diffs: pd.DataFrame, eval_name: str, episodes_name: str,
                     reference: str = REFERENCE, paper: str = "") -> str:
    """The whole summary (``plots/summary.md``): the results table, the paired differences, then `paper` (the
    quoted paper rows of :func:`~dfml.reporting.paper.paper_section`, when the dataset has any).

    Args:
        eval_name, episodes_name: the files the tables come from, as the text names them.
    """
    paired = paired_table(diffs, reference) if len(diffs) else f"No episodes of `{reference}` to compare."
    return (f"# Results\n\nMeta-test accuracy (%) +- 95% CI (`{eval_name}`); API images sent by the model's "
            f"training; training wall seconds (inversion included).\n\n{summary_table(results)}\n\n"
            f"## Paired differences\n\nAccuracy of `{reference}` minus each model on the same episodes "
            f"(`{episodes_name}`): mean and 95% interval, mean +- 1.96 * std / sqrt(episodes).\n\n{paired}\n"
            + (f"\n{paper}" if paper else ""))


def update_readme(readme: Path, block: str) -> bool:
    """Replace what stands between the README's summary markers with `block`; False (file untouched) when
    the file or either marker is missing."""
    start, end = README_MARKERS
    text = readme.read_text() if readme.is_file() else ""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return False
    atomic_write_bytes(readme, (text[:i + len(start)] + "\n" + block + "\n" + text[j:]).encode())
    return True


# ---------------------------------------------------------------- trade-off: gathering

def exp_show(root: Path = Path(".")) -> list:
    """``dvc exp show --json`` run in `root` (with this interpreter's dvc), parsed."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReportError(f"`dvc exp show --json` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ReportError(f"`dvc exp show --json` printed no JSON ({exc}): {proc.stdout[:300]!r}") from exc


def _label(entry: dict) -> str:
    """An experiment's or branch's name, else the short commit (``workspace`` as it is)."""
    rev = entry["rev"]
    return entry.get("name") or (rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev)


def _revisions(exp_show_json: list) -> Iterator[tuple[str, dict]]:
    """(label, rev entry) of every finished revision: each baseline (the workspace first, as DVC lists it)
    and each experiment whose run did not fail and is not queued or running."""
    for baseline in exp_show_json:
        yield _label(baseline), baseline
        for exp in baseline.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue
            for rev in exp.get("revs") or []:
                yield _label(rev), rev


def _eval_and_params(rev: dict, eval_name: str) -> tuple[dict, dict] | None:
    """The rev's `eval_name` (``metrics/eval.json``) and ``params.yaml`` contents; None when it errored or has
    no eval."""
    data = rev.get("data") or {}
    evaluation = (data.get("metrics") or {}).get(eval_name) or {}
    if rev.get("error") or "data" not in evaluation:
        return None
    return evaluation["data"], ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}


def _lookup(params: dict, keys: tuple[str, ...]) -> Any:
    """``params[k0][k1]...``; None when a level is missing."""
    for key in keys:
        params = params.get(key) if isinstance(params, dict) else None
    return params


def _rows(label: str, results: dict, params: dict) -> list[dict]:
    """One row per model that reports ``api_images`` and per shot."""
    settings = {col: _lookup(params, keys) for col, keys in PARAM_COLUMNS.items()}
    return [{"experiment": label, "model": model, "shot": shot, **settings,
             "api_images": entry["api_images"], "seconds": _optional(entry, "seconds"),
             "acc": res["acc"], "ci95": res["ci95"]}
            for model, entry in results.items() if entry.get("api_images") is not None
            for shot, res in shot_results(entry).items()]


def collect(exp_show_json: list, eval_name: str) -> list[dict]:
    """Rows (:data:`TRADEOFF_COLUMNS`) of every revision in `dvc exp show --json` output that has
    `eval_name` (``metrics/eval.json``); of revisions with identical params only the first listed is kept."""
    rows, seen = [], set()
    for label, rev in _revisions(exp_show_json):
        found = _eval_and_params(rev, eval_name)
        if found is None:
            continue
        key = json.dumps(found[1], sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows += _rows(label, *found)
    return rows


# ---------------------------------------------------------------- trade-off: plotting

FORCED_GRADIENT = {v.model: v.gradient for v in VARIANTS.values() if v.gradient}  # model -> its label


def _panel(ax, df: pd.DataFrame, x: str, xlabel: str, colors: dict[str, Any]) -> None:
    """Methods that send API images: accuracy +- CI against `x` (log); the others: horizontal references
    at their mean accuracy over the experiments."""
    points = df[(df["api_images"] > 0) & (df[x] > 0)]
    points = points.drop_duplicates(["model", "api_images", "seconds", "acc"])  # one run seen by two experiments
    for model, part in points.groupby("model", sort=False):
        part = part.sort_values(x)
        ax.errorbar(part[x], part["acc"], yerr=part["ci95"], marker="o", capsize=3, color=colors[model],
                    label=model)
        for row in part.itertuples():
            how = FORCED_GRADIENT.get(model) or f"q={row.q}"  # white-box: exact gradients, no directions
            ax.annotate(f"{how} s={row.steps}", (getattr(row, x), row.acc), fontsize=6,
                        textcoords="offset points", xytext=(4, -9))
    for model, part in df[df["api_images"] == 0].groupby("model", sort=False):
        ax.axhline(part["acc"].mean(), linestyle="--", color=colors[model], label=f"{model} (no API images)")
    if len(points):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("meta-test accuracy (%) +- 95% CI")
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)


def _tradeoff_png(df: pd.DataFrame, x: str, xlabel: str, path: Path) -> None:
    """One panel per shot; a model keeps its colour across panels and files."""
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(df["model"].unique())}
    shots = sorted(df["shot"].unique())
    fig, axes = plt.subplots(1, len(shots), figsize=(5.5 * len(shots), 4), squeeze=False)
    for ax, shot in zip(axes[0], shots):
        _panel(ax, df[df["shot"] == shot], x, xlabel, colors)
        ax.set_title(f"{shot}-shot")
    save_png(fig, path)


def plot_tradeoff(rows: list[dict], out_dir: Path) -> list[Path]:
    """``tradeoff_queries.png`` and ``tradeoff_time.png`` in `out_dir` from :func:`collect` rows (non-empty)."""
    df = pd.DataFrame(rows, columns=TRADEOFF_COLUMNS).astype({"api_images": float, "seconds": float})
    paths = []
    for name, (x, xlabel) in TRADEOFF_AXES.items():
        paths.append(Path(out_dir) / f"tradeoff_{name}.png")
        _tradeoff_png(df, x, xlabel, paths[-1])
    return paths


def tradeoff(exp_show_json: list, out_dir: Path, eval_name: str) -> pd.DataFrame:
    """:func:`collect`, then ``tradeoff.csv`` and the two plots in `out_dir`; the rows as a frame."""
    rows = collect(exp_show_json, eval_name)
    if not rows:
        raise ReportError(f"no experiment has a {eval_name} with api_images: run dvc repro (or dvc exp run) "
                          "with the current evaluate stage first")
    df = write_csv(rows, Path(out_dir) / "tradeoff.csv")
    plot_tradeoff(rows, out_dir)
    return df
