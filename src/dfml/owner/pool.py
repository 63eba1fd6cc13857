"""The API owner's side: train the pool of per-task classifiers (the only code that sees their weights).

Each API is trained on its own `ways`-way task of meta-train classes drawn by
seed (classes may repeat across APIs, as in the BiDf-MKD release), with an
80/20 split of each class's images; the held-out accuracy is measured on the 20%.

What an API is made of depends on `apis.scenario` (:data:`SCENARIOS`):
ss: every API is `apis.arch`; sh: each API's architecture is drawn by seed from
`apis.architectures`; mh: as sh, and API i takes its classes from dataset
``data.datasets[i % len]`` (the prepared data holds them all, tagged per class).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..core.errors import ParamError
from ..core.io import torch_save_atomic
from ..core.seeding import derive_seed
from ..data.prepared import Prepared
from ..models import build_classifier
from .params import PoolParams


HELDOUT_CHUNK = 256


def _optimizer(name: str, arch: str, params, lr: float):
    if name == "auto":
        name = "adam" if arch == "conv4" else "sgd"
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over `n_train` images in batches of `batch_size` (a last batch of one image
    is skipped: batch norm needs two)."""
    full, rest = divmod(n_train, batch_size)
    return full + (rest >= 2)


def epochs_for(n_train: int, cfg: PoolParams) -> int:
    """The epochs an API with `n_train` training images trains for: ``apis.epochs``, or the fewest epochs that
    give ``apis.min_steps`` optimizer steps when that is more."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    if not cfg.min_steps or not per_epoch:
        return cfg.epochs
    return max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))


def train_api(data: Prepared, classes: list[int], arch: str, cfg: PoolParams, seed: int,
              device: torch.device) -> tuple[dict, float]:
    """Train one API on `classes`; return (state_dict, held-out accuracy in [0, 1])."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx, train_y, test_y = [], [], [], []
    for label, c in enumerate(classes):
        pool = data.by_class[c][torch.randperm(len(data.by_class[c]), generator=gen)]
        cut = max(1, int(round(cfg.train_fraction * len(pool))))
        train_idx.append(pool[:cut]); test_idx.append(pool[cut:])
        train_y += [label] * cut; test_y += [label] * (len(pool) - cut)
    xtr = data.pixels(torch.cat(train_idx), device)  # this API's images only, float32 in [0, 1]
    ytr = torch.tensor(train_y, device=device)
    xte = data.pixels(torch.cat(test_idx), device)
    yte = torch.tensor(test_y, device=device)

    torch.manual_seed(seed)
    net = build_classifier(arch, data.channels, len(classes), data.image_size).to(device)
    net = net.to(memory_format=torch.channels_last)  # as it is served (InProcessAPI); faster on CPU
    opt = _optimizer(cfg.optimizer, arch, net.parameters(), cfg.lr)
    bs = cfg.batch_size
    for _ in range(epochs_for(len(ytr), cfg)):
        net.train()
        perm = torch.randperm(len(ytr), generator=gen).to(device)
        for s in range(0, len(perm), bs):
            b = perm[s:s + bs]
            if len(b) < 2:
                continue
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():  # held-out images in chunks of HELDOUT_CHUNK (a MiniImageNet API has 500 at 84 px)
        hits = [net(x).argmax(1) == y for x, y in zip(xte.split(HELDOUT_CHUNK), yte.split(HELDOUT_CHUNK))]
        acc = torch.cat(hits).float().mean().item() if len(yte) else float("nan")
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, acc


@dataclass(frozen=True)
class APIPlan:
    """What one API of the pool is: its architecture, and in mh the dataset its classes come from (else None)."""

    arch: str
    dataset: str | None = None


def draw_architectures(architectures: list[str], count: int, seed: int) -> list[str]:
    """`count` architectures drawn uniformly (with replacement) from `architectures`, reproducibly from `seed`.

    Uses its own stream (``derive_seed(seed, "pool-arch")``), so an sh pool draws the same classes as the ss pool
    of the same seed; only the architectures differ.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "pool-arch"))
    return [architectures[i] for i in torch.randint(len(architectures), (count,), generator=gen).tolist()]


def _plan_ss(cfg: PoolParams, datasets: list[str] | None, seed: int) -> list[APIPlan]:
    return [APIPlan(cfg.arch)] * cfg.count


def _plan_sh(cfg: PoolParams, datasets: list[str] | None, seed: int) -> list[APIPlan]:
    return [APIPlan(a) for a in draw_architectures(cfg.architectures, cfg.count, seed)]


def _plan_mh(cfg: PoolParams, datasets: list[str] | None, seed: int) -> list[APIPlan]:
    return [APIPlan(a, datasets[i % len(datasets)])
            for i, a in enumerate(draw_architectures(cfg.architectures, cfg.count, seed))]


# apis.scenario -> (apis params, data.datasets, seed) -> one plan per API
SCENARIOS: dict[str, Callable[[PoolParams, list[str] | None, int], list[APIPlan]]] = {
    "ss": _plan_ss, "sh": _plan_sh, "mh": _plan_mh}


def plan_pool(cfg: PoolParams, ways: int, seed: int, data: Prepared) -> list[APIPlan]:
    """The plans of `apis.scenario`, checked against the prepared data before any training.

    In mh the datasets are those of the prepared data (``data.datasets`` of params.yaml, in its order). Raises
    ParamError when the prepared data does not suit the scenario (prepared for another one) or a dataset has
    fewer meta-train classes than `ways`.
    """
    if (cfg.scenario == "mh") != data.multi:
        raise ParamError(f"apis.scenario is {cfg.scenario!r} but data/prepared holds {data.datasets}; run `dvc repro` "
                         "(prepare reads data.datasets) rather than the stage alone")
    plans = SCENARIOS[cfg.scenario](cfg, data.datasets, seed)
    for dataset in dict.fromkeys(p.dataset for p in plans):
        n = len(data.split_classes("train", dataset))
        if n < ways:
            where = f"{dataset}'s train split" if dataset else "the train split"
            raise ParamError(f"ways={ways} but {where} has only {n} classes; lower ways or keep more classes "
                             "(data.subset.classes_per_split)")
    return plans


@dataclass(frozen=True)
class APITask:
    """One API of the pool to train: its name, architecture, classes (meta-train class indices), dataset (mh; else
    None) and seed. :func:`plan_tasks` draws them all before any training, so training them is order free."""

    index: int
    name: str
    arch: str
    classes: list[int]
    dataset: str | None
    seed: int


def plan_tasks(data: Prepared, cfg: PoolParams, ways: int, seed: int) -> list[APITask]:
    """Every API's task: the plans of :func:`plan_pool`, with each API's `ways` classes drawn from one generator
    (``derive_seed(seed, "pool")``) in API order, and its training seed ``derive_seed(seed, "api", i)``."""
    plans = plan_pool(cfg, ways, seed, data)
    gen = torch.Generator().manual_seed(derive_seed(seed, "pool"))
    tasks = []
    for i, plan in enumerate(plans):
        train_classes = torch.tensor(data.split_classes("train", plan.dataset))
        classes = train_classes[torch.randperm(len(train_classes), generator=gen)[:ways]].tolist()
        tasks.append(APITask(i, f"api_{i:03d}", plan.arch, classes, plan.dataset, derive_seed(seed, "api", i)))
    return tasks


def task_data(data: Prepared, classes: list[int]) -> Prepared:
    """The prepared data of `classes` only (their images, in the same order; class indices kept), what one API's
    training reads: :func:`train_api` on it gives what it gives on the whole data, bit for bit."""
    images, by_class, start = [], {}, 0
    for c in dict.fromkeys(classes):
        idx = data.by_class[c]
        images.append(data.images[idx])
        by_class[c] = torch.arange(start, start + len(idx))
        start += len(idx)
    labels = torch.cat([torch.full((len(by_class[c]),), c, dtype=torch.long) for c in by_class])
    return Prepared(torch.cat(images), labels, data.class_names, {}, by_class, data.dataset, data.class_datasets)


@dataclass(frozen=True)
class TrainJob:
    """What a worker needs to train one API: its task, the data of its classes (:func:`task_data`), the params."""

    task: APITask
    data: Prepared
    cfg: PoolParams


def train_task(job: TrainJob, shared: object, device: torch.device) -> tuple[dict, float]:
    """Train one API (a job of :meth:`dfml.runtime.engine.Engine.map`): ``(state_dict, held-out accuracy)``."""
    return train_api(job.data, job.task.classes, job.task.arch, job.cfg, job.task.seed, device)


def save_api(out: Path, data: Prepared, task: APITask, state: dict, acc: float) -> dict:
    """Write API `task`'s checkpoint ``out/<name>.pt``; return its public record.

    A record is ``{"name", "arch", "classes", "heldout_acc"}``, plus ``"dataset"`` in mh (the checkpoint too).
    """
    tag = {} if task.dataset is None else {"dataset": task.dataset}
    torch_save_atomic({"name": task.name, "arch": task.arch, "classes": task.classes,
                       "class_names": [data.class_names[c] for c in task.classes],
                       "in_channels": data.channels, "image_size": data.image_size,
                       "num_classes": len(task.classes), "heldout_acc": acc, "state_dict": state, **tag},
                      out / f"{task.name}.pt")
    return {"name": task.name, "arch": task.arch, "classes": task.classes, "heldout_acc": acc, **tag}


def build_pool(data: Prepared, cfg: PoolParams, ways: int, seed: int, out: Path, device: torch.device) -> list[dict]:
    """Train ``cfg.count`` APIs into `out/api_XXX.pt`, one after another; return their records (:func:`save_api`).

    The stage `pretrain` does the same through ``runtime.engine`` (:mod:`dfml.runtime.engine`), with the same
    files."""
    records = []
    for task in tqdm(plan_tasks(data, cfg, ways, seed), desc="pretrain APIs", unit="api"):
        state, acc = train_api(data, task.classes, task.arch, cfg, task.seed, device)
        records.append(save_api(out, data, task, state, acc))
    return records


def pool_index(cfg: PoolParams, datasets: list[str] | None, records: list[dict]) -> dict:
    """``models/apis/pool.json``: the scenario and the records; in sh / mh also the architectures (and datasets)
    the pool was drawn from."""
    index = {"scenario": cfg.scenario, "apis": records}
    if cfg.scenario != "ss":
        index["architectures"] = list(cfg.architectures)
    if cfg.scenario == "mh":
        index["datasets"] = list(datasets)
    return index


def pool_metrics(cfg: PoolParams, ways: int, datasets: list[str] | None, records: list[dict]) -> dict:
    """``metrics/apis.json`` without the stage's seconds and device: held-out accuracy (%) mean / min / max;
    ss: the architecture; sh / mh: the count of APIs per architecture; mh: count and mean accuracy per dataset."""
    def mean(accs):
        return round(100 * sum(accs) / len(accs), 2)

    accs = [r["heldout_acc"] for r in records]
    out = {"count": len(records), "ways": ways}
    if cfg.scenario == "ss":
        out["arch"] = cfg.arch
    else:
        out["scenario"] = cfg.scenario
        counts = Counter(r["arch"] for r in records)
        out["architectures"] = {a: counts[a] for a in cfg.architectures}
    out.update(heldout_acc_mean=mean(accs), heldout_acc_min=round(100 * min(accs), 2),
               heldout_acc_max=round(100 * max(accs), 2))
    if cfg.scenario == "mh":
        out["datasets"] = {}
        for d in datasets:
            mine = [r["heldout_acc"] for r in records if r["dataset"] == d]
            out["datasets"][d] = {"count": len(mine), **({"heldout_acc_mean": mean(mine)} if mine else {})}
    return out
