#!/usr/bin/env python3
"""Benchmark: the integer LUT GEMM against numpy's float32 matmul on the same shapes, in one run.

Shapes: those of scripts/bench_gemm.py (1024^3, and the forward, input-gradient and
filter-gradient GEMMs of LeNet-5 and AlexNet at batch 64), imported from it. For each shape
it times ``amsim.gemm.int_matmul`` on 8-bit operands given as pre-made uint8 patterns (what
the TensorFlow op passes: nothing to convert) with an unsigned 8 x 8-bit circuit's table
(``mitchell`` by default, whose operands' values are their patterns), prepared once as an
``amsim.gemm.IntegerTable`` (as the TensorFlow ops hold it), against numpy's float32 matmul of the
same shape, alternating blocks and keeping the best of each (scripts/benchenv.py), and prints one
JSON object: the environment, and per shape both times, their ratio and whether it meets the goal
(<= 3). The forward GEMMs are those that quantized training runs on the integer GEMM (its
gradients are float32, straight-through): the summary counts them apart.

    .venv/bin/python scripts/bench_int_gemm.py [--quick] [--runs 3] [--threads N] [--doc docs/performance.md]

With ``AMSIM_GEMM_VARIANT`` set (``avx2``: the build for CPUs without AVX-512), it times that build
and writes its table into a section of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import amsim
import perfdoc
from amsim import generate
from amsim.gemm import IntegerTable, cpu, int_matmul
from bench_gemm import kernel_build, shapes
from benchenv import best_of_pair, environment

GOAL = 3.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuit", default="mitchell", help="an 8-bit integer circuit (amsim.find_model)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget", type=float, default=0.6,
                        help="repeat small shapes until this many seconds are spent on each")
    parser.add_argument("--quick", action="store_true", help="skip the AlexNet shapes")
    parser.add_argument("--runs", type=int, default=1,
                        help="sweep all shapes this many times and report each shape's median ratio")
    parser.add_argument("--doc", metavar="PATH", help="also write the table into this Markdown file "
                        "(docs/performance.md), replacing this CPU's earlier one")
    args = parser.parse_args()

    lut = generate.integer_lut(amsim.find_model(args.circuit), 8)
    signed = bool(lut.meta.get("signed"))
    table = IntegerTable(lut, signed=signed)
    timings = {}  # shape -> [(numpy, int_matmul) per run]
    for run in range(args.runs):
        rng = np.random.default_rng(0)
        for label, m, k, n, _ta, _tb in shapes(args.quick):
            # the transposes of bench_gemm's shapes are the TensorFlow op's business: here the GEMM's shape
            a = rng.integers(0, 256, (m, k)).astype(np.uint8)
            b = rng.integers(0, 256, (k, n)).astype(np.uint8)
            a_f, b_f = a.astype(np.float32), b.astype(np.float32)
            if signed:  # the patterns of signed operands: two's complement values in int8
                a, b = a.view(np.int8), b.view(np.int8)
            t_np, t_int = best_of_pair(lambda: np.matmul(a_f, b_f),
                                       lambda: int_matmul(a, b, table, signed=signed, bits=8, threads=args.threads),
                                       budget_s=args.budget)
            timings.setdefault((label, m, k, n), []).append((t_np, t_int))
            print(f"run {run + 1}: {label:28s} {m:>7}x{k:>6}x{n:>5}  numpy {t_np * 1e3:9.3f} ms  "
                  f"int_matmul {t_int * 1e3:9.3f} ms  ratio {t_int / t_np:6.2f}", file=sys.stderr)
    results = []
    for (label, m, k, n), runs in timings.items():
        ratios = sorted(t_int / t_np for t_np, t_int in runs)
        t_np, t_int = (float(np.median([r[i] for r in runs])) for i in (0, 1))
        ratio = float(np.median(ratios))
        results.append({"shape": label, "M": m, "K": k, "N": n, "numpy_s": t_np, "int_matmul_s": t_int,
                        "ratio": ratio, "ratio_runs": ratios, "meets_goal": ratio <= GOAL,
                        "quantized_training": label.endswith("forward"), "int_gmac_per_s": m * k * n / t_int / 1e9})
    ratios = [r["ratio"] for r in results]
    env = {**environment(), "threads": args.threads or cpu.threads_for(None), "numpy": np.__version__,
           "circuit": f"{args.circuit} (8-bit, {'signed' if signed else 'unsigned'})", "kernel": kernel_build(),
           "operands": "pre-made 8-bit patterns (int8 for signed circuits, uint8 else), as the TensorFlow op "
                       "passes them, with int_matmul's checks; the table prepared once (amsim.gemm.IntegerTable), "
                       "as the TensorFlow ops hold it"}
    forward = [r for r in results if r["quantized_training"]]
    print(json.dumps({"benchmark": "int_gemm", "environment": env, "goal": f"ratio <= {GOAL:g} on every shape",
                      "met": sum(r["meets_goal"] for r in results), "shapes": len(results),
                      "met_forward": sum(r["meets_goal"] for r in forward), "forward_shapes": len(forward),
                      "max_ratio": max(ratios), "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                      "results": results}, indent=1))
    if args.doc:
        write_doc(args.doc, env, results, args.runs)


def write_doc(path, env, results, runs):
    """This run's table in docs/performance.md (scripts/perfdoc.py), one section per CPU."""
    rows = [[r["shape"], f"{r['M']}×{r['K']}×{r['N']}", f"{r['numpy_s'] * 1e3:.3f}", f"{r['int_matmul_s'] * 1e3:.3f}",
             f"**{r['ratio']:.2f}**", ", ".join(f"{x:.2f}" for x in r["ratio_runs"]),
             "yes" if r["meets_goal"] else "no"] for r in results]
    table = perfdoc.markdown_table(["GEMM", "M×K×N", "numpy float32 (ms)", "int_matmul (ms)", "ratio (median)",
                                    f"ratios of the {runs} runs", f"≤ {GOAL:g}"], rows)
    met = sum(r["meets_goal"] for r in results)
    forward = [r for r in results if r["quantized_training"]]
    body = (f"Circuit {env['circuit']}; operands {env['operands']}; kernels: {env['kernel']}. "
            f"Goal: ratio <= {GOAL:g} on every shape (met on {met} of {len(results)}; on "
            f"{sum(r['meets_goal'] for r in forward)} of the {len(forward)} forward GEMMs, which quantized "
            f"training runs on the integer GEMM).\n\n{table}")
    variant = os.environ.get("AMSIM_GEMM_VARIANT") or "native"
    key, title = "int-gemm", "Integer LUT GEMM against numpy (`scripts/bench_int_gemm.py`)"
    if variant != "native":  # a build for other CPUs, forced on this one: a section of its own
        key, title = (f"int-gemm-{variant}", f"Integer LUT GEMM against numpy, the `{variant}` build "
                      f"(`AMSIM_GEMM_VARIANT={variant} scripts/bench_int_gemm.py`)")
    perfdoc.update(path, key, env, body, title=title)


if __name__ == "__main__":
    sys.exit(main())
