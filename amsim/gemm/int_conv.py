"""The integer LUT convolution: a grouped conv2d of n-bit integers whose every product is a circuit's.

For an NHWC input ``x`` (N, H, W, C), a filter ``w`` (KH, KW, C/groups, F) and the circuit's
complete product table ``lut`` (:mod:`amsim.gemm.integer`)::

    out[n, oh, ow, f] = sum over (i, j, c) of lut[p(x_pad[n, oh*sh + i*dh, ow*sw + j*dw, q*C/groups + c]),
                                                  p(w[i, j, c, f])]
    patch_sums[n, oh, ow, q] = sum over (i, j, c) of x_pad[...]   (the same patch's values)

where q = f // (F/groups) is the output channel's group, x_pad the input padded with
``pad_value`` (TensorFlow's geometry, :func:`amsim.gemm.conv.conv_geometry`) and p(x) the n-bit
pattern. The patch sums are what the uint8 scheme's zero-point correction needs (docs/quantized.md).
A depthwise conv2d of channel multiplier Q is ``groups = C`` with the filter (KH, KW, C, Q) reshaped
to (KH, KW, 1, C*Q): output channel c*Q + m, as TensorFlow's.

Backends: ``reference`` (a numpy im2col and :func:`amsim.gemm.integer.reference_int_matmul`, the
oracle) and ``cpu`` (the engine's ``amsim_int_im2col`` and one ``amsim_int_gemm`` per group); the
same integers from either, for every thread count.
"""

from __future__ import annotations

import numpy as np

from ..errors import RangeError, check_integer
from . import ShapeError, engine
from .conv import ConvGeometry, conv_geometry
from .integer import (IntegerOperandError, _cpu_int_matmul, _patterns, accumulator_dtype, check_bits, check_values,
                      prepared_table, reference_int_matmul)

__all__ = ["int_conv2d", "int_conv_geometry", "check_groups", "BACKENDS", "MAX_PATCH"]

BACKENDS = ("auto", "reference", "cpu")
#: Most values a patch may hold: their sum, of magnitude at most 255 each, fits int32 (amsim_int_im2col's bound).
MAX_PATCH = np.iinfo(np.int32).max // 255


def int_conv2d(x, w, lut, strides=1, padding="VALID", dilations=1, *, groups=1, pad_value=0, signed=False, bits=8,
               backend="auto", threads=None) -> tuple[np.ndarray, np.ndarray]:
    """Integer grouped conv2d with every product looked up in a circuit's table, and each patch's sum.

    Args:
        x: integer array (N, H, W, C) of n-bit operands, the table's row operand.
        w: integer array (KH, KW, C/groups, F) of n-bit operands, the column operand.
        lut: the circuit's (2^bits, 2^bits) product table, as for :func:`amsim.gemm.int_matmul` (an
            :class:`amsim.gemm.integer.IntegerTable` is checked and prepared once, for all calls).
        strides, dilations: an int, (h, w) or [1, h, w, 1], each >= 1.
        padding: ``"SAME"``, ``"VALID"`` or explicit pairs, as for :func:`amsim.gemm.conv2d`.
        groups: input channel groups, each of C/groups channels and F/groups output channels.
        pad_value: the n-bit operand the padding holds (a quantized input's zero point).
        signed: operands in ``[-2^(bits-1), 2^(bits-1))``, two's complement; else ``[0, 2^bits)``.
        bits: the operand width n, 1..8.
        backend: ``"cpu"`` (the engine; also ``"auto"``) or ``"reference"`` (numpy).
        threads: CPU threads (None: the engine's default).

    Returns:
        ``(out, patch_sums)``: ``out`` (N, OH, OW, F) the exact sums, int32 or int64 as
        :func:`amsim.gemm.integer.accumulator_dtype` says for K = KH*KW*C/groups products;
        ``patch_sums`` (N, OH, OW, groups) int32, each patch's sum of its values, padding included.

    Raises:
        IntegerOperandError: non-integer operands or table, values outside their range.
        ShapeError: operands not 4-D, channels that do not split into the groups, a filter that
            does not fit, a table of the wrong shape.
        amsim.gemm.conv.ConvArgumentError: a bad stride, dilation or padding.
        RangeError: a bad width, group count, thread count or backend; a patch too long to sum.
    """
    check_bits(bits)
    if backend not in BACKENDS:
        raise RangeError(f"int_conv2d: backend must be one of {BACKENDS}, not {backend!r}")
    groups = check_integer(groups, "groups", 1)
    threads = engine.engine_threads(threads, "threads (None: every available CPU)")
    table = prepared_table(lut, bits, bool(signed), fn="int_conv2d")
    px, pw = (_patterns4(name, v, bits, signed) for name, v in (("x", x), ("w", w)))
    pad = _pad_pattern(pad_value, bits, signed)
    g = int_conv_geometry(px.shape, pw.shape, strides, padding, dilations, groups)
    k = g.kh * g.kw * (g.c // groups)
    if k > MAX_PATCH:
        raise RangeError(f"int_conv2d: a patch of K = {k} values can overflow its int32 sum (at most {MAX_PATCH})")
    dtype = accumulator_dtype(k, table)
    if backend == "reference":
        cols = _patches(px, g, groups, pad)
        sums = _patches(np.asarray(x, np.int64), g, groups, int(pad_value)).sum(axis=2).T.astype(np.int32)
        out = [reference_int_matmul(cols[q], wq, table.table) for q, wq in enumerate(_group_filters(pw, groups))]
    else:
        cols, sums = _engine_patches(px, g, groups, pad, bits if signed else 0, threads)
        out = [_cpu_int_matmul(cols[q], wq, table, dtype, threads)
               for q, wq in enumerate(_group_filters(pw, groups))]
    out = np.concatenate(out, axis=1)
    return out.astype(dtype, copy=False).reshape(g.out_shape), sums.reshape(g.n, g.oh, g.ow, groups)


def _patterns4(name, x, bits, signed) -> np.ndarray:
    """A 4-D operand's n-bit patterns (uint8, C-contiguous), its values checked first."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise IntegerOperandError(f"int_conv2d: {name} must be an integer array, got {x.dtype} (shape {x.shape})")
    if x.ndim != 4:
        layout = "NHWC" if name == "x" else "(KH, KW, C/groups, F)"
        raise ShapeError(f"int_conv2d: {name} must be 4-D {layout}, got shape {x.shape}")
    return _patterns(f"int_conv2d: {name}", x.reshape(1, -1), bits, signed).reshape(x.shape)


def _pad_pattern(pad_value, bits, signed) -> int:
    if isinstance(pad_value, (bool, np.bool_)) or not isinstance(pad_value, (int, np.integer)):
        raise IntegerOperandError(f"int_conv2d: pad_value must be an int, got {pad_value!r}")
    check_values("int_conv2d: pad_value", int(pad_value), int(pad_value), bits, signed)
    return int(pad_value) & ((1 << bits) - 1)


def check_groups(c, cg, f, groups: int, fn: str = "int_conv2d") -> None:
    """Refuse input channels ``c`` that a filter of ``cg`` input and ``f`` output channels does not
    split into ``groups`` groups (a size of None, unknown yet, passes).

    Raises:
        ShapeError: naming ``fn``, the channels and the groups.
    """
    if c is not None and cg is not None and cg * groups != c:
        raise ShapeError(f"{fn}: input has {c} channels, a filter of {cg} input channels in {groups} groups "
                         f"expects {cg * groups}")
    if f is not None and f % groups:
        raise ShapeError(f"{fn}: the filter's {f} output channels do not split into {groups} groups")


def int_conv_geometry(x_shape, w_shape, strides=1, padding="VALID", dilations=1, groups=1,
                      fn: str = "int_conv2d") -> ConvGeometry:
    """The checked geometry of a grouped conv2d (:func:`amsim.gemm.conv.conv_geometry`'s rules and
    errors, and :func:`check_groups`); its ``c`` is the input's channels, of every group."""
    check_groups(x_shape[3], w_shape[2], w_shape[3], groups, fn)
    # one group's geometry: a filter of C/groups input channels on as many of the input's
    return conv_geometry((*x_shape[:3], w_shape[2]), w_shape, strides, padding, dilations)._replace(c=x_shape[3])


def _group_filters(pw, groups):
    """Each group's filter columns as a contiguous (KH*KW*C/groups, F/groups) matrix."""
    kh, kw, cg, f = pw.shape
    matrix = pw.reshape(kh * kw * cg, f)
    fg = f // groups
    return [np.ascontiguousarray(matrix[:, q * fg:(q + 1) * fg]) for q in range(groups)]


def _patches(x, g: ConvGeometry, groups, pad):
    """The oracle's im2col: (groups, P, K), each group's patch matrix of ``x`` padded with ``pad``, rows
    in NHW order, columns in (kh, kw, c) order."""
    top, bottom, left, right = g.pads
    (sh, sw), (dh, dw) = g.strides, g.dilations
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad)
    taps = [padded[:, i * dh:i * dh + (g.oh - 1) * sh + 1:sh, j * dw:j * dw + (g.ow - 1) * sw + 1:sw, :]
            for i in range(g.kh) for j in range(g.kw)]
    rows, cg = g.n * g.oh * g.ow, g.c // groups
    patches = np.stack(taps, axis=3).reshape(rows, g.kh * g.kw, groups, cg)
    return patches.transpose(2, 0, 1, 3).reshape(groups, rows, g.kh * g.kw * cg)


def _engine_patches(px, g: ConvGeometry, groups, pad, signed_bits, threads):
    """amsim_int_im2col: the same (groups, P, K) patch matrices and (P, groups) sums (of n-bit
    two's-complement values when ``signed_bits`` is n, else of the patterns)."""
    ffi, lib = engine.load()
    rows = g.n * g.oh * g.ow
    cols = np.empty((groups, rows, g.kh * g.kw * (g.c // groups)), np.uint8)
    sums = np.empty((rows, groups), np.int32)
    if rows == 0:
        return cols, sums
    rc = lib.amsim_int_im2col(engine._geometry(ffi, g), ffi.from_buffer("uint8_t[]", px), pad, groups,
                              ffi.from_buffer("uint8_t[]", cols) if cols.size else ffi.NULL,
                              ffi.from_buffer("int32_t[]", sums), signed_bits, threads)
    if rc:  # pragma: no cover - the arguments were checked above
        raise RangeError(f"amsim_int_im2col refused its arguments (status {rc}, geometry {g})")
    return cols, sums
