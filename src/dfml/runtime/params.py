"""The ``runtime`` section: settings that never change results, so no stage lists them in dvc.yaml and no
checkpoint fingerprint holds them (changing them reruns nothing)."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
from pydantic import BeforeValidator

from ..api.params import HTTPParams
from ..core.schema import Field, NonNegFloat, NonNegInt, PosInt, Section


def _yaml_switch(value: object) -> object:
    """YAML 1.1 (PyYAML, ``dvc exp run -S``) reads a bare ``on`` / ``off`` as true / false: take them back."""
    return {True: "on", False: "off"}[value] if isinstance(value, bool) else value


class CheckpointEvery(Section):
    invert: NonNegInt = Field(description="generator steps between checkpoints within one API (0: when an API is "
                                          "done only)")
    distill: NonNegInt = Field(description="meta-iterations between checkpoints (0: none; a budget stop still saves)")


class RayParams(Section):
    """Ray (``runtime.engine: ray``): where the cluster is and what each per-API task gets (docs/engine.md)."""

    address: Annotated[str, at.MinLen(1)] | None = Field(
        description="null: start a local Ray for the stage and stop it after; else a running cluster: 'auto' "
                    "(found on this machine) or 'ray://host:10001'; this repository's code is shipped to it")
    workers: PosInt = Field(description="per-API tasks at a time (pretrain: one API's training; invert: one API's "
                                        "recovery)")
    cpus_per_worker: PosInt = Field(description="CPUs Ray reserves for a task, and its torch threads (CPU results are "
                                                "bit-identical to an inprocess run with as many threads)")
    gpus_per_worker: NonNegFloat = Field(description="GPUs Ray reserves for a task (0.25: four tasks share a GPU); "
                                                     "above 0 when `device` is CUDA")
    retries: NonNegInt = Field(description="times a task whose worker died is run again (Ray max_retries); beyond "
                                           "them the stage stops, finished APIs kept, and a rerun continues")


class RuntimeParams(Section):
    """How a run is carried out, never what it computes: backend, budgets, checkpoints, engine (no stage
    lists it)."""

    backend: Literal["inprocess", "http"] = Field(
        description="inprocess: the pool's checkpoints run in this process; http: a `dfml serve` server (both "
                    "answer alike, bit for bit)")
    http: HTTPParams
    budget_images: PosInt | None = Field(description="API images for the whole run (invert + distill); null: no cap")
    budget_images_per_api: PosInt | None = Field(description="API images per API for the whole run; null: no cap")
    checkpoint_every: CheckpointEvery
    engine: Literal["inprocess", "ray"] = Field(
        description="where per-API work runs (pretrain, invert): inprocess: one API after another in the stage's "
                    "process; ray: Ray tasks, `runtime.ray.workers` at a time (same outputs; docs/engine.md)")
    ray: RayParams
    vmap: Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)] = Field(
        description="meta-batches of `distill` and `maml_real`: on: the tasks of the same shapes adapt together "
                    "under torch.func.vmap; off: one task after another; auto: on for CUDA devices only. Batched "
                    "and looped meta-gradients agree to float rounding, not bit for bit (docs/engine.md)")

    def batched(self, device: object) -> bool:
        """Whether meta-batches run vmapped on `device` (a ``torch.device`` or its name): ``vmap`` on, or auto
        on a CUDA device. On CPU vmapped convolutions become grouped ones and ran slower (measured), so auto
        keeps the loop there, and with it the CPU metrics bit for bit."""
        if self.vmap == "auto":
            return str(getattr(device, "type", device)).split(":")[0] == "cuda"
        return self.vmap == "on"
