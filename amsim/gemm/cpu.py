"""The CPU backend's call path: a GEMM made ready once per operand layout, then called cheaply."""

from __future__ import annotations

import numpy as np

from ..errors import RangeError
from . import engine, planner

_FLOAT32 = np.dtype(np.float32)


def threads_for(threads):
    return max(1, int(threads)) if threads else default_threads()


def default_threads() -> int:
    """The engine's default: ``AMSIM_NUM_THREADS``, or every CPU this process may use (read by
    the engine at its first GEMM)."""
    return int(engine.load()[1].amsim_default_threads())


def call_key(a, b, rounding, mode, method, threads):
    """What a made-ready GEMM (ready_call) depends on besides the multiplier: the operands'
    shapes and layouts and the options. The planner and the kernels' build are part of it, so
    that ones put in their place (tests, ``bench_gemm.py --calibrate``) take effect."""
    return a.shape, a.strides, b.shape, b.strides, rounding, mode, method, threads, planner.plan, engine.load


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

    It holds the GEMM's arguments and the planner's choices for a sleeping and for an awake pool
    in a ``struct amsim_ready`` for amsim_gemm_ready, which picks the plan for the state the pool
    is in at each call, so a call costs a few microseconds of Python: small GEMMs take little more.
    """
    ffi, lib = engine.load()
    m_rows, k = a.shape
    n = b.shape[1]
    shape = (m_rows, n)
    if m_rows == 0 or n == 0 or k == 0:
        return lambda _a, _b: np.zeros(shape, np.float32)
    a_ptr, ars, acs = engine.pointer(ffi, a)
    b_ptr, brs, bcs = engine.pointer(ffi, b)
    ready = ffi.new("struct amsim_ready *")
    args = ffi.addressof(ready, "args")
    args.M, args.N, args.K = m_rows, n, k
    args.ars, args.acs, args.brs, args.bcs, args.ldc = ars, acs, brs, bcs, n
    args.rounding, args.mode = int(rounding == "rne"), int(mode == "approxtrain")
    args.threads = threads_for(threads)
    buffer = ffi.from_buffer

    if mult.table is None or method == "model":
        if mult.model is None:
            raise RangeError("method='model' needs a multiplier built from a model")
        cm = mult.model
        address, is_float = cm.address, int(cm.kind == "float")

        def call_model(a, b):
            out = np.empty(shape, _FLOAT32)
            # A copy per call, as threads share the template. The template is read through `ready`,
            # which owns it (`args` points into it and keeps nothing alive); the pointers are held
            # in locals for the call: a struct field keeps no cdata (or operand copy) alive.
            mine = ffi.new("struct amsim_gemm_args *", ready.args)
            pa, pb, pc = a_ptr(a), b_ptr(b), buffer("float[]", out)
            mine.a, mine.b, mine.c = pa, pb, pc
            lib.amsim_gemm_model(mine, mult.bits, address, is_float)
            return out

        return call_model

    if method in ("expand", "lookup") and not mult.expandable:
        raise RangeError(f"method={method!r} needs M <= 8 and a LUT of positive finite entries")
    lut = mult.engine_lut(ffi, lib)
    args.kernel = engine.KERNELS[method]
    ready.lut = lut.ptr
    choose = planner.plan if method != "direct" and lut.fast else planner.c_plan
    for awake, p in enumerate(ready.plan):
        name, swap, parallel = choose(ffi, lib, lut.ptr, args, bool(awake))
        p.kernel, p.swap = planner.KERNEL_CODES[name], swap
        p.threads, p.by_rows = args.threads if parallel else 1, planner.SPLIT_CODES.get(parallel, -1)
    run = lib.amsim_gemm_ready

    def call(a, b):
        out = np.empty(shape, _FLOAT32)  # every kernel writes every output
        rc = run(ready, a_ptr(a), b_ptr(b), buffer("float[]", out))
        if rc:
            raise MemoryError("approximate GEMM kernel: out of memory for its work buffers") if rc == -1 else \
                RangeError(f"amsim_gemm_ready refused its arguments (status {rc})")
        return out

    call.keep = lut  # the LUT's storage, which ready.lut points into
    return call
