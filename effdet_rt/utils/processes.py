"""Numbered tasks shared between this process and helper processes, each taking the next free number.

Used instead of a ``multiprocessing.Pool`` where a whole job takes well under a second (a small dataset such as
BCCD): a pool starts every worker, three handler threads and a task queue, and stops them again, a fixed cost
that is a noticeable share of so short a job. Here the calling process works too, so ``workers=2`` forks one
helper; task numbers come from a shared counter (a task goes to whichever process is free, as with a pool),
and helpers send each task's result back on a queue.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from effdet_rt.errors import UserError

T = TypeVar("T")

_RESULT, _DONE, _ERROR = "result", "done", "error"
_POLL_SECONDS = 0.2


class HelperProcessDied(UserError):
    """A helper exited without finishing (killed, out of memory); its task's result is lost."""


def run_tasks(task: Callable[[int], T], count: int, workers: int) -> Iterator[T]:
    """``task(0) .. task(count - 1)`` on ``workers`` processes (this one included), results in finishing order.

    ``task`` must be picklable where processes are spawned rather than forked (a module-level function or a
    ``functools.partial`` of one). An exception in any process stops the hand-out and is raised here.
    """
    helpers = min(workers, count) - 1
    if helpers <= 0:
        yield from map(task, range(count))
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    next_task = context.Value("q", 0)
    messages = context.Queue()
    processes = [context.Process(target=_help, args=(number, task, count, next_task, messages), daemon=True)
                 for number in range(helpers)]
    for process in processes:
        process.start()
    finished: set[int] = set()
    try:
        while (index := _take(next_task, count)) is not None:
            yield task(index)
            yield from _received(messages, finished, block=False)
        while len(finished) < helpers:
            yield from _received(messages, finished, block=True)
            _check_alive(processes, finished, messages)
    except BaseException:
        _stop(next_task, count)
        raise
    finally:
        for number, process in enumerate(processes):
            if number not in finished:
                process.terminate()
            process.join()
        messages.close()


def _take(next_task: Any, count: int) -> int | None:
    with next_task.get_lock():
        index = next_task.value
        if index >= count:
            return None
        next_task.value = index + 1
    return index


def _stop(next_task: Any, count: int) -> None:
    with next_task.get_lock():
        next_task.value = count


def _help(number: int, task: Callable[[int], Any], count: int, next_task: Any, messages: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the calling process's to handle; it stops us
    try:
        while (index := _take(next_task, count)) is not None:
            messages.put((number, _RESULT, task(index)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the caller
        _stop(next_task, count)
        messages.put((number, _ERROR, _picklable(error)))
    else:
        messages.put((number, _DONE, None))


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any pickling failure: send the text instead
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _received(messages: Any, finished: set[int], block: bool) -> Iterator[Any]:
    """Results waiting on the queue (or, with ``block``, arriving within the poll interval)."""
    while True:
        try:
            number, kind, value = messages.get(timeout=_POLL_SECONDS) if block else messages.get_nowait()
        except queue.Empty:
            return
        block = False
        if kind == _ERROR:
            raise value
        if kind == _DONE:
            finished.add(number)
        else:
            yield value


def _check_alive(processes: list[Any], finished: set[int], messages: Any) -> None:
    """A helper that exited without saying it was done died (killed, out of memory): its task is lost."""
    for number, process in enumerate(processes):
        if number in finished or process.exitcode is None:
            continue
        if not messages.empty():
            return  # its last messages are still in the pipe; read them first
        raise HelperProcessDied(f"a helper process stopped (exit code {process.exitcode}) before finishing its "
                                "tasks; was it killed or out of memory? Run again, or with one worker")
