"""Why DFME's bank images are answered as another class than the one they are filed under (docs/recovery.md).

Runs ``invert.method: dfme`` (the params of ``params.yaml``, ``--answer`` for ``query.answer``) on the first
``--apis`` APIs of the pool that ``dvc repro pretrain`` trained, and per API measures, through the query
interface:

- ``draw_counts``: how the API answers ``--draws`` fresh images of the final generator, per class ``[N]``
  (a generator that covers few classes leaves the other classes' rows to images of those few);
- ``bank_agreement``: the share of the bank's images the API answers as the class they are filed under;
- ``agreement_among_random``: the same codes rendered in batches of 100 mixed with random codes (the generator's
  batch norm runs in train mode, so this tells whether rendering the chosen codes together changes them);
- ``agreement_eval_mode``: the same codes rendered with the batch norm's running statistics.

Writes ``results/recovery-methods/diagnostics/dfme_draws_<answer>.json``. About 40 s an API on 2 CPU cores.

    PYTHONPATH=src .venv/bin/python scripts/diagnose_dfme.py [--apis 4] [--answer probs]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.api.backends import open_apis  # noqa: E402
from dfml.api.base import QueryLedger  # noqa: E402
from dfml.core.io import read_json, write_json  # noqa: E402
from dfml.core.seeding import seed_everything  # noqa: E402
from dfml.inversion.recovery import build_method  # noqa: E402
from dfml.params import load_params  # noqa: E402
from dfml.pipeline import paths  # noqa: E402


def agreement(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows ``[B, N]`` whose top answer is the row's label ``[B]``."""
    return round((probs.argmax(1) == labels).float().mean().item(), 4)


def diagnose(api, got, draws: int, rng: torch.Generator) -> dict:
    """The figures of the module docstring for one API's recovered task `got`."""
    gen, z, labels = got.state.generator, got.state.z.detach(), got.state.labels
    with torch.no_grad():
        gen.train()
        fresh = api.query(torch.cat([gen(torch.randn(100, z.shape[1], generator=rng))
                                     for _ in range(-(-draws // 100))])[:draws])
        mixed = torch.cat([z, torch.randn(4 * len(z), z.shape[1], generator=rng)])
        perm = torch.randperm(len(mixed), generator=rng)
        x = torch.cat([gen(part) for part in mixed[perm].split(100)])
        back = torch.empty_like(perm)
        back[perm] = torch.arange(len(perm))
        among = api.query(x[back][:len(z)])
        gen.eval()
        evalmode = api.query(gen(z))
    return {"api": api.name, "draw_counts": torch.bincount(fresh.argmax(1), minlength=api.num_classes).tolist(),
            "bank_agreement": agreement(got.probs.flatten(0, 1), labels),
            "agreement_among_random": agreement(among, labels), "agreement_eval_mode": agreement(evalmode, labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apis", type=int, default=4, help="the first this many APIs of the pool")
    ap.add_argument("--answer", default="probs", help="query.answer: probs | topk | label | rounded")
    ap.add_argument("--draws", type=int, default=500, help="fresh generator images per API for draw_counts")
    args = ap.parse_args()
    if not paths.POOL.exists():
        sys.exit(f"no API pool at {paths.POOL}: run `dvc repro pretrain` first")
    p = load_params("params.yaml")
    p = p.model_copy(update={"invert": p.invert.model_copy(update={"method": "dfme"}),
                             "query": p.query.model_copy(update={"answer": args.answer})})
    seed_everything(p.seed)
    meta, dev, start = read_json(paths.DATA_METRICS), torch.device("cpu"), time.perf_counter()
    apis = open_apis(paths.POOL, p.query, "inprocess", p.runtime.http, QueryLedger(), dev, whitebox=False)
    method = build_method(p.invert, meta["channels"], meta["image_size"], dev, p.seed)
    rng = torch.Generator().manual_seed(p.seed)
    rows = []
    for i, api in enumerate(apis[:args.apis]):
        rows.append(diagnose(api, method.recover(api, i), args.draws, rng))
        print(rows[-1], flush=True)
    out = Path("results/recovery-methods/diagnostics") / f"dfme_draws_{args.answer}.json"
    write_json(out, {"answer": args.answer, "apis": rows, "draws_per_api": args.draws,
                     "classes_answered": [sum(c > 0 for c in r["draw_counts"]) for r in rows],
                     "seconds": round(time.perf_counter() - start, 1), "device": "cpu"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
