import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@pytest.fixture
def one_thread():
    """Small tensors on a shared machine: one torch thread is faster (with two, on cores busy with other work,
    tests ran up to 15x slower) and matches the stage subprocesses. Use: ``pytestmark =
    pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
