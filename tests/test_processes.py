"""run_tasks: the calling process and forked helpers share numbered tasks; failures in a helper reach the caller."""

import functools
import multiprocessing
import os
import time

import pytest

from effdet_rt.errors import UserError
from effdet_rt.utils.processes import HelperProcessDied, run_tasks

CALLER = os.getpid()
HELPER_STARTED = multiprocessing.get_context("fork").Event()


def _in_helper() -> bool:
    return os.getpid() != CALLER


def square_and_pid(index: int) -> tuple[int, int, int]:
    # The caller's first task waits until a helper has run one, so both processes take part in every run.
    if _in_helper():
        HELPER_STARTED.set()
    else:
        assert HELPER_STARTED.wait(30), "no helper process ran a task within 30 s"
    time.sleep(0.01)
    return index, index * index, os.getpid()


def fail_in_helper(kind: str, index: int) -> int:
    if not _in_helper():
        time.sleep(0.02)
        return index
    if kind == "raise":
        raise ValueError(f"task {index} failed in the helper")
    if kind == "unpicklable":
        error = ValueError("cannot travel")
        error.payload = lambda: None  # a lambda does not pickle
        raise error
    os._exit(3)


@pytest.fixture(autouse=True)
def fresh_event():
    HELPER_STARTED.clear()
    yield
    assert multiprocessing.active_children() == []  # every helper was reaped


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the tests use fork's inheritance")
class TestRunTasks:
    def test_every_task_runs_once_on_both_processes(self):
        results = list(run_tasks(square_and_pid, 9, workers=2))
        assert sorted((i, sq) for i, sq, _ in results) == [(i, i * i) for i in range(9)]
        assert {pid == CALLER for _, _, pid in results} == {True, False}

    def test_one_worker_runs_in_order_in_this_process(self):
        assert list(run_tasks(lambda i: (i, os.getpid()), 4, workers=1)) == [(i, CALLER) for i in range(4)]

    def test_never_more_processes_than_tasks(self):
        assert list(run_tasks(lambda i: os.getpid(), 1, workers=2)) == [CALLER]
        assert list(run_tasks(lambda i: i, 0, workers=2)) == []

    def test_a_helpers_exception_is_raised_in_the_caller_and_stops_the_hand_out(self):
        start = time.perf_counter()
        with pytest.raises(ValueError, match=r"task \d+ failed in the helper"):
            list(run_tasks(functools.partial(fail_in_helper, "raise"), 200, workers=2))
        assert time.perf_counter() - start < 200 * 0.02 / 2  # the caller did not go on through all 200

    def test_an_unpicklable_exception_arrives_as_its_text(self):
        with pytest.raises(RuntimeError, match="ValueError: cannot travel"):
            list(run_tasks(functools.partial(fail_in_helper, "unpicklable"), 20, workers=2))

    def test_a_helper_that_dies_is_an_error_not_a_hang_or_a_lost_task(self):
        with pytest.raises(HelperProcessDied, match=r"exit code 3\) before finishing") as caught:
            list(run_tasks(functools.partial(fail_in_helper, "exit"), 20, workers=2))
        assert isinstance(caught.value, UserError)  # the CLI prints it as one error: line, exit 2

    def test_stopping_early_stops_the_helpers(self):
        tasks = run_tasks(square_and_pid, 50, workers=2)
        next(tasks)
        tasks.close()  # the autouse fixture checks that no helper is left running
