"""AMConv2D and AMDepthwiseConv2D: Keras' 2-D convolutions with every product approximate."""

from __future__ import annotations

import keras
import tensorflow as tf

from ..ops import am_conv2d, am_depthwise_conv2d
from .base import Approximate, replaces

_AM_DOC = """
        lut: the multiplier: a C model, by name or ``.c`` file (with
            ``bits``; its LUT is swept once and cached), a LUT file (``.npz``
            or ApproxTrain's ``NAME_M.bin``), an ``amsim.lut.LUT``, an
            ``amsim.gemm.Multiplier`` or a (2^M, 2^M) array.
        bits: mantissa width M; required with a model, checked against a
            LUT.
        params: model parameters, with a model.
        rounding: ``"truncate"`` (default) or ``"rne"``.
        mode: ``"ieee"`` (default) or ``"approxtrain"``.
        gradient: ``"approximate"`` (default: the input and filter gradients
            use the same multiplier) or ``"exact"``."""


class _Conv(Approximate):
    """The NHWC float32 view the ops take, whatever the layer's data format and dtype."""

    def _op_geometry(self) -> dict:
        return {"strides": tuple(self.strides), "padding": self.padding.upper(),
                "dilations": tuple(self.dilation_rate)}

    def _nhwc(self, x):
        x = self._to_float32(x)
        return tf.transpose(x, [0, 2, 3, 1]) if self.data_format == "channels_first" else x

    def _from_nhwc(self, y):
        y = tf.transpose(y, [0, 3, 1, 2]) if self.data_format == "channels_first" else y
        return self._from_float32(y)


@replaces(keras.layers.Conv2D)
class AMConv2D(_Conv, keras.layers.Conv2D):
    """2-D convolution whose products use an approximate multiplier.

    The convolution of ``keras.layers.Conv2D`` (cross-correlation) with every
    product of an input patch and the kernel the LUT multiplier's (the patch
    is the LUT's row operand, the kernel its column operand); sums, the bias
    and the activation as in Keras. Groups are convolved one after another.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv2D``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``groups``, ``activation``, ...).""" + _AM_DOC + """

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

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee",
                 gradient="approximate", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_approximate(lut, bits, params, rounding, mode, gradient)

    def convolution_op(self, inputs, kernel):
        x, w = self._nhwc(inputs), tf.cast(kernel, tf.float32)
        conv = lambda x, w: am_conv2d(x, w, self.multiplier, **self._op_geometry(), **self._op_kwargs())  # noqa: E731
        if self.groups == 1:
            y = conv(x, w)
        else:
            y = tf.concat([conv(xg, wg) for xg, wg in zip(tf.split(x, self.groups, axis=-1),
                                                          tf.split(w, self.groups, axis=-1))], axis=-1)
        return self._from_nhwc(y)

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}


@replaces(keras.layers.DepthwiseConv2D)
class AMDepthwiseConv2D(_Conv, keras.layers.DepthwiseConv2D):
    """Depthwise 2-D convolution whose products use an approximate multiplier.

    Each input channel is convolved with its own ``depth_multiplier`` filters,
    as in ``keras.layers.DepthwiseConv2D``, with every product the LUT
    multiplier's (input patch as the row operand, kernel as the column one).

    Args:
        *args, **kwargs: every argument of ``keras.layers.DepthwiseConv2D``
            (``kernel_size``, ``strides``, ``padding``, ``depth_multiplier``,
            ``data_format``, ``dilation_rate``, ``activation``, ...).""" + _AM_DOC + """

    Input shape:
        4D tensor ``(batch_size, height, width, channels)``, or
        ``(batch_size, channels, height, width)`` with
        ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, channels * depth_multiplier)``,
        or channels first likewise.
    """

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee",
                 gradient="approximate", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_approximate(lut, bits, params, rounding, mode, gradient)

    def call(self, inputs):
        y = am_depthwise_conv2d(self._nhwc(inputs), tf.cast(self.kernel, tf.float32), self.multiplier,
                                **self._op_geometry(), **self._op_kwargs())
        y = self._from_nhwc(y)
        if self.use_bias:
            axis = -1 if self.data_format == "channels_last" else 1
            shape = [1, 1, 1, 1]
            shape[axis] = -1
            y = tf.add(y, tf.reshape(tf.cast(self.bias, y.dtype), shape))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}
