"""The API owner's side: train the pool of per-task classifiers (the only code that sees their weights).

Each API is trained on its own `ways`-way task of meta-train classes drawn by
seed (classes may repeat across APIs, as in the BiDf-MKD release), with an
80/20 split of each class's images; the held-out accuracy is measured on the 20%.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..data.prepared import Prepared
from ..models import build_classifier
from ..utils import derive_seed, torch_save_atomic


def _optimizer(name: str, arch: str, params, lr: float):
    if name == "auto":
        name = "adam" if arch == "conv4" else "sgd"
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def train_api(data: Prepared, classes: list[int], arch: str, cfg: dict, seed: int,
              device: torch.device) -> tuple[dict, float]:
    """Train one API on `classes`; return (state_dict, held-out accuracy in [0, 1])."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx, train_y, test_y = [], [], [], []
    for label, c in enumerate(classes):
        pool = data.by_class[c][torch.randperm(len(data.by_class[c]), generator=gen)]
        cut = max(1, int(round(cfg["train_fraction"] * len(pool))))
        train_idx.append(pool[:cut]); test_idx.append(pool[cut:])
        train_y += [label] * cut; test_y += [label] * (len(pool) - cut)
    xtr = data.images[torch.cat(train_idx)].to(device)
    ytr = torch.tensor(train_y, device=device)
    xte = data.images[torch.cat(test_idx)].to(device)
    yte = torch.tensor(test_y, device=device)

    torch.manual_seed(seed)
    net = build_classifier(arch, data.channels, len(classes), data.image_size).to(device)
    net = net.to(memory_format=torch.channels_last)  # as it is served (InProcessAPI); faster on CPU
    opt = _optimizer(cfg["optimizer"], arch, net.parameters(), cfg["lr"])
    bs = cfg["batch_size"]
    for _ in range(cfg["epochs"]):
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
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item() if len(yte) else float("nan")
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, acc


def build_pool(data: Prepared, cfg: dict, seed: int, out: Path, device: torch.device) -> list[dict]:
    """Train `cfg['count']` APIs into `out/api_XXX.pt`; return their public records."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "pool"))
    train_classes = torch.tensor(data.splits["train"])
    if len(train_classes) < cfg["ways"]:
        raise ValueError(f"apis.ways={cfg['ways']} but the train split has only {len(train_classes)} classes")
    records = []
    for i in tqdm(range(cfg["count"]), desc="pretrain APIs", unit="api"):
        classes = train_classes[torch.randperm(len(train_classes), generator=gen)[:cfg["ways"]]].tolist()
        arch = cfg["arch"]
        name = f"api_{i:03d}"
        state, acc = train_api(data, classes, arch, cfg, derive_seed(seed, "api", i), device)
        torch_save_atomic({"name": name, "arch": arch, "classes": classes,
                           "class_names": [data.class_names[c] for c in classes],
                           "in_channels": data.channels, "image_size": data.image_size,
                           "num_classes": len(classes), "heldout_acc": acc, "state_dict": state},
                          out / f"{name}.pt")
        records.append({"name": name, "arch": arch, "classes": classes, "heldout_acc": acc})
    return records
