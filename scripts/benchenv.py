"""What the benchmark scripts record about the machine, and how they time things."""

from __future__ import annotations

import csv
import os
import platform
import re
import shutil
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


def _output(cmd: list[str], timeout_s: float = 30) -> str | None:
    """A command's stdout, or None when it cannot run, fails or hangs (a wedged driver can)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _nvcc() -> str | None:
    """The nvcc amsim builds its kernels with (amsim.gemm.cuda.nvcc's rule), else the one on PATH."""
    try:
        from amsim.gemm.cuda import nvcc

        return nvcc()
    except Exception:  # noqa: BLE001 -- amsim not importable yet (a bare machine), or no nvcc where it looks
        return shutil.which("nvcc")


def gpu_environment() -> dict:
    """The GPUs as nvidia-smi describes them, their driver's CUDA version and nvcc's release.

    Per GPU its model, memory, compute capability and driver version; never a serial number, UUID
    or bus id, since the JSON is shared. Nothing here raises: a missing or failing tool leaves its
    fields None and says why under "errors". nvidia-smi lists every GPU whatever
    CUDA_VISIBLE_DEVICES says; the variable is recorded beside them.
    """
    env = {"gpus": [], "driver": None, "cuda_driver": None, "nvcc": None,
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "errors": []}
    smi = shutil.which("nvidia-smi")
    query = smi and _output([smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
                             "--format=csv,noheader,nounits"])
    if not smi:
        env["errors"].append("nvidia-smi not found")
    elif query is None:
        env["errors"].append("nvidia-smi failed")
    else:
        for name, driver, memory, cap in csv.reader(query.strip().splitlines(), skipinitialspace=True):
            env["gpus"].append({"name": name, "memory_mib": int(memory) if memory.isdigit() else memory,
                                "compute_capability": cap})
            env["driver"] = driver
        # The CUDA version the driver supports is only in nvidia-smi's banner.
        found = re.search(r"CUDA Version\s*:\s*([0-9.]+)", _output([smi]) or "")
        env["cuda_driver"] = found and found.group(1)
    nvcc = _nvcc()
    release = nvcc and re.search(r"release [0-9.]+, V([0-9.]+)", _output([nvcc, "--version"]) or "")
    if release:
        env["nvcc"] = release.group(1)
    else:
        env["errors"].append("nvcc not found" if not nvcc else "nvcc --version failed")
    return env
