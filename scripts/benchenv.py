"""What the benchmark scripts record about the machine, and how they time things."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compiler_version() -> str:
    try:
        return subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def best_of(fn, repeat: int, *, warm_up: bool = True) -> float:
    """Smallest wall time of ``repeat`` calls (after one warm-up call)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_of_pair(baseline, candidate, *, budget_s: float = 0.5, min_repeat: int = 3, max_repeat: int = 200):
    """Smallest wall times of two functions timed alternately, after a warm-up call of each.

    Alternating keeps both exposed to the same machine load (shared virtual
    machines drift by tens of per cent within seconds), and small calls are
    repeated until about ``budget_s`` has passed so their minimum is a stable one.
    """
    baseline()
    candidate()
    best = [float("inf"), float("inf")]
    spent, repeat = 0.0, 0
    while repeat < min_repeat or (spent < budget_s and repeat < max_repeat):
        for i, fn in enumerate((baseline, candidate)):
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            best[i] = min(best[i], elapsed)
            spent += elapsed
        repeat += 1
    return best[0], best[1]


def environment() -> dict:
    """CPU, CPUs available, Python, compiler and the BLAS environment variables."""
    return {
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "compiler": compiler_version(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
