"""The element-wise steps around a quantized product's integer GEMM (docs/quantized.md, "Quantizing
and scaling back"): a range, float32 to 8-bit integers and back, and the GEMM's sums to float32.

:func:`minmax`: the range a scale is set from, per tensor or per channel of the last axes, NaN left
out.

:func:`quantize`: ``q = clip(round(x / scale) + zero, qmin, qmax)``, per tensor or per channel of
the last axes, rounding to nearest with ties to even, one IEEE division; NaN becomes the zero point
(the value 0).

:func:`dequantize`: the inverse, ``(q - zero) * scale``.

:func:`clipped_gradient`: the straight-through gradient of the quantizer's clip, ``dy`` where
``lo <= x <= hi``, else 0.

:func:`int_dequantize`: for an asymmetric (uint8) product of ``x ~ s_x (q_x - z_x)`` and
``w ~ s_w (q_w - z_w)`` over K terms, with ``acc`` the sums of the circuit's ``q_x q_w``::

    s[..., f] = acc[..., f] - z_w row_sums[..., g] - z_x col_sums[f] + K z_x z_w      (exact)
    y[..., f] = float32(s[..., f]) * scale[f]

``row_sums`` holds each row's (or patch's) sum of q_x, one per input channel group ``g = f //
(N / G)`` of a grouped convolution (G = 1 otherwise), ``col_sums`` each output channel's sum of
q_w, and ``scale`` is ``s_x s_w`` (one, or one per output channel). A symmetric (int8) product
has zero points 0 and needs no sums. The conversion rounds to nearest and the scaling is one
float32 multiplication: the same float32 as TensorFlow's Cast and Mul of the same integers.

Backends: ``reference`` (numpy, the oracle) and ``cpu`` (the engine's ``amsim_minmax``,
``amsim_quantize``, ``amsim_dequantize``, ``amsim_clipped_gradient`` and ``amsim_int_dequantize``,
``amsim/csrc/cpu/quantize.c``, which the TensorFlow ops of the same names call).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import RangeError, check_integer
from . import ShapeError, engine
from .int_conv import MAX_PATCH
from .integer import IntegerOperandError

__all__ = ["minmax", "quantize", "dequantize", "clipped_gradient", "reference_quantize", "int_dequantize",
           "reference_int_dequantize", "MAX_ZERO_POINT"]

#: Largest zero-point magnitude: an 8-bit operand's.
MAX_ZERO_POINT = 255
BACKENDS = ("auto", "reference", "cpu")
_INT32 = np.iinfo(np.int32)


def minmax(x, channels: int = 1, *, backend="auto", threads=None) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest value of each channel of ``x``'s last axes, NaN left out.

    Args:
        x: float32 array (other floats are converted) whose last axes' sizes multiply to
            ``channels``; channel f holds the elements of flat index e with e mod channels = f.
        channels: 1 (the whole tensor's range) or more.
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the result does not depend on it.

    Returns:
        ``(lo, hi)``: float32 arrays (channels,); a channel without numbers has lo = inf, hi = -inf.

    Raises:
        ShapeError: ``channels`` that are not the product of x's last axes' sizes.
        RangeError: a bad channel count, thread count or backend.
    """
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    channels = check_integer(channels, "channels", 1)
    threads = engine.engine_threads(threads)
    x = np.ascontiguousarray(x, np.float32)
    if channels > 1 and trailing(x.shape, channels) != channels:
        raise ShapeError(f"channels must be the product of x's last axes' sizes, got {channels} for x {x.shape}")
    if backend == "reference":
        with np.errstate(invalid="ignore"):
            flat = x.reshape(-1, channels)
            lo, hi = np.where(np.isnan(flat), np.inf, flat).min(0, initial=np.inf), \
                np.where(np.isnan(flat), -np.inf, flat).max(0, initial=-np.inf)
        return lo.astype(np.float32), hi.astype(np.float32)
    ffi, lib = engine.load()
    lo, hi = np.empty(channels, np.float32), np.empty(channels, np.float32)
    rc = lib.amsim_minmax(x.size, channels, ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", lo),
                          ffi.from_buffer("float[]", hi), threads)
    engine.check_status(rc, "amsim_minmax")
    return lo, hi


def quantize(x, scale, zero_point, qmin, qmax, *, sums=False, backend="auto", threads=None):
    """8-bit integers ``clip(round(x / scale) + zero_point, qmin, qmax)``, ties to even.

    Args:
        x: float32 array (..., C) (other floats are converted), C the product of its last axes' sizes.
        scale: a positive float, or float32 array of C elements (of any shape, such as (1, C)):
            one scale per element of x's last axes, the same for every index of the leading ones.
        zero_point: an int, or integer array of scale's size, each inside qmin..qmax.
        qmin, qmax: the integers' range, within 0..255 (uint8) or -128..127 (int8).
        sums: also return the integers' int32 sums over every axis but the last (a kernel's sum of
            q per output channel, which the uint8 zero-point correction needs); the scale then one
            element or one per element of the last axis.
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the result does not depend on it.

    Returns:
        uint8 array (int8 where qmin < 0) of x's shape; NaN becomes the zero point. With ``sums``,
        ``(q, sums)``, sums an int32 array (C,) for x (..., C).

    Raises:
        ShapeError: a scale or zero point of neither one element nor C; with ``sums``, a scalar x,
            or a scale per element of more axes than the last.
        RangeError: a bad range, zero point, thread count or backend; with ``sums``, more than
            2^31 / 255 values per sum.
    """
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    qmin, qmax = check_integer(qmin, "qmin", -128, 255), check_integer(qmax, "qmax", qmin, 255)
    if not (qmin >= 0 or qmax <= 127):
        raise RangeError(f"qmin..qmax must lie within 0..255 or -128..127, not {qmin}..{qmax}")
    threads = engine.engine_threads(threads)
    x = np.asarray(x, np.float32)
    dtype = np.uint8 if qmin >= 0 else np.int8
    width = _sum_width(x.shape) if sums else 0
    if x.size == 0:  # nothing to quantize: any scale will do
        q = np.empty(x.shape, dtype)
        return (q, np.zeros(width, np.int32)) if sums else q
    scale, zero = _per_channel(x.shape, scale, zero_point, qmin, qmax)
    if sums and scale.size not in (1, width):
        raise ShapeError(f"with sums, scale must have one element or one per element of the last axis ({width}), "
                         f"got {scale.size}")
    if backend == "reference":
        q = reference_quantize(x, scale, zero, qmin, qmax)
        return (q, q.reshape(-1, width).astype(np.int64).sum(0).astype(np.int32)) if sums else q
    ffi, lib = engine.load()
    q, total = np.empty(x.shape, np.uint8), np.empty(width, np.int32)
    x, scale, zero = (np.ascontiguousarray(v) for v in (x, scale, zero))
    rc = lib.amsim_quantize(x.size, scale.size, ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", scale),
                            ffi.from_buffer("int32_t[]", zero), qmin, qmax, ffi.from_buffer("uint8_t[]", q), width,
                            ffi.from_buffer("int32_t[]", total) if sums else ffi.NULL,
                            threads)
    engine.check_status(rc, "amsim_quantize")
    q = q.view(dtype)
    return (q, total) if sums else q


def _sum_width(shape) -> int:
    """The last axis's size, whose positions a quantizer's sums go by; its values per sum bounded."""
    if not shape:
        raise ShapeError("sums need x with at least 1 dimension, got a scalar")
    width = shape[-1]
    if width and math.prod(shape) // width > MAX_PATCH:
        raise RangeError(f"sums of more than {MAX_PATCH} 8-bit values can overflow int32, got "
                         f"{math.prod(shape) // width}")
    return width


def trailing(shape, count: int) -> int | None:
    """The product of the sizes of ``shape``'s last axes, from the last, until it reaches ``count``:
    ``count`` when per-channel values of that count broadcast along the leading axes (None when a
    size it needs is unknown)."""
    product = 1
    for size in reversed(tuple(shape)):
        if product >= count:
            break
        if size is None:
            return None
        product *= size
    return product


def dequantize(q, scale, zero_point, *, backend="auto", threads=None) -> np.ndarray:
    """The float32 values ``(q - zero_point) * scale`` that 8-bit integers stand for (:func:`quantize`'s
    inverse): the subtraction exact, the product one float32 multiplication.

    Args:
        q: uint8 or int8 array (..., C), C the product of its last axes' sizes.
        scale, zero_point: as for :func:`quantize`; each zero point a value of q's type.
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the result does not depend on it.

    Raises:
        IntegerOperandError: q that is not uint8 or int8.
        ShapeError, RangeError: as for :func:`quantize`.
    """
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    threads = engine.engine_threads(threads)
    q = np.asarray(q)
    if q.dtype not in (np.uint8, np.int8):
        raise IntegerOperandError(f"q must be a uint8 or int8 array, got {q.dtype}")
    if q.size == 0:
        return np.empty(q.shape, np.float32)
    info = np.iinfo(q.dtype)
    scale, zero = _per_channel(q.shape, scale, zero_point, int(info.min), int(info.max))
    if backend == "reference":
        flat = q.reshape(-1, scale.size).astype(np.float32)
        return ((flat - zero.astype(np.float32)) * scale).reshape(q.shape)
    ffi, lib = engine.load()
    x = np.empty(q.shape, np.float32)
    q, scale, zero = (np.ascontiguousarray(v) for v in (q, scale, zero))
    rc = lib.amsim_dequantize(q.size, scale.size, ffi.from_buffer("uint8_t[]", q.view(np.uint8)),
                              int(q.dtype == np.int8), ffi.from_buffer("float[]", scale),
                              ffi.from_buffer("int32_t[]", zero), ffi.from_buffer("float[]", x),
                              threads)
    engine.check_status(rc, "amsim_dequantize")
    return x


def clipped_gradient(x, dy, lo, hi, *, backend="auto", threads=None) -> np.ndarray:
    """The straight-through gradient of the quantizer's clip: ``dy`` where ``lo <= x <= hi`` (the
    values it does not clip), else 0, NaN x included.

    Args:
        x: float32 array, the quantized input; dy: float32 array of x's shape, its output gradient.
        lo, hi: floats, the range the quantizer does not clip.
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the result does not depend on it.

    Raises:
        ShapeError: dy of another shape than x.
        RangeError: a bad thread count or backend.
    """
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    threads = engine.engine_threads(threads)
    x, dy = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(dy, np.float32)
    if x.shape != dy.shape:
        raise ShapeError(f"dy must have x's shape {x.shape}, got {dy.shape}")
    lo, hi = np.float32(lo), np.float32(hi)
    if backend == "reference":
        with np.errstate(invalid="ignore"):
            return np.where((x >= lo) & (x <= hi), dy, np.float32(0))
    ffi, lib = engine.load()
    dx = np.empty(x.shape, np.float32)
    rc = lib.amsim_clipped_gradient(x.size, ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", dy), float(lo),
                                    float(hi), ffi.from_buffer("float[]", dx), threads)
    engine.check_status(rc, "amsim_clipped_gradient")
    return dx


def _per_channel(shape, scale, zero_point, lo, hi):
    """float32 scales and int32 zero points, one per channel (C of them: one, or the product of the
    last axes' sizes of ``shape``), each zero point inside lo..hi."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    zero = np.asarray(zero_point)
    if zero.dtype.kind not in "iu":
        raise RangeError(f"zero_point must be integers, got {zero.dtype}")
    zero = zero.reshape(-1)
    channels = max(scale.size, zero.size)
    for name, v in (("scale", scale), ("zero_point", zero)):
        if v.size not in (1, channels) or trailing(shape, channels) != channels:
            raise ShapeError(f"{name} must have one element or one per element of the last axes, got {v.size} "
                             f"for shape {shape}")
    if zero.min() < lo or zero.max() > hi:
        raise RangeError(f"zero_point must lie in {lo}..{hi}, got {zero.min()}..{zero.max()}")
    return np.broadcast_to(scale, (channels,)), np.broadcast_to(zero, (channels,)).astype(np.int32)


def reference_quantize(x, scale, zero, qmin, qmax) -> np.ndarray:
    """The oracle: float32 x, scale (C,) and int zero (C,) broadcast along x's leading axes."""
    flat = x.reshape(-1, scale.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (np.rint(flat / scale) + zero.astype(np.float32)).reshape(x.shape)
    zero = np.broadcast_to(zero.astype(np.float32), flat.shape).reshape(x.shape)
    v = np.where(np.isnan(v), zero, np.clip(v, qmin, qmax))
    return v.astype(np.uint8 if qmin >= 0 else np.int8)


def int_dequantize(acc, scale, *, k, row_sums=None, col_sums=None, zero_points=(0, 0), bias=None, backend="auto",
                   threads=None) -> np.ndarray:
    """float32 ``(acc - z_w row_sums - z_x col_sums + k z_x z_w) * scale``, per output column, plus
    ``bias``.

    Args:
        acc: integer array (..., N): sums of ``k`` circuit products each, within int32.
        scale: a float, or a float32 array (N,): the output's scale, per column.
        k: the products per sum (>= 0).
        row_sums: integer array (..., G), acc's leading shape, G dividing N: the input values'
            sums, column f using ``row_sums[..., f // (N // G)]``; needed when ``z_w != 0``.
        col_sums: integer array (N,): the kernel values' sums; needed when ``z_x != 0``.
        zero_points: ``(z_x, z_w)``, integers in -255..255.
        bias: None, or a float32 array (N,) added per column after the scaling, rounded as a
            separate float32 add (a layer's bias, in the same pass).
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default); the result does not depend on it.

    Returns:
        float32 array of acc's shape.

    Raises:
        IntegerOperandError: sums that are not integers within int32.
        ShapeError: shapes that do not fit together; a sum array missing where its zero point is not 0.
        RangeError: a bad k, zero point, thread count or backend; a bias that is not floats.
    """
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}, not {backend!r}")
    zx, zw = (check_integer(z, name, -MAX_ZERO_POINT, MAX_ZERO_POINT)
              for z, name in zip(zero_point_pair(zero_points), ("zero_points[0] (z_x)", "zero_points[1] (z_w)")))
    k = check_integer(k, "k (products per sum)", 0)
    threads = engine.engine_threads(threads)
    acc = _int32("acc", acc)
    if acc.ndim < 1:
        raise ShapeError(f"acc must have at least 1 dimension, got shape {acc.shape}")
    n = acc.shape[-1]
    scale = np.asarray(scale, np.float32)
    if scale.shape not in ((), (n,)):
        raise ShapeError(f"scale must be a scalar or ({n},) for acc {acc.shape}, got shape {scale.shape}")
    rows = None if zw == 0 else _int32("row_sums", _needed("row_sums", row_sums, "z_w"))
    if rows is not None and (rows.shape[:-1] != acc.shape[:-1] or rows.ndim != acc.ndim or rows.shape[-1] < 1
                             or n % rows.shape[-1]):
        raise ShapeError(f"row_sums must have acc's leading shape and a last dimension dividing {n}, got "
                         f"{rows.shape} for acc {acc.shape}")
    cols = None if zx == 0 else _int32("col_sums", _needed("col_sums", col_sums, "z_x"))
    if cols is not None and cols.shape != (n,):
        raise ShapeError(f"col_sums must be ({n},) for acc {acc.shape}, got shape {cols.shape}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype.kind != "f":
            raise RangeError(f"bias must be a float array, got {bias.dtype} (shape {bias.shape})")
        bias = bias.astype(np.float32, copy=False)
        if bias.shape != (n,):
            raise ShapeError(f"bias must be ({n},) for acc {acc.shape}, got shape {bias.shape}")
    if backend == "reference":
        return reference_int_dequantize(acc, scale, k, rows, cols, zx, zw, bias)
    return _cpu_int_dequantize(acc, scale, k, rows, cols, zx, zw, bias, threads)


def reference_int_dequantize(acc, scale, k, row_sums, col_sums, zx, zw, bias=None) -> np.ndarray:
    """The oracle, in int64: sums absent (None) where their zero point is 0; the bias (float32, or
    None) added to the scaled float32 values."""
    s = acc.astype(np.int64) + k * zx * zw
    if row_sums is not None:
        s -= zw * np.repeat(row_sums.astype(np.int64), acc.shape[-1] // row_sums.shape[-1], axis=-1)
    if col_sums is not None:
        s -= zx * col_sums.astype(np.int64)
    y = s.astype(np.float32) * scale
    return y if bias is None else y + bias


def _cpu_int_dequantize(acc, scale, k, rows, cols, zx, zw, bias, threads):
    ffi, lib = engine.load()
    n = acc.shape[-1]
    out = np.empty(acc.shape, np.float32)
    if out.size == 0:
        return out
    acc, scale = np.ascontiguousarray(acc), np.ascontiguousarray(scale.reshape(-1))

    def buffer(x):
        return ffi.NULL if x is None else ffi.from_buffer("int32_t[]", np.ascontiguousarray(x))

    rc = lib.amsim_int_dequantize(out.size // n, n, ffi.from_buffer("int32_t[]", acc), buffer(rows),
                                  1 if rows is None else rows.shape[-1], buffer(cols), zx, zw, k,
                                  ffi.from_buffer("float[]", scale), scale.size,
                                  ffi.NULL if bias is None else ffi.from_buffer("float[]", np.ascontiguousarray(bias)),
                                  ffi.from_buffer("float[]", out), threads)
    engine.check_status(rc, "amsim_int_dequantize")
    return out


def zero_point_pair(zero_points, fn: str | None = None):
    """``(z_x, z_w)`` from ``zero_points``, or RangeError (prefixed with ``fn``) when it is not a pair."""
    try:
        zx, zw = zero_points
    except (TypeError, ValueError):
        where = f"{fn}: " if fn else ""
        raise RangeError(f"{where}zero_points must be a pair (z_x, z_w), not {zero_points!r}") from None
    return zx, zw


def _needed(name, x, zero):
    if x is None:
        raise ShapeError(f"{name} is needed where {zero} is not 0")
    return x


def _int32(name, x) -> np.ndarray:
    """An integer array within int32, as int32."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise IntegerOperandError(f"{name} must be an integer array within int32, got {x.dtype} values")
    if x.dtype.itemsize > 4 or x.dtype == np.uint32:
        if x.size and (x.min() < _INT32.min or x.max() > _INT32.max):
            raise IntegerOperandError(f"{name} must hold int32 values, got {x.min()}..{x.max()}")
    return x.astype(np.int32, copy=False)
