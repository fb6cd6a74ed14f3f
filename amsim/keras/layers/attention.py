"""AMMultiHeadAttention: Keras' multi-head attention with every product approximate.

The four projections (query, key, value, output; the gate too when
``use_gate``) and both attention matmuls (query x key, scores x value) run
on the approximate multiplier; the scaling, the softmax, masks and dropout
are Keras' own. Two-operand einsums, which Keras writes these steps as, are
turned into one batched approximate matmul each (:func:`am_einsum`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ..ops import am_matmul
from .base import Approximate, LayerConfigError, replaces


def am_einsum(equation: str, x, y, lut, **kwargs):
    """A two-operand einsum ``"X,Y->Z"`` as one batched approximate matmul (``x`` is the LUT's row operand).

    Letters in X, Y and Z are batch axes, those in X and Y only are summed,
    those in one operand and Z are its free axes. The operands are laid out
    as (batch, free, summed) and (batch, summed, free), with a transposed
    view instead of a copy when that matches an operand's layout, flattened
    to three (or two) dimensions, multiplied, and put back in Z's order.
    """
    inputs, out = equation.replace(" ", "").split("->")
    xs, ys = inputs.split(",")
    batch = [c for c in xs if c in ys and c in out]
    summed = [c for c in xs if c in ys and c not in out]
    free_x = [c for c in xs if c not in ys]
    free_y = [c for c in ys if c not in xs]
    if any(c not in out for c in free_x + free_y) or sorted(out) != sorted(batch + free_x + free_y) \
            or len(set(xs)) != len(xs) or len(set(ys)) != len(ys):
        raise LayerConfigError(f"einsum {equation!r} is not a (batched) matrix product")
    x_shape, y_shape = tf.shape(x), tf.shape(y)
    size = {c: x_shape[i] for i, c in enumerate(xs)} | {c: y_shape[i] for i, c in enumerate(ys)}
    static = {c: x.shape[i] for i, c in enumerate(xs)} | {c: y.shape[i] for i, c in enumerate(ys)}

    def flat(letters):
        return tf.reduce_prod(tf.stack([size[c] for c in letters])) if letters else tf.constant(1)

    def arrange(t, have, first, second):
        """t as (batch, first, second), or a view of it as (batch, second, first) and the flag True."""
        have = list(have)
        transposed = have == batch + second + first and have != batch + first + second
        if not transposed and have != batch + first + second:
            t = tf.transpose(t, [have.index(c) for c in batch + first + second])
        lead, rest = (second, first) if transposed else (first, second)
        dims = ([flat(batch)] if batch else []) + [flat(lead), flat(rest)]
        return tf.reshape(t, tf.stack(dims)), transposed

    a, ta = arrange(x, xs, free_x, summed)
    b, tb = arrange(y, ys, summed, free_y)
    z = am_matmul(a, b, lut, transpose_a=ta, transpose_b=tb, **kwargs)
    order = batch + free_x + free_y
    z = tf.reshape(z, tf.stack([size[c] for c in order]))
    if order != list(out):
        z = tf.transpose(z, [order.index(c) for c in out])
    z.set_shape([static[c] for c in out])
    return z


class _OpSpec:
    """What an approximate projection needs from its attention layer (a plain object, untracked by Keras)."""

    __slots__ = ("multiplier", "kwargs", "refuse_xla")

    def __init__(self, multiplier, kwargs, refuse_xla):
        self.multiplier, self.kwargs, self.refuse_xla = multiplier, kwargs, refuse_xla


class _AMEinsumDense(keras.layers.EinsumDense):
    """An EinsumDense projection of an AMMultiHeadAttention, its einsum approximate."""

    def call(self, inputs, training=None):
        spec = self._am_spec
        spec.refuse_xla()
        y = am_einsum(self.equation, tf.cast(inputs, tf.float32), tf.cast(self.kernel, tf.float32),
                      spec.multiplier, **spec.kwargs)
        y = tf.cast(y, self.compute_dtype)
        if self.bias is not None:
            y = tf.add(y, tf.cast(self.bias, y.dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y


@replaces(keras.layers.MultiHeadAttention)
class AMMultiHeadAttention(Approximate, keras.layers.MultiHeadAttention):
    """Multi-head attention whose projections and attention matmuls use an approximate multiplier.

    ``keras.layers.MultiHeadAttention`` with every product approximate: the
    query, key, value and output projections (and the gate), the scores
    ``query x key`` (query as the LUT's row operand) and the weighted sum
    ``scores x value``. Weights, their names and their initialisation are
    those of the Keras layer, so weights move between the two unchanged.

    Args:
        *args, **kwargs: every argument of ``keras.layers.MultiHeadAttention``
            (``num_heads``, ``key_dim``, ``value_dim``, ``dropout``,
            ``use_bias``, ``output_shape``, ``attention_axes``, ...), except
            ``flash_attention=True``: a fused exact kernel has no
            approximate products.
        lut: the multiplier: a C model, by name or ``.c`` file (with ``bits``),
            a LUT file, an ``amsim.lut.LUT``, an ``amsim.gemm.Multiplier`` or
            an array.
        bits, params, rounding, mode, gradient: as for ``AMDense``.

    Call arguments, inputs and outputs:
        As ``keras.layers.MultiHeadAttention``: ``query`` ``(B, T, dim)``,
        ``value`` ``(B, S, dim)``, optional ``key``, masks; the output is
        ``(B, T, dim)`` (or ``output_shape``).
    """

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee",
                 gradient="approximate", **kwargs):
        flash = kwargs.get("flash_attention")
        super().__init__(*args, **kwargs)
        self._init_approximate(lut, bits, params, rounding, mode, gradient)
        if flash:
            raise self._error(LayerConfigError(
                "flash_attention=True is not supported: a fused exact kernel has no approximate products"))
        # Keras would take its fused dot_product_attention path (exact products) when flash attention
        # is switched on globally; the approximate layer always computes its attention matmuls itself.
        self._flash_attention = False

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        # Keras builds the projections inline as EinsumDense layers. Giving those very layers the
        # approximate call keeps Keras' weights, names and initialisation order unchanged.
        spec = _OpSpec(self.multiplier, self._op_kwargs(), self._refuse_xla)
        for projection in (self._query_dense, self._key_dense, self._value_dense, self._output_dense,
                           getattr(self, "_gate_dense", None)):
            if projection is not None:
                projection.__class__ = _AMEinsumDense
                projection._am_spec = spec

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        self._refuse_xla()
        if use_causal_mask:
            causal = self._compute_causal_mask(query, value)
            attention_mask = causal if attention_mask is None else tf.logical_and(
                tf.cast(attention_mask, tf.bool), causal)
        query = tf.multiply(query, tf.cast(1.0 / math.sqrt(float(self._key_dim)), query.dtype))
        # Keras' equation takes (key, query); the scores are query x key, the query the row operand.
        operands, scores_axes = self._dot_product_equation.split("->")
        key_axes, query_axes = operands.split(",")
        scores = self._einsum(f"{query_axes},{key_axes}->{scores_axes}", query, key)
        scores = self._masked_softmax(scores, attention_mask)
        weights = self._dropout_layer(scores, training=training) if self._dropout > 0.0 else scores
        output = self._einsum(self._combine_equation, weights, value)
        return output, scores

    def _einsum(self, equation, x, y):
        z = am_einsum(equation, self._to_float32(x), self._to_float32(y), self.multiplier, **self._op_kwargs())
        return self._from_float32(z)

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}
