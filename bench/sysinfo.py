"""The machine, devices and library versions a benchmark ran on, for every report."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from flaxsent.io.machine import cpu_model

# XLA's CPU client sizes its intra-op (Eigen) thread pool from this variable when it is created
# (xla::DefaultThreadPoolSize; the pool gets at least one thread per CPU device). jax has no
# option for it, and XLA_FLAGS' --xla_cpu_multi_thread_eigen only turns the pool on or off.
XLA_THREADS_ENV = "PJRT_NPROC"
_XLA_POOL_THREAD = "tf_XLAEigen"  # the pool's thread name as Linux lists it


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (os.cpu_count ignores it), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def pin_xla_threads(n: int) -> None:
    """Ask XLA's CPU client for `n` intra-op threads, here and in every child process.

    Only a client created afterwards sees it: call before jax starts its backend.
    """
    os.environ[XLA_THREADS_ENV] = str(n)


def xla_cpu_threads() -> int | None:
    """Threads in XLA's CPU intra-op pool now, counted by name (Linux); None where unknown."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return None
    count = 0
    for task in tasks:
        try:
            count += (task / "comm").read_text().strip() == _XLA_POOL_THREAD
        except OSError:  # the thread ended meanwhile
            continue
    return count or None






def peak_rss_mb() -> float:
    """This process's resident-set high-water mark, in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory.
    (getrusage's ru_maxrss survives execve, so a child started from a big parent would report
    at least the parent's peak.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """Platform, CPU, cores, RAM, and the JAX backend with its devices."""
    import jax
    import psutil
    devices = jax.devices()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "jax_backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    return info




def machine_label(machine: dict[str, Any]) -> str:
    """A one-line name of the machine, e.g. 'cpu: AMD EPYC, 2 cores (1 device)'."""
    backend = machine.get("jax_backend", "?")
    kind = machine.get("device_kind") or "?"
    n = machine.get("device_count", 1)
    if backend == "cpu":
        return f"cpu: {machine.get('cpu_model')}, {machine.get('cpu_cores')} cores ({n} device(s))"
    return f"{backend}: {n} x {kind} (host: {machine.get('cpu_model')})"


class CpuContention:
    """How much CPU other processes took while the bench ran (they make timings noisy)."""

    def __init__(self) -> None:
        import psutil
        self._psutil = psutil
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        ps = self._psutil
        total = ps.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        own = ps.Process().cpu_times()
        mine = own.user + own.system + own.children_user + own.children_system
        return busy, mine, time.monotonic()

    def other_share(self) -> float:
        """Share of all cores' time (0..1) used by other processes since construction."""
        busy, mine, now = self._sample()
        busy0, mine0, then = self._start
        capacity = (now - then) * (os.cpu_count() or 1)
        if capacity <= 0:
            return 0.0
        return min(1.0, max(0.0, ((busy - busy0) - (mine - mine0)) / capacity))
