"""The cost model that picks the fast kernel, its orientation and its threading (``fast_plan``)."""

from __future__ import annotations

import functools

from . import engine

# Cost model of the fast kernels: nanoseconds per count of plan_features on one core of a Zen 4
# with the VBMI build, fitted by `scripts/bench_gemm.py --calibrate` (only their ratios matter);
# COST_DP for LUTs the kernels take with bfloat16 dot products (Multiplier.dot_products).
# "build_op", "lookup_op": per instruction of a vpermt2ps blend tree, select_ops(2^M) of them,
# where blend trees run (one vector, or a build without VBMI). "split_t": an element of a
# transposed view, which is transposed as it is split. "threads", "threads_awake": handing work to
# the C pool and waiting for it, when its workers sleep (a wake-up, slow in a VM) and when one is
# still polling after a recent job. The means of three calibrations, except "prep_t": the means of
# three fits of it and "prep" with the others held (on a machine too noisy for a whole
# calibration); "prep", which now includes splitting Y, is kept: the fitted values (3.5, 2.3)
# chose by-tiles plans that ran 10-20 % slower than the by-rows ones (LeNet-5 conv2's filter
# gradient).
COST = {"build": 1.313, "build_op": 0.11, "fma": 0.61, "row_k": 0.23,
         "row_vec": 0.309, "lookup": 0.745, "lookup_group": 0.961, "lookup_op": 0.165, "prep": 1.54, "prep_t": 2.3,
         "out": 2.554, "split": 0.128, "split_t": 0.581, "threads": 56_000.0, "threads_awake": 13_100.0}
COST_DP = {"build": 0.398, "build_op": 0.217, "fma": 0.611, "row_k": 0.249,
            "row_vec": 0.107, "lookup": 0.514, "lookup_group": 0.385, "lookup_op": 0.441, "prep": 1.95, "prep_t": 2.7,
            "out": 2.38, "split": 0.128, "split_t": 0.581, "threads": 56_000.0, "threads_awake": 7_600.0}


def select_ops(p: int) -> int:
    return max(1, p // 16 - 1)


def plan_features(method: str, rows: int, k: int, cols: int, bits: int, threads: int = 1,
                   y_t: bool = False, by_rows: bool | None = None) -> dict:
    """What one plan does on its busiest thread, as counts of the COST items.

    The output is split between ``threads`` as amsim_gemm's partition does:
    by rows (``by_rows``; each thread then builds all of T, or prepares all of
    Y's columns for its lookups) or by 16-column tiles, when there are enough
    of them; by default (None) tiles first for expand, rows first for lookup.
    Expanding builds T (2^M entries per element of Y, a whole group of
    engine.build_group_vectors() vectors at a time) and sweeps one multiply-add per
    product. Looking up prepares Y's indices (and scales) per k and column
    vector, loads a LUT row per row, k and column chunk (of
    engine.lookup_chunk_vectors() vectors) and looks up 16 products at a time, with
    byte planes 64 at a time ("lookup_group": a part-filled group costs as
    much). Both write the output ("out": vectors of 16, transposed for a
    swapped plan). Splitting Y costs more when it is a transposed view
    (``y_t``: contiguous columns), which is transposed as it is split; X
    never is (the expand kernel splits a transposed X block by block, the
    others split X^T in memory order and read X k-major). The byte-plane
    lookups do not split Y: they prepare it from its raw values, gathering a
    transposed view as they go ("prep_t", on top of "prep").
    ``scripts/bench_gemm.py --calibrate`` fits COST to these counts.
    """
    p = 1 << bits
    tiles = -(-cols // 16)
    per_tile, per_row = -(-tiles // threads), -(-rows // threads)
    if by_rows is None:
        by_rows = method == "lookup"
    # amsim_gemm's partition: the preferred way when there are enough rows (tiles) for every thread
    if by_rows:
        by_tiles = threads > 1 and rows < threads and tiles >= threads
    else:
        by_tiles = threads > 1 and tiles >= threads
    vec, r = (per_tile, rows) if by_tiles else (tiles, per_row)
    # byte-plane lookups (VBMI) serve parts of two vectors or more; a single one takes a blend tree
    # of vpermt2ps, select_ops(2^M) of them (the "_op" counts)
    blend = engine.build_group_vectors() == 1 or vec == 1
    raw = method == "lookup" and not blend  # lookup_vbmi: Y read raw
    x_elems, y_elems = -(-rows * k // threads), 0 if raw else -(-k * cols // threads)
    split = {"split": x_elems + (0 if y_t else y_elems), "split_t": y_elems if y_t else 0}
    if method == "expand":
        group = 1 if blend else engine.build_group_vectors()
        built = -(-vec // group) * group
        return {**split, "build": k * built * p, "build_op": k * built * p * select_ops(p) if blend else 0,
                "fma": r * k * vec, "row_k": r * k, "out": r * vec}
    chunks = -(-vec // engine.lookup_chunk_vectors())
    # the kernel's even chunks, and in each the byte-plane lookups' groups of up to 4 vectors
    per = -(-vec // chunks)
    groups = 0 if blend else (vec // per) * -(-per // 4) + -(-(vec % per) // 4)
    return {**split, "prep": k * vec, "prep_t": k * vec if raw and y_t else 0,
            "row_vec": r * k * chunks * max(2, p // 16), "lookup": r * k * vec, "lookup_group": r * k * groups,
            "lookup_op": r * k * vec * select_ops(p) if blend else 0, "out": r * vec}



@functools.lru_cache(maxsize=4096)
def fast_plan(m_rows: int, k: int, n: int, bits: int, method: str, threads: int = 1,
               awake: bool = False, a_t: bool = False, b_t: bool = False,
               dp: bool = False) -> tuple[str, bool, bool | str]:
    """The fast kernel ("expand" or "lookup", or ``method`` when forced), orientation and threading.

    Returns (method, swap, parallel): swap computes C^T = B^T A^T, vectorising
    over A's rows instead of B's columns; parallel is False (one thread), or
    how ``threads`` threads split the output: "rows" or "tiles" (True: as
    amsim_gemm prefers).
    Each plan's time is estimated from what its busiest thread does
    (plan_features), and for several threads the cost of handing work to the
    pool: less when a worker is ``awake`` (amsim_pool_awake: one is polling,
    or GEMMs come back to back, so that one woken now stays awake for the
    next; a run of small GEMMs pays one wake-up). ``a_t``, ``b_t``: A or B is a
    transposed view (contiguous columns); swapping the operands transposes
    them. ``dp``: the LUT takes bfloat16 dot products (COST_DP). The plan with
    the least estimated time wins; the result is the same bits whichever it is.
    """
    c = COST_DP if dp else COST
    best = None
    for swap in (False, True):
        rows, cols = (n, m_rows) if swap else (m_rows, n)
        y_t = not a_t if swap else b_t
        for name in ("expand", "lookup"):
            if method not in ("auto", name):
                continue
            for t, split in [(1, False)] + ([(threads, "rows"), (threads, "tiles")] if threads > 1 else []):
                counts = plan_features(name, rows, k, cols, bits, t, y_t, split == "rows")
                cost = sum(c[f] * count for f, count in counts.items())
                cost += 0.0 if t == 1 else c["threads_awake" if awake else "threads"]
                if best is None or cost < best[0]:
                    best = (cost, name, swap, split)
    return best[1:]


METHOD_CODES = {"direct": 0, "expand": 1, "lookup": 2}
SPLIT_CODES = {"rows": 1, "tiles": 0}  # amsim_gemm's by_rows; anything else: -1, its own preference

