"""runtime.engine: the per-API work of `pretrain` and `invert` on Ray workers gives what the in-process loop gives.

The Ray runs are the real stage scripts on the tiny config of test_pipeline_e2e.py, as subprocesses with one torch
thread (the in-process reference too: CPU kernels sum in an order that depends on the thread count), each starting
a local Ray (about 10-20 s on a busy machine): they are marked `slow`. The rest (the shared ledger, the order-free
rule, the messages) needs no Ray.
"""

import json
import shutil
import typing
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, same_values
from dfml.api.base import BlackBoxAPI
from dfml.api.budget import BookLedger, LedgerBook
from dfml.core.errors import BudgetExhausted, EngineError, ParamError
from dfml.inversion.params import InvertParams
from dfml.inversion.recovery import METHODS
from dfml.params import load_params, validate
from dfml.runtime import engine as engines
from dfml.runtime.params import RuntimeParams
from test_pipeline_e2e import run_stage, tiny_env, tiny_params

PER_API = {"invert": {"bidf": {"directions": "per_api"}}}  # bidf, order free
API = (2 + 1) * 5 * 4 * 3 + 5 * 4  # images per tiny API: (q + 1) * 5 classes * 4 images * 3 steps + the answers
STAGE_SECONDS = 400

pytestmark = pytest.mark.usefixtures("one_thread")


def on_ray(workers: int, **ray) -> dict:
    return {"runtime": {"engine": "ray", "ray": {"workers": workers, "cpus_per_worker": 1, **ray}}}


# ---------------------------------------------------------------- no Ray needed (fast)

def test_engine_choices_follow_the_registry():
    assert set(typing.get_args(RuntimeParams.model_fields["engine"].annotation)) == set(engines.ENGINES)
    assert not engines.ENGINES["inprocess"].parallel and engines.ENGINES["ray"].parallel
    params = load_params(ROOT / "params.yaml")
    assert params.runtime.engine == "inprocess"  # the default: the stages' own loop


@pytest.mark.parametrize("method,over,free", [
    ("bidf", {"directions": "shared"}, False),       # the release's one stream of directions, across APIs in order
    ("bidf", {"directions": "per_api"}, True),
    ("bidf", {"directions": "shared", "gradient": "exact"}, True),  # exact gradients draw no direction
    ("surrogate", {}, True), ("dfme", {}, True), ("cake", {}, True),
])
def test_each_method_says_whether_it_is_order_free(method, over, free):
    base = load_params(ROOT / "params.yaml").invert
    cfg = base.model_copy(update={"method": method, "bidf": base.bidf.model_copy(update=over)})
    assert isinstance(cfg, InvertParams) and METHODS[method].order_free_for(cfg) is free


def test_a_method_that_is_not_order_free_stops_ray_before_any_work(tmp_path, monkeypatch, capsys):
    """bidf with shared directions and engine ray: exit 2 with the keys and the fix, before Ray or any file."""
    from dfml.pipeline.invert import invert
    from dfml.pipeline.stage import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(engines.RayEngine, "__init__", no_ray)
    monkeypatch.chdir(tmp_path)  # main() changes into the params file's folder (an empty one: no inputs at all)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(on_ray(2)), sort_keys=False))
    with pytest.raises(SystemExit) as code:
        main("invert", invert, argv=["--params", str(path)])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "[invert] error: runtime.engine: ray recovers the APIs on parallel workers" in err
    assert "invert.bidf.directions: shared" in err and "set invert.bidf.directions: per_api" in err
    assert "or set runtime.engine: inprocess" in err and "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()


class Uniform(BlackBoxAPI):
    def __init__(self, name, ledger, chunk=10):
        super().__init__(name, 2, (1, 2, 2), ledger, chunk)

    def _answer(self, images):
        return torch.full((images.shape[0], 2), 0.5)


def test_the_shared_ledger_never_lets_parallel_queries_pass_the_budget():
    book = engines._LocalBook(LedgerBook(None, 100, 70, "invert"))
    a, b = BookLedger(book, "a"), BookLedger(book, "b")
    a.check("a", 60)  # a's query is under way (reserved, not yet answered) ...
    with pytest.raises(BudgetExhausted) as err:  # ... so b's would pass the run's budget: refused, nothing sent
        Uniform("b", b).query(torch.rand(50, 1, 2, 2))
    assert (err.value.scope, err.value.spent, err.value.budget) == ("run", 60, 100)
    for _ in range(6):
        a.count("a", 10)  # a's chunks answered: reserved images become spent
    with pytest.raises(BudgetExhausted, match="would take API a to 80"):  # the per-API budget spans attempts
        Uniform("a", a).query(torch.rand(20, 1, 2, 2))
    Uniform("b", b).query(torch.rand(40, 1, 2, 2))  # exactly up to the run's budget
    assert book.call("summary") == {"total": 100, "calls": 10, "per_phase": {"invert": 100},
                                    "per_api": {"a": 60, "b": 40}}
    b.end(kept=True)
    assert book.call("snapshot")["discarded"] == 60  # a checkpoint now: a's open attempt is redone, its images spent
    a.end(kept=False)  # a budget stop: a is given up, redone from its start
    assert book.call("summary")["discarded"] == 60


def test_a_dead_worker_s_attempt_stays_spent():
    """The next attempt at an API gives up the open one: its images and what it reserved (maybe sent) are spent."""
    book = engines._LocalBook(LedgerBook({"total": 5, "calls": 1, "per_phase": {"invert": 5}, "per_api": {"x": 5}},
                                         None, None, "invert"))
    dead = BookLedger(book, "a")
    Uniform("a", dead).query(torch.rand(20, 1, 2, 2))
    dead.check("a", 30)  # reserved, then the worker died
    again = BookLedger(book, "a")
    dead.count("a", 10)  # a late count of the dead attempt: spent, and discarded
    Uniform("a", again).query(torch.rand(20, 1, 2, 2))
    again.end(kept=True)
    assert book.call("summary") == {"total": 85, "calls": 6, "per_phase": {"invert": 85},
                                    "per_api": {"a": 80, "x": 5}, "discarded": 60}


def test_a_folder_reaches_workers_on_other_machines_as_the_same_files(tmp_path):
    """With an address, the pool goes through Ray's object store; a worker writes it out once per process."""
    pool = tmp_path / "apis"
    (pool / "sub").mkdir(parents=True)
    (pool / "pool.json").write_text('{"apis": []}')
    (pool / "sub" / "api_000.pt").write_bytes(bytes(range(256)))
    copy = engines.folder_copy(pool)
    there = engines.local_folder(copy)
    assert there != pool and there.name == "apis" and engines.local_folder(copy) == there
    assert {p.relative_to(there): p.read_bytes() for p in there.rglob("*") if p.is_file()} == \
        {p.relative_to(pool): p.read_bytes() for p in pool.rglob("*") if p.is_file()}
    assert engines.local_folder(pool) == pool  # a local Ray's workers read the same disk
    shutil.rmtree(there.parent)


def test_ray_missing_or_misused_is_one_message(monkeypatch):
    runtime = load_params(ROOT / "params.yaml").runtime
    runtime = runtime.model_copy(update={"engine": "ray"})
    with pytest.raises(ParamError, match="runtime.ray.gpus_per_worker is 0.*set runtime.ray.gpus_per_worker"):
        engines.RayEngine(runtime, "invert", torch.device("cuda"))
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` fails
    with pytest.raises(EngineError, match=r"needs the `ray` package.*pip install 'ray>=2.9'.*runtime.engine: "
                                          "inprocess"):
        engines.RayEngine(runtime, "invert", torch.device("cpu"))
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):  # nothing listens there: said at once, no endless retry
        ray = runtime.ray.model_copy(update={"address": address})
        with pytest.raises(EngineError, match=f"runtime.ray.address: nothing answers at '{address}'"):
            engines._probe(ray.address, timeout=2)
    assert validate(tiny_params(on_ray(3, gpus_per_worker=0.25))).runtime.ray.gpus_per_worker == 0.25


# ---------------------------------------------------------------- the stages on a local Ray (slow)

def _stage(stage: str, work: Path, env: dict, code: int = 0) -> str:
    return run_stage(stage, work, env, code, STAGE_SECONDS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Prepared data, then the in-process pool and bank (one thread): ``(folder, env)``."""
    root = tmp_path_factory.mktemp("engine")
    env = tiny_env(root, OMP_NUM_THREADS="1")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(PER_API), sort_keys=False))
    for stage in ("prepare", "pretrain", "invert"):
        _stage(stage, root, env)
    return root, env


def _workspace(path: Path, reference, *overrides: dict, pool: bool = True) -> Path:
    root, _ = reference
    path.mkdir()
    names = ["data/prepared", "metrics/data.json"] + (["models/apis", "metrics/apis.json"] if pool else [])
    for name in names:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (root / name).is_dir() else shutil.copy2)(root / name, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(tiny_params(PER_API, *overrides), sort_keys=False))
    return path


def _set(work: Path, **runtime) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"].update(runtime)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _tensors(folder: Path, pattern: str) -> dict:
    return {p.name: torch.load(p, weights_only=False) for p in sorted(folder.glob(pattern))}


def _invert_metrics(work: Path) -> dict:
    got = json.loads((work / "metrics" / "invert.json").read_text())
    return {k: v for k, v in got.items() if k not in ("seconds", "peak_rss_mb")}


def _assert_same_bank(work: Path, reference) -> None:
    root, _ = reference
    want = _tensors(root / "data" / "bank", "*.pt")
    assert len(want) == 3 and same_values(_tensors(work / "data" / "bank", "*.pt"), want), "banks differ"
    assert json.loads((work / "data" / "bank" / "index.json").read_text()) == \
        json.loads((root / "data" / "bank" / "index.json").read_text())
    assert not (work / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_pool_is_the_same_on_ray_workers(tmp_path, reference, workers):
    root, env = reference
    work = _workspace(tmp_path / "w", reference, on_ray(workers), pool=False)
    out = _stage("pretrain", work, env)
    assert "pool of 3 APIs" in out and "Traceback" not in out
    want = _tensors(root / "models" / "apis", "api_*.pt")
    assert len(want) == 3 and same_values(_tensors(work / "models" / "apis", "api_*.pt"), want), "pools differ"
    assert (work / "models" / "apis" / "pool.json").read_bytes() == (root / "models" / "apis" / "pool.json").read_bytes()
    drop = ("seconds", "peak_rss_mb")
    got, exp = (json.loads((w / "metrics" / "apis.json").read_text()) for w in (work, root))
    assert {k: v for k, v in got.items() if k not in drop} == {k: v for k, v in exp.items() if k not in drop}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_bank_and_the_ledger_are_the_same_on_ray_workers(tmp_path, reference, workers):
    work = _workspace(tmp_path / "w", reference, on_ray(workers))
    out = _stage("invert", work, reference[1])
    assert f"inverted 3 APIs with {3 * API:,} API images" in out and "Traceback" not in out
    _assert_same_bank(work, reference)
    got = _invert_metrics(work)
    assert got == _invert_metrics(reference[0])  # api_images, per-API counts, calls, agreement: all equal
    assert got["ledger"]["per_api"] == {f"api_00{i}": API for i in range(3)}


@pytest.mark.slow
def test_a_lost_worker_is_run_again_to_the_same_bank(tmp_path, reference):
    marker = tmp_path / "crashed"
    env = dict(reference[1], DFML_TEST_CRASH=f"api_001:60:{marker}")  # dies once, 60 images into api_001
    work = _workspace(tmp_path / "w", reference, on_ray(2, retries=1))
    out = _stage("invert", work, env)
    assert marker.exists() and "Traceback" not in out
    _assert_same_bank(work, reference)
    ledger = _invert_metrics(work)["ledger"]
    # the dead attempt's images stay spent (discarded): what it counted and what it had reserved
    assert ledger["discarded"] == 60 and ledger["total"] == 3 * API + 60
    assert ledger["per_api"] == {"api_000": API, "api_001": API + 60, "api_002": API}


@pytest.mark.slow
def test_a_worker_lost_beyond_the_retries_stops_the_stage_and_a_rerun_resumes(tmp_path, reference):
    marker = tmp_path / "crashed"
    env = dict(reference[1], DFML_TEST_CRASH=f"api_001:60:{marker}")
    work = _workspace(tmp_path / "w", reference, on_ray(2, retries=0))
    out = _stage("invert", work, env, code=2)
    assert "[invert] error: a Ray worker of `invert` was lost while on api_001" in out
    assert "after 0 retries (runtime.ray.retries); the finished APIs are kept: run the stage again" in out
    assert "Traceback" not in out and not (work / "data" / "bank").exists()
    state = json.loads((work / "checkpoints" / "invert" / "state.json").read_text())
    assert state["apis_done"] <= 2
    # rerun, here in process (a parallel run's checkpoint continues in either engine): the same bank
    _set(work, engine="inprocess")
    out = _stage("invert", work, env)
    assert f"resuming from checkpoints/invert: {state['apis_done']} of 3 APIs done" in out
    _assert_same_bank(work, reference)
    ledger = _invert_metrics(work)["ledger"]
    assert ledger["total"] - ledger.get("discarded", 0) == 3 * API


@pytest.mark.slow
def test_the_budget_is_never_passed_under_two_workers(tmp_path, reference):
    budget = 2 * API + 100  # two APIs and part of the third
    work = _workspace(tmp_path / "w", reference, on_ray(2), {"runtime": {"budget_images": budget}})
    out = _stage("invert", work, reference[1], code=3)
    assert "[invert] stopped: API image budget exhausted" in out and "Traceback" not in out
    assert "to be redone from" in out and "raise runtime.budget_images and run `dvc repro` again" in out
    spent = json.loads((work / "metrics" / "invert.json").read_text())
    assert spent["complete"] is False and spent["api_images"] <= budget and spent["budget"]["remaining"] >= 0
    assert spent["api_images"] == spent["ledger"]["total"] == sum(spent["ledger"]["per_api"].values())
    assert not (work / "data" / "bank").exists() and (work / "checkpoints" / "invert" / "checkpoint.pt").is_file()
    _set(work, budget_images=None)
    out = _stage("invert", work, reference[1])
    assert "resuming from checkpoints/invert" in out
    _assert_same_bank(work, reference)
    ledger = _invert_metrics(work)["ledger"]
    assert ledger["total"] - ledger.get("discarded", 0) == 3 * API  # stopped APIs redone: their images discarded
