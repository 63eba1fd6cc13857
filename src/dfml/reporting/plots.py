"""Write curves as CSV (for `dvc plots`) and PNG (for people)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save_png(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def training_curve_png(df: pd.DataFrame, title: str, path: Path) -> None:
    """Meta-val accuracy against meta-iteration, and cumulative API images when present."""
    has_api = "api_images" in df and df["api_images"].max() > 0
    fig, axes = plt.subplots(1, 2 if has_api else 1, figsize=(10 if has_api else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    ax.plot(df["iteration"], df["val_acc"], marker="o")
    ax.set_xlabel("meta-iteration"); ax.set_ylabel("meta-val accuracy (%)"); ax.set_title(title); ax.grid(alpha=.3)
    if has_api:
        ax2 = axes[0, 1]
        ax2.plot(df["api_images"], df["val_acc"], marker="o", color="tab:red")
        ax2.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1e3:,.0f}k"))
        ax2.set_xlabel("cumulative API images (invert + distill)")
        ax2.set_ylabel("meta-val accuracy (%)"); ax2.grid(alpha=.3)
    save_png(fig, path)


SHOT_KEY = re.compile(r"^(\d+)shot$")


def eval_bars_png(results: dict, path: Path) -> None:
    """Meta-test accuracy with 95% intervals, one group per shot, one bar per model.

    Args:
        results: ``metrics/eval.json``: model -> ``{"<K>shot": {"acc", "ci95"}, ...}``; other keys of a model
            (``api_images``, ``seconds``) are not plotted. In the mh scenario a model's ``"datasets"``
            (dataset -> ``{"<K>shot": {"acc", "ci95"}}``) gives one group per dataset and shot, then the mean's.
    """
    models = list(results)
    shots = [k for k in next(iter(results.values())) if SHOT_KEY.match(k)]
    groups = [(f"5-way {s}", lambda r, s=s: r[s]) for s in shots]
    datasets = next(iter(results.values())).get("datasets") or {}
    if datasets:
        groups = [(f"{d}\n{s}", lambda r, d=d, s=s: r["datasets"][d][s]) for d in datasets for s in shots] + [
            (f"mean\n{s}", lambda r, s=s: r[s]) for s in shots]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(models) * len(groups) / 2, 3.8))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [get(results[m])["acc"] for _, get in groups], width,
               yerr=[get(results[m])["ci95"] for _, get in groups], capsize=3, label=m)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(groups))], [label for label, _ in groups])
    ax.set_ylabel("meta-test accuracy (%) +- 95% CI"); ax.legend(fontsize=8); ax.grid(axis="y", alpha=.3)
    lo = min(get(results[m])["acc"] for m in models for _, get in groups)
    ax.set_ylim(max(0, lo - 15), 100)
    save_png(fig, path)


def image_grid_png(images: list, path: Path, per_class: int = 6, title: str = "") -> None:
    """One row per API: `per_class` recovered images of each class side by side.

    Args:
        images: per API a tensor ``[N, n, C, H, W]`` in ``[0, 1]``.
    """
    import torch

    rows = []
    for im in images:
        k = min(per_class, im.shape[1])
        tiles = im[:, :k]  # [N, k, C, H, W]
        row = torch.cat([torch.cat(list(tiles[c]), dim=-1) for c in range(tiles.shape[0])], dim=-1)  # [C, H, N*k*W]
        rows.append(row)
    grid = torch.cat(rows, dim=-2)
    fig, ax = plt.subplots(figsize=(min(16, grid.shape[-1] / 40), max(1.5, grid.shape[-2] / 40)))
    if grid.shape[0] == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    save_png(fig, path)


def step_metrics(rows: list[dict], folder: Path, step: str = "iteration") -> None:
    """A training curve through DVCLive (``Live(dir=folder, dvcyaml=False)``): one TSV per metric under
    ``folder/plots/metrics`` (steps = the rows' `step` column) and the last values in ``folder/metrics.json``, as
    ``dvc exp show`` and ``dvc plots`` read them. Written from the finished curve in one go, so a resumed run
    writes the same files as an uninterrupted one.

    Args:
        rows: ``[{step: int, metric: number, ...}]`` (NaN values, such as the loss before the first step, are left out).
    """
    import math
    import shutil

    from dvclive import Live

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    with Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for row in rows:
            live.step = int(row[step])
            for key, value in row.items():
                if key != step and isinstance(value, (int, float)) and not math.isnan(value):
                    live.log_metric(key, value)
