"""AMMultiHeadAttention: Keras' multi-head attention with every product approximate.

The four projections (query, key, value, output; the gate too when
``use_gate``) and both attention matmuls (query x key, scores x value) run
on the approximate multiplier; the scaling, the softmax, masks and dropout
are Keras' own. Keras writes these steps as two-operand einsums; each is one
batched approximate matmul (:func:`amsim.keras.ops.am_einsum`), the
projections through AMEinsumDense's call.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from ..ops import am_einsum
from .base import Approximate, LayerConfigError, replaces
from .einsum_dense import AMEinsumDense


class _OpSpec:
    """What an approximate projection needs from its attention layer (a plain object, untracked by Keras)."""

    __slots__ = ("multiplier", "kwargs", "refuse_xla")

    def __init__(self, multiplier, kwargs, refuse_xla):
        self.multiplier, self.kwargs, self.refuse_xla = multiplier, kwargs, refuse_xla


class _AMProjection(AMEinsumDense):
    """A projection of an AMMultiHeadAttention: AMEinsumDense's call with its attention layer's multiplier
    and options (Keras builds the projections as EinsumDense layers, which the attention layer turns into
    this class; see AMMultiHeadAttention.build)."""

    @property
    def multiplier(self):
        return self._am_spec.multiplier

    def _op_kwargs(self):
        return self._am_spec.kwargs

    def _refuse_xla(self):
        self._am_spec.refuse_xla()


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
            approximate products.{am_args}

    Call arguments, inputs and outputs:
        As ``keras.layers.MultiHeadAttention``: ``query`` ``(B, T, dim)``,
        ``value`` ``(B, S, dim)``, optional ``key``, masks; the output is
        ``(B, T, dim)`` (or ``output_shape``).
    """

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee",
                 gradient="approximate", **kwargs):
        flash = kwargs.get("flash_attention")
        super().__init__(*args, lut=lut, bits=bits, params=params, rounding=rounding, mode=mode, gradient=gradient,
                         **kwargs)
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
                projection.__class__ = _AMProjection
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
