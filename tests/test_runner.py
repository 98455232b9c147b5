"""pagedkv.runner: every task once, failures kept apart, the same results whatever the process count,
and Ctrl-C (or leaving the loop) stops the workers at once instead of waiting for their tasks."""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import signal
import time

import pytest

from pagedkv.errors import UsageError
from pagedkv.runner import (
    Failure,
    Local,
    Ray,
    add_backend_arguments,
    attempt,
    backend_from_args,
    run_tasks,
)


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def refuse(value: int) -> int:
    if value == 2:
        raise UsageError(f"--value {value}: not two, please")
    return value


def interrupt_first(task: float) -> float:
    if task == 0:
        raise KeyboardInterrupt
    time.sleep(task)
    return task


def sigint_handler(_: int) -> object:
    return signal.getsignal(signal.SIGINT)


def test_pool_workers_leave_ctrl_c_to_the_caller() -> None:
    """Otherwise a worker waiting for a task prints a KeyboardInterrupt traceback on Ctrl-C."""
    assert [handler for _, handler in run_tasks(sigint_handler, [0, 1], Local(2))] == [signal.SIG_IGN] * 2


def test_results_do_not_depend_on_the_number_of_processes() -> None:
    tasks = list(range(25))
    serial = list(run_tasks(math.factorial, tasks, Local(1)))
    pooled = list(run_tasks(math.factorial, tasks, Local(2)))
    assert serial == [(n, math.factorial(n)) for n in tasks]  # one process: in task order
    assert sorted(pooled) == serial


def test_the_pool_runs_tasks_in_other_processes_at_once() -> None:
    started = time.perf_counter()
    pids = [pid for _, pid in run_tasks(pid_after, [1.0, 1.0], Local(2))]
    assert time.perf_counter() - started < 1.9  # side by side, not one after another
    assert len(set(pids)) == 2 and os.getpid() not in pids


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_task_is_a_failure_and_the_others_finish(jobs: int) -> None:
    results = dict(run_tasks(math.factorial, [3, -1, 4], Local(jobs)))
    assert results == {3: 6, -1: Failure("ValueError: factorial() not defined for negative values"), 4: 24}


def test_a_pagedkv_error_keeps_its_own_message() -> None:
    assert dict(run_tasks(refuse, [1, 2], Local(2))) == {1: 1, 2: Failure("--value 2: not two, please")}
    assert attempt(refuse, 2) == Failure("--value 2: not two, please")


def test_ctrl_c_in_a_task_reaches_the_caller_and_stops_the_pool_now() -> None:
    others = set(multiprocessing.active_children())  # other tests' processes, if any are still ending
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        for _ in run_tasks(interrupt_first, [0, 30.0, 30.0, 30.0], Local(2)):
            pass
    assert time.perf_counter() - started < 10  # the 30 s tasks were stopped, not awaited
    assert set(multiprocessing.active_children()) - others == set()


def test_leaving_the_loop_early_stops_the_workers() -> None:
    others = set(multiprocessing.active_children())
    started = time.perf_counter()
    for task, _ in run_tasks(pid_after, [0.1, 30.0, 30.0], Local(2)):
        assert task == 0.1
        break
    assert time.perf_counter() - started < 10
    assert set(multiprocessing.active_children()) - others == set()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    return parser.parse_args(list(argv))


def test_backend_flags() -> None:
    assert backend_from_args(parse()) == Local(None)
    assert backend_from_args(parse("--jobs", "3")) == Local(3)
    assert Local(3).describe() == "local, 3 processes"
    with pytest.raises(UsageError, match=r"^--jobs 0: needs at least one process"):
        Local(0)
    with pytest.raises(SystemExit):  # refused while parsing, naming --jobs
        parse("--jobs", "0")
    with pytest.raises(UsageError, match=r"^--jobs: .*give --jobs or --ray, not both"):
        backend_from_args(parse("--jobs", "2", "--ray"))


def test_ray_without_ray_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    with pytest.raises(UsageError) as info:
        backend_from_args(parse("--ray", "auto"))
    assert str(info.value) == "--ray: Ray is not installed; pip install 'pagedkv[ray]'"
    with pytest.raises(UsageError):
        Ray()
