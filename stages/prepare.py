"""Stage `prepare`: fetch the dataset archives (mirror or download, checksummed) and split classes.

In the mh scenario, every dataset of `apis.datasets` in one common format (dfml.data.multi).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dfml.cli import main  # noqa: E402
from dfml.data.multi import prepare_data  # noqa: E402
from dfml.utils import peak_rss_mb, timer, write_json  # noqa: E402


def run(params: dict) -> None:
    with timer() as t:
        done = prepare_data(params, Path("data/prepared"), Path("data/downloads"))
    write_json(Path("metrics/data.json"), {**done.metrics, "seconds": round(t["seconds"], 2),
                                           "peak_rss_mb": peak_rss_mb()})
    print(done.message)


if __name__ == "__main__":
    main("prepare", run)
