#!/usr/bin/env python3
"""Benchmark: approximate GEMM against numpy's float32 matmul on the same shapes, in one run.

Shapes: 1024^3; the GEMMs of LeNet-5 on 28x28 inputs and of the CIFAR AlexNet of
the reference study (227x227 inputs, its five convolutions), each as forward,
input-gradient and filter-gradient GEMM at batch 64 (specs: issue "Approximate
GEMM engine"). For each shape it prints numpy's time, the approximate GEMM's
time and their ratio (the figure we track; goal <= 3), plus the environment:
CPU, threads, the BLAS library and kernel numpy ran, and OPENBLAS_CORETYPE.

    .venv/bin/python scripts/bench_gemm.py [--model mitchell --bits 7] [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from amsim import gemm

BATCH = 64


def conv_gemms(name, hw, c, o, k, stride=1, padding="SAME"):
    """(label, M, K, N, transpose flags) of the forward, input-grad and filter-grad GEMMs."""
    if padding == "SAME":
        out = -(-hw // stride)
    else:
        out = (hw - k) // stride + 1
    rows, depth = BATCH * out * out, k * k * c
    return [
        (f"{name} forward", rows, depth, o, False, False),
        (f"{name} input-grad", rows, o, depth, False, True),      # dY @ W^T
        (f"{name} filter-grad", depth, rows, o, True, False),     # X_col^T @ dY
    ]


def dense_gemms(name, n_in, n_out):
    return [
        (f"{name} forward", BATCH, n_in, n_out, False, False),
        (f"{name} input-grad", BATCH, n_out, n_in, False, True),
        (f"{name} filter-grad", n_in, BATCH, n_out, True, False),
    ]


def shapes(quick: bool):
    out = [("1024^3", 1024, 1024, 1024, False, False)]
    out += conv_gemms("lenet5 conv1", 28, 1, 6, 5)
    out += conv_gemms("lenet5 conv2", 14, 6, 16, 5, padding="VALID")
    out += dense_gemms("lenet5 fc1", 400, 120)
    out += dense_gemms("lenet5 fc2", 120, 84)
    out += dense_gemms("lenet5 fc3", 84, 10)
    if not quick:
        out += conv_gemms("alexnet conv1", 227, 3, 96, 11, stride=4, padding="VALID")
        out += conv_gemms("alexnet conv2", 27, 96, 256, 5)
        out += conv_gemms("alexnet conv3", 13, 256, 384, 3)
        out += conv_gemms("alexnet conv4", 13, 384, 384, 3)
        out += conv_gemms("alexnet conv5", 13, 384, 256, 3)
    return out


def operands(m, k, n, ta, tb, rng):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return a, b


def best_of(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def blas_info():
    try:
        from threadpoolctl import threadpool_info

        return [{k: v for k, v in info.items() if k in ("internal_api", "architecture", "num_threads", "version")}
                for info in threadpool_info() if info.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mitchell")
    parser.add_argument("--bits", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the AlexNet shapes")
    args = parser.parse_args()

    mult = gemm.resolve(args.model, args.bits)
    rng = np.random.default_rng(0)
    results = []
    for label, m, k, n, ta, tb in shapes(args.quick):
        a, b = operands(m, k, n, ta, tb, rng)
        a_np = a.T if ta else a
        b_np = b.T if tb else b
        repeat = args.repeat if m * k * n < 5e9 else 1
        t_np = best_of(lambda: np.matmul(a_np, b_np), repeat)
        t_am = best_of(lambda: gemm.matmul(a, b, mult, transpose_a=ta, transpose_b=tb, backend="cpu",
                                           threads=args.threads), repeat)
        results.append({"shape": label, "M": m, "K": k, "N": n, "transpose_a": ta, "transpose_b": tb,
                        "numpy_s": t_np, "approx_s": t_am, "ratio": t_am / t_np,
                        "approx_gmac_per_s": m * k * n / t_am / 1e9})
        print(f"{label:28s} {m:>7}x{k:>6}x{n:>5}  numpy {t_np * 1e3:9.2f} ms  approx {t_am * 1e3:9.2f} ms  "
              f"ratio {t_am / t_np:6.2f}", file=sys.stderr)
    ratios = [r["ratio"] for r in results]
    env = {
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "threads": args.threads or gemm._threads(None),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "blas": blas_info(),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "multiplier": f"{args.model} M={args.bits}",
        "kernel": "AVX-512 expand" if "avx512f" in gemm._cpu_flags() else "portable expand",
    }
    print(json.dumps({"benchmark": "gemm", "environment": env, "goal": "ratio <= 3 on every shape",
                      "max_ratio": max(ratios), "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
