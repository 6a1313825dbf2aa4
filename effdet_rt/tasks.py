"""Where tasks plug in: each task registers its parts here, and the stages look them up by task name.

A stage needs a few facts about the task it runs: how its spec file is told apart (`effdet_rt.spec.loader`:
`SpecShape`), what its model files need from the deployment stages (`effdet_rt.onnx.tasks`: `ModelTask`). Every task
declares its parts in its own package's ``task`` module (``effdet_rt/<package>/task.py``), which calls `register`
when imported, so no stage names a task. One task module also declares its task the default (`declare_default`):
what a spec no other task claims is, and what a model file without ``effdet_rt.task`` (every file written before
the key existed) is.

The task modules are found by that file name, as pytest finds ``conftest.py``: `parts` imports
``effdet_rt.<package>.task`` for every package that has one, once. They import only light modules (no TensorFlow),
because spec loading and opening an engine look them up.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

TASK_MODULE = "task"

_parts: dict[str, dict[str, Any]] = {}
_default: list[str] = []  # the default task's name, once a task module declares it
_found = False


def register(kind: str, task: str, part: Any) -> None:
    """Make ``part`` the task's answer to ``kind`` (e.g. "spec", "model")."""
    _parts.setdefault(kind, {})[task] = part


def declare_default(task: str) -> None:
    """Make ``task`` the default task; a second, different default is a mistake in the task modules."""
    if _default and _default[0] != task:
        raise RuntimeError(f"two default tasks declared: {_default[0]} and {task}")
    _default[:] = [task]


def default_task() -> str:
    """The name of the task a spec no other task claims, and a model file without effdet_rt.task, belong to."""
    find_task_modules()
    if not _default:
        raise RuntimeError("no task module declares the default task (effdet_rt.tasks.declare_default)")
    return _default[0]


def parts(kind: str) -> dict[str, Any]:
    """{task name: part} of every registered task that has a ``kind`` part, the default task's first."""
    default = default_task()  # finds the task modules first
    found = dict(_parts.get(kind, {}))
    return {default: found.pop(default), **found} if default in found else found


def task_packages() -> list[str]:
    """The packages of ours that hold a task module, by name."""
    root = Path(__file__).resolve().parent
    return sorted(path.parent.name for path in root.glob(f"*/{TASK_MODULE}.py"))


def find_task_modules() -> None:
    global _found
    if _found:
        return
    _found = True  # before importing: a task module that looks parts up while loading does not loop
    for package in task_packages():
        importlib.import_module(f"{__package__}.{package}.{TASK_MODULE}")
