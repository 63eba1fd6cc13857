"""Stage `invert`: recover a pseudo task (support and query images) from every API, through queries only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import shutil  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dfml.api import QueryLedger, open_pool  # noqa: E402
from dfml.cli import main  # noqa: E402
from dfml.inversion.gradients import build_estimator  # noqa: E402
from dfml.inversion.invert import invert_api  # noqa: E402
from dfml.reporting.plots import image_grid_png  # noqa: E402
from dfml.utils import derive_seed, read_json, resolve_device, seed_everything, timer, torch_save_atomic, write_json  # noqa: E402,E501


def run(params: dict) -> None:
    cfg, device = params["invert"], resolve_device(params["device"])
    seed_everything(params["seed"])
    meta = read_json(Path("metrics/data.json"))
    ledger = QueryLedger()
    ledger.phase = "invert"
    apis = open_pool(Path("models/apis"), ledger, device, params["apis"]["query_chunk"],
                     whitebox=cfg["gradient"] == "exact")
    gen = torch.Generator().manual_seed(derive_seed(params["seed"], "invert-directions"))
    estimator = build_estimator(cfg, gen)
    out = Path("data/bank")
    tmp = out.with_name(".bank.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    agree, samples = [], []
    with timer() as t:
        for i, api in enumerate(tqdm(apis, desc="invert APIs", unit="api")):
            images, probs, state = invert_api(api, cfg["images_per_class"], meta["channels"], meta["image_size"],
                                              cfg, estimator, derive_seed(params["seed"], "invert", i), device)
            labels = torch.arange(api.num_classes).unsqueeze(1)
            agree.append((probs.argmax(-1) == labels).float().mean().item())
            if i < 6:
                samples.append(images)
            torch_save_atomic({"api": api.name, "images": images, "probs": probs, "state": state.state_dict(),
                               "history": state.history}, tmp / f"{api.name}.pt")
    write_json(tmp / "index.json", {"apis": [a.name for a in apis], "gradient": cfg["gradient"]})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    image_grid_png(samples, Path("plots/invert_samples.png"),
                   title=f"recovered images: one row per API ({len(samples)} of {len(apis)}), classes left to right")
    write_json(Path("metrics/invert.json"), {
        "gradient": cfg["gradient"], "api_images": ledger.total,
        "api_images_per_api": dict(sorted(ledger.per_api.items())),
        "api_agreement_pct": round(100 * sum(agree) / len(agree), 2),
        "seconds": round(t["seconds"], 2), "device": str(device)})
    print(f"inverted {len(apis)} APIs with {ledger.total:,} API images; "
          f"the APIs give the target class to {100 * sum(agree) / len(agree):.1f}% of recovered images")


if __name__ == "__main__":
    main("invert", run)
