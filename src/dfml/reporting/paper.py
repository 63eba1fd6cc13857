"""Published figures to set beside ours, quoted with their source, and how our protocol differs from theirs.

BiDf-MKD's Table 1 (Hu et al., ICML 2023, arXiv 2305.18413; API-SS, 5-way, 600 test episodes, mean accuracy
%), and real-data MAML (Finn et al., ICML 2017, Conv4). The report puts the row of the run's dataset beside
the measured table, marked as quoted; a dataset the paper does not report (Omniglot) gets no such section.
"""

from __future__ import annotations

# dataset -> (source, {model: (1-shot, 5-shot)})
PAPER: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "miniimagenet": ("BiDf-MKD Table 1, API-SS (Hu et al., ICML 2023); maml_real: MAML, Finn et al. 2017", {
        "random": (21.20, 21.13), "best_api": (20.51, 20.39), "single_dfkd": (20.03, 20.14),
        "distill_avg": (20.53, 21.24), "bidf_mkd": (29.35, 39.47), "bidf_mkd_whitebox": (30.66, 42.30),
        "maml_real": (48.70, 63.11)}),
    "cifar-fs": ("BiDf-MKD Table 1, API-SS (Hu et al., ICML 2023); maml_real: Bertinetto et al. 2019", {
        "bidf_mkd": (35.48, 47.58), "bidf_mkd_whitebox": (37.66, 51.16), "maml_real": (58.9, 71.5)}),
    "cub": ("BiDf-MKD Table 1, API-SS (Hu et al., ICML 2023)", {"bidf_mkd": (29.10, 43.43)}),
}

# The reference release's settings (what "paper" means in the protocol table)
RELEASE = {"apis": 100, "q": 100, "generator_steps": 200, "meta_iterations": 60000, "adapt_steps": 10,
           "adapt_lr": 0.01, "images_per_class": 600}


def _settings(section) -> str:
    """``'steps 40, q 10, ...'``: a recovery method's own settings, in its section's order."""
    return ", ".join(f"{key} {value}" for key, value in section.model_dump().items())


def protocol_rows(params, dataset: str) -> list[tuple[str, str, str]]:
    """``(what, the paper / release, this run)`` for each protocol difference that bears on the comparison.

    Args:
        params: the run's :class:`dfml.params.Params`.
    """
    ev, inv, dist = params.evaluate, params.invert, params.distill
    per_class = params.data.subset.images_per_class
    rows = [
        ("adaptation lr of models that were not meta-learned (random, baselines)",
         f"{RELEASE['adapt_lr']} for every model (the paper's Random sits at chance)",
         f"best of {ev.lr_grid} on {ev.val_episodes} meta-val episodes per shot, {ev.adapt_steps} steps"),
        ("adaptation of meta-learned models", f"{RELEASE['adapt_steps']} steps at lr {RELEASE['adapt_lr']}",
         f"as meta-trained: {dist.inner_steps} steps at lr {dist.inner_lr} (bidf_mkd)"),
        ("checkpoint", "best of about 120 evaluations on meta-test",
         f"best of {dist.iterations // dist.val_every + 1} on {dist.val_episodes} meta-val episodes, "
         "evaluated once on meta-test"),
        ("APIs", f"{RELEASE['apis']}", f"{params.apis.count} ({params.apis.epochs} epochs each)"),
        ("inversion", f"bidf: {RELEASE['generator_steps']} generator steps, q = {RELEASE['q']}",
         f"{inv.method}: {_settings(getattr(inv, inv.method))}, generator width {inv.generator.width}"),
        ("meta-iterations", f"{RELEASE['meta_iterations']:,}", f"{dist.iterations:,}"),
    ]
    if dataset == "miniimagenet":
        source = params.data.miniimagenet.source
        ours = ("500 (the data mirror's copy)" if source is None else f"all of {source}") if per_class is None \
            else f"{per_class} (data.subset.images_per_class)"
        rows.append(("images per class", f"{RELEASE['images_per_class']}", ours))
    return rows


def paper_section(dataset: str, results: dict, params=None) -> str:
    """Markdown: the quoted paper rows beside ours, and the protocol differences; '' for a dataset not in
    :data:`PAPER`."""
    if dataset not in PAPER:
        return ""
    source, rows = PAPER[dataset]
    lines = ["## Beside the paper", "", f"Quoted from {source}; ours measured in this run (mean % +- 95% CI).", "",
             "| model | paper 1-shot (quoted) | paper 5-shot (quoted) | ours 1-shot | ours 5-shot |",
             "| --- | --- | --- | --- | --- |"]
    for model in dict.fromkeys([*rows, *results]):
        paper = rows.get(model)
        ours = results.get(model, {})
        cells = [f"{paper[0]:.2f}" if paper else "", f"{paper[1]:.2f}" if paper else ""]
        cells += [f"{ours[k]['acc']:.2f} +- {ours[k]['ci95']:.2f}" if k in ours else "not run"
                  for k in ("1shot", "5shot")]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    if params is not None:
        lines += ["", "Protocol differences:", "", "| | paper / release | this run |", "| --- | --- | --- |"]
        lines += [f"| {what} | {theirs} | {ours} |" for what, theirs, ours in protocol_rows(params, dataset)]
    return "\n".join(lines) + "\n"
