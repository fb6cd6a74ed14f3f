"""AMDense: keras.layers.Dense with every product of its matmul approximate."""

from __future__ import annotations

import keras
import tensorflow as tf

from .base import Quantizable, replaces


@replaces(keras.layers.Dense)
class AMDense(Quantizable, keras.layers.Dense):
    """Densely-connected layer whose matmul uses an approximate multiplier.

    ``output = activation(approx_dot(input, kernel) + bias)``: every product of
    the input with the kernel is the LUT multiplier's (the input is the LUT's
    row operand, the kernel its column operand); sums, the bias and the
    activation are float32 as in ``keras.layers.Dense``. Inputs of any rank
    >= 2 are multiplied as one matrix of all their rows.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Dense`` (``units``,
            ``activation``, ``use_bias``, initializers, regularizers,
            constraints, ``lora_rank``, ``name``, ``dtype``, ...).{am_args}

    Input shape:
        N-D tensor with shape ``(batch_size, ..., input_dim)``.

    Output shape:
        N-D tensor with shape ``(batch_size, ..., units)``.

    Example:

    >>> layer = AMDense(64, activation="relu", lut="mbm", bits=7)
    """

    def call(self, inputs, training=None):
        x = self._to_float32(inputs)
        rows = tf.reshape(x, [-1, tf.shape(x)[-1]])
        fused = self._fused_bias()
        y = self._product(rows, tf.cast(self.kernel, tf.float32), self._input_range(rows, training), bias=fused)
        y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], 0))
        y.set_shape(x.shape[:-1].concatenate([self.units]))
        y = self._from_float32(y)
        if self.bias is not None and fused is None:
            y = tf.add(y, tf.cast(self.bias, y.dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}
