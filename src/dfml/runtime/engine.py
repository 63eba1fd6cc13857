"""Where the per-API work of `pretrain` and `invert` runs: ``runtime.engine``, one of :data:`ENGINES`.

* ``inprocess`` (:class:`InProcessEngine`): one API after another in the stage's own process (the loop the
  stages always had).
* ``ray`` (:class:`RayEngine`): each API is one Ray task (https://docs.ray.io), ``runtime.ray.workers`` at a
  time, each with ``cpus_per_worker`` CPUs (and as many torch threads) and ``gpus_per_worker`` GPUs. With
  ``runtime.ray.address: null`` the stage starts a local Ray and stops it at the end; with an address it joins
  a running cluster and ships this repository's ``dfml`` package to it. ``ray`` is imported only here, only then.

The driver (the stage's process) hands the engine a function and its jobs (:meth:`Engine.map`) and gets back
each job's result as it finishes, so it writes every output itself (and checkpoints finished APIs) in one place.
A job is run as ``fn(job, shared, device)``: `shared` is one read-only object for every job (through Ray's
object store: sent once), `device` the torch device of the worker (CUDA: the GPU Ray gave the task).

A task whose worker dies is run again up to ``runtime.ray.retries`` times (Ray's ``max_retries``); beyond them
:class:`~dfml.core.errors.EngineError` stops the stage with one message (finished work kept). An exception
raised by the job itself comes back as itself, in the driver. Shared state that workers update, the stage's
API image ledger, lives in :meth:`Engine.book` (a Ray actor under ``ray``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch

from ..api.budget import LedgerBook
from ..core.errors import EngineError, ParamError
from .params import RuntimeParams

Job = tuple[str, Any]  # (a name for messages, e.g. "api_003"; what the function is given)
JobFn = Callable[[Any, Any, torch.device], Any]


class Batch(ABC):
    """The jobs of one :meth:`Engine.map`: iterate for ``(name, result)`` as each finishes; :meth:`stop` starts no
    further job (those under way still finish and are yielded)."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    @abstractmethod
    def __iter__(self) -> Iterator[tuple[str, Any]]: ...


class Engine(ABC):
    """What runs the per-API jobs of a stage (see the module docstring)."""

    name: ClassVar[str]
    parallel: ClassVar[bool]  # jobs may run at the same time, and in any order

    def __init__(self, runtime: RuntimeParams, stage: str, device: torch.device):
        self.runtime, self.stage, self.device = runtime, stage, device

    @abstractmethod
    def map(self, fn: JobFn, jobs: Iterable[Job], shared: Any = None) -> Batch:
        """Run ``fn(job, shared, device)`` for every job, started in the order given; `jobs` is read as jobs
        start (a generator keeps only the jobs under way in memory)."""

    @abstractmethod
    def book(self, state: dict | None, budget: int | None, budget_per_api: int | None, phase: str):
        """The stage's shared :class:`~dfml.api.budget.LedgerBook` (from a ledger `state`, or empty), as a
        picklable handle with ``call(method, *args, wait=True)`` (:class:`~dfml.api.budget.Book`)."""

    def share_folder(self, folder: Path) -> Any:
        """A folder (e.g. the API pool) as the workers can read it: :func:`local_folder` of the result in a job
        is a local path holding the same files."""
        return Path(folder).resolve()

    def close(self) -> None:
        """Release what the engine holds (a local Ray is stopped)."""


# ---------------------------------------------------------------- inprocess

class _LocalBook:
    def __init__(self, book: LedgerBook):
        self._book = book

    def call(self, method: str, *args: Any, wait: bool = True) -> Any:
        return getattr(self._book, method)(*args)


class _InProcessBatch(Batch):
    def __init__(self, fn: JobFn, jobs: Iterable[Job], shared: Any, device: torch.device):
        super().__init__()
        self.fn, self.jobs, self.shared, self.device = fn, jobs, shared, device

    def __iter__(self):
        for name, job in self.jobs:
            if self.stopped:
                return
            yield name, self.fn(job, self.shared, self.device)


class InProcessEngine(Engine):
    """``runtime.engine: inprocess``: every job in this process, one after another, in order."""

    name = "inprocess"
    parallel = False

    def map(self, fn, jobs, shared=None) -> Batch:
        return _InProcessBatch(fn, jobs, shared, self.device)

    def book(self, state, budget, budget_per_api, phase):
        return _LocalBook(LedgerBook(state, budget, budget_per_api, phase))


# ---------------------------------------------------------------- ray

def _run_job(fn: JobFn, job: Any, shared: Any, device_type: str, threads: int) -> Any:
    """A Ray task: `fn` with `threads` torch threads, on the task's GPU (Ray sets CUDA_VISIBLE_DEVICES) or CPU."""
    torch.set_num_threads(threads)
    return fn(job, shared, torch.device("cuda" if device_type == "cuda" else "cpu"))


class _RayBook:
    """A handle of the Ray actor holding the stage's :class:`LedgerBook` (picklable: workers get it in their job)."""

    def __init__(self, actor: Any):
        self.actor = actor

    def call(self, method: str, *args: Any, wait: bool = True) -> Any:
        import ray

        ref = getattr(self.actor, method).remote(*args)
        return ray.get(ref) if wait else None


@dataclass(frozen=True)
class FolderCopy:
    """A folder's files as bytes (for workers on other machines): ``{relative path: bytes}`` and their digest."""

    name: str
    digest: str
    files: dict[str, bytes]


def folder_copy(folder: Path) -> FolderCopy:
    """Every file under `folder` as a :class:`FolderCopy` (to go through Ray's object store)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    h = hashlib.sha256()
    for rel, data in files.items():
        h.update(rel.encode())
        h.update(hashlib.sha256(data).digest())
    return FolderCopy(folder.name, h.hexdigest(), files)


_COPIES: dict[str, Path] = {}  # digest -> where this worker process wrote a FolderCopy


def local_folder(shared: Path | FolderCopy) -> Path:
    """A local path with the files of :meth:`Engine.share_folder`'s result (a copy written once per process)."""
    if isinstance(shared, Path):
        return shared
    if shared.digest not in _COPIES:
        root = Path(tempfile.mkdtemp(prefix=f"dfml-{shared.name}-")) / shared.name
        for rel, data in shared.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        _COPIES[shared.digest] = root
    return _COPIES[shared.digest]


class _RayBatch(Batch):
    def __init__(self, engine: "RayEngine", fn: JobFn, jobs: Iterable[Job], shared: Any):
        super().__init__()
        self.engine, self.fn, self.jobs, self.shared = engine, fn, jobs, shared

    def __iter__(self):
        import ray
        from ray import exceptions as rx

        eng, cfg = self.engine, self.engine.runtime.ray
        task = eng.remote.options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
                                  max_retries=cfg.retries, retry_exceptions=False)
        shared = ray.put(self.shared)
        queue, running = iter(self.jobs), {}
        try:
            while True:
                while not self.stopped and len(running) < cfg.workers:
                    name, job = next(queue, (None, None))
                    if name is None:
                        break
                    running[task.remote(self.fn, job, shared, eng.device.type, cfg.cpus_per_worker)] = name
                if not running:
                    return
                (ref,), _ = ray.wait(list(running), num_returns=1)
                name = running.pop(ref)
                try:
                    result = ray.get(ref)
                except rx.RayTaskError as exc:  # the job raised: the driver raises the same
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from exc  # a user error prints its own message only (stage.guarded)
                    raise EngineError(f"a Ray task of `{eng.stage}` failed on {name}: {_first_line(exc)}") from None
                except rx.RayError as exc:  # the worker (or its node) died, more often than runtime.ray.retries
                    raise EngineError(
                        f"a Ray worker of `{eng.stage}` was lost while on {name} ({type(exc).__name__}: "
                        f"{_first_line(exc)}), after {cfg.retries} retr{'y' if cfg.retries == 1 else 'ies'} "
                        f"(runtime.ray.retries); the finished APIs are kept: run the stage again to continue "
                        f"(or raise runtime.ray.retries, or set runtime.engine: inprocess)") from None
                yield name, result
        finally:
            for ref in running:  # stopped early (an error in a job or in the driver): nothing keeps running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass


def _probe(address: str, timeout: float = 10.0) -> None:
    """EngineError unless `address` (``host:port`` or ``ray://host:port``; not ``auto``) accepts a connection:
    Ray itself would retry an unreachable one for ever."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto', 'local' or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EngineError(f"runtime.ray.address: nothing answers at {address!r} ({exc.strerror or exc}); start the "
                          "cluster there (`ray start --head`), fix the address, or set runtime.ray.address: null for a "
                          "local Ray (or runtime.engine: inprocess)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayEngine(Engine):
    """``runtime.engine: ray`` (see the module docstring)."""

    name = "ray"
    parallel = True

    def __init__(self, runtime: RuntimeParams, stage: str, device: torch.device):
        super().__init__(runtime, stage, device)
        cfg = runtime.ray
        if device.type == "cuda" and cfg.gpus_per_worker == 0:
            raise ParamError(f"device is {device} but runtime.ray.gpus_per_worker is 0, so Ray gives a task no GPU; "
                             "set runtime.ray.gpus_per_worker (1, or 0.25 for four tasks per GPU), or device: cpu")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:
            raise EngineError("runtime.engine: ray needs the `ray` package, which is not installed; install it "
                              "(`pip install 'ray>=2.9'`, as pyproject.toml lists) or set runtime.engine: "
                              "inprocess") from None
        self._started = False
        if not ray.is_initialized():
            self._init(ray, cfg)
            self._started = True
        self.remote = ray.remote(_run_job)

    def _init(self, ray, cfg) -> None:
        package = Path(__file__).resolve().parents[1]  # src/dfml of this workspace: the workers run the same code
        env = {"PYTHONPATH": os.pathsep.join([str(package.parent), *filter(None, [os.environ.get("PYTHONPATH")])]),
               "OMP_NUM_THREADS": str(cfg.cpus_per_worker), "RAY_USAGE_STATS_ENABLED": "0",
               **{k: v for k, v in os.environ.items() if k.startswith("DFML_")}}  # the API token, test hooks
        runtime_env: dict = {"env_vars": env}
        kwargs: dict = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.ERROR}
        if cfg.address is None:
            kwargs.update(num_cpus=max(os.cpu_count() or 1, cfg.workers * cfg.cpus_per_worker),
                          include_dashboard=False)
        else:  # another machine may not have this workspace: ship the package (torch and the rest it must have)
            runtime_env["py_modules"] = [str(package)]
            kwargs["address"] = cfg.address
        where = "a local Ray (runtime.ray.address: null)" if cfg.address is None else \
            f"the Ray cluster at runtime.ray.address {cfg.address!r}"
        if cfg.address is not None:
            _probe(cfg.address)
        try:
            ray.init(runtime_env=runtime_env, **kwargs)
        except Exception as exc:  # no cluster there, a ray:// address without ray[client], a refused connection
            fix = ("start one (`ray start --head`) and use address 'auto', or give its 'ray://host:10001' "
                   "address (needs `pip install 'ray[client]'`), or set runtime.ray.address: null for a local Ray "
                   "or runtime.engine: inprocess") if cfg.address is not None else \
                "check that this machine can run Ray (its /tmp writable, its ports free), or set runtime.engine: " \
                "inprocess"
            raise EngineError(f"runtime.ray.address: could not start or reach {where} ({type(exc).__name__}: "
                              f"{_first_line(exc)}); {fix}") from None

    def map(self, fn, jobs, shared=None) -> Batch:
        return _RayBatch(self, fn, jobs, shared)

    def book(self, state, budget, budget_per_api, phase):
        import ray

        actor = ray.remote(num_cpus=0)(LedgerBook).remote(state, budget, budget_per_api, phase)
        return _RayBook(actor)

    def share_folder(self, folder: Path) -> Any:
        folder = Path(folder).resolve()
        if self.runtime.ray.address is None:  # a local Ray: the workers read the same disk
            return folder
        return folder_copy(folder)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()


# runtime.engine -> the engine class
ENGINES: dict[str, type[Engine]] = {"inprocess": InProcessEngine, "ray": RayEngine}


@contextmanager
def open_engine(runtime: RuntimeParams, stage: str, device: torch.device) -> Iterator[Engine]:
    """The engine of ``runtime.engine`` for `stage`, closed at the end of the block."""
    engine = ENGINES[runtime.engine](runtime, stage, device)
    try:
        yield engine
    finally:
        engine.close()
        sys.stdout.flush()
