"""Multi-worker training: the cluster that TF_CONFIG describes, who writes results, and lost-worker messages.

TF_CONFIG is TensorFlow's standard variable, e.g. on the first of two machines::

    {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}

A cluster of two or more tasks in "chief" and "worker" makes `effdet-rt train` use MultiWorkerMirroredStrategy
(see trainer/distribute.py). This module only reads and checks the variable; it imports no TensorFlow, so a bad
TF_CONFIG fails before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from effdet_rt.errors import UserError

TRAINING_JOBS = ("chief", "worker")
EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
           '(index 1 on the second machine)')


@dataclass(frozen=True)
class Cluster:
    jobs: dict[str, list[str]]  # job name -> task addresses ("host:port"), in index order
    task_type: str
    task_index: int

    @property
    def tasks(self) -> list[tuple[str, int]]:
        """The training tasks in the strategy's order: the chief first, then the workers."""
        return [(job, i) for job in TRAINING_JOBS for i in range(len(self.jobs.get(job, [])))]

    @property
    def num_workers(self) -> int:
        return len(self.tasks)

    @property
    def worker_id(self) -> int:
        """This task's place in ``tasks`` (the strategy's id in the cluster: its input pipeline and replicas)."""
        return self.tasks.index((self.task_type, self.task_index))

    @property
    def is_chief(self) -> bool:
        """The task that writes checkpoints and logs: the chief, or worker 0 when the cluster names no chief."""
        return self.worker_id == 0

    def address(self, job: str, index: int) -> str:
        return self.jobs[job][index]

    def name(self, job: str | None = None, index: int | None = None) -> str:
        job = self.task_type if job is None else job
        index = self.task_index if index is None else index
        return f"{job} {index} at {self.address(job, index)}"


def _bad(problem: str) -> UserError:
    return UserError(f"TF_CONFIG {problem}; set it to JSON such as {EXAMPLE}, or unset it to train on one machine")


def read_tf_config(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The multi-worker cluster TF_CONFIG names, or None when it is unset or names at most one training task."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(config, dict):
        raise _bad("must be a JSON object with 'cluster' and 'task'")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise _bad("has no 'cluster' object mapping job names to lists of host:port addresses")
    jobs: dict[str, list[str]] = {}
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and _is_address(a) for a in addresses):
            raise _bad(f"cluster.{job} must be a list of host:port addresses, got {json.dumps(addresses)}")
        jobs[str(job)] = addresses
    if sum(len(jobs.get(job, [])) for job in TRAINING_JOBS) == 0:
        raise _bad(f"cluster names no 'worker' or 'chief' task (it has {', '.join(sorted(jobs))})")
    if len(jobs.get("chief", [])) > 1:
        raise _bad(f"cluster.chief lists {len(jobs['chief'])} addresses; a cluster has at most one chief")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise _bad("has no 'task' object with 'type' and 'index' saying which task this process is")
    task_type, index = task["type"], task["index"]
    if task_type not in TRAINING_JOBS:
        raise _bad(f"task.type {json.dumps(task_type)} is not a training task: use 'worker' or 'chief'")
    if task_type not in jobs:
        raise _bad(f"task.type {json.dumps(task_type)} is not a job of cluster (it has {', '.join(sorted(jobs))})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[task_type]):
        raise _bad(f"task.index {json.dumps(index)} is out of range: cluster.{task_type} has "
                   f"{len(jobs[task_type])} address(es), so the index is 0..{len(jobs[task_type]) - 1}")
    found = Cluster(jobs, task_type, index)
    return found if found.num_workers > 1 else None


def _is_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit())


_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
_ADDRESS = re.compile(r"(?:ipv4:|ipv6:)?(\[[^\]]+\]|[\w.-]+):(\d+)")


def lost_worker(cluster: Cluster, tf_message: str) -> tuple[str, int] | None:
    """The other task a TensorFlow collective error names (by task or by address), or None."""
    me = (cluster.task_type, cluster.task_index)
    unhealthy = tf_message.split("unhealthy", 1)[-1]  # the coordination service lists the dead tasks after this
    for text in (unhealthy, tf_message):
        for job, index in _TASK.findall(text):
            task = (job, int(index))
            if task != me and task in cluster.tasks:
                return task
    by_address = {cluster.address(*task): task for task in cluster.tasks}
    for host, port in _ADDRESS.findall(tf_message):
        task = by_address.get(f"{host}:{port}")
        if task is not None and task != me:
            return task
    others = [task for task in cluster.tasks if task != me]
    return others[0] if len(others) == 1 else None


def lost_worker_error(cluster: Cluster, tf_message: str, results_dir: str) -> UserError:
    """One line for the CLI when a collective failed because another task died or stopped answering."""
    task = lost_worker(cluster, tf_message)
    who = f"{cluster.name(*task)} stopped answering" if task else "another worker stopped answering"
    lines = [line.strip() for line in tf_message.splitlines() if line.strip()]
    telling = [line for line in lines if re.search(r"abort|unhealthy|connect|heartbeat|deadline", line, re.I)]
    first = re.sub(r"\{\{[^}]*\}\}\s*", "", (telling or lines or ["no detail"])[0])[:200]
    return UserError(
        f"{who} (TensorFlow: {first}); training stopped on {cluster.name()}. Restart every worker with the same "
        f"TF_CONFIG: they resume from the chief's newest checkpoint in {results_dir}"
    )
