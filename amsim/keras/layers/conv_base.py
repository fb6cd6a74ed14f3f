"""What the AM convolution layers share: the ops' channels-last float32 view, 1-D as 2-D, bias and activation.

The ops take channels-last float32 tensors: :class:`ConvBase` turns a layer's
input (channels first or last, any float dtype) into that and the op's
result back. The 1-D layers run the 2-D ops on an inserted height-1 axis:
input ``(N, W, C)`` becomes ``(N, 1, W, C)``, a kernel ``(K, ...)`` becomes
``(1, K, ...)``, strides and dilations get a 1 for the height; that axis adds
no product and changes no sum. A "causal" input (Conv1D's padding) is padded
on the left by ``dilation * (K - 1)`` zeros, as Keras pads it, and convolved
without padding.
"""

from __future__ import annotations

import tensorflow as tf

from .base import Approximate


class ConvBase(Approximate):
    """Mixin of the AM convolution layers (before the Keras layer in the bases): layouts and finishing.

    Reads the Keras layer's ``rank``, ``data_format``, ``strides``,
    ``padding``, ``dilation_rate``, ``kernel_size`` and ``activation``.
    """

    def _channels_last(self, x):
        """The layer input as the ops' channels-last float32 tensor, 1-D inputs with a height-1 axis."""
        x = self._to_float32(x)
        if self.data_format == "channels_first":
            x = tf.transpose(x, [0, *range(2, self.rank + 2), 1])
        return tf.expand_dims(x, 1) if self.rank == 1 else x

    def _from_channels_last(self, y):
        """An op's result in the layer's data format and compute dtype."""
        if self.rank == 1:
            y = tf.squeeze(y, 1)
        if self.data_format == "channels_first":
            y = tf.transpose(y, [0, self.rank + 1, *range(1, self.rank + 1)])
        return self._from_float32(y)

    def _op_kernel(self, kernel):
        """A kernel as the ops take it: float32, 1-D kernels with a height-1 axis."""
        kernel = tf.cast(kernel, tf.float32)
        return tf.expand_dims(kernel, 0) if self.rank == 1 else kernel

    def _op_geometry(self) -> dict:
        """strides, padding and dilations of the op (of the 2-D op for a 1-D layer; a causal input is
        padded already, see :meth:`_causal`)."""
        strides, dilations, padding = tuple(self.strides), tuple(self.dilation_rate), self.padding.upper()
        if self.rank == 1:
            strides, dilations = (1, *strides), (1, *dilations)
        return {"strides": strides, "padding": "VALID" if padding == "CAUSAL" else padding, "dilations": dilations}

    def _causal(self, x):
        """A channels-last input padded on the left by the filter's span less one where the padding is
        "causal", as Keras pads it. The zeros are the op's padding would be, product for product, and
        the "exact" gradient stays TensorFlow's own (its CPU kernels refuse dilations with explicit
        padding)."""
        if self.padding != "causal":
            return x
        left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
        return tf.pad(x, [[0, 0], [0, 0], [left, 0], [0, 0]])

    def _finish(self, y, bias):
        """Keras' bias, along the channel axis (tf.add: keras.ops.add would add a bias shaped for
        channels first along the last axis where its size is the channel count), and activation."""
        if bias is not None:
            shape = [1] * (self.rank + 2)
            shape[-1 if self.data_format == "channels_last" else 1] = -1
            y = tf.add(y, tf.reshape(tf.cast(bias, y.dtype), shape))
        if self.activation is not None:
            y = self.activation(y)
        return y
