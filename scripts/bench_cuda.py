#!/usr/bin/env python3
"""Benchmark: amsim's CUDA kernels against cuBLAS SGEMM on the same GPU, in one run.

Shapes: 4096^3 (the goal's), then those of scripts/bench_gemm.py: 1024^3 and the GEMMs of
LeNet-5 and AlexNet training at batch 64 (forward, input gradient, filter gradient; --quick
leaves AlexNet out). Each shape is timed on the device with CUDA events, three ways:

- cuBLAS SGEMM (CuPy's matmul, else PyTorch's; TF32 off), on the operands as a training step
  has them: a gradient's transposed operand is a transposed view, which cuBLAS takes as it is;
- amsim_cuda_matmul, the TensorFlow GPU op's own sequence: split A, split B (a transposed
  view through swapped strides), GEMM: the "ratio" is this time over cuBLAS's;
- amsim_cuda_gemm alone, on operands split beforehand ("gemm_ratio").

Then the integer LUT GEMM (amsim_cuda_int_gemm, which amsim.gemm.int_matmul runs for
backend="cuda") at 4096^3, 8-bit signed operands (--int-bits) and the exact product table, against
cuBLAS SGEMM of the same shape, after an exact comparison with the CPU backend in both accumulator
widths: the JSON's "int_gemm" (no goal; its ratio says what a circuit's integer GEMM costs next to
a float one).

Goal: ratio <= 2 at 4096^3. For scale, the issue puts ApproxTrain at about 8x cuBLAS SGEMM and
TFApprox at 7.5-12x (their figures, not measured here). Shapes that take microseconds are bound
by the host's launch overhead (Python calls on both sides), so their ratios say little about the
kernels. Before timing, both of the benchmark's paths are compared bit for bit with the CPU
backend on three small shapes (forward, input and filter gradient); a mismatch exits 1.

    python scripts/bench_cuda.py [--model mitchell --bits 7] [--quick] [--budget SECONDS]
    python scripts/bench_cuda.py --environment     # the machine's description only, no GPU work
    python scripts/bench_cuda.py --build-only      # build (or load) what the benchmark runs, then exit

The JSON goes to stdout (report() builds it), progress to stderr. Exit status: 0 done (goal met
or not: a benchmark, not a test), 1 a spot check failed (the float GEMM's or the integer GEMM's)
or an error ended the sweep (the JSON still holds the shapes timed before it), 2 bad arguments,
3 no GPU, nvcc, CuPy or PyTorch to run on. The real GPU is always timed: AMSIM_CUDA_EMULATION is
ignored.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchenv import environment, gpu_environment  # noqa: E402

GOAL_SHAPE = "4096^3"
GOAL_RATIO = 2.0
#: Where other simulators stand, as the issue gives them (not measured here).
ANCHORS = {"ApproxTrain": "about 8x cuBLAS SGEMM", "TFApprox": "7.5-12x cuBLAS SGEMM"}
#: Compared bit for bit with the CPU backend before timing: the three GEMMs of a training step,
#: so that both transposed layouts pass through both of the benchmark's paths.
CHECK_SHAPES = [("check forward", 96, 200, 80, False, False),
                ("check input-grad", 96, 80, 200, False, True),
                ("check filter-grad", 200, 96, 80, True, False)]
#: The integer GEMM's comparison with the CPU backend: tile edges of its kernel (64 x 64 outputs,
#: k in steps of 32), in int32 and in int64 accumulators.
INT_CHECK_SHAPES = [(96, 200, 80, "int32"), (65, 33, 129, "int32"), (130, 97, 63, "int64")]
EXIT_FAILED = 1  # a spot check failed, or a CUDA error ended the sweep
EXIT_UNAVAILABLE = 3


class Unavailable(Exception):
    """Something the benchmark needs is missing here: a GPU, nvcc, or CuPy and PyTorch."""


class Terminated(Exception):
    """SIGTERM arrived during the sweep (a time limit such as timeout's): what was timed is reported."""


def _terminate(signum, frame):
    raise Terminated("terminated by SIGTERM, a time limit")


def bench_shapes(quick: bool) -> list[tuple]:
    """(label, M, K, N, transpose_a, transpose_b): the goal's shape first, then bench_gemm's."""
    from bench_gemm import shapes

    return [(GOAL_SHAPE, 4096, 4096, 4096, False, False), *shapes(quick)]


def result_row(label, m, k, n, ta, tb, *, cublas_ms, amsim_ms, gemm_ms) -> dict:
    """One shape's entry of the JSON: the three device times (ms per call) and the ratios."""
    return {"shape": label, "M": m, "K": k, "N": n, "transpose_a": ta, "transpose_b": tb,
            "cublas_ms": cublas_ms, "amsim_ms": amsim_ms, "amsim_gemm_ms": gemm_ms,
            "ratio": amsim_ms / cublas_ms, "gemm_ratio": gemm_ms / cublas_ms,
            "amsim_gmac_per_s": m * k * n / (amsim_ms * 1e-3) / 1e9}


def int_result_row(m, k, n, *, bits: int, signed: bool, accumulator: str, cublas_ms: float,
                   int_ms: float) -> dict:
    """The integer GEMM's entry of the JSON: its device time and cuBLAS SGEMM's (ms per call) at one shape."""
    return {"shape": f"{m}x{k}x{n}", "M": m, "K": k, "N": n, "bits": bits, "signed": signed,
            "accumulator": accumulator, "cublas_ms": cublas_ms, "int_gemm_ms": int_ms, "ratio": int_ms / cublas_ms,
            "int_gmac_per_s": m * k * n / (int_ms * 1e-3) / 1e9}


def report(env: dict, results: list[dict], *, multiplier: str, check: dict | None, not_timed=(),
           error: str | None = None, int_gemm: dict | None = None) -> dict:
    """The benchmark's JSON object, from the environment, result_row()s and the spot check.

    The goal is judged on the goal shape's ratio (amsim_cuda_matmul against cuBLAS); its
    "met" is None when that shape was not timed. ``not_timed`` names the shapes left out, by the
    time budget or after ``error``, the failure that ended the sweep. ``int_gemm``: the integer
    GEMM's check, int_result_row() (None when not timed) and error, as :func:`int_gemm_part` gives them.
    """
    ratios = [r["ratio"] for r in results]
    goal = next((r for r in results if r["shape"] == GOAL_SHAPE), None)
    return {
        "benchmark": "gemm-cuda",
        "environment": env,
        "multiplier": multiplier,
        "goal": {"text": f"amsim_cuda_matmul (split A, split B, GEMM) <= {GOAL_RATIO:g}x cuBLAS SGEMM at {GOAL_SHAPE}",
                 "shape": GOAL_SHAPE, "max_ratio": GOAL_RATIO, "ratio": goal and goal["ratio"],
                 "met": None if goal is None else goal["ratio"] <= GOAL_RATIO},
        "anchors": ANCHORS,
        "check": check,
        "max_ratio": max(ratios, default=None),
        "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))) if ratios else None,
        "results": results,
        "not_timed": list(not_timed),
        "error": error,
        "int_gemm": int_gemm,
    }


def goal_line(rep: dict) -> str:
    """The one line a reader looks for: the goal shape's ratio and whether the goal is met."""
    goal = rep["goal"]
    if goal["met"] is None:
        return f"goal: {goal['shape']} not timed (goal <= {goal['max_ratio']:g}x cuBLAS SGEMM)"
    return (f"goal: amsim at {goal['shape']} takes {goal['ratio']:.2f}x cuBLAS SGEMM "
            f"(goal <= {goal['max_ratio']:g}x: {'met' if goal['met'] else 'not met'})")


def int_line(rep: dict) -> str:
    """The integer GEMM's line: its time and ratio to cuBLAS SGEMM, or why it was not timed."""
    part = rep.get("int_gemm") or {}
    row = part.get("result")
    if row is None:
        return f"int GEMM: not timed ({part.get('error') or 'not run'})"
    kind = "signed" if row["signed"] else "unsigned"
    return (f"int GEMM ({row['bits']}-bit {kind}, {row['accumulator']} sums) at {row['shape']}: "
            f"{row['int_gemm_ms']:.3f} ms, {row['ratio']:.2f}x cuBLAS SGEMM")


# ---------------------------------------------------------------------------------------------
# The device: memory, cuBLAS and CUDA events from CuPy or PyTorch
# ---------------------------------------------------------------------------------------------


def unwritten(dev, shape, dtype):
    """A device array of ``shape`` with every byte 0xFF (NaN as float32, -1 as an integer): a
    kernel's output starts as this, so that a kernel which writes nothing fails its check instead
    of passing on what the allocator's recycled memory held (an earlier run's correct result)."""
    dtype = np.dtype(dtype)
    return dev.upload(np.full(int(np.prod(shape)) * dtype.itemsize, 0xFF, np.uint8).view(dtype).reshape(shape))


def _version(code: int) -> str:
    """CUDA's integer version (13000, 12040) as "13.0", "12.4"."""
    return f"{code // 1000}.{code % 1000 // 10}"


class CupyDevice:
    """Device arrays, cuBLAS SGEMM and CUDA events through CuPy, on its current stream."""

    def __init__(self):
        # The baseline is SGEMM: CuPy reads CUPY_TF32 at import and would otherwise be allowed
        # to round the products to TF32.
        os.environ["CUPY_TF32"] = "0"
        import cupy

        self.cp = cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:  # raises without a driver
            raise Unavailable("CuPy sees no CUDA GPU")
        self.stream = cupy.cuda.get_current_stream()
        self.stream_ptr = self.stream.ptr

    def upload(self, host):
        return self.cp.asarray(host)

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def download(self, x) -> np.ndarray:
        return self.cp.asnumpy(x, stream=self.stream)

    @staticmethod
    def ptr(x) -> int:
        return x.data.ptr

    def matmul(self, a, b, out):
        self.cp.matmul(a, b, out=out)

    def elapsed_ms(self, fn, calls: int) -> float:
        start, stop = self.cp.cuda.Event(), self.cp.cuda.Event()
        start.record(self.stream)
        for _ in range(calls):
            fn()
        stop.record(self.stream)
        stop.synchronize()
        return self.cp.cuda.get_elapsed_time(start, stop)

    def describe(self) -> dict:
        rt = self.cp.cuda.runtime
        props = rt.getDeviceProperties(rt.getDevice())
        return {"library": f"cupy {self.cp.__version__}", "device": props["name"].decode(),
                "compute_capability": f"{props['major']}.{props['minor']}",
                "cuda_runtime": _version(rt.runtimeGetVersion()), "cuda_driver_api": _version(rt.driverGetVersion()),
                "tf32": False}


class TorchDevice:
    """Device arrays, cuBLAS SGEMM and CUDA events through PyTorch, on its current stream."""

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise Unavailable("PyTorch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # the baseline is SGEMM, not TF32
        self.torch = torch
        self.dtypes = {np.dtype(np.float32): torch.float32, np.dtype(np.uint16): torch.uint16,
                       np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
                       np.dtype(np.uint8): torch.uint8}
        self.stream = torch.cuda.current_stream()
        self.stream_ptr = self.stream.cuda_stream

    def upload(self, host):
        return self.torch.from_numpy(np.ascontiguousarray(host)).cuda()

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self.dtypes[np.dtype(dtype)], device="cuda")

    def download(self, x) -> np.ndarray:
        return x.cpu().numpy()

    @staticmethod
    def ptr(x) -> int:
        return x.data_ptr()

    def matmul(self, a, b, out):
        self.torch.matmul(a, b, out=out)

    def elapsed_ms(self, fn, calls: int) -> float:
        start, stop = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record(self.stream)
        for _ in range(calls):
            fn()
        stop.record(self.stream)
        stop.synchronize()
        return start.elapsed_time(stop)

    def describe(self) -> dict:
        torch = self.torch
        major, minor = torch.cuda.get_device_capability()
        return {"library": f"torch {torch.__version__}", "device": torch.cuda.get_device_name(),
                "compute_capability": f"{major}.{minor}", "cuda_runtime": torch.version.cuda, "tf32": False}


DEVICES = {"cupy": CupyDevice, "torch": TorchDevice}


def open_device(choice: str = "auto"):
    """CuPy's device, else PyTorch's (``choice`` "auto"), or the one named; Unavailable says why not."""
    reasons = []
    for name in (DEVICES if choice == "auto" else [choice]):
        try:
            return DEVICES[name]()
        except Unavailable as exc:
            reasons.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- ImportError, or the library's own CUDA error
            reasons.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise Unavailable(f"no array library can run cuBLAS on a GPU here ({'; '.join(reasons)})")


# ---------------------------------------------------------------------------------------------
# amsim's kernels, called as the TensorFlow op calls them
# ---------------------------------------------------------------------------------------------


def load_kernels():
    """amsim's kernels built for this GPU (compiled on first use), loaded with ctypes."""
    from amsim.gemm import cuda

    if not cuda.available():
        why = "AMSIM_DISABLE_CUDA is set" if os.environ.get("AMSIM_DISABLE_CUDA") else \
            "this benchmark needs an NVIDIA GPU, its driver and the CUDA runtime"
        raise Unavailable(f"no CUDA GPU available: {why}")
    try:
        return cuda.library()
    except cuda.CudaError as exc:  # no nvcc, or none that compiles for this GPU
        raise Unavailable(str(exc)) from None


class AmsimGemm:
    """C = op(A) (x) op(B) on the device through amsim's C ABI, two ways.

    A call runs ``amsim_cuda_matmul``, the TensorFlow op's own sequence (split A, split B, GEMM,
    in the op's workspace): what a training step pays. :meth:`split` and then :meth:`gemm` run
    the split kernels into buffers of this object and ``amsim_cuda_gemm`` alone on them, so that
    the GEMM can be timed without the splits. ``a`` is M x K, or K x M when ``ta`` (the op's A is
    then its transposed view, passed as swapped strides); likewise ``b`` is K x N, or N x K when
    ``tb``. Arithmetic: truncation, IEEE mode, the CPU backend's defaults.
    """

    def __init__(self, lib, dev, mult, lut, m, k, n, a, b, ta=False, tb=False):
        from amsim.gemm import cuda

        self.cuda, self.lib, self.dev, self.bits = cuda, lib, dev, mult.bits
        self.m, self.k, self.n = m, k, n
        self.held = (a, b, lut)  # the kernels see only pointers: a freed array's memory would be reused
        # op(A) and op(B) as the op takes them: pointer, then element strides of rows and columns
        self.a_view = (dev.ptr(a), *((1, m) if ta else (k, 1)))
        self.b_view = (dev.ptr(b), *((1, k) if tb else (n, 1)))
        self.arith = cuda.Arith.of(mult, dev.ptr(lut))
        size = ctypes.c_size_t()
        self._check(lib.amsim_cuda_matmul_workspace(m, n, k, ctypes.byref(size)), "amsim_cuda_matmul_workspace")
        self.workspace, self.workspace_bytes = dev.empty(max(size.value, 1), np.uint8), size.value
        self.offset = (ctypes.c_int64 * 1)(0)
        self.split_a = [dev.empty(m * k, np.float32), dev.empty(m * k, np.uint16), dev.empty(2, np.int32)]
        self.split_b = [dev.empty(k * n, np.float32), dev.empty(k * n, np.uint16), dev.empty(2, np.int32)]
        self.c = unwritten(dev, (m, n), np.float32)

    def _check(self, code: int, call: str) -> None:
        self.cuda.check(self.lib, code, call)

    def __call__(self):
        ptr = self.dev.ptr
        self._check(self.lib.amsim_cuda_matmul(self.m, self.n, self.k, *self.a_view, *self.b_view, 1, self.offset,
                                               self.offset, ptr(self.c), ctypes.byref(self.arith), ptr(self.workspace),
                                               self.workspace_bytes, self.dev.stream_ptr), "amsim_cuda_matmul")

    def split(self):
        ptr, stream = self.dev.ptr, self.dev.stream_ptr
        for (x, rs, cs), rows, cols, (scale, idx, exp_range) in ((self.a_view, self.m, self.k, self.split_a),
                                                                 (self.b_view, self.k, self.n, self.split_b)):
            self._check(self.lib.amsim_cuda_split(x, rows, cols, rs, cs, self.bits, 0, ptr(scale), ptr(idx),
                                                  ptr(exp_range), stream), "amsim_cuda_split")

    def gemm(self):
        ptr, arith = self.dev.ptr, self.arith
        (sa, pa, ra), (sb, pb, rb) = self.split_a, self.split_b
        self._check(self.lib.amsim_cuda_gemm(self.m, self.n, self.k, ptr(sa), ptr(pa), ptr(ra), ptr(sb), ptr(pb),
                                             ptr(rb), arith.lut, self.bits, arith.v_lo, arith.v_hi, arith.mode,
                                             arith.fast, ptr(self.c), self.n, self.dev.stream_ptr), "amsim_cuda_gemm")


def spot_check(lib, dev, mult, lut) -> dict:
    """Both of the benchmark's paths (amsim_cuda_matmul; the splits and amsim_cuda_gemm) on
    CHECK_SHAPES against the CPU backend, bit for bit."""
    from amsim import gemm
    from bench_gemm import operands

    rng = np.random.default_rng(1)
    cases = []
    for label, m, k, n, ta, tb in CHECK_SHAPES:
        a, b = operands(m, k, n, ta, tb, rng)
        want = gemm.matmul(a, b, mult, transpose_a=ta, transpose_b=tb, backend="cpu").view(np.uint32)
        run = AmsimGemm(lib, dev, mult, lut, m, k, n, dev.upload(a), dev.upload(b), ta, tb)
        run()
        op_equal = np.array_equal(dev.download(run.c).view(np.uint32), want)
        run.c = unwritten(dev, (m, n), np.float32)  # the second path must write its own result
        run.split()
        run.gemm()
        kernels_equal = np.array_equal(dev.download(run.c).view(np.uint32), want)
        cases.append({"shape": label, "M": m, "K": k, "N": n, "transpose_a": ta, "transpose_b": tb,
                      "matmul_bits_equal": bool(op_equal), "split_gemm_bits_equal": bool(kernels_equal)})
    passed = all(c["matmul_bits_equal"] and c["split_gemm_bits_equal"] for c in cases)
    return {"against": "amsim's CPU backend", "passed": passed, "cases": cases}


class AmsimIntGemm:
    """C = A @ B with every product looked up in an n-bit circuit's table, on the device:
    ``amsim_cuda_int_gemm`` on the operands' patterns (uint8), as amsim.gemm.int_matmul calls it.

    ``accumulator`` is "int32" or "int64", C's type (int_matmul picks the one no sum overflows).
    """

    def __init__(self, lib, dev, table, bits: int, signed: bool, pa, pb, accumulator: str):
        from amsim.gemm import cuda

        self.cuda, self.lib, self.dev, self.bits, self.signed = cuda, lib, dev, bits, signed
        (self.m, self.k), self.n = pa.shape, pb.shape[1]
        self.wide = accumulator == "int64"
        self.lut = dev.upload(np.ascontiguousarray(table, np.int32))
        self.a, self.b = dev.upload(np.ascontiguousarray(pa, np.uint8)), dev.upload(np.ascontiguousarray(pb, np.uint8))
        self.c = unwritten(dev, (self.m, self.n), np.int64 if self.wide else np.int32)

    def __call__(self):
        ptr = self.dev.ptr
        self.cuda.check(self.lib, self.lib.amsim_cuda_int_gemm(ptr(self.lut), self.bits, int(self.signed), self.m,
                                                               self.n, self.k, ptr(self.a), ptr(self.b), ptr(self.c),
                                                               int(self.wide), self.dev.stream_ptr),
                        "amsim_cuda_int_gemm")


def int_operands(rng, m, k, n, bits: int, signed: bool):
    """Random n-bit operands (values) and the exact n-bit product table indexed by their patterns."""
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    p = np.arange(1 << bits)
    values = np.where(p >= hi, p - (1 << bits), p) if signed else p
    return rng.integers(lo, hi, (m, k)), rng.integers(lo, hi, (k, n)), np.outer(values, values)


def int_spot_check(lib, dev, bits: int, signed: bool) -> dict:
    """amsim_cuda_int_gemm on INT_CHECK_SHAPES against the CPU backend, exactly."""
    from amsim.gemm import int_matmul

    rng = np.random.default_rng(2)
    mask = (1 << bits) - 1
    cases = []
    for m, k, n, accumulator in INT_CHECK_SHAPES:
        a, b, table = int_operands(rng, m, k, n, bits, signed)
        want = int_matmul(a, b, table, signed=signed, bits=bits, backend="cpu")
        run = AmsimIntGemm(lib, dev, table, bits, signed, a & mask, b & mask, accumulator)
        run()
        cases.append({"M": m, "K": k, "N": n, "accumulator": accumulator,
                      "equal": bool(np.array_equal(dev.download(run.c), want))})
    return {"against": "amsim's CPU backend", "passed": all(c["equal"] for c in cases), "cases": cases}


def time_int_gemm(lib, dev, bits: int, signed: bool, rounds: int, size: int = 4096) -> dict:
    """The integer GEMM at size^3 (the goal's shape), in the accumulator int_matmul picks, and cuBLAS
    SGEMM of the same shape: an int_result_row()."""
    from amsim.gemm.integer import accumulator_dtype

    m = k = n = size
    a, b, table = int_operands(np.random.default_rng(3), m, k, n, bits, signed)
    accumulator = accumulator_dtype(k, table).name
    mask = (1 << bits) - 1
    run = AmsimIntGemm(lib, dev, table, bits, signed, a & mask, b & mask, accumulator)
    fa, fb = dev.upload(a.astype(np.float32)), dev.upload(b.astype(np.float32))
    c = dev.empty((m, n), np.float32)
    t_cublas, t_int = best_device_ms(dev, [lambda: dev.matmul(fa, fb, c), run], rounds=rounds)
    return int_result_row(m, k, n, bits=bits, signed=signed, accumulator=accumulator, cublas_ms=t_cublas,
                          int_ms=t_int)


def int_gemm_part(lib, dev, bits: int, signed: bool, rounds: int) -> dict:
    """The JSON's "int_gemm": the check, then (when it passed) the timing; an error is recorded, not raised."""
    part = {"bits": bits, "signed": signed, "check": None, "result": None, "error": None}
    try:
        part["check"] = int_spot_check(lib, dev, bits, signed)
        print(f"integer GEMM against the CPU backend: {'passed' if part['check']['passed'] else 'FAILED'}",
              file=sys.stderr)
        if part["check"]["passed"]:
            part["result"] = time_int_gemm(lib, dev, bits, signed, rounds)
    except Exception as exc:  # noqa: BLE001 -- reported in the JSON, like an error of the sweep
        part["error"] = f"{type(exc).__name__}: {exc}"
    return part


def best_device_ms(dev, fns, *, rounds: int, block_ms: float = 50.0) -> list[float]:
    """Smallest device time per call of each function in ``fns``, in ms.

    Each function is warmed up (caches, cuBLAS's heuristics, the GPU's clocks) and then timed in
    blocks of calls sized to last about ``block_ms``, CUDA events around each block; the blocks
    of the functions alternate over ``rounds`` rounds so that all of them see the same clocks.
    """
    calls = []
    for fn in fns:
        fn()
        once = dev.elapsed_ms(fn, 1)
        calls.append(max(1, min(1000, math.ceil(block_ms / max(once, 1e-3)))))
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], dev.elapsed_ms(fn, calls[i]) / calls[i])
    return best


def time_shape(lib, dev, mult, lut, shape, rng, rounds: int) -> dict:
    """One shape's result_row(): cuBLAS, amsim_cuda_matmul and amsim_cuda_gemm alone."""
    from bench_gemm import operands

    label, m, k, n, ta, tb = shape
    a, b = operands(m, k, n, ta, tb, rng)
    da, db = dev.upload(a), dev.upload(b)
    op_a, op_b = (da.T if ta else da), (db.T if tb else db)
    c = dev.empty((m, n), np.float32)
    run = AmsimGemm(lib, dev, mult, lut, m, k, n, da, db, ta, tb)
    run.split()  # for the GEMM timed alone
    t_cublas, t_amsim, t_gemm = best_device_ms(dev, [lambda: dev.matmul(op_a, op_b, c), run, run.gemm],
                                               rounds=rounds)
    return result_row(label, m, k, n, ta, tb, cublas_ms=t_cublas, amsim_ms=t_amsim, gemm_ms=t_gemm)


def sweep(lib, dev, mult, lut, shapes, results: list, *, rounds: int, deadline: float) -> str | None:
    """Times ``shapes`` in order, appending to ``results``, until the time left before ``deadline``
    is under twice the longest shape so far, or a shape fails: then its error is returned."""
    rng = np.random.default_rng(0)
    longest = 0.0
    for shape in shapes:
        if deadline - time.monotonic() < 2 * longest:
            return None
        t0 = time.monotonic()
        try:
            row = time_shape(lib, dev, mult, lut, shape, rng, rounds)
        except Terminated as exc:
            return f"{shape[0]}: {exc}"
        except Exception as exc:  # noqa: BLE001 -- a CUDA error is sticky: report what was timed and stop
            return f"{shape[0]}: {type(exc).__name__}: {exc}"
        longest = max(longest, time.monotonic() - t0)
        results.append(row)
        print(f"{row['shape']:28s} {row['M']:>7}x{row['K']:>6}x{row['N']:>5}  cuBLAS {row['cublas_ms']:9.3f} ms  "
              f"amsim {row['amsim_ms']:9.3f} ms (gemm {row['amsim_gemm_ms']:9.3f})  ratio {row['ratio']:6.2f}",
              file=sys.stderr)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mitchell")
    parser.add_argument("--bits", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="leave the AlexNet shapes out")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of timed blocks per shape")
    parser.add_argument("--int-bits", type=int, default=8, choices=range(1, 9), metavar="{1..8}",
                        help="operand width of the integer GEMM timed at 4096^3 (signed, the exact table)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="the whole run's time: no shape is started once the time left is under twice "
                             "the longest shape so far")
    parser.add_argument("--library", choices=("auto", *DEVICES), default="auto",
                        help="which library runs cuBLAS and owns the memory (auto: CuPy, else PyTorch)")
    parser.add_argument("--environment", action="store_true", help="print the environment's JSON and exit")
    parser.add_argument("--build-only", action="store_true",
                        help="build or load the kernels, the CPU engine and the LUT, then exit")
    args = parser.parse_args(argv)
    started = time.monotonic()
    # The real GPU is timed: the CPU emulation of the kernels has nothing to measure.
    os.environ.pop("AMSIM_CUDA_EMULATION", None)
    if args.environment:
        print(json.dumps({**environment(), "gpu": gpu_environment()}, indent=1))
        return 0
    try:
        lib = load_kernels()
        from amsim import gemm

        mult = gemm.resolve(args.model, args.bits)
        if mult.table is None:
            raise Unavailable(f"{args.model} M={args.bits} has no LUT; the CUDA kernels need one (M <= 12)")
        if args.build_only:
            one = np.ones((2, 2), np.float32)
            gemm.matmul(one, one, mult, backend="cpu")  # the CPU engine, which the spot check compares with
            from amsim.gemm import cuda

            print(f"kernels: {cuda.library_path()}\nCUDA kernels, CPU engine and the {args.model} M={args.bits} "
                  f"LUT ready ({time.monotonic() - started:.1f} s)")
            return 0
        dev = open_device(args.library)
    except Unavailable as exc:
        print(f"bench_cuda: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    lut = dev.upload(np.ascontiguousarray(mult.table, np.float32))
    check, error = None, None
    try:
        check = spot_check(lib, dev, mult, lut)
        print(f"spot check against the CPU backend: {'passed' if check['passed'] else 'FAILED'}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 -- reported in the JSON like an error of the sweep
        error = f"spot check: {type(exc).__name__}: {exc}"
        print(f"bench_cuda: {error}", file=sys.stderr)
    shapes, results = bench_shapes(args.quick), []
    if error is None:
        signal.signal(signal.SIGTERM, _terminate)  # a time limit ends the sweep, not the report
        try:
            error = sweep(lib, dev, mult, lut, shapes, results, rounds=args.rounds,
                          deadline=started + args.budget if args.budget else math.inf)
        except Terminated as exc:  # between two shapes
            error = str(exc)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    int_gemm = None
    if error is None and time.monotonic() < (started + args.budget if args.budget else math.inf):
        int_gemm = int_gemm_part(lib, dev, args.int_bits, True, args.rounds)
    timed = {r["shape"] for r in results}
    not_timed = [shape[0] for shape in shapes if shape[0] not in timed]
    if not_timed:
        print(f"{len(not_timed)} shapes not timed ({'an error' if error else 'the time budget'})", file=sys.stderr)
    env = {**environment(), "gpu": gpu_environment(), "device": dev.describe()}
    rep = report(env, results, multiplier=f"{args.model} M={args.bits}", check=check, not_timed=not_timed,
                 error=error, int_gemm=int_gemm)
    print(json.dumps(rep, indent=1))
    print(goal_line(rep), file=sys.stderr)
    print(int_line(rep), file=sys.stderr)
    int_failed = int_gemm is not None and (int_gemm["error"] or not int_gemm["check"]["passed"])
    return 0 if check and check["passed"] and not error and not int_failed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
