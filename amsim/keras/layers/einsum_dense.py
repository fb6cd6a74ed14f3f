"""AMEinsumDense: keras.layers.EinsumDense with every product of its einsum approximate."""

from __future__ import annotations

import keras
import tensorflow as tf

from ...errors import AmsimError
from ..ops import am_einsum
from .base import Approximate, replaces


@replaces(keras.layers.EinsumDense)
class AMEinsumDense(Approximate, keras.layers.EinsumDense):
    """A layer computing an einsum of its input and kernel whose products use an approximate multiplier.

    ``output = activation(approx_einsum(equation, input, kernel) + bias)``:
    the einsum is :func:`amsim.keras.ops.am_einsum`, one batched approximate
    matmul whose every product is the LUT multiplier's (the input is the
    LUT's row operand, the kernel its column operand); sums, the bias and the
    activation are float32 as in ``keras.layers.EinsumDense``.

    Args:
        *args, **kwargs: every argument of ``keras.layers.EinsumDense``
            (``equation``, ``output_shape``, ``activation``, ``bias_axes``,
            initializers, regularizers, constraints, ``lora_rank``, ...).
            Every equation Keras' layer takes is a product of two operands:
            ``"ab,bc->ac"``, ``"...ab,bc->...ac"``, ``"ab...,bc->ac..."``.{am_args}

    Input shape:
        The shape the equation's first term describes.

    Output shape:
        The shape the equation's output term describes (``output_shape``,
        with the batch axis and the axes of ``...``).

    Example:

    >>> layer = AMEinsumDense("abc,cd->abd", output_shape=(None, 64), bias_axes="d", lut="mbm", bits=7)
    """

    def call(self, inputs, training=None):
        x, kernel = self._to_float32(inputs), tf.cast(self.kernel, tf.float32)
        try:
            y = am_einsum(self.equation, x, kernel, self.multiplier, **self._op_kwargs())
        except AmsimError as exc:  # an equation that is not a product of two operands, named by the layer
            raise self._error(exc) from None
        y = self._from_float32(y)
        if self.bias is not None:
            y = tf.add(y, tf.cast(self.bias, y.dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}
