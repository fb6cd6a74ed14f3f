#!/usr/bin/env python3
"""Benchmark: approximate GEMM against numpy's float32 matmul on the same shapes, in one run.

Shapes: 1024^3; the GEMMs of LeNet-5 on 28x28 inputs and of the CIFAR AlexNet of
the reference study (227x227 inputs, its five convolutions), each as forward,
input-gradient and filter-gradient GEMM at batch 64 (specs: issue "Approximate
GEMM engine"). For each shape it prints numpy's time, the approximate GEMM's
time and their ratio (the figure we track; goal <= 3), plus the environment:
CPU, threads, the BLAS library and kernel numpy ran, and OPENBLAS_CORETYPE.

    .venv/bin/python scripts/bench_gemm.py [--model mitchell --bits 7] [--quick] [--threads N] [--runs 3]
    .venv/bin/python scripts/bench_gemm.py --backend cuda     # scripts/bench_cuda.py: a GPU, CuPy or PyTorch
    .venv/bin/python scripts/bench_gemm.py --calibrate        # thorough fit of the planner's costs on this CPU

``--backend cuda`` runs scripts/bench_cuda.py (with --model, --bits and --quick): the device
kernels timed with CUDA events against cuBLAS SGEMM on the same GPU, at 4096^3 and the shapes
above (goal <= 2 at 4096^3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from amsim import gemm
from amsim.gemm import cpu, engine, planner
import perfdoc
from benchenv import best_of_pair, environment

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


def kernel_build() -> str:
    """Which instructions the CPU kernels were built with (engine.VARIANTS, -march=native)."""
    variant = os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    flags = engine.cpu_flags().split()
    if variant != "portable" and "avx2" in flags and (variant == "avx2" or "avx512f" not in flags):
        return f"{variant}: AVX2 integer table kernel, portable C float kernels"
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
    parser.add_argument("--doc", metavar="PATH", help="also write the table into this Markdown file "
                        "(docs/performance.md), replacing this CPU's earlier one")
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
    env = {**environment(), "threads": args.threads or cpu.threads_for(None),
           "numpy": np.__version__, "multiplier": f"{args.model} M={args.bits}",
           "kernel": kernel_build()}
    print(json.dumps({"benchmark": "gemm", "environment": env, "goal": "ratio <= 3 on every shape",
                      "max_ratio": max(ratios), "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                      "results": results}, indent=1))
    if args.doc:
        write_doc(args.doc, env, results, args.runs)


def write_doc(path, env, results, runs):
    """This run's table in docs/performance.md (scripts/perfdoc.py), one section per multiplier and CPU."""
    rows = [[r["shape"], f"{r['M']}×{r['K']}×{r['N']}", f"{r['numpy_s'] * 1e3:.3f}", f"{r['approx_s'] * 1e3:.3f}",
             f"**{r['ratio']:.2f}**", ", ".join(f"{x:.2f}" for x in r["ratio_runs"])] for r in results]
    table = perfdoc.markdown_table(["GEMM", "M×K×N", "numpy float32 (ms)", "approximate (ms)", "ratio (median)",
                                    f"ratios of the {runs} runs"], rows)
    met = sum(r["ratio"] <= 3 for r in results)
    body = (f"Multiplier {env['multiplier']}; kernels: {env['kernel']}. Goal: ratio <= 3 on every shape "
            f"(met on {met} of {len(results)}).\n\n{table}")
    multiplier = env["multiplier"].split()[0]
    perfdoc.update(path, f"gemm-{multiplier}", env, body,
                   title=f"Approximate GEMM against numpy (`scripts/bench_gemm.py`, `{multiplier}`)")


def calibrate():
    """A thorough fit of the planner's costs on this CPU (amsim.gemm.planner.fit: every kernel and
    orientation of many shapes timed on one thread, the pool's hand-off costs), written to the
    cache that the engine reads at load, so that later processes plan with it. Prints the costs and
    how much slower the fitted model's choice ran than the best timed plan, at worst and on
    geometric mean."""
    variant = engine.variant_of(None)
    ffi, lib = engine.load(variant)
    fitted = planner.fit(ffi, lib, thorough=True)
    path = planner.cache_path(variant)
    planner.write_cache(path, fitted)
    planner.set_costs(ffi, lib, fitted["plain"], fitted.get("dp"))
    print(json.dumps({"benchmark": "gemm-calibration", "environment": environment(), "cache": str(path),
                      **fitted}, indent=1))


def bench_cuda(args):
    """The GPU benchmark lives in scripts/bench_cuda.py; ``--backend cuda`` runs it with these options."""
    import bench_cuda

    return bench_cuda.main(["--model", args.model, "--bits", str(args.bits), *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    sys.exit(main())
