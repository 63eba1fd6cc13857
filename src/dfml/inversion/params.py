"""The ``invert`` section: pseudo-task recovery from each API, by the method ``invert.method`` names.

Shared by every method: the images recovered per class, the generator that makes them and the data-free image
prior. Each method has its own sub-section (``invert.bidf``, ``invert.surrogate``, ``invert.dfme``,
``invert.cake``); dvc.yaml's stages read ``invert.${invert.method}`` only, so the params of one method never
rerun another's stages.
"""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from ..core.schema import Field, NonNegFloat, NonNegInt, PosFloat, PosInt, Section

Method = Literal["bidf", "surrogate", "dfme", "cake"]


class GeneratorParams(Section):
    """The generator G(z; w) and its latent codes (every method makes its images with one per API)."""

    latent_dim: PosInt = Field(description="generator input size")
    width: Annotated[int, at.Ge(4)] = Field(description="generator channels (release: 128; the cost grows as width^2)")
    lr: PosFloat = Field(description="Adam lr of the generator")
    lr_latent: PosFloat = Field(description="Adam lr of the latent codes")


class PriorParams(Section):
    """Data-free image priors on the generator's output: exact gradients, no API cost."""

    tv: NonNegFloat = Field(description="total variation (DeepInversion, CAKE)")
    l2: NonNegFloat = Field(description="squared l2 norm")
    l1: NonNegFloat = Field(description="l1 norm: dark background, few bright strokes")


class BidfParams(Section):
    """BiDf-MKD's inversion (Hu et al., ICML 2023, Sec. 3.2): CE(A(G(z)), y) by forward differences."""

    gradient: Literal["zo", "exact"] = Field(
        description="zo: forward differences through the API (black-box); exact: the white-box reference")
    q: PosInt = Field(description="random directions per image; each step costs (q + 1) API images per image")
    mu: PosFloat = Field(description="forward-difference step")
    steps: PosInt = Field(description="generator updates per API")
    extra_steps: NonNegInt = Field(description="up to this many more for an API whose agreement is below "
                                               "target_agreement (0: none)")
    target_agreement: Annotated[float, at.Ge(0), at.Le(1)] = Field(
        description="share of the last batch the API answered as the class aimed at")
    directions: Literal["shared", "per_api"] = Field(
        description="shared: one stream of random directions for the APIs in order (the release's way); per_api: "
                    "each API its own stream (needed to spread the APIs over parallel workers)")


class SurrogateParams(Section):
    """Query-efficient extraction (IDEAL, Zhang et al., ICLR 2023; DFMS-HL, Sanyal et al., CVPR 2022): a local
    clone learns from the API's answers, the generator is optimised against the clone with exact gradients."""

    rounds: PosInt = Field(description="rounds of: optimise the generator against the clone, ask the API about "
                                       "fresh images, train the clone on every answer so far")
    images_per_round: PosInt = Field(description="API images per round (one per image); with the final answers, "
                                                 "an API costs rounds * images_per_round + ways * images_per_class")
    clone_width: Annotated[int, at.Ge(4)] = Field(description="filters of the clone's Conv4 (our own architecture)")
    clone_steps: PosInt = Field(description="Adam steps of the clone per round")
    clone_lr: PosFloat = Field(description="Adam lr of the clone")
    clone_batch: Annotated[int, at.Ge(2)] = Field(description="answered images per clone step")
    generator_steps: PosInt = Field(description="generator steps against the clone per round, and at the end")
    balance: NonNegFloat = Field(description="weight of the class-balance term (entropy of the batch's mean "
                                             "prediction; IDEAL)")
    bank_targets: Literal["api", "clone"] = Field(
        description="what the bank files as each recovered image's answer: api (the API's answer as it came) or "
                    "clone (the final clone's probabilities, taught by the API's answers: soft targets from a "
                    "label or top-k API; the API still answers the recovered images once, for the agreement)")


class DFMEParams(Section):
    """DFME (Truong et al., CVPR 2021): a generator seeks inputs where a student and the API disagree (l1 on logits
    recovered from probabilities), by forward differences; the student learns to match the API."""

    iterations: PosInt = Field(description="rounds of generator and student steps")
    batch: Annotated[int, at.Ge(2)] = Field(description="generated images per round")
    q: PosInt = Field(description="random directions per image of a generator step")
    mu: PosFloat = Field(description="forward-difference step")
    generator_steps: PosInt = Field(description="generator steps per round (n_G)")
    student_steps: PosInt = Field(description="student steps per round (n_S), on the round's answered images")
    student_lr: PosFloat = Field(description="Adam lr of the student (a Conv4 of clone_width filters)")
    student_width: Annotated[int, at.Ge(4)] = Field(description="filters of the student's Conv4")
    draw_batches: PosInt = Field(description="most batches drawn from the final generator to fill each class "
                                             "(one API image per image)")


class CAKEParams(Section):
    """CAKE (Braun, Mundt, Kersting, 2023): pairs of samples across classes driven contrastively toward the API's
    decision boundary, a total-variation prior, Langevin noise to spread them along it; here by forward
    differences through the API."""

    steps: PosInt = Field(description="generator updates per API")
    q: PosInt = Field(description="random directions per image")
    mu: PosFloat = Field(description="forward-difference step")
    contrast: NonNegFloat = Field(description="weight of the boundary term (log p_y - log p_pair)^2 of each image "
                                              "and its partner of another class")
    tv: NonNegFloat = Field(description="total-variation prior (added to invert.prior.tv)")
    noise: NonNegFloat = Field(description="Langevin noise on the latent codes: sqrt(2 lr_latent) * noise * N(0, 1) "
                                           "after each step")


class InvertParams(Section):
    """Pseudo-task recovery from each API (stage `invert`), by the method ``invert.method`` names."""

    method: Method = Field(description="bidf (BiDf-MKD) | surrogate (a clone, exact gradients through it) | "
                                       "dfme | cake")
    images_per_class: Annotated[int, at.Ge(2)] = Field(
        description="recovered images per class (support and query sets are drawn from them)")
    generator: GeneratorParams
    prior: PriorParams
    bidf: BidfParams
    surrogate: SurrogateParams
    dfme: DFMEParams
    cake: CAKEParams

    @property
    def exact_gradients(self) -> bool:
        """Whether recovery reads the APIs' input gradients (the white-box variant), so needs their weights."""
        return self.method == "bidf" and self.bidf.gradient == "exact"


def used(cfg: InvertParams) -> dict:
    """The part of ``invert`` that decides a run with ``cfg.method``: the shared keys and that method's sub-section
    (checkpoint fingerprints; the other methods' sub-sections never count)."""
    return {"method": cfg.method, "images_per_class": cfg.images_per_class, "generator": cfg.generator.model_dump(),
            "prior": cfg.prior.model_dump(), cfg.method: getattr(cfg, cfg.method).model_dump()}
