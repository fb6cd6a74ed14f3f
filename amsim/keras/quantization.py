"""8-bit quantized products on an integer circuit: the schemes, the range observer, the integer ops and
their straight-through gradient (docs/quantized.md).

A quantized AM layer (``quantize="uint8"`` or ``"int8"``) computes its products the way an 8-bit
accelerator would: the input and the kernel are quantized to 8-bit integers, every product of
them is the circuit's (its complete table, through the integer LUT GEMM), the sums are exact
integers, and the result is scaled back to float32 before the bias and the activation.

Schemes (docs/quantized.md, "Schemes"):

- ``uint8``: asymmetric affine per tensor, TFApprox's and TFLite's scheme. ``x ~ s (q - z)`` with
  ``q`` in 0..255, the scale ``s = (hi - lo) / 255`` over a range ``[lo, hi]`` that holds 0, and the
  zero point ``z = round(-lo / s)``, so that 0 is exactly ``q = z``. A product sum is then
  ``s_x s_w (sum LUT[q_x, q_w] - z_w sum q_x - z_x sum q_w + K z_x z_w)``: only ``q_x q_w`` goes
  through the (unsigned) circuit, the zero-point terms are exact integer sums.
- ``int8``: symmetric, ``x ~ s q`` with ``q`` in -127..127 (zero point 0): one scale for the input,
  one per output channel for the kernel, signed circuits. A product sum is ``s_x s_w[j] sum
  LUT[q_x, q_w]``.

Rounding is to nearest, ties to even (``rint``, in the ``AmsimQuantize`` op), and values outside the
range clip.

The input's range comes from a :class:`RangeObserver`: in training its moving minimum and maximum,
over calibration data (:func:`calibrating`) the extremes seen, and an input range is never used
before it has been observed (an unobserved layer quantizes each batch with that batch's own range).
The kernel's range is taken from the kernel at every call.

Gradients are the straight-through estimator: the backward pass is that of the float product of the
dequantized operands, in float32 with TensorFlow's own ops, and an input element outside the
quantization range gets no gradient (it was clipped). Quantized layers' accumulators are 32-bit, as
in the hardware they model: a layer whose K products could overflow one is refused when it is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import tensorflow as tf

from ..gemm import integer
from . import patches
from ..gemm.int_conv import MAX_PATCH
from .int_ops import (am_clipped_gradient, am_dequantize, am_int_conv2d, am_int_dequantize, am_int_matmul, am_minmax,
                      am_quantize)
from .ops import conv3d_geometry

__all__ = ["Scheme", "SCHEMES", "scheme_of", "RangeObserver", "calibrating", "quantized_product", "check_accumulator",
           "AccumulatorOverflowError", "PRODUCTS", "quantized_layers", "observed_variables"]

#: The moving average's momentum: each training batch moves the observed range by 1 % towards its own.
MOMENTUM = 0.99
_ACCUMULATOR_MAX = (1 << 31) - 1


class AccumulatorOverflowError(integer.IntegerOperandError):
    """A layer whose sums of circuit products could leave a 32-bit accumulator."""


@dataclasses.dataclass(frozen=True)
class Scheme:
    """An 8-bit quantization scheme: the integer range of its operands and how scales are set.

    Attributes:
        name: ``"uint8"`` or ``"int8"``.
        signed: the operands, and so the circuit, are two's complement.
        qmin, qmax: the quantized values' range.
        per_channel: the kernel has one scale per output channel (else one per tensor).
    """

    name: str
    signed: bool
    qmin: int
    qmax: int
    per_channel: bool

    @property
    def bits(self) -> int:
        return 8


SCHEMES = {"uint8": Scheme("uint8", False, 0, 255, per_channel=False),
           "int8": Scheme("int8", True, -127, 127, per_channel=True)}


def scheme_of(name) -> Scheme:
    """The scheme of that name, or ValueError listing the schemes."""
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"quantize must be one of {tuple(SCHEMES)}, not {name!r}") from None


def check_accumulator(k: int, table) -> None:
    """Refuse a sum of ``k`` products of the table that a 32-bit accumulator could not hold, and a sum
    of ``k`` 8-bit operands (the zero-point correction's) that could leave int32."""
    largest = integer.largest_product(table)
    if k * largest > _ACCUMULATOR_MAX:
        raise AccumulatorOverflowError(
            f"its sums of K = {k} circuit products of magnitude up to {largest} can overflow the 32-bit "
            f"accumulator (at most {_ACCUMULATOR_MAX // max(largest, 1)} such products fit)")
    if k > MAX_PATCH:
        raise AccumulatorOverflowError(f"its sums of K = {k} 8-bit operands can overflow the 32-bit accumulator "
                                       f"(at most {MAX_PATCH} fit)")


# ----------------------------------------------------------------------------------------------
# Scales, zero points, quantize and dequantize (the one definition of each)
# ----------------------------------------------------------------------------------------------


def _affine(scheme: Scheme, lo, hi):
    """Scale and zero point (float32, int32) of a range: asymmetric for uint8, symmetric for int8.

    The range is widened to hold 0; an empty one (all zeros) gets scale 1.
    """
    lo, hi = tf.minimum(lo, 0.0), tf.maximum(hi, 0.0)
    if scheme.signed:
        span = tf.maximum(-lo, hi)
        scale = tf.where(span > 0, span / scheme.qmax, tf.ones_like(span))
        return scale, tf.zeros_like(scale, tf.int32)
    scale = tf.where(hi > lo, (hi - lo) / (scheme.qmax - scheme.qmin), tf.ones_like(hi))
    zero = tf.clip_by_value(tf.round(-lo / scale), scheme.qmin, scheme.qmax)
    return scale, tf.cast(zero, tf.int32)


def _quantize(x, scale, zero, scheme: Scheme, sums=False):
    """The integer values of ``x``, ``clip(round(x / scale) + zero)`` (ties to even), as the integer
    ops' one-byte operands (uint8, or int8 when signed): one pass (AmsimQuantize), which with ``sums``
    also gives their sums per position of the last axis (a kernel's per output channel)."""
    return am_quantize(x, scale, zero, scheme.qmin, scheme.qmax, sums=sums)


def _row_sums(q):
    """Exact int32 sums of each row of the quantized values ``q`` (M, K, bytes), as (M, 1); K at most
    MAX_PATCH (check_accumulator)."""
    return tf.reduce_sum(tf.cast(q, tf.int32), axis=1, keepdims=True)


def _range(x):
    """A tensor's smallest and largest value, as scalars: one pass (AmsimMinMax), NaN left out."""
    lo, hi = am_minmax(tf.cast(x, tf.float32))
    return tf.reshape(lo, []), tf.reshape(hi, [])


def _kernel_params(scheme: Scheme, w, channel_axes):
    """The kernel's scale and zero point: per tensor, or per output channel (the axes ``channel_axes``,
    the kernel's last ones), the range of every channel in one pass (AmsimMinMax)."""
    if not scheme.per_channel:
        return _affine(scheme, *_range(w))
    shape = [w.shape[a] if a in channel_axes else 1 for a in range(w.shape.rank)]
    lo, hi = am_minmax(w, math.prod(w.shape[a] for a in channel_axes))
    return _affine(scheme, tf.reshape(lo, shape), tf.reshape(hi, shape))


# ----------------------------------------------------------------------------------------------
# The input's range
# ----------------------------------------------------------------------------------------------


class RangeObserver:
    """The range of a layer's input that its quantization uses: three non-trainable weights of the layer.

    ``{name}_min`` and ``{name}_max`` hold the range, ``{name}_observed`` the number of batches it
    has seen (``name``: ``input``, or the inner input of a layer of two products). In training each
    batch moves the range towards its own minimum and maximum by ``1 - MOMENTUM`` (the first batch
    sets it); under :func:`calibrating` it is the extremes of every batch seen; otherwise it is
    read. A layer that has observed nothing uses each batch's own range.
    """

    def __init__(self, layer, name="input"):
        def weight(what):
            return layer.add_weight(name=f"{name}_{what}", shape=(), initializer="zeros", trainable=False,
                                    dtype="float32", autocast=False)

        self.layer = layer
        self.minimum, self.maximum, self.observed = weight("min"), weight("max"), weight("observed")

    @property
    def variables(self) -> list:
        return [self.minimum, self.maximum, self.observed]

    def __call__(self, x, training) -> tuple:
        """``(lo, hi)`` for this batch ``x`` (float32), updating the observed range as the mode says."""
        lo, hi = _range(x)
        first = self.observed <= 0
        if getattr(self.layer, "_calibrating", False):
            lo = tf.where(first, lo, tf.minimum(self.minimum, lo))
            hi = tf.where(first, hi, tf.maximum(self.maximum, hi))
        elif training:
            lo = tf.where(first, lo, MOMENTUM * self.minimum + (1 - MOMENTUM) * lo)
            hi = tf.where(first, hi, MOMENTUM * self.maximum + (1 - MOMENTUM) * hi)
        else:
            return tf.where(first, lo, self.minimum), tf.where(first, hi, self.maximum)
        self.minimum.assign(lo)
        self.maximum.assign(hi)
        self.observed.assign_add(1.0)
        return lo, hi


def quantized_layers(model) -> list:
    """The layers of ``model`` (nested ones too) that quantize, each with its ``range_observers``."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if getattr(layer, "range_observers", None)]


def observed_variables(model) -> list:
    """The input-range weights of a model's quantized layers: what a converted copy observes afresh,
    and so leaves out when it compares or copies weights."""
    return [v for layer in quantized_layers(model) for observer in layer.range_observers.values()
            for v in observer.variables]


@contextlib.contextmanager
def calibrating(model):
    """Within this block, calls of ``model`` set its quantized layers' input ranges to the extremes of
    what they see (starting afresh), rather than reading them; run the calibration data through it."""
    layers = quantized_layers(model)
    for v in observed_variables(model):
        v.assign(tf.zeros_like(v))
    for layer in layers:
        layer._calibrating = True
    try:
        yield layers
    finally:
        for layer in layers:
            layer._calibrating = False


# ----------------------------------------------------------------------------------------------
# The products: integer forward, float backward
# ----------------------------------------------------------------------------------------------


def _byte(z, scheme: Scheme):
    """An integer inside the scheme's range (a zero point, a bound) as the integer ops' one byte."""
    return tf.cast(z, tf.int8 if scheme.signed else tf.uint8)


def _int_matmul(qa, qb, circuit, scheme):
    return am_int_matmul(qa, qb, circuit.table, bits=8, signed=scheme.signed, out_dtype=tf.int32)


def _dequantized(acc, scheme, zx, zw, sum_x, sum_w, k, scale, bias):
    """float32 ``scale`` times the exact integer sums of (q_x - z_x)(q_w - z_w), each q_x q_w the
    circuit's, plus ``bias`` (or None): the op's int32 sums ``acc`` corrected, scaled and biased in one
    pass (AmsimIntDequantize).

    ``sum_x()`` gives the int32 sums of q_x (per output row or position, per input channel group) and
    ``sum_w`` holds those of q_w (per output channel): both needed in the asymmetric scheme only (where
    ``sum_w`` is None, the zero points are 0).
    """
    if scheme.signed:  # zero points are 0: the circuit's sums as they are
        return am_int_dequantize(acc, scale, k=k, bias=bias)
    return am_int_dequantize(acc, scale, k=k, row_sums=sum_x(), col_sums=sum_w, zero_points=(zx, zw), bias=bias)


def _integer_matmul(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias):
    """(M, K) x (K, N): the scaled, corrected sums."""
    acc = _int_matmul(qx, qw, circuit, scheme)
    return _dequantized(acc, scheme, zx, zw, lambda: _row_sums(qx), sum_w,
                        qx.shape[1] if qx.shape[1] is not None else tf.shape(qx)[1], scale, bias)


def _integer_grouped(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias, groups):
    """NHWC x (kh, kw, C/groups, F): the integer conv op, its padding the zero point (what an
    accelerator pads with: the value 0 quantizes to), then the zero-point correction with each
    patch's sum of q_x (the op's, one per group)."""
    kh, kw, cg, _ = qw.shape
    acc, sum_x = am_int_conv2d(qx, qw, circuit.table, strides=geometry["strides"], padding=geometry["padding"],
                               dilations=geometry["dilations"], groups=groups, pad_value=_byte(zx, scheme), bits=8,
                               signed=scheme.signed)
    return _dequantized(acc, scheme, zx, zw, lambda: sum_x, sum_w, kh * kw * cg, scale, bias)


def _integer_conv2d(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias):
    """NHWC x HWIO: one group."""
    return _integer_grouped(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias, groups=1)


def _integer_depthwise(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias):
    """Each input channel its own group: the kernel (kh, kw, C, mult) as (kh, kw, 1, C*mult), output
    channel c*mult + m as in TensorFlow's depthwise conv2d."""
    kh, kw, c, mult = qw.shape
    return _integer_grouped(qx, tf.reshape(qw, [kh, kw, 1, c * mult]), zx, zw, sum_w, circuit, scheme, geometry,
                            scale, bias, groups=c)


def _integer_conv3d(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias):
    """NDHWC x DHWIO: the patch matrix of the input padded with the zero point, then the integer GEMM."""
    g = conv3d_geometry("a quantized conv3d", qx.shape, qw.shape, geometry["strides"], geometry["padding"],
                        geometry["dilations"])
    cols = patches.patch_values(qx, g, tf.cast(zx, qx.dtype))
    y = _integer_matmul(cols, tf.reshape(qw, [-1, g.o]), zx, zw, sum_w, circuit, scheme, geometry, scale, bias)
    return tf.reshape(y, [tf.shape(qx)[0], *g.out_sizes, g.o])


def _float_conv3d(x, w, geometry):
    return tf.nn.conv3d(x, w, strides=[1, *geometry["strides"], 1], padding=geometry["padding"],
                        dilations=[1, *geometry["dilations"], 1])


def _float_conv2d(x, w, geometry):
    return tf.nn.conv2d(x, w, strides=[1, *geometry["strides"], 1], padding=geometry["padding"],
                        dilations=[1, *geometry["dilations"], 1])


def _float_depthwise(x, w, geometry):
    return tf.nn.depthwise_conv2d(x, w, strides=[1, *geometry["strides"], 1], padding=geometry["padding"],
                                  dilations=list(geometry["dilations"]))


@dataclasses.dataclass(frozen=True)
class _Product:
    integer: object  # (qx, qw, zx, zw, sum_w, circuit, scheme, geometry, scale, bias) -> the scaled corrected sums
    float: object  # (x, w, geometry) -> the float product, whose gradient is the straight-through one
    channel_axes: tuple  # the kernel's output-channel axes (per-channel scales)


#: The quantized products by kind: ``matmul`` (rows x kernel), ``conv2d`` (NHWC x HWIO),
#: ``depthwise_conv2d`` (NHWC x (kh, kw, C, multiplier)) and ``conv3d`` (NDHWC x DHWIO).
PRODUCTS = {
    "matmul": _Product(_integer_matmul, lambda x, w, g: tf.matmul(x, w), (1,)),
    "conv2d": _Product(_integer_conv2d, _float_conv2d, (3,)),
    "depthwise_conv2d": _Product(_integer_depthwise, _float_depthwise, (2, 3)),
    "conv3d": _Product(_integer_conv3d, _float_conv3d, (4,)),
}


def quantized_product(kind: str, x, w, circuit, scheme: Scheme, x_range, bias=None, **geometry):
    """The float32 result of a quantized product of ``x`` and the kernel ``w`` on ``circuit``.

    Args:
        kind: a key of :data:`PRODUCTS`.
        x: float32 input (rows for ``matmul``, NHWC for the convolutions).
        w: float32 kernel.
        circuit: the :class:`amsim.gemm.circuit.Circuit` every product of the quantized operands is.
        scheme: the :class:`Scheme`.
        x_range: ``(lo, hi)`` of the input's quantization (:class:`RangeObserver`).
        bias: None, or a float32 bias (output channels,) added in the same pass as the scaling: the
            values of adding it afterwards, and the same gradient (the sum of the output gradient over
            every axis but the last).
        **geometry: ``strides``, ``padding`` ("SAME"/"VALID") and ``dilations`` of a convolution.

    The gradient is straight-through (the module's docstring).
    """
    product = PRODUCTS[kind]
    sx, zx = (tf.stop_gradient(t) for t in _affine(scheme, *x_range))
    sw, zw = (tf.stop_gradient(t) for t in _kernel_params(scheme, w, product.channel_axes))
    # The input's clipping bounds: values beyond them all quantize to qmin or qmax.
    lo, hi = (am_dequantize(_byte(q, scheme), sx, zx) for q in (scheme.qmin, scheme.qmax))

    def forward(x, w, b):
        qx = _quantize(x, sx, zx, scheme)
        if scheme.signed:  # zero points 0: no sums
            qw, sum_w = _quantize(w, sw, zw, scheme), None
        else:  # the kernel as (K, output channels), each channel's sum of q_w in the same pass
            qw, sum_w = _quantize(tf.reshape(w, [-1, math.prod(w.shape[a] for a in product.channel_axes)]), sw, zw,
                                  scheme, sums=True)
            qw = tf.reshape(qw, w.shape)
        y = product.integer(qx, qw, zx, zw, sum_w, circuit, scheme, geometry, sx * tf.reshape(sw, [-1]), b)

        def gradient(dy):
            xq, wq = am_dequantize(qx, sx, zx), am_dequantize(qw, sw, zw)
            with tf.GradientTape() as tape:
                tape.watch([xq, wq])
                yq = product.float(xq, wq, geometry)
            dx, dw = tape.gradient(yq, [xq, wq], output_gradients=dy)
            grads = (am_clipped_gradient(x, dx, lo, hi), dw)
            return grads if b is None else (*grads, tf.reduce_sum(dy, axis=list(range(dy.shape.rank - 1))))

        return y, gradient

    if bias is None:
        return tf.custom_gradient(lambda x, w: forward(x, w, None))(x, w)
    return tf.custom_gradient(forward)(x, w, bias)
