"""AMSeparableConv1D and AMSeparableConv2D: Keras' separable convolutions with both of their products
approximate.

A separable convolution is a depthwise convolution (each input channel with its
own ``depth_multiplier`` filters) followed by a pointwise one (a 1x1
convolution mixing the channels), as TensorFlow's ``separable_conv2d``
computes it. Both are the LUT multiplier's: the depthwise products with the
input patch as the LUT's row operand and the depthwise kernel as its column
operand, then the pointwise products with the depthwise result (float32) as
the row operand and the pointwise kernel as the column operand. 1-D layers
are the 2-D ops on a height-1 axis. With ``quantize=``, both are quantized
products (docs/quantized.md), the depthwise result quantized as the pointwise
product's input.
"""

from __future__ import annotations

import keras

from .base import Quantizable, replaces
from .conv_base import ConvBase


class _AMSeparable(ConvBase, Quantizable):
    """Depthwise op, then the 1x1 conv op (a GEMM of the depthwise result, which it reads in place).

    Quantized, each is a quantized product of its own input: the layer's input, then the depthwise
    result (observed as ``pointwise_input``), as an accelerator running the two convolutions would.
    """

    PRODUCTS = (("input", "depthwise_conv2d", "depthwise_kernel"),
                ("pointwise_input", "conv2d", "pointwise_kernel"))

    def call(self, inputs, training=None):
        x = self._channels_last(inputs)
        depthwise = self._product(x, self._op_kernel(self.depthwise_kernel), self._input_range(x, training),
                                  "depthwise_conv2d", **self._op_geometry())
        pointwise_range = self._input_range(depthwise, training, "pointwise_input")
        y = self._product(depthwise, self._op_kernel(self.pointwise_kernel), pointwise_range, "conv2d",
                          strides=(1, 1), padding="VALID", dilations=(1, 1))
        return self._finish(self._from_channels_last(y), self.bias)

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}


@replaces(keras.layers.SeparableConv1D)
class AMSeparableConv1D(_AMSeparable, keras.layers.SeparableConv1D):
    """Separable 1-D convolution whose depthwise and pointwise products use an approximate multiplier.

    ``keras.layers.SeparableConv1D``: a depthwise convolution then a pointwise
    one, every product of both the LUT multiplier's (the input patch, then the
    depthwise result, as the LUT's row operand; the kernels as its column
    operand). Sums, the bias and the activation as in Keras.

    Args:
        *args, **kwargs: every argument of ``keras.layers.SeparableConv1D``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``depth_multiplier``,
            ``activation``, ...).{am_args}

    Input shape:
        3D tensor ``(batch_size, steps, channels)``, or
        ``(batch_size, channels, steps)`` with ``data_format="channels_first"``.

    Output shape:
        3D tensor ``(batch_size, new_steps, filters)``, or
        ``(batch_size, filters, new_steps)`` with ``data_format="channels_first"``.
    """


@replaces(keras.layers.SeparableConv2D)
class AMSeparableConv2D(_AMSeparable, keras.layers.SeparableConv2D):
    """Separable 2-D convolution whose depthwise and pointwise products use an approximate multiplier.

    ``keras.layers.SeparableConv2D``: a depthwise convolution then a pointwise
    one, every product of both the LUT multiplier's (the input patch, then the
    depthwise result, as the LUT's row operand; the kernels as its column
    operand). Sums, the bias and the activation as in Keras.

    Args:
        *args, **kwargs: every argument of ``keras.layers.SeparableConv2D``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``data_format``, ``dilation_rate``, ``depth_multiplier``,
            ``activation``, ...).{am_args}

    Input shape:
        4D tensor ``(batch_size, height, width, channels)``, or
        ``(batch_size, channels, height, width)`` with
        ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, filters)``, or
        ``(batch_size, filters, new_height, new_width)`` with
        ``data_format="channels_first"``.

    Example:

    >>> layer = AMSeparableConv2D(32, 3, padding="same", depth_multiplier=2, lut="mbm", bits=7)
    """

