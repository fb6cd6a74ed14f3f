"""The CPU backend's call path: a GEMM made ready once per operand layout, then called cheaply."""

from __future__ import annotations

import functools
import os

import numpy as np

from ..errors import RangeError
from . import engine, planner

_FLOAT32 = np.dtype(np.float32)


def threads_for(threads):
    return max(1, int(threads)) if threads else default_threads()


@functools.lru_cache(maxsize=1)
def default_threads() -> int:
    """``AMSIM_NUM_THREADS``, or every CPU this process may use: read at the first GEMM, since
    looking the environment up costs about a microsecond, a tenth of a small GEMM."""
    env = os.environ.get("AMSIM_NUM_THREADS")
    return max(1, int(env)) if env else max(1, len(os.sched_getaffinity(0)))


#: Below this much work (products) the direct and model kernels run in the calling thread; the
#: fast kernels decide by their cost model.
_PARALLEL_MIN_WORK = 1 << 20


def call_key(a, b, rounding, mode, method, threads):
    """What a made-ready GEMM (ready_call) depends on besides the multiplier: the operands'
    shapes and layouts and the options. The planner and the kernels' build are part of it, so
    that ones put in their place (tests, ``bench_gemm.py --calibrate``) take effect."""
    return a.shape, a.strides, b.shape, b.strides, rounding, mode, method, threads, planner.fast_plan, engine.load


def matmul_2d(a, b, mult, rounding, mode, method, threads):
    calls = mult._calls
    key = call_key(a, b, rounding, mode, method, threads)
    call = calls.get(key)
    if call is None:
        call = ready_call(a, b, mult, rounding, mode, method, threads)
        if len(calls) >= _MAX_CALLS:
            calls.clear()
        calls[key] = call
    return call(a, b)


#: Made-ready GEMMs kept per multiplier (a network's layers need a few each).
_MAX_CALLS = 256



def ready_call(a, b, mult, rounding, mode, method, threads):
    """A function computing ``a (x) b`` for operands shaped and laid out like a and b.

    It holds the planner's choices in an ``amsim_call`` for amsim_gemm_call,
    which picks the plan for a sleeping or an awake pool at each call, so a
    call costs a few microseconds of Python: small GEMMs take little more.
    """
    ffi, lib = engine.load()
    m_rows, k = a.shape
    n = b.shape[1]
    shape = (m_rows, n)
    if m_rows == 0 or n == 0 or k == 0:
        return lambda _a, _b: np.zeros(shape, np.float32)
    threads = threads_for(threads)
    work = m_rows * n * k
    mode_i = 1 if mode == "approxtrain" else 0
    rne = 1 if rounding == "rne" else 0
    a_ptr, ars, acs = engine.pointer(ffi, a)
    b_ptr, brs, bcs = engine.pointer(ffi, b)

    if mult.table is None or method == "model":
        if mult.model is None:
            raise RangeError("method='model' needs a multiplier built from a model")
        cm = mult.model
        model_threads = threads if work * 64 >= _PARALLEL_MIN_WORK else 1

        def call_model(a, b):
            out = np.empty(shape, _FLOAT32)
            lib.amsim_gemm_model(m_rows, n, k, a_ptr(a), ars, acs, b_ptr(b), brs, bcs, mult.bits, rne, mode_i,
                                 cm.address, int(cm.kind == "float"), ffi.from_buffer("float[]", out), n,
                                 model_threads)
            return out

        return call_model

    if method in ("expand", "lookup") and not mult.expandable:
        raise RangeError(f"method={method!r} needs M <= 8 and a LUT of positive finite entries")
    struct = ffi.new("struct amsim_call *")
    struct.M, struct.N, struct.K = m_rows, n, k
    struct.ars, struct.acs, struct.brs, struct.bcs = ars, acs, brs, bcs
    struct.m, struct.rounding, struct.mode, struct.forced = mult.bits, rne, mode_i, method != "auto"
    fast = method != "direct" and mult.expandable
    struct.v_lo, struct.v_hi = mult.table_exponents if fast else (0, 0)
    # a transposed view has contiguous columns: a row stride of 1 element, a larger column one
    a_t, b_t = ars == 1 and acs != 1 and k > 1, brs == 1 and bcs != 1 and n > 1
    for awake, plan in enumerate(struct.plan):
        if fast:
            # The LUT is expanded into (or looked up along) Y, the operand whose columns the inner
            # loop runs over: B, or A when the plan swaps the operands to compute C^T = B^T A^T
            # with the LUT transposed (its rows stay X's mantissas).
            name, swap, parallel = planner.fast_plan(m_rows, k, n, mult.bits, method, threads, threads > 1 and bool(awake),
                                              a_t, b_t, mult.dot_products)
        else:
            # the direct kernel takes about 16 times as long per product as the fast ones
            name, swap, parallel = "direct", False, work * 16 >= _PARALLEL_MIN_WORK
        plan.swap, plan.method = swap, planner.METHOD_CODES[name]
        plan.threads, plan.by_rows = threads if parallel else 1, planner.SPLIT_CODES.get(parallel, -1)
        plan.lut, plan.plut = mult.kernel_tables(swap)
        if name == "direct":
            plan.plut = ffi.NULL
    run, buffer = lib.amsim_gemm_call, ffi.from_buffer

    def call(a, b):
        out = np.empty(shape, _FLOAT32)  # every kernel writes every output
        if run(struct, a_ptr(a), b_ptr(b), buffer("float[]", out)):
            raise MemoryError("approximate GEMM kernel: out of memory for its work buffers")
        return out

    return call


