"""The ``evaluate`` section: every model on the same seeded meta-test episodes."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from ..core.schema import Distinct, Field, PosFloat, PosInt, Section

EVAL_MODELS = ("random", "maml_real", "bidf_mkd", "bidf_mkd_whitebox", "best_api", "single_dfkd", "distill_avg")
Model = Literal["random", "maml_real", "bidf_mkd", "bidf_mkd_whitebox", "best_api", "single_dfkd", "distill_avg"]


class RunParams(Section):
    """Which optional stages exist (DVC `foreach` lists); changing a list leaves the other stages be."""

    evaluate: Annotated[list[Model], at.MinLen(1), Distinct] = Field(
        description="the models evaluated (one evaluate_model@<name> stage each); a baseline must be in "
                    "run.baselines, bidf_mkd_whitebox in run.whitebox")
    baselines: Annotated[list[Literal["best_api", "single_dfkd", "distill_avg"]], Distinct] = Field(
        description="the data-free baselines trained (one baseline@<name> stage each)")
    whitebox: list[Literal["bidf_mkd_whitebox"]] = Field(
        description="[bidf_mkd_whitebox]: the white-box reference's stages (exact input gradients)")



class EvaluateParams(Section):
    """The evaluation protocol, the same for every model."""

    shots: Annotated[list[PosInt], at.MinLen(1), Distinct] = Field(description="support images per class of an episode")
    query: PosInt = Field(description="query images per class of an episode")
    episodes: Annotated[int, at.Ge(2)] = Field(description="meta-test episodes per shot")
    val_episodes: Annotated[int, at.Ge(2)] = Field(
        description="meta-val episodes per shot that choose the lr of a model that was not meta-learned")
    adapt_steps: PosInt = Field(description="adaptation steps of models that were not meta-learned (a meta-learned "
                                            "model takes its own inner steps)")
    lr_grid: Annotated[list[PosFloat], at.MinLen(1)] = Field(
        description="adaptation lrs tried on meta-val for models that were not meta-learned")
    episode_batch: PosInt = Field(description="episodes adapted together (memory, not results, on CPU)")

