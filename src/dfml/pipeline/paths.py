"""Where every artifact of the pipeline lives, relative to the repository root; each path is written here once.

``dvc.yaml`` names the same paths (a test checks that every stage's outs are these). A BiDf-MKD variant
(:data:`dfml.inversion.variants.VARIANTS`) keeps its files under its own suffix (``_whitebox``).
"""

from __future__ import annotations

from pathlib import Path

from ..inversion.variants import Variant

PARAMS_CHECKED = Path("metrics/params_checked.json")
DOWNLOADS = Path("data/downloads")
PREPARED = Path("data/prepared")
DATA_METRICS = Path("metrics/data.json")

POOL = Path("models/apis")
POOL_INDEX = POOL / "pool.json"
POOL_METRICS = Path("metrics/apis.json")

CHECKPOINTS = Path("checkpoints")

MAML_CURVE_CSV = Path("plots/maml_real_curve.csv")
MAML_CURVE_PNG = Path("plots/maml_real_curve.png")
MAML_METRICS = Path("metrics/maml_real.json")
MAML_STEPS = Path("plots/maml_real")  # DVCLive's step metrics

COST_DIR = Path("metrics/cost")  # each model's training cost, {"api_images", "seconds"}: not in its checkpoint
EVAL_DIR = Path("metrics/eval")
EPISODES_DIR = Path("plots/episodes")
EVAL_JSON = Path("metrics/eval.json")
EVAL_SETTINGS = Path("metrics/eval_settings.json")
EPISODES_CSV = Path("plots/episodes.csv")
EVAL_PNG = Path("plots/eval.png")
SUMMARY_MD = Path("plots/summary.md")
SUMMARY_PNG = Path("plots/summary.png")
TRADEOFF_DIR = Path("plots")
README = Path("README.md")


def model(name: str) -> Path:
    """The checkpoint of model `name` (what `evaluate_model@<name>` evaluates)."""
    return Path("models") / f"{name}.pt"


def model_metrics(name: str) -> Path:
    """A baseline's training metrics."""
    return Path("metrics") / f"{name}.json"


def cost_json(name: str) -> Path:
    """Model `name`'s training cost, written by the stage that trains it. The wall seconds are kept out of the
    checkpoint so that the same params and seed give the same checkpoint bytes, and DVC skips the evaluation."""
    return COST_DIR / f"{name}.json"


def eval_json(name: str) -> Path:
    return EVAL_DIR / f"{name}.json"


def episodes_csv(name: str) -> Path:
    return EPISODES_DIR / f"{name}.csv"


def checkpoints(stage: str, variant: Variant | None = None) -> Path:
    return CHECKPOINTS / f"{stage}{variant.suffix if variant else ''}"


def bank(v: Variant) -> Path:
    return Path(f"data/bank{v.suffix}")


def invert_metrics(v: Variant) -> Path:
    return Path(f"metrics/invert{v.suffix}.json")


def invert_samples(v: Variant) -> Path:
    return Path(f"plots/invert{v.suffix}_samples.png")


def distill_metrics(v: Variant) -> Path:
    return Path(f"metrics/distill{v.suffix}.json")


def curve_csv(v: Variant) -> Path:
    return Path(f"plots/distill{v.suffix}_curve.csv")


def curve_png(v: Variant) -> Path:
    return Path(f"plots/distill{v.suffix}_curve.png")


def steps_dir(v: Variant) -> Path:
    """DVCLive's step metrics of a distill run."""
    return Path(f"plots/distill{v.suffix}")
