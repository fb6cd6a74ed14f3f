"""im2col and col2im of 1 to 3 spatial dimensions in TensorFlow, each the other's gradient.

A convolution that has no engine op of its own (3-D) is the GEMM of its
input's patch matrix with the reshaped filter (:func:`amsim.keras.ops.am_conv3d`),
and its transpose the col2im of a GEMM. These two functions are the patch
halves, on channels-last tensors and the geometry of
:func:`amsim.gemm.conv.conv_nd_geometry` (its spatial fields and channels; the
batch is the tensor's):

* :func:`im2col` copies: row ``(n, *out)`` of the patch matrix holds, in
  ``(*k, c)`` order, the input under filter position ``k`` at output position
  ``out``, zeros in the padding (strided slices, any stride, dilation and
  padding);
* :func:`col2im` is its adjoint: each input position sums the patch columns
  that cover it in increasing filter position (row-major), in float32 from
  +0.

That summation order is ``amsim.gemm.conv``'s numpy col2im and the C
engine's, so results are deterministic and ``amsim.gemm.conv3d`` reproduces
them bit for bit. TensorFlow's own gradient of the slices would sum them with
AddN, in no fixed order, so the gradients are written out
(``tf.custom_gradient``): im2col's is col2im, and col2im's is im2col.
"""

from __future__ import annotations

import math

import tensorflow as tf

from ..gemm.conv import ConvNdGeometry

__all__ = ["im2col", "col2im", "patch_values"]


def im2col(x, g: ConvNdGeometry):
    """The patch matrix of ``x``.

    Args:
        x: float tensor ``(batch, *g.sizes, g.c)``.
        g: the convolution's geometry.

    Returns:
        Tensor ``(batch * prod(g.out_sizes), prod(g.ksizes) * g.c)``.
    """

    @tf.custom_gradient
    def patches(x):
        return _extract(x, g), lambda dcols: col2im(dcols, g, tf.shape(x)[0])

    return patches(x)


def col2im(cols, g: ConvNdGeometry, batch):
    """The adjoint of :func:`im2col`: each input position sums the patch columns that cover it.

    Args:
        cols: float tensor ``(batch * prod(g.out_sizes), prod(g.ksizes) * g.c)``.
        g: the convolution's geometry.
        batch: the number of images (an int or a scalar int32 tensor): ``cols``
            has no rows to tell it by when the output is empty.

    Returns:
        Tensor ``(batch, *g.sizes, g.c)``.
    """

    @tf.custom_gradient
    def unpatch(cols):
        return _scatter(cols, g, batch), lambda dx: im2col(dx, g)

    return unpatch(cols)


def patch_values(x, g: ConvNdGeometry, pad_value=0):
    """:func:`im2col` without a gradient, of a tensor of any dtype, padded with ``pad_value``: the
    patches of a quantized convolution's integer input, padded with its zero point."""
    return _extract(x, g, pad_value)


def _extract(x, g: ConvNdGeometry, pad_value=0):
    depth = math.prod(g.ksizes) * g.c
    if any(before or after for before, after in g.pads):
        x = tf.pad(x, [[0, 0], *map(list, g.pads), [0, 0]], constant_values=pad_value)
    taps = [x[(slice(None), *g.window(tap), slice(None))] for tap in g.taps]
    return tf.reshape(tf.stack(taps, axis=-2), [-1, depth]) if math.prod(g.out_sizes) else \
        tf.zeros([0, depth], x.dtype)


def _scatter(cols, g: ConvNdGeometry, batch):
    blocks = tf.reshape(cols, [batch, *g.out_sizes, len(g.taps), g.c])
    # Interleave stride - 1 zeros after each output position, so that a tap's block lands on
    # its input positions as one contiguous window: out * stride long, from its first position.
    for axis, stride in enumerate(g.strides, start=1):
        if stride > 1:
            blocks = _spread(blocks, axis, stride)
    total = tf.zeros([batch, *g.sizes, g.c], cols.dtype)
    for t, tap in enumerate(g.taps):
        landing = _landing(g, tap)
        if landing is None:
            continue  # the tap meets only padding: it adds nothing (+0 added to a sum from +0 is that sum)
        window, pads = landing
        block = blocks[(slice(None), *window, t, slice(None))]
        total = total + (tf.pad(block, [[0, 0], *pads, [0, 0]]) if any(map(any, pads)) else block)
    total.set_shape([batch if isinstance(batch, int) else None, *g.sizes, g.c])
    return total


def _landing(g: ConvNdGeometry, tap):
    """Where filter position ``tap``'s spread block lands in the input: the part of the block inside
    the input (a slice per spatial axis) and the zeros around it ((before, after) per axis); None
    when the tap meets only padding."""
    window, pads = [], []
    for k, d, o, s, size, (before, _) in zip(tap, g.dilations, g.out_sizes, g.strides, g.sizes, g.pads):
        first = k * d - before  # the input position the tap meets at output position 0
        lo, hi = max(first, 0), min(first + o * s, size)
        if hi <= lo:
            return None
        window.append(slice(lo - first, hi - first))
        pads.append([lo, size - hi])
    return window, pads


def _spread(blocks, axis: int, stride: int):
    """``blocks`` with stride - 1 zeros after each element along ``axis``."""
    shape = tf.shape(blocks)
    spread = tf.pad(tf.expand_dims(blocks, axis + 1),
                    [[0, 0]] * (axis + 1) + [[0, stride - 1]] + [[0, 0]] * (blocks.shape.rank - axis - 1))
    return tf.reshape(spread, tf.concat([shape[:axis], [shape[axis] * stride], shape[axis + 1:]], 0))
