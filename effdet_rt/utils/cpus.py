"""How many CPUs this process may run on."""

import os


def usable_cpus() -> int:
    """The CPUs this process is allowed to use: a container's cpuset, `taskset` or a test worker's pinning can allow
    fewer than the machine has, and a thread pool sized to the machine then oversubscribes the cores it has."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return os.cpu_count() or 1
