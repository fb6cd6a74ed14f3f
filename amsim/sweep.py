"""Numba sweeps over compiled models: exhaustive grids and seeded Monte Carlo samples.

Every kernel calls the model through the address of its uniform entry point
(:attr:`amsim.models.CompiledModel.address`) with a small LLVM intrinsic. One
compiled (and disk-cached) kernel therefore serves every model: compiling a
kernel per model, as calling ``lib.fn`` from a closure would, costs about a
second each and cannot be cached across processes because the function address
changes. The cffi modules are still registered with Numba, so users may call
``lib.amsim__model`` directly from their own ``@njit`` code.

Parallelism: work is cut into chunks of rows (or samples) that ``nogil``
kernels process on a thread pool. Each chunk writes its own result slot, and
partial results are combined in chunk order, so results are identical for any
thread count. Nothing depends on Numba's threading layers (the workqueue layer
is not thread safe), and the kernels are safe to call from several threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .errors import RangeError, ResultRangeError, check_integer

__all__ = [
    "default_threads", "check_threads", "check_sampling", "run_chunks", "int_grid", "float_grid",
    "significand_table", "integer_table", "check_unsigned_products", "int_stats_moments", "mantissa_stats_moments",
    "NACC", "DEFAULT_SAMPLES",
]


def default_threads() -> int:
    """Threads for sweeps: ``AMSIM_NUM_THREADS`` or the CPUs this process may use."""
    env = os.environ.get("AMSIM_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise RangeError(f"AMSIM_NUM_THREADS must be a positive integer, not {env!r}")
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def check_threads(threads) -> int | None:
    """``threads`` if it is None (the default) or a positive integer, else :class:`RangeError`."""
    return None if threads is None else check_integer(threads, "threads (None: all CPUs)", 1)


def check_sampling(samples, seed) -> None:
    """Monte Carlo arguments: ``samples`` None or a positive integer, ``seed`` an integer >= 0."""
    if samples is not None:
        check_integer(samples, "samples", 1)
    check_integer(seed, "seed", 0)


def run_chunks(fn, n_chunks: int, *, threads: int | None = None, progress: str | None = None):
    """Run ``fn(chunk_index)`` for every chunk on a thread pool, in any order.

    A progress bar appears on stderr when the work takes more than a second.
    """
    from tqdm import tqdm

    threads = min(check_threads(threads) or default_threads(), max(n_chunks, 1))
    bar = tqdm(total=n_chunks, desc=progress, unit="chunk", delay=1.0, leave=False,
               disable=progress is None)
    try:
        if threads == 1:
            for c in range(n_chunks):
                fn(c)
                bar.update()
        else:
            with ThreadPoolExecutor(threads) as pool:
                for fut in [pool.submit(fn, c) for c in range(n_chunks)]:
                    fut.result()
                    bar.update()
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------
# Calling a model through its address
# ----------------------------------------------------------------------------------------------


@intrinsic
def _call_int(typingctx, addr, a, b):
    """int64 model(int64 a, int64 b) called through the function pointer ``addr``."""
    sig = types.int64(types.intp, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        ptr, x, y = args
        i64 = ir.IntType(64)
        fn = builder.inttoptr(ptr, ir.FunctionType(i64, [i64, i64]).as_pointer())
        return builder.call(fn, [x, y])

    return sig, codegen


@intrinsic
def _call_float(typingctx, addr, a, b):
    """float model(float a, float b) called through the function pointer ``addr``."""
    sig = types.float32(types.intp, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        ptr, x, y = args
        f32 = ir.FloatType()
        fn = builder.inttoptr(ptr, ir.FunctionType(f32, [f32, f32]).as_pointer())
        return builder.call(fn, [x, y])

    return sig, codegen


@njit(inline="always", cache=True)
def _significand(i, m):
    """The float32 1 + i/2^m (exact: at most 24 significant bits)."""
    return np.float32(1.0 + i * 2.0 ** (-m))


# ----------------------------------------------------------------------------------------------
# Grids: evaluate the model on every operand pair
# ----------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _int_grid_rows(addr, a0, row0, row1, b0, nb, out):
    for r in range(row0, row1):
        a = a0 + r
        for c in range(nb):
            out[r - row0, c] = _call_int(addr, a, b0 + c)


@njit(nogil=True, cache=True)
def _float_grid_rows(addr, m, row0, row1, out):
    n = 1 << m
    for r in range(row0, row1):
        x = _significand(r, m)
        for c in range(n):
            out[r - row0, c] = _call_float(addr, x, _significand(c, m))


def _row_chunks(rows: int, cols: int, target_pairs: int = 1 << 18):
    step = max(1, min(rows, target_pairs // max(cols, 1)))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def int_grid(cm, a_values: range, b_values: range, *, threads=None, progress=None) -> np.ndarray:
    """Integer model on every pair of two contiguous operand ranges, shape (len(a), len(b)), int64."""
    out = np.empty((len(a_values), len(b_values)), np.int64)
    chunks = _row_chunks(len(a_values), len(b_values))

    def work(c):
        r0, r1 = chunks[c]
        _int_grid_rows(cm.address, a_values.start, r0, r1, b_values.start, len(b_values), out[r0:r1])

    run_chunks(work, len(chunks), threads=threads, progress=progress)
    return out


def float_grid(cm, m: int, *, rows: range | None = None, threads=None, progress=None) -> np.ndarray:
    """Float model on pairs of M-bit significands (1 + i/2^M, 1 + j/2^M), float32: every i of ``rows``
    (default: all 2^M), every j."""
    n = 1 << m
    rows = range(n) if rows is None else rows
    out = np.empty((len(rows), n), np.float32)
    chunks = _row_chunks(len(rows), n)

    def work(c):
        r0, r1 = chunks[c]
        _float_grid_rows(cm.address, m, rows.start + r0, rows.start + r1, out[r0:r1])

    run_chunks(work, len(chunks), threads=threads, progress=progress)
    return out


def significand_table(cm, m: int, *, threads=None, progress=None) -> np.ndarray:
    """The M-bit mantissa LUT of docs/numerics.md section 1: significand products for all (i, j).

    A float model is called on (1 + i/2^M, 1 + j/2^M). An integer model is
    *lifted* (docs/numerics.md section 4): it must be compiled at width M + 1 and is
    called on the integers 2^M + i and 2^M + j, the result scaled by 2^-2M.
    The table is float32 when every entry is exact in float32 (always, for
    float models and for products of at most 24 significant bits), otherwise
    float64, so no value is ever rounded.
    """
    if cm.kind == "float":
        if cm.bits != m:
            raise RangeError(f"float model compiled for M={cm.bits}, asked for M={m}")
        return float_grid(cm, m, threads=threads, progress=progress)
    if cm.bits != m + 1 or cm.signed:
        raise RangeError(f"lifting to M={m} needs an unsigned integer model compiled at {m + 1} bits")
    base = 1 << m
    ints = int_grid(cm, range(base, 2 * base), range(base, 2 * base), threads=threads, progress=progress)
    check_unsigned_products(cm, ints, base, base)
    # M <= 23: operands of at most 24 bits, products below 2^48, exact in float64.
    table = np.ldexp(ints.astype(np.float64), -2 * m)
    as32 = table.astype(np.float32)
    return as32 if np.array_equal(as32, table) else table


def check_unsigned_products(cm, ints: np.ndarray, a0: int, b0: int) -> np.ndarray:
    """Refuse a grid of an unsigned n-bit model holding a value no n x n-bit multiplier returns.

    An n-bit unsigned product fits in 2n bits. A larger value (or one with bit 63 set, which
    int64 shows as negative) is a bug in the model, and would become a negative or huge LUT entry.
    ``ints[i, j]`` is the result for operands (a0 + i, b0 + j). Signed models are not checked.
    """
    limit = _result_limit(cm)
    if not limit:
        return ints
    bad = (ints < 0) | (ints >= limit)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise _out_of_range(cm, a0 + i, b0 + j, int(ints[i, j]) & ((1 << 64) - 1), int(bad.sum()))
    return ints


def _out_of_range(cm, a: int, b: int, value: int, count: int) -> ResultRangeError:
    return ResultRangeError(
        f"model {cm.model.name!r} ({cm.bits}-bit unsigned) returned {value} for operands ({a}, {b}), which is "
        f"not below 2^{2 * cm.bits} ({count} such results); an n-bit unsigned product has at most 2n bits "
        "(declare 'signed: yes' if the model is signed)")


def integer_table(cm, *, threads=None, progress=None) -> np.ndarray:
    """Full product table of an integer model, rows and columns in operand order.

    Unsigned: index = operand. Signed: index = operand's n-bit two's complement
    pattern (so row 255 of an 8-bit signed table is operand -1).
    """
    n = 1 << cm.bits
    if not cm.signed:
        return check_unsigned_products(cm, int_grid(cm, range(n), range(n), threads=threads, progress=progress),
                                       0, 0)
    half = n // 2
    grid = int_grid(cm, range(-half, half), range(-half, half), threads=threads, progress=progress)
    order = np.r_[half:n, 0:half]  # pattern p -> grid index of value p (p < half) or p - n
    return grid[np.argsort(order)][:, np.argsort(order)]


# ----------------------------------------------------------------------------------------------
# Error moments (turned into metrics by amsim.stats)
# ----------------------------------------------------------------------------------------------

#: Monte Carlo sample count when none is given.
DEFAULT_SAMPLES = 1 << 22

#: Accumulator layout, one float64 slot each.
N, N_NONZERO, SUM_RE, SUM_ABS_RE, SUM_RE2, MIN_RE, MAX_RE, N_ERR, SUM_E, SUM_ABS_E, SUM_E2, WCE, MAX_P = range(13)
#: Integer sweeps of unsigned models: results out of range (left out of the moments) and the first one's operands.
N_BAD, BAD_A, BAD_B = 13, 14, 15
NACC = 16


def new_moments(n_chunks: int) -> np.ndarray:
    acc = np.zeros((n_chunks, NACC))
    acc[:, MIN_RE] = np.inf
    acc[:, MAX_RE] = -np.inf
    return acc


_SUMS = [N, N_NONZERO, SUM_RE, SUM_ABS_RE, SUM_RE2, N_ERR, SUM_E, SUM_ABS_E, SUM_E2]
_MAXIMA = [MAX_RE, WCE, MAX_P]


def combine_moments(acc: np.ndarray) -> np.ndarray:
    """Reduce per-chunk moments, rows in chunk order (deterministic for any thread count)."""
    total = new_moments(1)[0]
    if len(acc):
        total[_SUMS] = acc[:, _SUMS].sum(axis=0)
        total[_MAXIMA] = acc[:, _MAXIMA].max(axis=0)
        total[MIN_RE] = acc[:, MIN_RE].min()
    return total


@njit(inline="always", cache=True)
def _accumulate(acc, p, e):
    """Add one pair with exact product ``p`` and error ``e`` = approximate - exact."""
    acc[0] += 1.0
    if e != 0.0:
        acc[7] += 1.0
        acc[8] += e
        ae = abs(e)
        acc[9] += ae
        acc[10] += e * e
        if ae > acc[11]:
            acc[11] = ae
    ap = abs(p)
    if ap > acc[12]:
        acc[12] = ap
    if p != 0.0:
        re = e / p
        acc[1] += 1.0
        acc[2] += re
        acc[3] += abs(re)
        acc[4] += re * re
        if re < acc[5]:
            acc[5] = re
        if re > acc[6]:
            acc[6] = re


@njit(inline="always", cache=True)
def _int_error(addr, signed, limit, a, b, acc):
    approx = _call_int(addr, a, b)
    if limit > 0 and (approx < 0 or approx >= limit):  # see check_unsigned_products
        if acc[13] == 0.0:
            acc[14] = a
            acc[15] = b
        acc[13] += 1.0
        return
    if signed:
        exact = a * b
        _accumulate(acc, float(exact), float(approx - exact))
    else:
        # Unsigned products of 32-bit operands need all 64 bits; the difference is exact as
        # long as the model's error stays below 2^63.
        exact_u = np.uint64(a) * np.uint64(b)
        err = np.int64(np.uint64(approx) - exact_u)
        _accumulate(acc, float(exact_u), float(err))


# The moment kernels accumulate into a private copy and write it back once: chunks' slots are
# adjacent in memory, and updating them in place from two threads would share cache lines.


@njit(nogil=True, cache=True)
def _int_grid_moments(addr, signed, limit, a0, row0, row1, b0, nb, acc):
    local = acc.copy()
    for r in range(row0, row1):
        for c in range(nb):
            _int_error(addr, signed, limit, a0 + r, b0 + c, local)
    acc[:] = local


@njit(nogil=True, cache=True)
def _int_pairs_moments(addr, signed, limit, a, b, acc):
    local = acc.copy()
    for k in range(a.shape[0]):
        _int_error(addr, signed, limit, a[k], b[k], local)
    acc[:] = local


def _result_limit(cm) -> int:
    """2^(2n) for an unsigned n-bit model whose results are checked, 0 for none (signed; 2n >= 64)."""
    return 0 if cm.signed or 2 * cm.bits >= 64 else 1 << (2 * cm.bits)


def _check_moments(cm, acc) -> None:
    """Raise for the first out-of-range result, in chunk order, that an integer sweep met."""
    bad = acc[:, N_BAD] > 0
    if bad.any():
        first = acc[int(np.argmax(bad))]
        a, b = int(first[BAD_A]), int(first[BAD_B])
        value = int(np.asarray(cm.evaluate([a], [b])).astype(np.int64).view(np.uint64)[0])
        raise _out_of_range(cm, a, b, value, int(acc[:, N_BAD].sum()))


def int_stats_moments(cm, *, samples=None, seed=0, threads=None, progress=None) -> tuple[np.ndarray, bool]:
    """Error moments of an integer model at its width: exhaustive, or ``samples`` seeded pairs.

    Returns (moments, exhaustive). Monte Carlo chunk ``c`` draws its pairs from
    ``numpy.random.default_rng([seed, c])``, so the sample set depends only on
    the seed and the count, never on the thread count.
    """
    check_sampling(samples, seed)
    lo, hi = cm.operand_range()
    limit = _result_limit(cm)
    if samples is None:
        width = hi - lo
        chunks = _row_chunks(width, width, target_pairs=1 << 20)
        acc = new_moments(len(chunks))

        def work(c):
            r0, r1 = chunks[c]
            _int_grid_moments(cm.address, cm.signed, limit, lo, r0, r1, lo, width, acc[c])

        run_chunks(work, len(chunks), threads=threads, progress=progress)
        _check_moments(cm, acc)
        return combine_moments(acc), True

    sizes = _sample_chunks(samples)
    acc = new_moments(len(sizes))

    def work(c):
        rng = np.random.default_rng([seed, c])
        a = rng.integers(lo, hi, sizes[c], dtype=np.int64)
        b = rng.integers(lo, hi, sizes[c], dtype=np.int64)
        _int_pairs_moments(cm.address, cm.signed, limit, a, b, acc[c])

    run_chunks(work, len(sizes), threads=threads, progress=progress)
    _check_moments(cm, acc)
    return combine_moments(acc), False


def _sample_chunks(samples: int, size: int = 1 << 18) -> list[int]:
    check_sampling(samples, 0)
    full, rest = divmod(int(samples), size)
    return [size] * full + ([rest] if rest else [])


@njit(nogil=True, cache=True)
def _table_moments(table, m, row0, row1, acc):
    scale = 2.0 ** (-2 * m)
    n = table.shape[1]
    local = acc.copy()
    for i in range(row0, row1):
        for j in range(n):
            p = float((n + i) * (n + j)) * scale
            _accumulate(local, p, float(table[i, j]) - p)
    acc[:] = local


@njit(inline="always", cache=True)
def _convert(x, m, rne):
    """A 23-bit fraction -> (M-bit mantissa index, carry into the exponent), docs/numerics.md 2.1."""
    s = 23 - m
    keep = x >> s
    if rne and s > 0:
        rem = x & ((1 << s) - 1)
        half = 1 << (s - 1)
        if rem > half or (rem == half and (keep & 1) == 1):
            keep += 1
    if keep == (1 << m):
        return 0, 1
    return keep, 0


@njit(inline="always", cache=True)
def _sig_product(addr, is_float, m, i, j, table, use_table):
    """Significand product of M-bit mantissas i, j: from the LUT, or by calling the model."""
    if use_table:
        return float(table[i, j])
    if is_float:
        return float(_call_float(addr, _significand(i, m), _significand(j, m)))
    base = 1 << m
    return float(_call_int(addr, base + i, base + j)) * 2.0 ** (-2 * m)


@njit(nogil=True, cache=True)
def _mantissa_pairs_moments(addr, is_float, m, rne, full, x, y, table, use_table, acc):
    """Moments over sampled pairs. ``full``: x, y are 23-bit fractions of the float32 operands,
    converted to M bits per ``rne``; otherwise they are M-bit mantissas (truncated reference)."""
    local = acc.copy()
    for k in range(x.shape[0]):
        if full:
            i, ca = _convert(x[k], m, rne)
            j, cb = _convert(y[k], m, rne)
            p = float((8388608 + x[k]) * (8388608 + y[k])) * 2.0 ** -46
            approx = _sig_product(addr, is_float, m, i, j, table, use_table) * 2.0 ** (ca + cb)
        else:
            base = 1 << m
            p = float((base + x[k]) * (base + y[k])) * 2.0 ** (-2 * m)
            approx = _sig_product(addr, is_float, m, x[k], y[k], table, use_table)
        _accumulate(local, p, approx - p)
    acc[:] = local


def mantissa_stats_moments(m: int, *, table=None, cm=None, reference="truncated", rounding="truncate",
                           samples=None, seed=0, threads=None, progress=None) -> tuple[np.ndarray, bool]:
    """Error moments of an M-bit mantissa multiplier against one of the two float references.

    Parameters
    ----------
    m : int
        Mantissa fraction bits.
    table : ndarray, optional
        The (2^M, 2^M) LUT; when absent, ``cm`` is called (a float model
        compiled at M, or an integer model compiled at M + 1 and lifted).
    reference : {"truncated", "full"}
        ``truncated``: exact product of the M-bit operands, exhaustive over all
        pairs unless ``samples`` is given. ``full``: exact product of float32
        operands whose 23-bit fractions are drawn uniformly, converted to M bits
        with ``rounding``; always Monte Carlo.
    """
    if table is None and cm is None:
        raise RangeError("need a LUT or a compiled model")
    check_integer(m, "the mantissa width M", 1, 23)
    check_sampling(samples, seed)
    use_table = table is not None
    if use_table and np.shape(table) != (1 << m, 1 << m):
        raise RangeError(f"the LUT for M={m} must have shape ({1 << m}, {1 << m}), not {np.shape(table)}")
    dummy = np.zeros((1, 1), np.float64)
    tab = np.ascontiguousarray(table) if use_table else dummy
    addr = 0 if cm is None else cm.address
    is_float = cm is None or cm.kind == "float"
    if reference == "truncated" and samples is None:
        if not use_table:
            raise RangeError("an exhaustive sweep needs the LUT; build it with significand_table")
        n = 1 << m
        chunks = _row_chunks(n, n, target_pairs=1 << 20)
        acc = new_moments(len(chunks))

        def work(c):
            _table_moments(tab, m, chunks[c][0], chunks[c][1], acc[c])

        run_chunks(work, len(chunks), threads=threads, progress=progress)
        return combine_moments(acc), True
    if reference not in ("truncated", "full"):
        raise RangeError(f"reference must be 'truncated' or 'full', not {reference!r}")
    if rounding not in ("truncate", "rne"):
        raise RangeError(f"rounding must be 'truncate' or 'rne', not {rounding!r}")
    full = reference == "full"
    span = 1 << (23 if full else m)
    sizes = _sample_chunks(samples if samples is not None else DEFAULT_SAMPLES)
    acc = new_moments(len(sizes))

    def work(c):
        rng = np.random.default_rng([seed, c])
        x = rng.integers(0, span, sizes[c], dtype=np.int64)
        y = rng.integers(0, span, sizes[c], dtype=np.int64)
        _mantissa_pairs_moments(addr, is_float, m, rounding == "rne", full, x, y, tab, use_table, acc[c])

    run_chunks(work, len(sizes), threads=threads, progress=progress)
    return combine_moments(acc), False
