#!/usr/bin/env python3
"""Benchmark: Numba sweeps against a plain C loop over the same compiled model function.

For each model, an exhaustive 2^24-pair sweep (12-bit operands) is timed three
ways in one process: the Numba grid kernel (amsim.sweep.int_grid), a plain C
loop compiled into the model's own extension (``amsim__grid``, calling the
same non-inlined ``amsim__model`` entry point), both on the same thread pool
and chunks, and the fused Numba statistics sweep (amsim.stats.int_stats).
Prints one JSON object; the tracked figure is ``numba_vs_c`` (goal >= 0.7).

    .venv/bin/python scripts/bench_sweep.py [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import amsim
from amsim import stats, sweep
import perfdoc
from benchenv import best_of, environment

MODELS = [("mitchell", {}), ("bam", {"h": 0, "v": 8})]
BITS = 12  # 2^12 x 2^12 = 2^24 pairs


def c_loop(cm, threads):
    """The baseline: amsim__grid (C) over the same row chunks, on the same number of threads."""
    n = 1 << cm.bits
    out = np.empty((n, n), np.int64)
    chunks = sweep._row_chunks(n, n)

    def work(chunk):
        r0, r1 = chunk
        cm.lib.amsim__grid(r0, r1, 0, n, cm.ffi.from_buffer("int64_t[]", out[r0:r1]))

    if threads == 1:
        for chunk in chunks:
            work(chunk)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, chunks))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=sweep.default_threads())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--doc", metavar="PATH", help="also write the table into this Markdown file "
                        "(docs/performance.md), replacing this CPU's earlier one")
    args = parser.parse_args()

    results = []
    for name, params in MODELS:
        cm = amsim.find_model(name).compile(BITS, params)
        n = 1 << BITS
        pairs = n * n
        # Warm up (JIT cache load, page faults) and check both paths agree bit for bit.
        numba_out = sweep.int_grid(cm, range(n), range(n), threads=args.threads)
        assert np.array_equal(numba_out, c_loop(cm, args.threads)), "Numba and C sweeps disagree"
        row = {"model": name, "params": params, "bits": BITS, "pairs": pairs}
        for threads in sorted({1, args.threads}):
            t_numba = best_of(lambda: sweep.int_grid(cm, range(n), range(n), threads=threads), args.repeat, warm_up=False)
            t_c = best_of(lambda: c_loop(cm, threads), args.repeat, warm_up=False)
            t_stats = best_of(lambda: stats.int_stats(cm, threads=threads), args.repeat, warm_up=False)
            row[f"threads_{threads}"] = {
                "numba_pairs_per_s": pairs / t_numba,
                "c_loop_pairs_per_s": pairs / t_c,
                "numba_vs_c": t_c / t_numba,
                "stats_sweep_pairs_per_s": pairs / t_stats,
            }
        results.append(row)

    import numba

    env = {**environment(), "threads": args.threads, "numba": numba.__version__, "numpy": np.__version__,
           "parallelism": "nogil Numba kernels on a ThreadPoolExecutor (no Numba threading layer)",
           "goal": "numba_vs_c >= 0.7 on all threads"}
    print(json.dumps({"benchmark": "sweep", "environment": env, "results": results}, indent=1))
    if args.doc:
        rows = [[f"`{r['model']}` {' '.join(f'{k}={v}' for k, v in r['params'].items())}".strip(), threads,
                 f"{s['numba_pairs_per_s'] / 1e6:.0f} M/s", f"{s['c_loop_pairs_per_s'] / 1e6:.0f} M/s",
                 f"**{s['numba_vs_c']:.2f}**", f"{s['stats_sweep_pairs_per_s'] / 1e6:.0f} M/s"]
                for r in results for threads, s in ((int(key.split("_")[1]), s) for key, s in r.items()
                                                    if key.startswith("threads_"))]
        table = perfdoc.markdown_table(["model (12-bit, 2^24 pairs)", "threads", "Numba sweep", "C loop",
                                        "Numba / C", "fused statistics sweep"], rows)
        perfdoc.update(args.doc, "sweep", env, f"Goal: Numba >= 0.7x the C loop on every row.\n\n{table}",
                       title="Exhaustive sweeps (`scripts/bench_sweep.py`)")


if __name__ == "__main__":
    main()
