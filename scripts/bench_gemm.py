#!/usr/bin/env python3
"""Benchmark: approximate GEMM against numpy's float32 matmul on the same shapes, in one run.

Shapes: 1024^3; the GEMMs of LeNet-5 on 28x28 inputs and of the CIFAR AlexNet of
the reference study (227x227 inputs, its five convolutions), each as forward,
input-gradient and filter-gradient GEMM at batch 64 (specs: issue "Approximate
GEMM engine"). For each shape it prints numpy's time, the approximate GEMM's
time and their ratio (the figure we track; goal <= 3), plus the environment:
CPU, threads, the BLAS library and kernel numpy ran, and OPENBLAS_CORETYPE.

    .venv/bin/python scripts/bench_gemm.py [--model mitchell --bits 7] [--quick] [--threads N] [--runs 3]
    .venv/bin/python scripts/bench_gemm.py --backend cuda     # needs a GPU and CuPy
    .venv/bin/python scripts/bench_gemm.py --calibrate        # refit planner.COST, _COST_DP on this CPU

With ``--backend cuda`` the device kernels (amsim_cuda_gemm, called through its
C ABI on CuPy device arrays) are timed with CUDA events against cuBLAS SGEMM
(cupy.matmul) on the same GPU, at 4096^3 and the shapes above (goal <= 2 at 4096^3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from amsim import gemm
from amsim.gemm import cpu, engine, planner
from benchenv import best_of, best_of_pair, environment

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


def blas_info():
    try:
        from threadpoolctl import threadpool_info

        return [{k: v for k, v in info.items() if k in ("internal_api", "architecture", "num_threads", "version")}
                for info in threadpool_info() if info.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def kernel_build() -> str:
    """Which instructions the CPU kernels were built with (engine.VARIANTS, -march=native)."""
    variant = os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    flags = engine.cpu_flags().split()
    if variant == "portable" or "avx512f" not in flags:
        return f"{variant}: portable C"
    vbmi = "avx512vbmi" in flags and variant in ("native", "no-bf16")
    bf16 = vbmi and "avx512_bf16" in flags and variant == "native"
    return (f"{variant}: AVX-512" + (" with VBMI byte-plane lookups" if vbmi else " float lookups")
            + (" and bfloat16 dot products" if bf16 else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mitchell")
    parser.add_argument("--bits", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="at least this many timings per block")
    parser.add_argument("--budget", type=float, default=0.6,
                        help="repeat small shapes until this many seconds are spent on each")
    parser.add_argument("--quick", action="store_true", help="skip the AlexNet shapes")
    parser.add_argument("--runs", type=int, default=1,
                        help="sweep all shapes this many times and report each shape's median ratio "
                             "(a shared virtual machine has outliers)")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--calibrate", action="store_true",
                        help="time both fast kernels in both orientations and fit the planner's cost model")
    args = parser.parse_args()
    if args.backend == "cuda":
        return bench_cuda(args)
    if args.calibrate:
        return calibrate()

    mult = gemm.resolve(args.model, args.bits)
    timings = {}  # shape -> [(numpy, approx) per run]; runs sweep every shape in turn
    for run in range(args.runs):
        rng = np.random.default_rng(0)
        for label, m, k, n, ta, tb in shapes(args.quick):
            a, b = operands(m, k, n, ta, tb, rng)
            a_np = a.T if ta else a
            b_np = b.T if tb else b
            t_np, t_am = best_of_pair(lambda: np.matmul(a_np, b_np),
                                      lambda: gemm.matmul(a, b, mult, transpose_a=ta, transpose_b=tb, backend="cpu",
                                                          threads=args.threads),
                                      min_repeat=args.repeat, budget_s=args.budget)
            timings.setdefault((label, m, k, n, ta, tb), []).append((t_np, t_am))
            print(f"run {run + 1}: {label:28s} {m:>7}x{k:>6}x{n:>5}  numpy {t_np * 1e3:9.2f} ms  "
                  f"approx {t_am * 1e3:9.2f} ms  ratio {t_am / t_np:6.2f}", file=sys.stderr)
    results = []
    for (label, m, k, n, ta, tb), runs in timings.items():
        ratios = sorted(t_am / t_np for t_np, t_am in runs)
        t_np, t_am = (float(np.median([r[i] for r in runs])) for i in (0, 1))
        results.append({"shape": label, "M": m, "K": k, "N": n, "transpose_a": ta, "transpose_b": tb,
                        "numpy_s": t_np, "approx_s": t_am, "ratio": float(np.median(ratios)),
                        "ratio_runs": ratios, "approx_gmac_per_s": m * k * n / t_am / 1e9})
    ratios = [r["ratio"] for r in results]
    env = {**environment(), "threads": args.threads or cpu.threads_for(None), "blas": blas_info(),
           "numpy": np.__version__, "multiplier": f"{args.model} M={args.bits}",
           "kernel": kernel_build()}
    print(json.dumps({"benchmark": "gemm", "environment": env, "goal": "ratio <= 3 on every shape",
                      "max_ratio": max(ratios), "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                      "results": results}, indent=1))


CALIBRATION_SHAPES = [(1024, 256, 256), (256, 1024, 64), (64, 256, 1024), (25, 20000, 6), (6, 20000, 25),
                      (20000, 25, 6), (6, 25, 20000), (150, 4000, 16), (16, 4000, 150), (512, 64, 512),
                      (64, 400, 120), (120, 400, 64), (300, 300, 300), (40, 2000, 40), (2000, 40, 40),
                      (40, 40, 2000), (128, 128, 128), (4000, 150, 16), (20000, 6, 25), (4000, 16, 150),
                      (64, 120, 400), (512, 1024, 1024)]


def split_costs(rng):
    """ns per element of amsim_split_f32 on one thread, for a contiguous operand ("split") and a
    transposed view ("split_t"). Timed on their own: in a GEMM on one thread, splitting Y and
    preparing its columns for the lookups both grow with its size, and cannot be told apart;
    on several threads the split is shared and each thread prepares its own columns."""
    ffi, lib = engine.load()
    x = rng.standard_normal((1024, 1024)).astype(np.float32)
    scale, idx = np.empty(x.size, np.float32), np.empty(x.size, np.uint16)
    ps, pi, ranges = ffi.from_buffer("float[]", scale), ffi.from_buffer("uint16_t[]", idx), ffi.new("int32_t[2]")
    costs = {}
    for name, view in (("split", x), ("split_t", x.T)):
        _, ptr, rs, cs = engine.strided(ffi, view)
        t = best_of(lambda: lib.amsim_split_f32(ptr, 1024, 1024, rs, cs, 7, 0, 0, ps, pi, 0, 1024, ranges), 7)
        costs[name] = t * 1e9 / x.size
    return costs


def fit_costs(mults, rng, fixed):
    """Time every (kernel, orientation) of CALIBRATION_SHAPES on one thread for each multiplier
    and fit the per-count costs, those in ``fixed`` (ns) held. Returns (costs, slowdowns):
    slowdowns maps (bits, m, k, n) to how much slower the fitted model's choice ran than the
    best plan."""
    names = ["build", "build_op", "fma", "row_k", "row_vec", "lookup", "lookup_group", "lookup_op", "prep", "prep_t",
             "out", "split", "split_t", "call"]
    features, times, groups = [], [], []
    real_plan = planner.fast_plan
    try:
        for mult in mults:
            bits = mult.bits
            for m, k, n in CALIBRATION_SHAPES:
                a = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal((k, n)).astype(np.float32)
                for method in ("expand", "lookup"):
                    for swap in (False, True):
                        planner.fast_plan = lambda *_args, _p=(method, swap, False): _p
                        t = best_of(lambda: gemm.matmul(a, b, mult, method=method, threads=1), 9)
                        rows, cols = (n, m) if swap else (m, n)
                        # row-major operands: swapping makes both transposed views
                        counts = {**planner.plan_features(method, rows, k, cols, bits, 1, swap), "call": 1}
                        features.append([counts.get(name, 0) for name in names])
                        times.append(t * 1e9)
                        groups.append((bits, m, k, n))
    finally:
        planner.fast_plan = real_plan
    x, y = np.array(features, float), np.array(times)
    held = np.array([fixed.get(name, 0.0) for name in names])
    rest = y - x @ held
    # least squares with the costs kept non-negative (a negative cost would be an artefact of
    # correlated counts): refit without the most negative one until none is left
    active = [i for i, name in enumerate(names) if name not in fixed]
    while True:
        coef = held.copy()
        coef[active] = np.linalg.lstsq(x[:, active] / y[:, None], rest / y, rcond=None)[0]
        negative = [i for i in active if coef[i] < 0 and names[i] != "call"]
        if not negative:
            break
        active.remove(min(negative, key=lambda i: coef[i]))
    predicted = x @ coef
    slowdowns = {}
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        chosen = min(members, key=lambda i: predicted[i])
        slowdowns[group] = times[chosen] / min(times[i] for i in members)
    return {n: round(float(c), 3) for n, c in zip(names, coef)}, slowdowns


#: Small GEMMs (LeNet-5's dense layers and the like), where handing half the work to the pool's
#: awake worker costs about as much as it saves: the shapes "threads_awake" is fitted on.
HANDOFF_SHAPES = [(64, 84, 10), (64, 10, 84), (64, 120, 84), (64, 84, 120), (120, 64, 84), (64, 256, 64),
                  (128, 128, 128), (64, 400, 120), (64, 120, 400)]


def fit_handoff(mult, costs, rng):
    """What a parallel call costs beyond its busiest thread's share of the work, with the pool's
    worker awake (back-to-back calls), in ns: the median over HANDOFF_SHAPES of the parallel
    time less the single-threaded one plus the work the model says the second thread takes
    over. It includes what an empty job's round trip does not: the worker reading operands
    from the caller's cache, and a second thread slower than the first (two vCPUs may share a
    core)."""
    real_plan = planner.fast_plan
    overheads = []
    try:
        for m, k, n in HANDOFF_SHAPES:
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            method, swap, _ = real_plan(m, k, n, mult.bits, "auto", 1, False, False, False, mult.dot_products)
            rows, cols = (n, m) if swap else (m, n)
            model = [sum(costs[f] * c for f, c in planner.plan_features(method, rows, k, cols, mult.bits, t,
                                                                     swap).items())
                     for t in (1, 2)]
            times = []
            for parallel in (False, True):
                planner.fast_plan = lambda *_args, _p=(method, swap, parallel): _p
                times.append(best_of(lambda: gemm.matmul(a, b, mult, threads=2), 200) * 1e9)
            overheads.append(times[1] - times[0] + model[0] - model[1])
    finally:
        planner.fast_plan = real_plan
    return round(float(np.median(overheads)))


def calibrate():
    """Fit planner.COST and planner.COST_DP: time every (kernel, orientation) on one thread and solve
    for the constants.

    The model is linear in the constants (planner.plan_features counts what each plan does, the
    operands' split included), plus a fixed per-call cost shared by all plans ("call": the
    planner compares plans of one GEMM, so it does not use it; a negative fit only says that
    the counts overstate the smallest shapes). The fit weights relative errors and keeps the
    other costs non-negative; the split's costs are timed on their own (split_costs). _COST is fitted on `exact` (M = 4, 6, 7, 8), whose entries are
    not bfloat16 values, _COST_DP on `mitchell` (M = 4, 6, 7), whose entries are and which the
    kernels take with bfloat16 dot products (where the build has them). "threads" is the median
    time to hand work to the pool and wait for it with its workers asleep; "threads_awake", with
    a worker awake, is fitted on small GEMMs (fit_handoff). Prints the constants and how much slower the model's choice is
    than the best measured plan, at worst (and where) and on geometric mean.
    """
    rng = np.random.default_rng(0)
    fixed = split_costs(rng)
    families = {"cost_ns": [gemm.resolve("exact", bits) for bits in (4, 6, 7, 8)]}
    dp = [gemm.resolve("mitchell", bits) for bits in (4, 6, 7)]
    if all(mult.dot_products for mult in dp):
        families["cost_ns_dp"] = dp
    lib = engine.load()[1]
    asleep = []
    for _ in range(50):  # the pool's cost (two parts of 50 us each, less 50 us) after its workers slept
        time.sleep(0.005)
        asleep.append(lib.amsim_pool_overhead_ns(2, 50_000.0))
    report = {"benchmark": "gemm-calibration", "environment": environment()}
    for key, mults in families.items():
        costs, slowdowns = fit_costs(mults, rng, fixed)
        costs = {**costs, "threads": round(float(np.median(asleep)))}
        costs["threads_awake"] = fit_handoff(next(m for m in mults if m.bits == 7), costs, rng)
        worst = max(slowdowns, key=slowdowns.get)
        report[key] = costs
        report[key + "_choice_slowdown"] = {
            "max": slowdowns[worst], "worst_case": dict(zip(("bits", "m", "k", "n"), worst)),
            "geomean": float(np.exp(np.mean(np.log(list(slowdowns.values())))))}
    print(json.dumps(report, indent=1))


def bench_cuda(args):
    """amsim's CUDA kernels against cuBLAS SGEMM (through CuPy), device time only."""
    import ctypes

    import cupy as cp

    from amsim.gemm import cuda

    mult = gemm.resolve(args.model, args.bits)
    lib = cuda.library()
    lut = cp.asarray(mult.table)
    stream = cp.cuda.get_current_stream()
    results = []
    for label, m, k, n, _ta, _tb in [("4096^3", 4096, 4096, 4096, False, False)] + shapes(args.quick):
        a = cp.random.standard_normal((m, k), dtype=cp.float32)
        b = cp.random.standard_normal((k, n), dtype=cp.float32)
        sa, pa, ra = cp.empty((m, k), cp.float32), cp.empty((m, k), cp.uint16), cp.empty(2, cp.int32)
        sb, pb, rb = cp.empty((k, n), cp.float32), cp.empty((k, n), cp.uint16), cp.empty(2, cp.int32)
        c = cp.empty((m, n), cp.float32)
        ptr = lambda x: ctypes.c_void_p(x.data.ptr)  # noqa: E731
        v_lo, v_hi = mult.table_exponents

        def approx():
            s = ctypes.c_void_p(stream.ptr)
            lib.amsim_cuda_split(ptr(a), m, k, k, 1, mult.bits, 0, ptr(sa), ptr(pa), ptr(ra), s)
            lib.amsim_cuda_split(ptr(b), k, n, n, 1, mult.bits, 0, ptr(sb), ptr(pb), ptr(rb), s)
            lib.amsim_cuda_gemm(m, n, k, ptr(sa), ptr(pa), ptr(ra), ptr(sb), ptr(pb), ptr(rb), ptr(lut), mult.bits,
                                v_lo, v_hi, 0, 1, ptr(c), n, s)

        def timed(fn):
            fn()
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            best = float("inf")
            for _ in range(max(args.repeat, 5)):
                start.record(stream)
                fn()
                stop.record(stream)
                stop.synchronize()
                best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
            return best

        t_cublas = timed(lambda: cp.matmul(a, b))
        t_am = timed(approx)
        results.append({"shape": label, "M": m, "K": k, "N": n, "cublas_s": t_cublas, "approx_s": t_am,
                        "ratio": t_am / t_cublas})
        print(f"{label:28s} cuBLAS {t_cublas * 1e3:9.3f} ms  approx {t_am * 1e3:9.3f} ms  "
              f"ratio {t_am / t_cublas:6.2f}", file=sys.stderr)
    props = cp.cuda.runtime.getDeviceProperties(0)
    env = {"gpu": props["name"].decode(), "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
           "cupy": cp.__version__, "multiplier": f"{args.model} M={args.bits}",
           "note": "the fast (exact-window) kernel path; operands drawn from N(0, 1)"}
    print(json.dumps({"benchmark": "gemm-cuda", "environment": env, "goal": "ratio <= 2 at 4096^3",
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
