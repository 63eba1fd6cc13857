"""In-process backend: the API owner's checkpoint runs in this process, behind the query interface."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from ..models import build_classifier
from .answers import AnswerSettings, make_answer
from .base import BlackBoxAPI, QueryLedger


class InProcessAPI(BlackBoxAPI):
    """Serves one pool checkpoint; its network is private (``_net``) and never returned.

    `answer` picks the answer mode (:mod:`dfml.api.answers`; default: full
    probabilities): each chunk's probabilities are encoded as the server would
    send them and decoded as a client would, so modes can be measured without HTTP.
    """

    def __init__(self, checkpoint: Path, ledger: QueryLedger, device: torch.device, chunk: int = 1024,
                 answer: AnswerSettings | None = None):
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        super().__init__(ck["name"], ck["num_classes"], (ck["in_channels"], ck["image_size"], ck["image_size"]),
                         ledger, chunk)
        net = build_classifier(ck["arch"], ck["in_channels"], ck["num_classes"], ck["image_size"])
        net.load_state_dict(ck["state_dict"])
        self._net = net.to(device).to(memory_format=torch.channels_last).eval()  # 1.5x faster on CPU
        self._device = device
        self.reported_accuracy = ck["heldout_acc"]
        self.answer = make_answer(answer or AnswerSettings())

    @torch.no_grad()
    def _probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The network's own distribution ``[b, N]`` for ``[b, C, H, W]`` (the owner's side; not counted)."""
        x = images.to(self._device).contiguous(memory_format=torch.channels_last)
        return F.softmax(self._net(x), dim=1).to(images.device)

    def _answer(self, images: torch.Tensor) -> torch.Tensor:
        reply = self.answer.encode(self._probabilities(images))
        return self.answer.decode(reply, self.num_classes, self.name)


class WhiteBoxAPI(InProcessAPI):
    """White-box reference only (`invert.gradient: exact`): exposes differentiable outputs.

    Still counts every image it answers; used to measure what exact input
    gradients buy over zero-order estimates, never by the black-box method.
    """

    def differentiable_probs(self, images: torch.Tensor) -> torch.Tensor:
        self.ledger.check(self.name, images.shape[0])
        self.ledger.count(self.name, images.shape[0])
        return F.softmax(self._net(images.to(self._device)), dim=1).to(images.device)


def open_pool(folder: Path, ledger: QueryLedger, device: torch.device, chunk: int = 1024,
              whitebox: bool = False, answer: AnswerSettings | None = None) -> list[BlackBoxAPI]:
    """Open every API listed in ``folder/pool.json`` (sorted by name), answering in mode `answer` (default: probs)."""
    folder = Path(folder)
    index = folder / "pool.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no API pool here; run `dvc repro pretrain` first")
    names = [a["name"] for a in json.loads(index.read_text())["apis"]]
    cls = WhiteBoxAPI if whitebox else InProcessAPI
    return [cls(folder / f"{n}.pt", ledger, device, chunk, answer) for n in names]


def pool_digest(folder: Path) -> str:
    """sha256 of a pool folder's ``pool.json`` and of every checkpoint it lists (names and bytes): two pools
    trained with other params have other digests, even with the same API names and shapes."""
    folder = Path(folder)
    index = folder / "pool.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no API pool here; run `dvc repro pretrain` first")
    h = hashlib.sha256(index.read_bytes())
    for name in sorted(a["name"] for a in json.loads(index.read_text())["apis"]):
        h.update(name.encode())
        h.update(hashlib.sha256((folder / f"{name}.pt").read_bytes()).digest())
    return h.hexdigest()
