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


def cpu_signature() -> str:
    """Vendor, family and model numbers: virtual machines often name every CPU "Intel Xeon Processor"."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.machine()
    return f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


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


def best_of_pair(baseline, candidate, *, budget_s: float = 0.6, rounds: int = 3, min_repeat: int = 1,
                 max_repeat: int = 200, warm_up_s: float = 0.3, settle_s: float = 0.25):
    """Smallest wall times of two functions, timed in alternating blocks after a warm-up.

    Alternating blocks keep both exposed to the same machine load (shared
    virtual machines drift by tens of per cent within seconds); within a block
    a small call is repeated until its share of ``budget_s`` is spent, so its
    minimum is a stable one. Before each candidate block the machine settles
    for ``settle_s``: OpenBLAS's threads busy-wait after every call
    (OPENBLAS_THREAD_TIMEOUT, about 0.1 s by default), and on two cores a
    spinning thread takes the core the candidate's second thread needs.
    Warming up runs the candidate for ``warm_up_s``: an idle virtual CPU takes
    a moment to come back, and the first calls that fan out over threads ran
    at single-thread speed here.
    """
    baseline()
    time.sleep(settle_s)
    warm_until = time.perf_counter() + warm_up_s
    candidate()
    while time.perf_counter() < warm_until:
        candidate()
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((baseline, candidate)):
            if i == 1:
                time.sleep(settle_s)
            spent, repeat = 0.0, 0
            while repeat < min_repeat or (spent < budget_s / rounds and repeat < max_repeat):
                t0 = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - t0
                best[i] = min(best[i], elapsed)
                spent += elapsed
                repeat += 1
    return best[0], best[1]


def blas_info():
    """numpy's BLAS libraries: their API, the kernel they picked for this CPU, threads, version."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return [{k: v for k, v in info.items() if k in ("internal_api", "architecture", "num_threads", "version")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def environment() -> dict:
    """CPU, CPUs available, Python, compiler, numpy's BLAS kernel and the BLAS environment variables."""
    import numpy  # noqa: F401  (loads the BLAS that blas_info reports)

    return {
        "cpu": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "compiler": compiler_version(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "blas": blas_info(),
    }
