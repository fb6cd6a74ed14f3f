"""AMConv1D, AMConv2D, AMConv3D, AMDepthwiseConv1D and AMDepthwiseConv2D: Keras' convolutions with every
product approximate.

The 1-D layers are the 2-D ops on a height-1 axis (:mod:`.conv_base`), the 2-D
ones the engine's conv ops, and Conv3D the GEMM of its patches
(:func:`amsim.keras.ops.am_conv3d`). In every one the input patch is the LUT's
row operand and the kernel its column operand.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .base import Quantizable, replaces
from .conv_base import ConvBase


class _AMConv(ConvBase, Quantizable):
    """Conv1D, Conv2D and Conv3D: the op of the layer's rank, one group after another."""

    PRODUCTS = (("input", "conv2d", "kernel"),)

    def convolution_op(self, inputs, kernel):
        return self._convolve(inputs, kernel, training=False)

    def _convolve(self, inputs, kernel, training, bias=None):
        """The convolution in the layer's data format, plus ``bias`` where one is given (one group only)."""
        x, w = self._causal(self._channels_last(inputs)), self._op_kernel(kernel)
        geometry = self._op_geometry()
        x_range = self._input_range(x, training)  # observed once, over every group

        def one(x, w, bias=None):
            return self._product(x, w, x_range, bias=bias, **geometry)

        if self.groups == 1:
            y = one(x, w, bias)
        else:
            y = tf.concat([one(xg, wg) for xg, wg in zip(tf.split(x, self.groups, axis=-1),
                                                         tf.split(w, self.groups, axis=-1))], axis=-1)
        return self._from_channels_last(y)

    def call(self, inputs, training=None):
        # Not Keras' call: Conv1D's pads a causal input and calls its backend's conv, not
        # convolution_op (which here pads it); and BaseConv's adds the bias with keras.ops.add,
        # which takes a channels-first bias for a channels-last one when the last spatial size
        # equals the filter count.
        fused = self._fused_bias() if self.groups == 1 else None
        y = self._convolve(inputs, self.kernel, training, bias=fused)
        return self._finish(y, self.bias if fused is None else None)

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}


@replaces(keras.layers.Conv1D)
class AMConv1D(_AMConv, keras.layers.Conv1D):
    """1-D convolution whose products use an approximate multiplier.

    The convolution of ``keras.layers.Conv1D`` (cross-correlation) with every
    product of an input patch and the kernel the LUT multiplier's (the patch
    is the LUT's row operand, the kernel its column operand): the 2-D op on a
    height-1 axis, a "causal" input padded on the left as Keras pads it. Sums,
    the bias and the activation as in Keras. Groups are convolved one after another.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv1D``
            (``filters``, ``kernel_size``, ``strides``, ``padding`` including
            ``"causal"``, ``data_format``, ``dilation_rate``, ``groups``,
            ``activation``, ...).{am_args}

    Input shape:
        3D tensor ``(batch_size, steps, channels)``, or
        ``(batch_size, channels, steps)`` with ``data_format="channels_first"``.

    Output shape:
        3D tensor ``(batch_size, new_steps, filters)``, or
        ``(batch_size, filters, new_steps)`` with ``data_format="channels_first"``.

    Example:

    >>> layer = AMConv1D(32, 3, padding="causal", lut="mbm", bits=7)
    """


@replaces(keras.layers.Conv2D)
class AMConv2D(_AMConv, keras.layers.Conv2D):
    """2-D convolution whose products use an approximate multiplier.

    The convolution of ``keras.layers.Conv2D`` (cross-correlation) with every
    product of an input patch and the kernel the LUT multiplier's (the patch
    is the LUT's row operand, the kernel its column operand); sums, the bias
    and the activation as in Keras. Groups are convolved one after another.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv2D``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``groups``, ``activation``, ...).{am_args}

    Input shape:
        4D tensor ``(batch_size, height, width, channels)``, or
        ``(batch_size, channels, height, width)`` with
        ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, filters)``, or
        ``(batch_size, filters, new_height, new_width)`` with
        ``data_format="channels_first"``.

    Example:

    >>> layer = AMConv2D(32, 3, padding="same", activation="relu", lut="mbm", bits=7)
    """


@replaces(keras.layers.Conv3D)
class AMConv3D(_AMConv, keras.layers.Conv3D):
    """3-D convolution whose products use an approximate multiplier.

    The convolution of ``keras.layers.Conv3D`` as the GEMM of the input's
    patches (the LUT's row operand, columns in (kd, kh, kw, channel) order)
    with the kernel (the column operand), :func:`amsim.keras.ops.am_conv3d`;
    sums, the bias and the activation as in Keras. Groups are convolved one
    after another. The input's spatial dimensions must be known when the
    layer is traced (the patches are static slices).

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv3D``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``groups``, ``activation``, ...).{am_args}

    Input shape:
        5D tensor ``(batch_size, spatial_dim1, spatial_dim2, spatial_dim3, channels)``,
        or ``(batch_size, channels, spatial_dim1, spatial_dim2, spatial_dim3)``
        with ``data_format="channels_first"``.

    Output shape:
        5D tensor ``(batch_size, new_spatial_dim1, new_spatial_dim2, new_spatial_dim3, filters)``,
        or channels first likewise.

    Example:

    >>> layer = AMConv3D(16, 3, padding="same", lut="mbm", bits=7)
    """

    PRODUCTS = (("input", "conv3d", "kernel"),)


class _AMDepthwise(ConvBase, Quantizable):
    """DepthwiseConv1D and DepthwiseConv2D: the depthwise op, on a height-1 axis for 1-D."""

    PRODUCTS = (("input", "depthwise_conv2d", "kernel"),)

    def call(self, inputs, training=None):
        x = self._channels_last(inputs)
        fused = self._fused_bias()
        y = self._product(x, self._op_kernel(self.kernel), self._input_range(x, training), bias=fused,
                          **self._op_geometry())
        return self._finish(self._from_channels_last(y), self.bias if fused is None else None)

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}


@replaces(keras.layers.DepthwiseConv1D)
class AMDepthwiseConv1D(_AMDepthwise, keras.layers.DepthwiseConv1D):
    """Depthwise 1-D convolution whose products use an approximate multiplier.

    Each input channel is convolved with its own ``depth_multiplier`` filters,
    as in ``keras.layers.DepthwiseConv1D``, with every product the LUT
    multiplier's (input patch as the row operand, kernel as the column one):
    the 2-D depthwise op on a height-1 axis.

    Args:
        *args, **kwargs: every argument of ``keras.layers.DepthwiseConv1D``
            (``kernel_size``, ``strides``, ``padding``, ``depth_multiplier``,
            ``data_format``, ``dilation_rate``, ``activation``, ...).{am_args}

    Input shape:
        3D tensor ``(batch_size, steps, channels)``, or
        ``(batch_size, channels, steps)`` with ``data_format="channels_first"``.

    Output shape:
        3D tensor ``(batch_size, new_steps, channels * depth_multiplier)``, or
        channels first likewise.
    """


@replaces(keras.layers.DepthwiseConv2D)
class AMDepthwiseConv2D(_AMDepthwise, keras.layers.DepthwiseConv2D):
    """Depthwise 2-D convolution whose products use an approximate multiplier.

    Each input channel is convolved with its own ``depth_multiplier`` filters,
    as in ``keras.layers.DepthwiseConv2D``, with every product the LUT
    multiplier's (input patch as the row operand, kernel as the column one).

    Args:
        *args, **kwargs: every argument of ``keras.layers.DepthwiseConv2D``
            (``kernel_size``, ``strides``, ``padding``, ``depth_multiplier``,
            ``data_format``, ``dilation_rate``, ``activation``, ...).{am_args}

    Input shape:
        4D tensor ``(batch_size, height, width, channels)``, or
        ``(batch_size, channels, height, width)`` with
        ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, channels * depth_multiplier)``,
        or channels first likewise.
    """

