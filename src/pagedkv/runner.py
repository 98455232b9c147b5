"""Run independent tasks on every local core or on a Ray cluster; hand back each result as it comes.

Invariant: `run_tasks(fn, tasks, backend)` calls ``fn(task)`` once per task and yields
``(task, result)`` in completion order, where ``result`` is what ``fn`` returned or a `Failure`
holding the exception's one-line message, so one failing task never stops the others. Every backend
runs the same top-level function on the same task, so a result depends only on its task (seeds travel
inside it), never on the backend, the number of processes or the order of completion.

Why one runner: a sweep's points, the paper's configurations and the planner's candidates are all
independent simulations. Sharing the runner gives every command the same ``--jobs``/``--ray`` flags,
the same failure rows and the same Ctrl-C behaviour: pending tasks are cancelled, worker processes
are stopped, and `KeyboardInterrupt` reaches the caller, which keeps whatever it already wrote.

Backends: `Local` (the default) runs ``fn`` in the calling process when it has one job and in a
process pool otherwise (``fn`` and tasks must then be picklable: a module-level function and plain
data). `Ray` submits the same calls as Ray tasks (``pip install 'pagedkv[ray]'``); Ray is imported only
there, so nothing else in pagedkv needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from pagedkv.errors import PagedKVError, UsageError
from pagedkv.options import positive_int

T = TypeVar("T")
R = TypeVar("R")

RAY_EXTRA = "pip install 'pagedkv[ray]'"


@dataclass(frozen=True)
class Failure:
    """A task that raised: ``error`` is one line, the message of a `PagedKVError` (a user's mistake,
    e.g. a missing trace) or ``"ExceptionType: message"`` for anything else."""

    error: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        message = " ".join(str(exc).split()) or repr(exc)
        return cls(message if isinstance(exc, PagedKVError) else f"{type(exc).__name__}: {message}")


@dataclass(frozen=True)
class Local:
    """A process pool of ``jobs`` workers on this machine (default: every core this process may use);
    one job runs the tasks in the calling process, one after another."""

    jobs: int | None = None

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise UsageError(f"--jobs {self.jobs}: needs at least one process; use --jobs 1 or more")

    @property
    def workers(self) -> int:
        return self.jobs if self.jobs is not None else available_cores()

    def describe(self) -> str:
        count = self.workers
        return f"local, {count} process{'es' if count > 1 else ''}"

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to set up: every `run_tasks` call starts its own pool."""
        yield

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R | Failure]]:
        workers = min(self.workers, len(tasks))
        if workers <= 1:
            for index, task in enumerate(tasks):
                yield index, attempt(fn, task)
            return
        yield from _run_pool(fn, tasks, workers)


@dataclass(frozen=True)
class Ray:
    """Ray tasks on the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ...); when ``address``
    is None, wherever a bare ``ray.init()`` goes ($RAY_ADDRESS, a cluster ``ray start`` runs on this
    machine, or else a local Ray started for the run). A Ray already initialised by the caller
    (``ray.init(...)`` before `run_tasks`) is used as it is and left running; otherwise `run` disconnects
    at the end, which stops a Ray it started and leaves a cluster running."""

    address: str | None = None

    def __post_init__(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise UsageError(f"--ray: Ray is not installed; {RAY_EXTRA}")

    def describe(self) -> str:
        return f"Ray at {self.address}" if self.address else "Ray (ray.init(): $RAY_ADDRESS, or a local Ray)"

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Connected to Ray throughout (so several `run_tasks` calls start or join it once), unless
        Ray is already initialised; disconnects at the end if it connected."""
        import ray

        started = not ray.is_initialized()
        if started:
            self._connect(ray)
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R | Failure]]:
        import ray

        with self.session():
            yield from _run_ray(ray, fn, tasks)

    def _connect(self, ray: Any) -> None:
        import logging

        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            flag = f"--ray {self.address}" if self.address else "--ray"
            raise UsageError(
                f"{flag}: cannot connect ({exc}); start the cluster (`ray start --head`) or give its address"
            ) from None


Backend = Local | Ray


def run_tasks(
    fn: Callable[[T], R], tasks: Sequence[T], backend: Backend | None = None
) -> Iterator[tuple[T, R | Failure]]:
    """Yield ``(task, fn(task) or Failure)`` for every task, in the order they finish; ``task`` is the
    very object from `tasks` (match results to tasks by identity or by a field, not by position).

    ``fn`` must be a module-level function and every task picklable unless the backend runs in this
    process (``Local(jobs=1)``). Stopping early (Ctrl-C, or the caller leaving the loop) cancels the
    tasks not yet finished. Several calls in a row: wrap them in ``with backend.session():`` so a
    Ray backend connects once.
    """
    chosen = backend if backend is not None else Local()
    for index, result in chosen.run(fn, tasks):
        yield tasks[index], result


class TaskFailed(PagedKVError):
    """A task of a `task_map` raised; the message names the task and its error."""


def task_map(backend: Backend | None = None) -> Callable[[Callable[[T], R], Iterable[T]], Iterator[R]]:
    """A map-like runner on `backend`, for callers that take one (``mapper(fn, tasks)``, as
    `pagedkv.paper.run.run_paper` does): results in completion order, and `TaskFailed` (naming the
    task by its ``label`` when it has one) as soon as a task raises."""

    def mapper(fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        for task, result in run_tasks(fn, list(tasks), backend):
            if isinstance(result, Failure):
                raise TaskFailed(f"{getattr(task, 'label', task)}: {result.error}")
            yield result

    return mapper


def attempt(fn: Callable[[T], R], task: T) -> R | Failure:
    """``fn(task)``, or the `Failure` it raised (what every backend runs for each task)."""
    try:
        return fn(task)
    except Exception as exc:
        return Failure.of(exc)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--jobs N`` and ``--ray [ADDRESS]``, the same on every command that runs tasks."""
    group = parser.add_argument_group("backend (where the tasks run)")
    group.add_argument(
        "--jobs",
        type=positive_int,
        metavar="N",
        help=f"local processes (default: every core, {available_cores()} here); 1 runs in this process",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on Ray: a running cluster's ADDRESS (auto, ray://head:10001, ...), or without one where "
        f"ray.init() goes ($RAY_ADDRESS, a `ray start` cluster here, else a new local Ray); {RAY_EXTRA}",
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend ``--jobs``/``--ray`` ask for; `UsageError` if both are given or Ray is missing."""
    if args.ray is None:
        return Local(args.jobs)
    if args.jobs is not None:
        raise UsageError("--jobs: Ray schedules the tasks itself; give --jobs or --ray, not both")
    return Ray(args.ray or None)


def _run_pool(fn: Callable[[T], R], tasks: Sequence[T], workers: int) -> Iterator[tuple[int, R | Failure]]:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)
    pending: dict[Future[R | Failure], int] = {}
    try:
        pending = {pool.submit(attempt, fn, task): index for index, task in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                    result = Failure.of(exc)
                yield index, result
    finally:
        _stop_pool(pool, finished=not pending)


def _stop_pool(pool: ProcessPoolExecutor, finished: bool) -> None:
    """Shut the pool down; when tasks are still unfinished (Ctrl-C, an early exit), end its workers
    now instead of waiting for their current task.

    The workers are ended before the executor is told to shut down: a worker that leaves on the
    shutdown signal is replaced by a new one (CPython 3.11-3.13), which a list taken earlier misses.
    Nothing is cancelled: the executor fails the unfinished futures itself when it finds its workers
    gone (cancelling them first makes its thread raise on the cancelled ones).
    """
    if finished:
        pool.shutdown(wait=True)
        return
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    # Before 3.14 the executor's worker processes are only reachable as `_processes`.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:  # a worker whose SIGTERM is handled (an inherited handler) gets SIGKILL
        with contextlib.suppress(Exception):
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()
    pool.shutdown(wait=True)  # the executor sees its workers gone and stops without new ones


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_ray(ray: Any, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R | Failure]]:
    remote = ray.remote(attempt)
    pending = {remote.remote(fn, task): index for index, task in enumerate(tasks)}
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready)
            try:
                result = ray.get(ready)
            except ray.exceptions.RayError as exc:  # the worker or its node died
                result = Failure.of(exc)
            yield index, result
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
