"""Stages `invert` and `distill`: API backends and answer modes, API image budgets, checkpoints and resuming.

The stage tests run the real stage scripts on the tiny config of test_pipeline_e2e.py (prepared data and API
pool made once per module), as subprocesses with one thread, so that runs compare bit for bit.
"""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, same_values
from dfml.api.answers import MODES, AnswerSettings
from dfml.api.backends import BACKENDS, open_apis
from dfml.api.base import BlackBoxAPI, QueryLedger
from dfml.api.http import APIAccessError
from dfml.api.params import QueryParams
from dfml.core.errors import BudgetExhausted, ParamError
from dfml.core.schema import Section
from dfml.meta.trainer import MetaTrainer
from dfml.meta.undo import IterationUndo
from dfml.params import load_params, result_params, validate
from dfml.runtime.checkpoint import Checkpoint, fingerprint
from dfml.runtime.params import RuntimeParams
from test_bidf import _setup
from test_pipeline_e2e import DVC, _run, make_tiny_repo, run_stage, stage_cmd, tiny_env, tiny_params

# Long enough to stop in the middle: 6 generator steps per API (4, then 2 extra ones: the tiny APIs stay below an
# agreement of 1.0), 16 meta-iterations, boundary queries from 5 on.
# memory_tasks 0: with the tiny pool the task memory can hold fewer (API, class) slots than ways.
RESUMABLE = {"invert": {"bidf": {"steps": 4, "extra_steps": 2, "target_agreement": 1.0}},
             "distill": {"iterations": 16, "boundary_after": 4, "val_every": 4, "memory_tasks": 0},
             "runtime": {"checkpoint_every": {"invert": 2, "distill": 2}}}
STEP = (2 + 1) * 5 * 4        # images per generator step: (q + 1) * 5 classes * 4 images
API = 6 * STEP + 5 * 4        # images per API: steps + the final answers = 380
BOUNDARY = (2 + 1) * 10 + 10  # images per boundary task: (q + 1) * 5 classes * 2 query shots + answers = 40
STAGE_SECONDS = 300
CONTINUE = "raise runtime.budget_images and run `dvc repro` again; finished work is kept"


pytestmark = pytest.mark.usefixtures("one_thread")  # the shared fixture of conftest.py


# ---------------------------------------------------------------- ledger, budgets, backends (in-process, fast)

class CountingAPI(BlackBoxAPI):
    """Uniform answers; counts the images that reached it."""

    def __init__(self, ledger, name="count", chunk=4):
        super().__init__(name, 3, (1, 2, 2), ledger, chunk)
        self.received = 0

    def _answer(self, images):
        self.received += images.shape[0]
        return torch.full((images.shape[0], 3), 1 / 3)


def test_a_query_past_the_budget_sends_nothing():
    ledger = QueryLedger(budget=10)
    api = CountingAPI(ledger)
    api.query(torch.rand(6, 1, 2, 2))
    with pytest.raises(BudgetExhausted, match=r"a query of 6 images to API count would take the run to 12 images, "
                                              r"past its budget of 10 \(6 spent, 4 left\); nothing of it was sent"):
        api.query(torch.rand(6, 1, 2, 2))  # 2 chunks: not even the first goes out
    assert api.received == ledger.total == 6 and ledger.calls == 2
    api.query(torch.rand(4, 1, 2, 2))  # exactly up to the budget is fine
    assert ledger.total == 10 and ledger.budget_report()["remaining"] == 0


def test_per_api_budget_spans_the_run_and_later_stages_continue_the_ledger():
    invert = QueryLedger(budget_per_api=8)
    invert.phase = "invert"
    CountingAPI(invert, "a").query(torch.rand(5, 1, 2, 2))
    distill = QueryLedger(budget=100, budget_per_api=8)
    distill.load_state_dict(invert.summary())
    distill.phase = "distill"
    a, b = CountingAPI(distill, "a"), CountingAPI(distill, "b")
    b.query(torch.rand(8, 1, 2, 2))
    with pytest.raises(BudgetExhausted, match="would take API a to 9 images") as err:
        a.query(torch.rand(4, 1, 2, 2))
    assert err.value.scope == "per API" and err.value.remaining == 3 and a.received == 0
    assert distill.summary() == {"total": 13, "calls": 4, "per_phase": {"invert": 5, "distill": 8},
                                 "per_api": {"a": 5, "b": 8}}


def test_param_choices_follow_the_registries():
    def choices(model, field):
        return set(typing.get_args(model.model_fields[field].annotation))

    assert choices(RuntimeParams, "backend") == set(BACKENDS) and choices(QueryParams, "answer") == set(MODES)


def _params(backend="inprocess", **query):
    params = load_params(ROOT / "params.yaml")
    return params.model_copy(update={"query": params.query.model_copy(update=query),
                                     "runtime": params.runtime.model_copy(update={"backend": backend})})


def _open(params, whitebox=False):
    return open_apis(ROOT / "models" / "apis", params.query, params.runtime.backend, params.runtime.http, QueryLedger(),
                     torch.device("cpu"), whitebox=whitebox)


def test_whitebox_needs_the_inprocess_backend():
    with pytest.raises(ParamError, match="invert.gradient: exact .* needs the API weights.*runtime.backend is 'http'"):
        _open(_params("http"), whitebox=True)


def test_http_backend_checks_the_server_answers_as_params_say(monkeypatch):
    class Remote:
        answer = MODES["topk"](AnswerSettings("topk", topk=3))

    seen = {}

    def fake_pool(url, ledger, chunk, timeout, retry, answer, label_smoothing, pool):
        seen.update(url=url, chunk=chunk, answer=answer, retries=retry.retries, pool=pool)
        return [Remote()]

    monkeypatch.setattr("dfml.api.backends.open_http_pool", fake_pool)
    with pytest.raises(APIAccessError, match="answers topk with topk = 3, params.yaml has query.topk: 2"):
        _open(_params("http", answer="topk", topk=2))
    assert seen == {"url": "http://127.0.0.1:8000", "chunk": 1024, "answer": "topk", "retries": 4,
                    "pool": ROOT / "models" / "apis"}  # the server must serve the run's own pool
    assert len(_open(_params("http", answer="topk", topk=3))) == 1


@pytest.mark.parametrize("section,key,value,msg", [
    ("runtime", "backend", "grpc", "runtime.backend: must be one of 'inprocess', 'http'"),
    ("query", "answer", "logits", "query.answer: must be one of 'probs', 'topk', 'label', 'rounded'"),
    ("query", "label_smoothing", 1.0, "query.label_smoothing: must be a finite number >= 0 and < 1"),
    ("runtime", "budget_images", 0, "runtime.budget_images: must be null, or an integer >= 1"),
    ("runtime", "http", {"url": "127.0.0.1:8000", "timeout": 30, "retries": 4},
     "runtime.http.url: must be an http:// or https:// URL with a host"),
])
def test_bad_api_params_are_named(section, key, value, msg):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section][key] = value
    with pytest.raises(ParamError) as err:
        validate(params)
    assert msg in str(err.value)


def test_fingerprint_ignores_the_runtime_section():
    params = load_params(ROOT / "params.yaml")
    base = fingerprint(result_params(params, "seed", "apis", "query", "invert", "distill", "runtime"))
    runtime = params.runtime.model_copy(update={"budget_images": 5, "budget_images_per_api": 3, "backend": "http",
                                                "checkpoint_every": params.runtime.checkpoint_every.model_copy(
                                                    update={"invert": 7, "distill": 0})})
    other = params.model_copy(update={"runtime": runtime})
    assert fingerprint(result_params(other, "seed", "apis", "query", "invert", "distill", "runtime")) == base
    other = params.model_copy(update={"invert": params.invert.model_copy(
        update={"bidf": params.invert.bidf.model_copy(update={"q": 3})})})
    assert fingerprint(result_params(other, "seed", "apis", "query", "invert", "distill")) != base


def test_checkpoint_with_other_fingerprint_is_ignored_and_cleared(tmp_path, capsys):
    folder = tmp_path / "ck" / "distill"
    Checkpoint(folder, "aaaa", "distill").save({"iteration": 3}, {"iteration": 3})
    assert Checkpoint(folder, "aaaa", "distill").load()["iteration"] == 3
    assert Checkpoint(folder, "bbbb", "distill").load() is None
    assert "ignoring the checkpoint in" in capsys.readouterr().out and not any(folder.iterdir())
    Checkpoint(folder, "bbbb", "distill").finish()
    assert not (tmp_path / "ck").exists()


def test_a_second_run_of_a_stage_is_refused_while_the_first_holds_the_lock(tmp_path):
    """Defect 11: two runs shared checkpoints/<stage>/ without a lock and left a corrupt checkpoint."""
    from dfml.core.errors import CheckpointBusy

    first = Checkpoint(tmp_path / "checkpoints" / "invert", "fp", "invert")
    with first.locked():
        first.save({"done": 1}, {})
        probe = subprocess.run([sys.executable, "-c", (
            "import sys; from dfml.runtime.checkpoint import Checkpoint\n"
            "from dfml.core.errors import CheckpointBusy\n"
            f"ck = Checkpoint({str(tmp_path / 'checkpoints' / 'invert')!r}, 'fp', 'invert')\n"
            "try:\n    ck.locked().__enter__()\nexcept CheckpointBusy as e:\n    print(e); sys.exit(7)")],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), capture_output=True, text=True, timeout=60)
        assert probe.returncode == 7, probe.stderr
        assert f"another run of `invert` (pid {os.getpid()}) is using" in probe.stdout
        with pytest.raises(CheckpointBusy):  # a second holder in the same process is refused too
            with Checkpoint(tmp_path / "checkpoints" / "invert", "fp", "invert").locked():
                pass
        assert first.load() == {"done": 1, "fingerprint": "fp"}  # untouched by the refused runs
        first.finish()
    assert not (tmp_path / "checkpoints").exists()


def test_clearing_removes_the_manifest_first(tmp_path, monkeypatch):
    """Defect 11: a clear killed half-way must not leave a manifest that claims parts which are gone."""
    import shutil as sh

    ck = Checkpoint(tmp_path / "ck", "fp", "invert")
    ck.save({"done": 2}, {})
    ck.save_part("api_000", {"x": 1})
    order = []
    real_unlink, real_rmtree = Path.unlink, sh.rmtree
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (order.append(self.name),
                                                                        real_unlink(self, missing_ok=missing_ok)))
    monkeypatch.setattr(sh, "rmtree", lambda p, *a, **k: (order.append(Path(p).name), real_rmtree(p, *a, **k)))
    ck.clear()
    assert order[0] == "checkpoint.pt" and Checkpoint(tmp_path / "ck", "fp", "invert").load() is None


# ---------------------------------------------------------------- sampler and trainer state (in-process, fast)

def _bidf():
    """test_bidf's two sealed APIs, their banks and a sampler, plus a trainer: ``(sampler, trainer, ledger)``."""
    ledger, model, sampler = _setup(q=2)
    trainer = MetaTrainer(model, 1, 0.1, 1e-2, True, 2.0, validate=lambda p: float(p["head.weight"].detach().sum()))
    return sampler, trainer, ledger


def test_sampler_and_trainer_state_resume_exactly(tmp_path):
    path = tmp_path / "ck.pt"

    def save_at_3(sampler, trainer, undo):
        return lambda it: it == 3 and torch.save({"trainer": trainer.state_dict(),
                                                  "sampler": sampler.state_dict(sorted(undo.changed))}, path)

    sampler, trainer, ledger = _bidf()
    undo = IterationUndo(sampler, ledger, active=False)
    trainer.run(5, sampler, val_every=2, after_iteration=save_at_3(sampler, trainer, undo))
    assert undo.changed == {0, 1}  # boundary queries from iteration 2 on changed both inversion states
    whole, curve = copy.deepcopy(trainer.model.state_dict()), [r["val_acc"] for r in trainer.curve]

    sampler, trainer, _ = _bidf()
    saved = torch.load(path, weights_only=True)
    trainer.load_state_dict(saved["trainer"])
    sampler.load_state_dict(saved["sampler"])
    trainer.run(5, sampler, val_every=2)
    assert same_values(trainer.model.state_dict(), whole) and [r["val_acc"] for r in trainer.curve] == curve
    assert [r["iteration"] for r in trainer.curve] == [0, 2, 4, 5]


def test_rollback_undoes_a_half_done_meta_iteration():
    sampler, trainer, ledger = _bidf()
    undo = IterationUndo(sampler, ledger, active=True)
    trainer.run(2, sampler, val_every=2)
    before, changed, sent = copy.deepcopy(sampler.state_dict()), set(undo.changed), ledger.total
    undo.begin()
    cfg, rows = sampler.cfg, sampler.ways * sampler.cfg.query_shots
    per_task = cfg.boundary_steps * (2 + 1) * rows + rows
    ledger.budget = sent + per_task + rows  # the first boundary task goes out, the second is refused
    with pytest.raises(BudgetExhausted):
        trainer.step(sampler(3))
    undo.rollback()
    assert same_values(sampler.state_dict(), before) and undo.changed == changed
    assert ledger.discarded == ledger.total - sent == per_task


# ---------------------------------------------------------------- the stages themselves (subprocesses)

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Prepared data and the tiny API pool, made once: ``(folder, env)``."""
    root = tmp_path_factory.mktemp("inputs")
    env = tiny_env(root, OMP_NUM_THREADS="1")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(RESUMABLE), sort_keys=False))
    for stage in ("prepare", "pretrain"):
        _stage(stage, root, env)
    return root, env


def _workspace(path: Path, inputs, *overrides: dict) -> Path:
    """A stage working folder with the prepared data and pool of `inputs` and the tiny resumable params."""
    root, _ = inputs
    path.mkdir()
    for name in ("data/prepared", "models/apis", "metrics/data.json", "metrics/apis.json"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (root / name).is_dir() else shutil.copy2)(root / name, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(tiny_params(RESUMABLE, *overrides), sort_keys=False))
    return path


def _set_budget(work: Path, images: int | None) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"]["budget_images"] = images
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _stage(stage: str, work: Path, env: dict, code: int = 0) -> str:
    return run_stage(stage, work, env, code, STAGE_SECONDS)


def _kill_at_checkpoint(stage: str, work: Path, env: dict, ready) -> dict:
    """Start `stage`, SIGKILL it as soon as its checkpoint summary satisfies `ready`; that summary."""
    summary = work / "checkpoints" / stage / "state.json"
    proc = subprocess.Popen(stage_cmd(stage), cwd=work, env=dict(env, PYTHONPATH=str(ROOT / "src")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STAGE_SECONDS
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                state = json.loads(summary.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = None
            if state is not None and ready(state):
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                return state
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    pytest.fail(f"{stage} ended (exit {proc.returncode}) before a checkpoint to kill it at appeared")


def _result(work: Path) -> dict:
    """What a run produced: metrics, the model checkpoint and the bank."""
    bank = {p.stem: torch.load(p, weights_only=True) for p in sorted((work / "data" / "bank").glob("*.pt"))}
    model = torch.load(work / "models" / "bidf_mkd.pt", weights_only=True)
    # what the run spent: wall seconds, and API images that include any a budget stop discarded; checked through
    # metrics/distill.json where it matters, not part of the model
    cost = model.pop("cost")
    assert cost["api_images"] == json.loads((work / "metrics" / "distill.json").read_text())["api_images_total"]
    assert json.loads((work / "metrics" / "cost" / "bidf_mkd.json").read_text())["seconds"] > 0
    return {"invert": json.loads((work / "metrics" / "invert.json").read_text()),
            "distill": json.loads((work / "metrics" / "distill.json").read_text()), "model": model, "bank": bank}


def _assert_same_run(got: dict, want: dict) -> None:
    for key in ("best_iteration", "best_val_acc", "last_val_acc", "iterations", "complete"):
        assert got["distill"][key] == want["distill"][key], key
    assert got["invert"]["api_agreement_pct"] == want["invert"]["api_agreement_pct"]
    assert same_values(got["model"], want["model"]), "model checkpoints differ"
    assert same_values(got["bank"], want["bank"]), "recovered banks differ"


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The uninterrupted run without a budget (in this process: the subprocess runs match it bit for bit)."""
    work = _workspace(tmp_path_factory.mktemp("reference") / "w", inputs)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _in_process(("invert", "distill"), work, monkeypatch)
    assert not (work / "checkpoints").exists()
    return _result(work)


def test_reference_run_spends_as_planned(reference):
    assert reference["invert"]["ledger"] == {"total": 3 * API, "calls": 3 * 7, "per_phase": {"invert": 3 * API},
                                             "per_api": {f"api_00{i}": API for i in range(3)}}
    assert reference["invert"]["generator_steps_per_api"] == {f"api_00{i}": 6 for i in range(3)}  # 4 + 2 extra
    assert reference["distill"]["api_images_distill"] == 12 * 2 * BOUNDARY  # iterations 5..16, 2 API tasks each


def test_budget_stops_cleanly_and_a_larger_budget_resumes_to_the_same_result(tmp_path, inputs, reference,
                                                                              monkeypatch, capsys):
    env = inputs[1]
    work = _workspace(tmp_path / "w", inputs)
    _set_budget(work, API + 2 * STEP)  # api_000 done, api_001 two steps in: the third step would pass it
    out = _stage("invert", work, env, code=3)
    assert "[invert] stopped: API image budget exhausted" in out and CONTINUE in out
    assert "1 of 3 APIs inverted, api_001 at step 2 (of 4, up to 6 while its agreement is below 1.0)" in out
    spent = json.loads((work / "metrics" / "invert.json").read_text())
    assert spent["complete"] is False and spent["budget"]["remaining"] == 0
    assert spent["ledger"]["per_api"] == {"api_000": API, "api_001": 2 * STEP}
    assert not (work / "data" / "bank").exists() and (work / "checkpoints" / "invert" / "api_000.pt").is_file()

    # invert finishes; distill stops in meta-iteration 8, its first boundary task answered, its second refused
    _set_budget(work, 3 * API + 3 * 2 * BOUNDARY + BOUNDARY + 10)
    _in_process(("invert",), work, monkeypatch)
    assert "resuming from checkpoints/invert: 1 of 3 APIs done, api_001 at step 2" in capsys.readouterr().out
    out = _stage("distill", work, env, code=3)
    assert "[distill] stopped" in out and "7 of 16 meta-iterations" in out and CONTINUE in out
    spent = json.loads((work / "metrics" / "distill.json").read_text())
    assert spent["ledger"]["total"] == 3 * API + 3 * 2 * BOUNDARY + BOUNDARY
    assert spent["ledger"]["discarded"] == BOUNDARY  # the half-done iteration is redone; its images stay spent

    _set_budget(work, None)
    _in_process(("distill",), work, monkeypatch)
    assert "resuming from checkpoints/distill at meta-iteration 7 of 16" in capsys.readouterr().out
    got = _result(work)
    _assert_same_run(got, reference)
    assert got["distill"]["ledger"]["total"] == reference["distill"]["ledger"]["total"] + BOUNDARY
    assert not (work / "checkpoints").exists()


def test_killed_stages_resume_to_the_uninterrupted_result(tmp_path, inputs, reference, monkeypatch, capsys):
    env = inputs[1]
    work = _workspace(tmp_path / "w", inputs)
    at = _kill_at_checkpoint("invert", work, env, lambda s: s["apis_done"] >= 1)
    assert at["apis_done"] < 3 and not (work / "data" / "bank").exists()
    _in_process(("invert",), work, monkeypatch)  # a fresh run in this process: quicker than a subprocess
    assert "resuming from checkpoints/invert" in capsys.readouterr().out
    at = _kill_at_checkpoint("distill", work, env, lambda s: s["iteration"] >= 6)  # boundary queries under way
    assert at["iteration"] < 16 and not (work / "metrics" / "distill.json").exists()
    _in_process(("distill",), work, monkeypatch)
    assert "resuming from checkpoints/distill" in capsys.readouterr().out
    got = _result(work)
    _assert_same_run(got, reference)
    assert got["distill"]["ledger"] == reference["distill"]["ledger"]  # counts restored with the checkpoint
    assert not (work / "checkpoints").exists()


def _in_process(stages: tuple[str, ...], work: Path, monkeypatch) -> None:
    """Run stage modules' functions in this process (faster than subprocesses; one thread, as they have)."""
    import importlib

    monkeypatch.chdir(work)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the module-scoped reference fixture runs before the autouse one
    try:
        for stage in stages:
            getattr(importlib.import_module(f"dfml.pipeline.{stage}"), stage)(load_params("params.yaml"))
    finally:
        torch.set_num_threads(threads)


def test_stale_checkpoints_are_ignored(tmp_path, inputs, reference, monkeypatch, capsys):
    work = _workspace(tmp_path / "w", inputs)
    for stage, state in (("invert", {"done": 2}), ("distill", {"iteration": 9})):
        Checkpoint(work / "checkpoints" / stage, "made-with-other-params", stage).save(state, {})
    (work / "checkpoints" / "invert" / "api_000.pt").write_bytes(b"not a bank entry")
    _in_process(("invert", "distill"), work, monkeypatch)
    out = capsys.readouterr().out
    for stage in ("invert", "distill"):
        assert f"[{stage}] ignoring the checkpoint in checkpoints/{stage}: it was made with other params" in out
    _assert_same_run(_result(work), reference)


@pytest.mark.parametrize("mode", ["topk", "label", "rounded"])
def test_each_answer_mode_runs_through_invert_and_distill(tmp_path, inputs, monkeypatch, mode):
    work = _workspace(tmp_path / "w", inputs, {"query": {"answer": mode}, "invert": {"bidf": {"steps": 2, "extra_steps": 0}},
                                               "distill": {"iterations": 6, "val_every": 3}})
    _in_process(("invert", "distill"), work, monkeypatch)
    probs = torch.load(work / "data" / "bank" / "api_000.pt", weights_only=True)["probs"].flatten(0, 1)  # [20, 5]
    assert torch.allclose(probs.sum(1), torch.ones(20), atol=1e-5)
    if mode == "label":
        assert torch.equal(probs.max(1).values, torch.ones(20))  # one-hot
    elif mode == "topk":  # the 3 classes outside the top 2 share what is left evenly
        rest = probs.sort(1).values[:, :3]
        assert torch.allclose(rest, rest[:, :1].expand(-1, 3))
    distill = json.loads((work / "metrics" / "distill.json").read_text())
    assert distill["complete"] and distill["api_images_total"] == 3 * (2 * STEP + 20) + 2 * 2 * BOUNDARY


@pytest.mark.slow
def test_tiny_chain_over_http_equals_inprocess(tmp_path):
    """`dvc repro` with runtime.backend: http against a real `dfml serve` on loopback, then in-process: same results."""
    from test_http import TOKEN, serving

    over = {"runtime": {"backend": "http"}, "query": {"chunk": 64}, "distill": {"memory_tasks": 0}}  # max_batch 64
    repo, env = make_tiny_repo(tmp_path, tiny_params(over), OMP_NUM_THREADS="1", DFML_API_TOKEN=TOKEN)
    _run(DVC + ["repro", "pretrain"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    with serving(repo / "models" / "apis", tmp_path / "serve.log") as (url, _, _):
        params["runtime"]["http"]["url"] = url
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        _run(DVC + ["repro", "distill"], repo, env)
    log = (tmp_path / "serve.log").read_text()
    assert "api=api_002 images=" in log  # the queries went over HTTP
    over_http = _result(repo)
    assert over_http["invert"]["ledger"]["per_api"] == {f"api_00{i}": 3 * STEP + 20 for i in range(3)}

    params["runtime"]["backend"] = "inprocess"  # not a stage param (it never changes results): force the reruns
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("invert", "distill"):
        _run(DVC + ["repro", "--force", "--single-item", stage], repo, env)
    local = _result(repo)
    _assert_same_run(over_http, local)
    for key in ("invert", "distill"):
        assert over_http[key]["ledger"] == local[key]["ledger"]


# ---------------------------------------------------------------- dvc.yaml's params cover what each stage reads

# section model -> where it sits in params.yaml (StudentParams serves two baselines: either name is read)
SECTION_PATHS = {"Params": "", "GeneratorParams": "invert.generator", "PriorParams": "invert.prior",
                 "BidfParams": "invert.bidf", "SurrogateParams": "invert.surrogate", "DFMEParams": "invert.dfme",
                 "CAKEParams": "invert.cake", "DataParams": "data", "Subset": "data.subset", "FolderData": "data.folder",
                 "MiniImageNetData": "data.miniimagenet", "PoolParams": "apis", "QueryParams": "query",
                 "RuntimeParams": "runtime", "HTTPParams": "runtime.http", "CheckpointEvery": "runtime.checkpoint_every",
                 "InvertParams": "invert", "DistillParams": "distill", "MamlParams": "maml_real",
                 "BaselinesParams": "baselines", "StudentParams": "baselines.best_api",
                 "SingleDFKDParams": "baselines.single_dfkd", "EvaluateParams": "evaluate", "RunParams": "run"}


def _record_reads(monkeypatch) -> set[str]:
    """Every params value read from now on, as dotted paths: a key's value, or a whole section when it is
    dumped (checkpoint fingerprints); passing a section around is not a read."""
    reads: set[str] = set()
    real, real_dump = Section.__getattribute__, Section.model_dump

    def path(model, name=None):
        prefix = SECTION_PATHS[type(model).__name__]
        return ".".join(p for p in (prefix, name) if p)

    def spy(self, name):
        value = real(self, name)
        if name in type(self).model_fields and not isinstance(value, Section):
            reads.add(path(self, name))
        return value

    def dump(self, *args, **kwargs):
        reads.add(path(self))
        return real_dump(self, *args, **kwargs)

    monkeypatch.setattr(Section, "__getattribute__", spy)
    monkeypatch.setattr(Section, "model_dump", dump)
    return reads


def _covered(key: str, listed: list[str]) -> bool:
    return any(key == entry or key.startswith(entry + ".") for entry in listed)


def test_dvc_yaml_params_cover_every_key_each_stage_reads(tmp_path, inputs, monkeypatch):
    """The code is the one fact: each stage run in-process on the tiny config, every params key it reads (the
    runtime section aside, which never changes results) must be covered by its params in dvc.yaml, and no
    stage may list the runtime section."""
    import importlib

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    work = _workspace(tmp_path / "w", inputs, {"run": {"baselines": ["best_api"]}})
    monkeypatch.setenv("DFML_DATA_MIRROR", inputs[1]["DFML_DATA_MIRROR"])
    monkeypatch.chdir(work)
    torch.set_num_threads(1)
    plan = [("prepare", ()), ("pretrain", ()), ("invert", ()), ("distill", ()), ("maml_real", ()),
            ("random_init", ()), ("baseline", ("best_api",)), ("evaluate_model", ("bidf_mkd",)),
            ("evaluate_model", ("best_api",))]
    for stage, args in plan:
        params = load_params("params.yaml")
        with pytest.MonkeyPatch.context() as mp:
            reads = _record_reads(mp)
            getattr(importlib.import_module(f"dfml.pipeline.{stage}"), stage)(*args, params)
        body = stages[stage].get("do", stages[stage])
        listed = [str(p).replace("${item}", args[0] if args else "").replace("${invert.method}", params.invert.method)
                  for p in body["params"]]
        missing = sorted(k for k in reads if not k.startswith("runtime") and not _covered(k, listed))
        assert not missing, f"dvc.yaml stage {stage}: reads {missing}, which its params do not list"
        assert not any(entry.startswith("runtime") for entry in listed), f"{stage} lists runtime params"
        unread = [entry for entry in listed if not any(_covered(k, [entry]) for k in reads)]
        assert not unread, f"dvc.yaml stage {stage}: lists {unread}, which it never reads"


# ---------------------------------------------------------------- every recovery method through the stages

@pytest.mark.parametrize("method", ["surrogate", "dfme", "cake"])
def test_each_recovery_method_runs_through_invert_and_distill(tmp_path, inputs, monkeypatch, method):
    """Each method in the real stages on the tiny config: the same bank format, so distill runs unchanged;
    surrogate's boundary queries go to its clones (no API image in distill)."""
    over = {"invert": {"method": method}, "distill": {"iterations": 6, "val_every": 3}}
    work = _workspace(tmp_path / "w", inputs, over)
    _in_process(("invert", "distill"), work, monkeypatch)
    entry = torch.load(work / "data" / "bank" / "api_000.pt", weights_only=True)
    assert entry["images"].shape == (5, 4, 1, 28, 28) and entry["probs"].shape == (5, 4, 5)
    assert set(entry["state"]) == {"generator", "z", "labels"}
    invert = json.loads((work / "metrics" / "invert.json").read_text())
    distill = json.loads((work / "metrics" / "distill.json").read_text())
    assert invert["complete"] and invert["method"] == method
    assert invert["api_images"] == sum(invert["api_images_per_api"].values()) == invert["ledger"]["total"]
    assert distill["complete"] and distill["api_images_invert"] == invert["api_images"]
    if method == "surrogate":
        from dfml.params import load_params as load

        c = load(work / "params.yaml").invert.surrogate
        assert invert["api_images"] == 3 * (c.rounds * c.images_per_round + 20)
        assert distill["api_images_distill"] == 0 and distill["boundary_queries_to"] == "clone"
        assert "clone" in entry
    else:
        assert distill["api_images_distill"] == 2 * 2 * BOUNDARY and distill["boundary_queries_to"] == "api"


def test_surrogate_bank_targets_clone_keeps_the_apis_agreement(tmp_path, inputs, monkeypatch):
    """invert.surrogate.bank_targets: clone changes the bank's answers, not what is counted or the agreement
    (read from the API's answers, kept in the entry as api_answers)."""
    runs = {}
    for targets in ("api", "clone"):
        over = {"invert": {"method": "surrogate", "surrogate": {"bank_targets": targets}}, "query": {"answer": "label"}}
        work = _workspace(tmp_path / targets, inputs, over)
        _in_process(("invert",), work, monkeypatch)
        runs[targets] = (json.loads((work / "metrics" / "invert.json").read_text()),
                         torch.load(work / "data" / "bank" / "api_000.pt", weights_only=True))
    (api_metrics, api_entry), (clone_metrics, clone_entry) = runs["api"], runs["clone"]
    assert clone_metrics["api_agreement_pct_per_api"] == api_metrics["api_agreement_pct_per_api"]
    assert clone_metrics["ledger"]["total"] == api_metrics["ledger"]["total"]
    assert torch.equal(clone_entry["api_answers"], api_entry["probs"])
    assert not torch.equal(clone_entry["probs"], api_entry["probs"])


def test_a_budget_stop_in_a_surrogate_api_redoes_it_to_the_same_result(tmp_path, inputs, monkeypatch, capsys):
    over = {"invert": {"method": "surrogate"}, "distill": {"iterations": 2, "val_every": 2}}
    ref = _workspace(tmp_path / "ref", inputs, over)
    _in_process(("invert",), ref, monkeypatch)
    want = json.loads((ref / "metrics" / "invert.json").read_text())
    per_api = want["api_images_per_api"]["api_000"]
    work = _workspace(tmp_path / "w", inputs, over)
    _set_budget(work, per_api + 50)  # api_001 stops in its rounds
    out = _stage("invert", work, inputs[1], code=3)
    assert "1 of 3 APIs inverted, api_001 to be redone from its start" in out
    _set_budget(work, None)
    _in_process(("invert",), work, monkeypatch)
    got = json.loads((work / "metrics" / "invert.json").read_text())
    assert got["api_agreement_pct_per_api"] == want["api_agreement_pct_per_api"]
    from dfml.params import load_params as load

    c = load(work / "params.yaml").invert.surrogate
    sent = c.rounds * c.images_per_round  # api_001's rounds went out (<= 50); its final answers were refused
    assert sent <= 50 < sent + 20
    assert got["ledger"]["discarded"] == sent and got["ledger"]["total"] == want["ledger"]["total"] + sent
    for name in ("api_000", "api_001", "api_002"):
        a = torch.load(work / "data" / "bank" / f"{name}.pt", weights_only=True)
        b = torch.load(ref / "data" / "bank" / f"{name}.pt", weights_only=True)
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["probs"], b["probs"])
