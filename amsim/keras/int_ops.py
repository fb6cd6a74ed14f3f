"""The integer LUT GEMM and convolution as TensorFlow ops: ``am_int_matmul`` and ``am_int_conv2d``,
:func:`amsim.gemm.int_matmul` and :func:`amsim.gemm.int_conv2d` on tensors; and the element-wise
steps of a quantized product around them, ``am_minmax``, ``am_quantize``, ``am_dequantize``,
``am_clipped_gradient`` and ``am_int_dequantize`` (:mod:`amsim.gemm.quantize`'s functions on tensors).

For n-bit integer operands (1 <= n <= 8) and a circuit's complete product table ``lut``::

    C[..., i, j] = sum over k of lut[p(a[..., i, k]), p(b[..., k, j])]

with p(x) = x mod 2^n, the operand's n-bit pattern (its two's-complement pattern when signed),
as :mod:`amsim.gemm.integer` defines it; the sums are exact, in int32 or int64, never wrapped.
The C++ kernels (``AmsimIntMatMul``, ``amsim/csrc/tf/int_matmul.cc``; ``AmsimIntConv2D``,
``amsim/csrc/tf/int_conv.cc``) call the engine's ``amsim_int_gemm`` (and ``amsim_int_im2col``) on
TensorFlow's buffers, so their integers are ``amsim.gemm``'s.

The ops have no gradient (integers have none): the quantized layers built on them give them a
straight-through one. They run eagerly and inside ``tf.function``; XLA cannot compile them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import tensorflow as tf

from .. import gemm
from ..errors import RangeError, check_integer
from ..gemm.engine import engine_threads
from ..gemm.int_conv import MAX_PATCH, check_groups, int_conv_geometry
from ..gemm.quantize import MAX_ZERO_POINT, trailing, zero_point_pair
from ..gemm.integer import (IntegerTable, accumulator_dtype, check_bits, check_values, largest_product, prepared_table,
                             value_range)
from .ops import OpArgumentError, OpDTypeError, _conv_attrs, _ops

__all__ = ["am_int_matmul", "am_int_conv2d", "am_minmax", "am_quantize", "am_dequantize", "am_clipped_gradient",
           "am_int_dequantize"]

# Integer sums have no derivative: the quantized layers built on the ops give them a straight-through one.
tf.no_gradient("AmsimIntMatMul")
tf.no_gradient("AmsimIntConv2D")
tf.no_gradient("AmsimMinMax")
tf.no_gradient("AmsimQuantize")
tf.no_gradient("AmsimDequantize")
tf.no_gradient("AmsimClippedGradient")
tf.no_gradient("AmsimIntDequantize")

_OUT_DTYPES = (tf.int32, tf.int64)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_int_matmul(a, b, lut, *, bits=8, signed=False, out_dtype=None, threads=None):
    """Integer ``a @ b`` with every product looked up in a circuit's table (``amsim.gemm.int_matmul``).

    Args:
        a: integer tensor (..., M, K) of n-bit values (any integer dtype), the table's row operand.
        b: integer tensor (K, N), shared by every matrix of ``a``, or (..., K, N) with ``a``'s
            leading dimensions (no other broadcasting), the column operand.
        lut: the circuit's (2^bits, 2^bits) product table indexed by the operands' patterns: an
            integer array (or a tensor whose value is known when traced), or an integer
            :class:`amsim.lut.LUT` of the same width and signedness (:func:`amsim.generate.integer_lut`
            builds one from a circuit), or an :class:`amsim.gemm.IntegerTable`. Its entries are
            checked as :func:`amsim.gemm.int_matmul` checks them (16-bit circuit outputs); each
            distinct table becomes one tensor, which every call and every ``tf.function`` shares.
        bits: the operand width n, 1..8.
        signed: operands in ``[-2^(bits-1), 2^(bits-1))``, two's complement; else ``[0, 2^bits)``.
            A value outside its range is refused: eagerly with
            :class:`amsim.gemm.integer.IntegerOperandError`, inside
            a ``tf.function`` with ``tf.errors.InvalidArgumentError`` when the function runs.
        out_dtype: ``tf.int32`` or ``tf.int64`` (or their names or numpy dtypes); None: int32 where
            K is known when traced and K products of the table's largest magnitude fit int32
            (:func:`amsim.gemm.integer.accumulator_dtype`), else int64. A dtype some sum could
            overflow is refused.
        threads: at most this many engine threads (None: the engine's default). The result does
            not depend on it.

    Input shape:
        ``a``: (..., M, K); ``b``: (K, N) or (..., K, N).

    Output shape:
        (..., M, N), of dtype ``out_dtype``: the exact sums.

    Raises:
        OpDTypeError: operands that are not integer tensors.
        IntegerOperandError: a table or (eagerly) operand values out of range.
        gemm.ShapeError: ranks below 2, inner or batch dimensions that differ, a table of the wrong shape.
        RangeError: a bad width or thread count; an ``out_dtype`` some sum could overflow.
        OpArgumentError: an ``out_dtype`` other than int32 and int64; a ``lut`` tensor whose value
            is known only when a function runs.
    """
    bits = check_bits(bits)
    signed = bool(signed)
    threads = engine_threads(threads)
    table = prepared_table(_host_table("am_int_matmul", lut), bits, signed, fn="am_int_matmul")
    a, b = (_integer_tensor("am_int_matmul", name, x) for name, x in (("a", a), ("b", b)))
    k = _check_shapes(a.shape, b.shape)
    tout = _out_dtype(out_dtype, k, table)
    pa, pb = (_patterns("am_int_matmul", name, x, bits, signed) for name, x in (("a", a), ("b", b)))
    return _ops("am_int_matmul").amsim_int_mat_mul(pa, pb, _table_tensor(table), bits=bits, Tout=tout,
                                                   threads=threads)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_int_conv2d(x, w, lut, *, strides=1, padding="VALID", dilations=1, groups=1, pad_value=0, bits=8,
                  signed=False, threads=None):
    """Integer grouped ``conv2d`` with every product looked up in a circuit's table, and each patch's
    sum of input values (``amsim.gemm.int_conv2d``).

    For output channel ``f`` of group ``q = f // (F / groups)``, the exact sum over its patch
    (filter position and the group's C/groups input channels) of ``lut[p(x_padded), p(w)]``,
    the input padded with ``pad_value``; p is the n-bit pattern, as for :func:`am_int_matmul`.
    A depthwise conv2d of channel multiplier Q is ``groups=C`` with the kernel (KH, KW, C, Q)
    reshaped to (KH, KW, 1, C*Q) (output channel c*Q + m, as ``tf.nn.depthwise_conv2d``'s).

    Args:
        x: integer tensor (N, H, W, C) of n-bit values (any integer dtype), the table's row operand.
        w: integer tensor (KH, KW, C/groups, F) of n-bit values, the column operand; F divisible
            by ``groups``.
        lut: the circuit's (2^bits, 2^bits) product table, as for :func:`am_int_matmul`.
        strides, dilations: an int, (h, w) or [1, h, w, 1], each >= 1.
        padding: ``"SAME"``, ``"VALID"`` (TensorFlow's rules), or explicit pairs
            ((top, bottom), (left, right)).
        groups: input channel groups, each of C/groups input and F/groups output channels.
        pad_value: the n-bit value the padding holds (a quantized input's zero point, which
            stands for 0): an int, or an integer scalar tensor (checked as the operands are).
        bits: the operand width n, 1..8.
        signed: values in ``[-2^(bits-1), 2^(bits-1))``, two's complement; else ``[0, 2^bits)``.
            A value outside its range is refused: eagerly with
            :class:`amsim.gemm.integer.IntegerOperandError`, inside a ``tf.function`` with
            ``tf.errors.InvalidArgumentError`` when the function runs.
        threads: at most this many engine threads (None: the engine's default). The result does
            not depend on it.

    Input shape:
        ``x``: (N, H, W, C); ``w``: (KH, KW, C/groups, F).

    Output shape:
        ``(output, patch_sums)``, both int32: ``output`` (N, OH, OW, F) the exact sums,
        ``patch_sums`` (N, OH, OW, groups) each patch's sum of its input values, the padding's
        included (the uint8 scheme's zero-point correction needs it).

    Raises:
        OpDTypeError: operands or ``pad_value`` that are not integer tensors.
        IntegerOperandError: a table or (eagerly) values out of range.
        gemm.ShapeError: operands not 4-D, channels that do not split into the groups, a filter
            that does not fit, a ``pad_value`` that is not a scalar, a table of the wrong shape.
        amsim.gemm.conv.ConvArgumentError: a bad stride, dilation or padding.
        RangeError: a bad width, group count or thread count; K = KH*KW*C/groups products of the
            table's largest magnitude that could overflow int32 (where K is unknown when traced,
            the kernel refuses them when it runs).
        OpArgumentError: a ``lut`` tensor whose value is known only when a function runs.
    """
    fn = "am_int_conv2d"
    bits = check_bits(bits)
    signed = bool(signed)
    groups = check_integer(groups, "groups", 1)
    threads = engine_threads(threads)
    table = prepared_table(_host_table(fn, lut), bits, signed, fn=fn)
    geometry = _conv_attrs(strides, padding, dilations)
    x, w, pad = (_integer_tensor(fn, name, v) for name, v in (("x", x), ("w", w), ("pad_value", pad_value)))
    if pad.shape.rank not in (None, 0):
        raise gemm.ShapeError(f"{fn}: pad_value must be a scalar, got shape {pad.shape}")
    k = _check_conv_shapes(fn, x.shape, w.shape, groups, strides, padding, dilations)
    if k is not None:
        _check_patch(fn, k, table)
    px, pw, ppad = (_patterns(fn, name, v, bits, signed) for name, v in (("x", x), ("w", w), ("pad_value", pad)))
    output, patch_sums = _ops(fn).amsim_int_conv2d(px, pw, _table_tensor(table), ppad, **geometry, groups=groups,
                                                   bits=bits, signed=signed,
                                                   threads=threads)
    return output, patch_sums


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_minmax(x, channels=1, *, threads=None):
    """The smallest and largest value of each channel of ``x``'s last axes in one pass, NaN left out
    (:func:`amsim.gemm.quantize.minmax` on tensors; the ``AmsimMinMax`` op).

    Args:
        x: float32 tensor whose last axes' sizes multiply to ``channels``.
        channels: 1 (the whole tensor's range) or more.
        threads: at most this many engine threads (None: the engine's default).

    Output shape:
        ``(lo, hi)``, float32 (channels,) each; a channel without numbers has lo = inf, hi = -inf.

    Raises:
        OpDTypeError: x that is not a float32 tensor.
        gemm.ShapeError: channels that are not, when traced, the product of x's last axes' sizes.
        RangeError: a bad channel or thread count.
    """
    fn = "am_minmax"
    channels = check_integer(channels, f"{fn}: channels", 1)
    threads = engine_threads(threads)
    x = _float32_tensor(fn, "x", x)
    if channels > 1 and x.shape.rank is not None and trailing(x.shape, channels) not in (None, channels):
        raise gemm.ShapeError(f"{fn}: channels must be the product of x's last axes' sizes, got {channels} for x "
                              f"{x.shape}")
    return _ops(fn).amsim_min_max(x, channels=channels, threads=threads)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_quantize(x, scale, zero_point, qmin, qmax, *, sums=False, threads=None):
    """8-bit integers ``clip(round(x / scale) + zero_point, qmin, qmax)`` in one pass, rounding to
    nearest with ties to even (:func:`amsim.gemm.quantize` on tensors; the ``AmsimQuantize`` op,
    ``amsim/csrc/tf/quantize.cc``). NaN becomes the zero point.

    Args:
        x: float32 tensor (..., C), C the product of its last axes' sizes.
        scale: float32 tensor or float: one element, or C (of any shape, such as (1, C)), one per
            element of x's last axes, the same for every index of the leading ones.
        zero_point: int32 tensor or int of scale's count, each inside qmin..qmax (a tensor out of
            range fails when the op runs, with ``tf.errors.InvalidArgumentError``).
        qmin, qmax: the integers' range, ints within 0..255 (uint8) or -128..127 (int8).
        sums: also return the integers' int32 sums over every axis but the last, in the same pass
            (as :func:`amsim.gemm.quantize`'s).
        threads: at most this many engine threads (None: the engine's default). The result does
            not depend on it.

    Output shape:
        x's, uint8 (int8 where qmin < 0); with ``sums``, ``(q, sums)``, sums (C,) int32. No
        gradient (a quantized layer gives its product a straight-through one).

    Raises:
        OpDTypeError: x that is not a float32 tensor, or a zero point that is not an integer.
        gemm.ShapeError: a scale or zero point known when traced of neither one element nor x's last axis's size.
        RangeError: a bad range or thread count.
    """
    fn = "am_quantize"
    qmin, qmax = check_integer(qmin, f"{fn}: qmin", -128, 255), check_integer(qmax, f"{fn}: qmax", qmin, 255)
    if not (qmin >= 0 or qmax <= 127):
        raise RangeError(f"{fn}: qmin..qmax must lie within 0..255 or -128..127, not {qmin}..{qmax}")
    threads = engine_threads(threads)
    x = _float32_tensor(fn, "x", x)
    if sums and x.shape.rank == 0:
        raise gemm.ShapeError(f"{fn}: sums need x with at least 1 dimension, got a scalar")
    scale, zero = _scale_and_zero(fn, x.shape, scale, zero_point)
    q, total = _ops(fn).amsim_quantize(x, scale, zero, qmin=qmin, qmax=qmax,
                                       out_type=tf.uint8 if qmin >= 0 else tf.int8, with_sums=bool(sums),
                                       threads=threads)
    return (q, total) if sums else q


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_dequantize(q, scale, zero_point, *, threads=None):
    """The float32 values ``(q - zero_point) * scale`` that 8-bit integers stand for, in one pass
    (:func:`amsim.gemm.quantize.dequantize` on tensors; the ``AmsimDequantize`` op):
    :func:`am_quantize`'s inverse.

    Args:
        q: uint8 or int8 tensor (..., C), C the product of its last axes' sizes.
        scale, zero_point: as for :func:`am_quantize`; each zero point a value of q's type.
        threads: at most this many engine threads (None: the engine's default).

    Output shape:
        q's, float32. It has no gradient.

    Raises:
        OpDTypeError: q that is not uint8 or int8, or a zero point that is not an integer.
        gemm.ShapeError: a scale or zero point known when traced of neither one element nor C.
        RangeError: a bad thread count.
    """
    fn = "am_dequantize"
    threads = engine_threads(threads)
    q = tf.convert_to_tensor(q)
    if q.dtype not in (tf.uint8, tf.int8):
        raise OpDTypeError(f"{fn}: q must be a uint8 or int8 tensor, got {q.dtype.name} (shape {q.shape})")
    scale, zero = _scale_and_zero(fn, q.shape, scale, zero_point)
    return _ops(fn).amsim_dequantize(q, scale, zero, threads=threads)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_int_dequantize(acc, scale, *, k, row_sums=None, col_sums=None, zero_points=(0, 0), bias=None,
                      threads=None):
    """float32 ``(acc - z_w row_sums - z_x col_sums + k z_x z_w) * scale``, per output column, plus
    ``bias``, in one pass: a quantized product's sums corrected for the zero points and scaled
    (:func:`amsim.gemm.int_dequantize` on tensors; the ``AmsimIntDequantize`` op,
    ``amsim/csrc/tf/quantize.cc``).

    Args:
        acc: int32 tensor (..., N): sums of ``k`` circuit products each (of magnitude at most 65535).
        scale: float32 scalar (or one element), or (N,): the output's scale, per column.
        k: the products per sum: an int >= 0, or an integer scalar tensor.
        row_sums: int32 tensor (..., G), acc's leading shape, G dividing N: the input values'
            sums, column f using ``row_sums[..., f // (N // G)]``; None where ``z_w`` is 0.
        col_sums: int32 tensor (N,): the kernel values' sums; None where ``z_x`` is 0.
        zero_points: ``(z_x, z_w)``: ints, or integer scalar tensors, in -255..255 (a tensor out
            of range fails when the op runs, with ``tf.errors.InvalidArgumentError``).
        bias: None, or a float32 tensor (N,) added per column after the scaling, rounded as a
            separate float32 add (a layer's bias, in the same pass). The op has no gradient: a
            layer that adds its bias here gives the bias's gradient itself.
        threads: at most this many engine threads (None: the engine's default). The result does
            not depend on it.

    Input shape:
        ``acc``: (..., N).

    Output shape:
        (..., N), float32.

    Raises:
        OpDTypeError: ``acc`` or a sum that is not an int32 tensor, a bias that is not float32.
        gemm.ShapeError: shapes known when traced that do not fit together; a sum missing where
            its zero point is not known to be 0.
        RangeError: a bad k, zero point or thread count.
    """
    fn = "am_int_dequantize"
    threads = engine_threads(threads)
    zx, zw = (_zero_point(fn, name, z) for name, z in zip(("z_x", "z_w"), zero_point_pair(zero_points, fn)))
    if isinstance(k, (tf.Tensor, tf.Variable)):
        k = tf.cast(k, tf.int64)
    else:
        k = check_integer(k, "k (products per sum)", 0)
    acc = _int32_tensor(fn, "acc", acc)
    if acc.shape.rank == 0:
        raise gemm.ShapeError(f"{fn}: acc must have at least 1 dimension, got a scalar")
    n = acc.shape[-1] if acc.shape.rank is not None else None
    scale = tf.convert_to_tensor(scale, tf.float32)
    if scale.shape.num_elements() == 1:
        scale = tf.reshape(scale, [])
    elif scale.shape.rank is not None and (scale.shape.rank != 1 or not scale.shape.is_compatible_with([n])):
        raise gemm.ShapeError(f"{fn}: scale must be a scalar or ({n},) for acc {acc.shape}, got {scale.shape}")
    rows = _sum_tensor(fn, "row_sums", row_sums, zw, "z_w")
    if rows.shape.rank is not None and acc.shape.rank is not None and row_sums is not None:
        g = rows.shape[-1] if rows.shape.rank else None
        if rows.shape.rank != acc.shape.rank or not rows.shape[:-1].is_compatible_with(acc.shape[:-1]) or \
                (g is not None and n is not None and (g < 1 or n % g)):
            raise gemm.ShapeError(f"{fn}: row_sums must have acc's leading shape and a last dimension dividing "
                                  f"{n}, got {rows.shape} for acc {acc.shape}")
    cols = _sum_tensor(fn, "col_sums", col_sums, zx, "z_x")
    if col_sums is not None and not cols.shape.is_compatible_with([n]):
        raise gemm.ShapeError(f"{fn}: col_sums must be ({n},) for acc {acc.shape}, got {cols.shape}")
    if bias is None:
        bias = tf.zeros([0], tf.float32)
    else:
        bias = _float32_tensor(fn, "bias", bias)
        if not bias.shape.is_compatible_with([n]):
            raise gemm.ShapeError(f"{fn}: bias must be ({n},) for acc {acc.shape}, got {bias.shape}")
    return _ops(fn).amsim_int_dequantize(acc, rows, cols, zx, zw, k, scale, bias, threads=threads)


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_clipped_gradient(x, dy, lo, hi, *, threads=None):
    """The straight-through gradient of the quantizer's clip in one pass: ``dy`` where
    ``lo <= x <= hi``, else 0 (:func:`amsim.gemm.quantize.clipped_gradient` on tensors; the
    ``AmsimClippedGradient`` op).

    Args:
        x: float32 tensor, the quantized input; dy: float32 tensor of x's shape.
        lo, hi: float32 scalars (tensors or floats), the range the quantizer does not clip.
        threads: at most this many engine threads (None: the engine's default).

    Output shape:
        x's, float32.

    Raises:
        OpDTypeError: x or dy that is not a float32 tensor.
        gemm.ShapeError: shapes that differ, when traced.
        RangeError: a bad thread count.
    """
    fn = "am_clipped_gradient"
    threads = engine_threads(threads)
    x, dy = _float32_tensor(fn, "x", x), _float32_tensor(fn, "dy", dy)
    if not x.shape.is_compatible_with(dy.shape):
        raise gemm.ShapeError(f"{fn}: dy must have x's shape {x.shape}, got {dy.shape}")
    lo, hi = (tf.convert_to_tensor(v, tf.float32) for v in (lo, hi))
    return _ops(fn).amsim_clipped_gradient(x, dy, lo, hi, threads=threads)


def _scale_and_zero(fn, shape, scale, zero_point):
    """float32 scales and int32 zero points: one element each, or one per element of the last axes of
    ``shape`` (checked where the counts are known when traced)."""
    scale = tf.convert_to_tensor(scale, tf.float32)
    zero = tf.convert_to_tensor(zero_point)
    if not zero.dtype.is_integer:
        raise OpDTypeError(f"{fn}: zero_point must be integers, got {zero.dtype.name}")
    zero = tf.cast(zero, tf.int32)
    for name, t in (("scale", scale), ("zero_point", zero)):
        count = t.shape.num_elements()
        if count not in (None, 1) and shape.num_elements() != 0 and shape.rank is not None and \
                trailing(shape, count) not in (None, count):
            raise gemm.ShapeError(f"{fn}: {name} must have one element or one per element of the last axes, got "
                                  f"shape {t.shape} for shape {shape}")
    return scale, zero


def _zero_point(fn, name, z):
    """An int zero point checked now; a tensor one as an int32 scalar (the op checks its range)."""
    if isinstance(z, (tf.Tensor, tf.Variable)):
        if not z.dtype.is_integer or z.shape.rank not in (None, 0):
            raise OpDTypeError(f"{fn}: the zero point {name} must be an integer scalar, got {z.dtype.name} {z.shape}")
        return tf.cast(z, tf.int32)
    return check_integer(z, f"{fn}: the zero point {name}", -MAX_ZERO_POINT, MAX_ZERO_POINT)


def _int32_tensor(fn, name, x):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.int32:
        raise OpDTypeError(f"{fn}: {name} must be an int32 tensor, got {x.dtype.name} (shape {x.shape})")
    return x


def _float32_tensor(fn, name, x):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        raise OpDTypeError(f"{fn}: {name} must be a float32 tensor, got {x.dtype.name} (shape {x.shape})")
    return x


def _sum_tensor(fn, name, x, zero, zero_name):
    """The sums as an int32 tensor, or an empty one where they are None and their zero point is 0."""
    if x is not None:
        return _int32_tensor(fn, name, x)
    if isinstance(zero, int) and zero == 0:
        return tf.zeros([0], tf.int32)
    raise gemm.ShapeError(f"{fn}: {name} is needed where {zero_name} is not 0")


def _host_table(fn, lut):
    """The table as the host value ``check_table`` reads: a tensor only when its value is known."""
    if not isinstance(lut, (tf.Tensor, tf.Variable)):
        return lut
    value = lut.numpy() if tf.executing_eagerly() else tf.get_static_value(lut)
    if value is None:
        raise OpArgumentError(f"{fn}: lut must be a table known when traced (an array, a LUT or a "
                              f"constant), got a {lut.dtype.name} tensor {lut.shape} known only when the function "
                              "runs")
    return value


def _integer_tensor(fn, name, x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_integer:
        raise OpDTypeError(f"{fn}: {name} must be an integer tensor, got {x.dtype.name} (shape {x.shape})")
    return x


def _check_shapes(a_shape, b_shape):
    """K when known when traced, else None, after the static shape checks (amsim.gemm's errors);
    dimensions unknown until run time are the kernel's to check."""
    shapes = f"a {a_shape} and b {b_shape}"
    for name, s in (("a", a_shape), ("b", b_shape)):
        if s.rank is not None and s.rank < 2:
            raise gemm.ShapeError(f"am_int_matmul: {name} must have at least 2 dimensions, got shape {s}")
    if a_shape.rank is None or b_shape.rank is None:
        return None
    if b_shape.rank > 2 and (b_shape.rank != a_shape.rank or not a_shape[:-2].is_compatible_with(b_shape[:-2])):
        raise gemm.ShapeError(f"am_int_matmul: b must be (K, N) or have a's batch dimensions, got {shapes}")
    k_a, k_b = a_shape[-1], b_shape[-2]
    if k_a is not None and k_b is not None and k_a != k_b:
        raise gemm.ShapeError(f"am_int_matmul: inner dimensions differ: {shapes}")
    return k_a if k_a is not None else k_b


def _check_conv_shapes(fn, x_shape, w_shape, groups, strides, padding, dilations):
    """K = KH*KW*C/groups when known when traced, else None, after the static shape checks
    (amsim.gemm's errors); sizes unknown until run time are the kernel's to check."""
    if x_shape.rank is None or w_shape.rank is None:
        return None
    if x_shape.rank != 4 or w_shape.rank != 4:
        raise gemm.ShapeError(f"{fn} needs an NHWC input and a (KH, KW, C/groups, F) filter, got {x_shape} and "
                              f"{w_shape}")
    x_dims, w_dims = list(x_shape), list(w_shape)
    x_dims[0] = 1 if x_dims[0] is None else x_dims[0]  # the batch size changes nothing here
    if None in x_dims or None in w_dims:
        check_groups(x_dims[3], w_dims[2], w_dims[3], groups, fn)
    else:
        int_conv_geometry(x_dims, w_dims, strides, padding, dilations, groups, fn)
    return None if None in w_dims[:3] else w_dims[0] * w_dims[1] * w_dims[2]


def _check_patch(fn, k, table) -> None:
    """Refuse a patch of ``k`` products (and patterns) whose int32 sums could overflow."""
    if accumulator_dtype(k, table) != np.int32:
        raise RangeError(f"{fn}: K = {k} products of magnitude up to {largest_product(table)} can overflow its "
                         "int32 output")
    if k > MAX_PATCH:
        raise RangeError(f"{fn}: a patch of K = {k} patterns can overflow its int32 sum (at most {MAX_PATCH})")


def _out_dtype(out_dtype, k, table) -> tf.DType:
    """The output dtype: the one asked for, checked to hold every sum where K is known, or the
    narrowest that holds them (int64 when K is unknown)."""
    needed = None if k is None else tf.as_dtype(accumulator_dtype(k, table))  # RangeError beyond int64
    if out_dtype is None:
        return tf.int64 if needed is None else needed
    try:
        dtype = tf.as_dtype(out_dtype)
    except TypeError:
        dtype = None
    if dtype not in _OUT_DTYPES:
        raise OpArgumentError(f"am_int_matmul: out_dtype must be int32, int64 or None, not {out_dtype!r}")
    if dtype == tf.int32 and needed == tf.int64:
        raise RangeError(f"am_int_matmul: K = {k} products of magnitude up to {largest_product(table)} can "
                         "overflow out_dtype=int32 (int64 holds them)")
    return dtype


def _patterns(fn, name, x, bits, signed):
    """The operand's n-bit patterns x mod 2^n as uint8, its values checked to be n-bit ones first."""
    lo, hi = value_range(bits, signed)
    if x.dtype.min < lo or x.dtype.max > hi:  # the dtype holds values out of range: look at them
        x = _check_range(f"{fn}: {name}", x, bits, signed)
    if x.dtype.size == 1 and bits == 8:  # the byte is the pattern (int8: two's complement)
        return x if x.dtype == tf.uint8 else tf.bitcast(x, tf.uint8)
    # the mask fits every integer dtype here: below 2^7 for 8-bit ones
    return tf.cast(tf.bitwise.bitwise_and(x, tf.constant((1 << bits) - 1, x.dtype)), tf.uint8)


def _check_range(fn_name, x, bits, signed):
    """x, after checking that it holds n-bit values only: now when eager (amsim.gemm's error), else
    by an assertion that runs before anything reads x. ``fn_name`` names the operand in the errors."""
    if tf.executing_eagerly():
        if tf.size(x) > 0:
            check_values(fn_name, int(tf.reduce_min(x)), int(tf.reduce_max(x)), bits, signed)
        return x
    lo, hi = value_range(bits, signed)
    # only the bounds the dtype can cross, each a constant of the dtype
    inside = [x >= tf.constant(lo, x.dtype)] if x.dtype.min < lo else []
    inside += [x <= tf.constant(hi, x.dtype)] if x.dtype.max > hi else []
    ok = tf.reduce_all(inside[0] if len(inside) == 1 else tf.logical_and(*inside))
    kind = "signed" if signed else "unsigned"
    check = tf.debugging.Assert(ok, [f"{fn_name} holds values outside the {kind} {bits}-bit range {lo}..{hi}: "
                                     "smallest and largest", tf.reduce_min(x), tf.reduce_max(x)])
    with tf.control_dependencies([check]):
        return tf.identity(x)


# ----------------------------------------------------------------------------------------------
# Table tensors
# ----------------------------------------------------------------------------------------------

# Each prepared table's eager tensor, while the table lives (IntegerTable is immutable, so its
# identity is its contents; int_matmul's recent tables give equal arrays the same IntegerTable).
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def _table_tensor(table: IntegerTable):
    """The prepared table as one eager tensor per table: a tf.function captures it instead of
    embedding a constant of its own, and the kernels find its preparation by its buffer."""
    with _TABLES_LOCK:
        tensor = _TABLES.get(table)
        if tensor is None:
            with tf.init_scope():
                tensor = _TABLES[table] = tf.constant(table.table)
    return tensor
