"""Writing results without half-written files: atomic writes of bytes, JSON, CSV and torch checkpoints."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: no half-written file stands."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(rows: list[dict], path: Path):
    """Rows as a CSV file (pandas' format: blank for NaN); returns the frame."""
    import pandas as pd

    df = pd.DataFrame(rows)
    atomic_write_bytes(Path(path), df.to_csv(index=False).encode())
    return df


def torch_save_atomic(obj: Any, path: Path) -> None:
    """torch.save through memory, then an atomic write: the same object gives the same bytes
    (saving to a temp path would put its random name inside the zip archive)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
