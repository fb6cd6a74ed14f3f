"""AMSimpleRNN, AMLSTM, AMGRU and their cells: Keras' recurrent layers with every matrix product approximate.

What is approximate
-------------------
Every gate's pre-activation is ``x_t W + b + h_{t-1} U`` (W the ``kernel``,
U the ``recurrent_kernel``; GRU's candidate with ``reset_after=False``:
``x_t W_h + b_h + (r * h_{t-1}) U_h``). Both matrix products of every gate
go through :func:`amsim.keras.ops.am_matmul`, the input or the state the
LUT's row operand and the kernel its column operand; backward, they take
the layer's ``gradient`` rule like every AM layer. What is not a matrix
product stays float32, as in every other AM layer: the bias sums, the
activations, and the element-wise products of gates and states
(``f * c``, ``i * g``, ``o * tanh(c)``, ``r * h``, ``z * h``). Dropout
masks are Keras': a mask per sequence, one per gate with
``implementation=1`` (which ``recurrent_dropout`` implies, as in Keras).

The input projection, once
--------------------------
``x_t W + b`` does not depend on the state. A layer (AMSimpleRNN, AMLSTM,
AMGRU) therefore computes it for every time step in one am_matmul of all
(batch x time) rows before its loop, and the loop multiplies by the
recurrent kernel only. Every engine kernel sums each output's products in
increasing k, so each row's products come out bit for bit as they would
step by step: a cell in ``keras.layers.RNN``, which projects step by step,
computes the same bits, more slowly. The layers never take Keras' fused
cuDNN path (exact products): ``use_cudnn=True`` is refused.

Cells outside the layers
------------------------
``keras.layers.RNN(AMLSTMCell(...))`` (and StackedRNNCells of AM cells)
works and serialises as any Keras cell. ``approximate()`` and ``precise()``
swap the cells of a ``keras.layers.RNN`` with :func:`approximate_cell` and
:func:`precise_cell`, which keep what a cell's config leaves out.
"""

from __future__ import annotations

import inspect

import keras
import tensorflow as tf
from keras.src import backend as keras_backend  # its rnn(): the loop keras.layers.RNN runs; not public API

from ...errors import AmsimError
from ..ops import am_matmul
from .base import APPROXIMATE, Approximate, LayerConfigError, replaces

__all__ = ["AMSimpleRNNCell", "AMLSTMCell", "AMGRUCell", "AMSimpleRNN", "AMLSTM", "AMGRU", "approximate_cell",
           "precise_cell"]

# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------


def _per_step(mask, x):
    """A (batch, features) mask for x of one step (batch, features) or of every step (batch, time, features)."""
    return mask if x.shape.rank == 2 else tf.expand_dims(mask, -2)


class _AMCell(Approximate):
    """What the AM cells share: the products of the gates' pre-activations.

    A cell's step is ``recur(project(x_t), states)``: :meth:`project` is the
    input's products with the kernel plus the input bias, which a layer
    computes for all steps at once; each cell's ``recur(projected, states,
    training)`` adds the state's products with the recurrent kernel, applies
    the gates and returns Keras' ``(output, new_states)``.
    """

    def call(self, inputs, states, training=False):
        return self.recur(self.project(inputs, training=training), states, training=training)

    def project(self, inputs, training=False):
        """``inputs`` (..., features), of one step or of all, times the kernel plus the input bias:
        (..., gates * units), in the compute dtype."""
        masks = None
        if self._drops(self.dropout, training):  # Keras' mask of the sequence, the same at every step
            masks = self.get_dropout_mask(inputs if inputs.shape.rank == 2 else inputs[:, 0])
        z = self._products(inputs, self.kernel, masks)
        bias = self._input_bias()
        return z if bias is None else z + tf.cast(bias, z.dtype)

    def _input_bias(self):
        return self.bias

    def _drops(self, rate, training):
        """Whether dropout at this rate applies: Keras' LSTM and GRU cells skip a rate of 1."""
        return bool(training) and 0.0 < rate < 1.0

    def _state_masks(self, h, training):
        return self.get_recurrent_dropout_mask(h) if self._drops(self.recurrent_dropout, training) else None

    def _products(self, x, w, masks=None):
        """``x (x) w`` in the compute dtype: x (..., n) masked first, by one mask or, given a list of
        masks (one per gate, ``implementation=1``), each gate's block of w's columns by its own mask.
        Either way one am_matmul (a batch of one GEMM per gate)."""
        n, columns = x.shape[-1], w.shape[-1]
        w = tf.cast(w, tf.float32)
        if isinstance(masks, (list, tuple)):
            gates, units = len(masks), columns // len(masks)
            rows = tf.stack([tf.reshape(self._to_float32(x * _per_step(m, x)), [-1, n]) for m in masks])
            blocks = tf.transpose(tf.reshape(w, [n, gates, units]), [1, 0, 2])
            y = am_matmul(rows, blocks, self.multiplier, **self._op_kwargs())
            y = tf.reshape(tf.transpose(y, [1, 0, 2]), [-1, columns])
        else:
            if masks is not None:
                x = x * _per_step(masks, x)
            rows = self._to_float32(x) if x.shape.rank == 2 else tf.reshape(self._to_float32(x), [-1, n])
            y = am_matmul(rows, w, self.multiplier, **self._op_kwargs())
        if x.shape.rank != 2:
            y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [columns]], 0))
            y.set_shape(x.shape[:-1].concatenate([columns]))
        return self._from_float32(y)

    def get_config(self):
        config = {**super().get_config(), **self._approximate_config()}
        if hasattr(self, "implementation"):  # LSTM and GRU cells; Keras' config leaves it out
            config["implementation"] = self.implementation
        return config


@replaces(keras.layers.SimpleRNNCell)
class AMSimpleRNNCell(_AMCell, keras.layers.SimpleRNNCell):
    """Cell of AMSimpleRNN: ``h_t = activation(x_t (x) W + b + h_{t-1} (x) U)``, both products approximate.

    Args:
        *args, **kwargs: every argument of ``keras.layers.SimpleRNNCell``
            (``units``, ``activation``, ``use_bias``, initializers,
            regularizers, constraints, ``dropout``, ``recurrent_dropout``,
            ``seed``, ...).{am_args}

    Call arguments:
        As ``keras.layers.SimpleRNNCell``: ``sequence`` (batch, features),
        ``states``, ``training``.
    """

    def _drops(self, rate, training):
        # Keras' SimpleRNN cell applies any positive rate, 1 included
        return bool(training) and rate > 0.0

    def recur(self, projected, states, training=False):
        nested = isinstance(states, (list, tuple))
        h = states[0] if nested else states
        output = projected + self._products(h, self.recurrent_kernel, self._state_masks(h, training))
        if self.activation is not None:
            output = self.activation(output)
        return output, [output] if nested else output


@replaces(keras.layers.LSTMCell)
class AMLSTMCell(_AMCell, keras.layers.LSTMCell):
    """Cell of AMLSTM: every gate's ``x_t (x) W + b + h_{t-1} (x) U`` approximate.

    ``i, f, o = recurrent_activation(...)``, ``g = activation(...)``,
    ``c_t = f * c_{t-1} + i * g`` and ``h_t = o * activation(c_t)``, the
    element-wise products float32.

    Args:
        *args, **kwargs: every argument of ``keras.layers.LSTMCell``
            (``units``, ``activation``, ``recurrent_activation``,
            ``unit_forget_bias``, ``dropout``, ``recurrent_dropout``,
            ``implementation``, ...).{am_args}

    Call arguments:
        As ``keras.layers.LSTMCell``: ``inputs`` (batch, features),
        ``states`` ``[h, c]``, ``training``.
    """

    def recur(self, projected, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        z = projected + self._products(h_tm1, self.recurrent_kernel, self._state_masks(h_tm1, training))
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=-1)
        i, f, o = self.recurrent_activation(z_i), self.recurrent_activation(z_f), self.recurrent_activation(z_o)
        c = f * c_tm1 + i * self.activation(z_c)
        h = o * self.activation(c)
        return h, [h, c]


@replaces(keras.layers.GRUCell)
class AMGRUCell(_AMCell, keras.layers.GRUCell):
    """Cell of AMGRU: the update, reset and candidate gates' products approximate.

    ``reset_after=True`` (Keras' default): ``hh = activation(x (x) W_h + b_h
    + r * (h (x) U_h + b'_h))``; ``reset_after=False``: ``hh = activation(x
    (x) W_h + b_h + (r * h) (x) U_h)``; then ``h_t = z * h_{t-1} + (1 - z) *
    hh``, the element-wise products float32.

    Args:
        *args, **kwargs: every argument of ``keras.layers.GRUCell``
            (``units``, ``activation``, ``recurrent_activation``,
            ``reset_after``, ``dropout``, ``recurrent_dropout``,
            ``implementation``, ...).{am_args}

    Call arguments:
        As ``keras.layers.GRUCell``: ``inputs`` (batch, features),
        ``states``, ``training``.
    """

    def _input_bias(self):
        return self.bias[0] if self.bias is not None and self.reset_after else self.bias

    def recur(self, projected, states, training=False):
        nested = keras.tree.is_nested(states)
        h_tm1 = states[0] if nested else states
        masks = self._state_masks(h_tm1, training)
        x_z, x_r, x_h = tf.split(projected, 3, axis=-1)
        units = self.units
        if self.reset_after:
            inner = self._products(h_tm1, self.recurrent_kernel, masks)
            if self.bias is not None:
                inner = inner + tf.cast(self.bias[1], inner.dtype)
            h_z, h_r, h_h = tf.split(inner, 3, axis=-1)
            z, r = self.recurrent_activation(x_z + h_z), self.recurrent_activation(x_r + h_r)
            hh = self.activation(x_h + r * h_h)
        else:
            inner = self._products(h_tm1, self.recurrent_kernel[:, :2 * units], masks[:2] if masks else None)
            h_z, h_r = tf.split(inner, 2, axis=-1)
            z, r = self.recurrent_activation(x_z + h_z), self.recurrent_activation(x_r + h_r)
            h_h = h_tm1 * masks[2] if masks else h_tm1
            hh = self.activation(x_h + self._products(r * h_h, self.recurrent_kernel[:, 2 * units:]))
        h = z * h_tm1 + (1 - z) * hh
        return h, [h] if nested else h


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class _AMRecurrent(Approximate):
    """What AMSimpleRNN, AMLSTM and AMGRU share: their AM cell, made from the Keras layer's arguments,
    and a loop whose input products are one am_matmul before it."""

    #: The Keras layer replaced, its Keras cell, the AM cell, and the name Keras gives the cell.
    _KERAS_LAYER: type
    _KERAS_CELL: type
    _AM_CELL: type
    _CELL_NAME: str
    #: What the Keras layer hands its cell from its **kwargs, with the default.
    _CELL_KWARGS: dict = {}

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee",
                 gradient="approximate", **kwargs):
        # Keras' own signature sorts the arguments, positional ones too, into the cell's and the
        # layer's, with the Keras layer's defaults.
        bound = inspect.signature(self._KERAS_LAYER.__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        layer_kwargs = dict(arguments.pop("kwargs", {}))
        use_cudnn = arguments.pop("use_cudnn", "auto")
        cell_names = set(inspect.signature(self._KERAS_CELL.__init__).parameters) - {"self", "kwargs"}
        cell_args = {name: arguments.pop(name) for name in list(arguments) if name in cell_names}
        cell_args.update({name: layer_kwargs.pop(name, default) for name, default in self._CELL_KWARGS.items()})
        cell_args.update(lut=lut, bits=bits, params=params, rounding=rounding, mode=mode, gradient=gradient,
                         dtype=layer_kwargs.get("dtype"), trainable=layer_kwargs.get("trainable", True),
                         name=self._CELL_NAME)
        try:
            cell = self._AM_CELL(**cell_args)
        except AmsimError as exc:  # the cell names itself; the user made this layer
            name = layer_kwargs.get("name")
            prefix = f"{self._AM_CELL.__name__} '{self._CELL_NAME}': "
            exc.args = (f"{type(self).__name__}{f' {name!r}' if name else ''}: {str(exc).removeprefix(prefix)}",)
            raise
        # keras.layers.RNN's constructor with the AM cell in place of the one the Keras layer's
        # constructor would make; what that constructor adds besides is the input spec and use_cudnn.
        # (Keras' SimpleRNN drops its activity_regularizer argument; the AM layers apply it, as documented.)
        keras.layers.RNN.__init__(self, cell, **arguments, **layer_kwargs)
        self._init_approximate(cell.multiplier, bits, params, rounding, mode, gradient)
        self.input_spec = keras.layers.InputSpec(ndim=3)
        if use_cudnn not in ("auto", False):
            raise self._error(LayerConfigError(
                f"use_cudnn={use_cudnn!r}: cuDNN's fused kernel has no approximate products; use 'auto' or False "
                "(the generic loop, which the layer always runs)"))
        self.use_cudnn = False

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Keras' generic loop (where Keras' LSTM and GRU would try cuDNN's exact kernel) over the
        cell's recurrent step, every step's input products computed before it in one am_matmul."""
        if keras.tree.is_nested(mask):
            mask = mask[0]
        cell = self.cell
        projected = cell.project(sequences, training=training)

        def step(inputs, states):
            output, new_states = cell.recur(inputs, states, training=training)
            return output, new_states if keras.tree.is_nested(new_states) else [new_states]

        if not keras.tree.is_nested(initial_state):
            initial_state = [initial_state]
        return keras_backend.rnn(step, projected, initial_state, go_backwards=self.go_backwards, mask=mask,
                                 unroll=self.unroll, input_length=sequences.shape[1],
                                 zero_output_for_mask=self.zero_output_for_mask,
                                 return_all_outputs=self.return_sequences)

    def get_config(self):
        config = {**super().get_config(), **self._approximate_config()}
        if hasattr(self.cell, "implementation"):
            config["implementation"] = self.cell.implementation
        return config


@replaces(keras.layers.SimpleRNN)
class AMSimpleRNN(_AMRecurrent, keras.layers.SimpleRNN):
    """Fully-connected RNN whose products use an approximate multiplier.

    ``keras.layers.SimpleRNN`` with an AMSimpleRNNCell as its cell; the
    inputs' products are computed for all steps before the loop.

    Args:
        *args, **kwargs: every argument of ``keras.layers.SimpleRNN``
            (``units``, ``activation``, ``dropout``, ``return_sequences``,
            ``return_state``, ``go_backwards``, ``stateful``, ``unroll``,
            ...).{am_args}

    Call arguments:
        As ``keras.layers.SimpleRNN``: ``sequences``, ``initial_state``,
        ``mask``, ``training``.

    Input shape:
        3D tensor ``(batch_size, timesteps, features)``.

    Output shape:
        ``(batch_size, units)``, or ``(batch_size, timesteps, units)`` with
        ``return_sequences=True``; with ``return_state=True`` the final
        states follow.

    Example:

    >>> layer = AMSimpleRNN(32, return_sequences=True, lut="mbm", bits=7)
    """

    _KERAS_LAYER, _KERAS_CELL, _AM_CELL, _CELL_NAME = (keras.layers.SimpleRNN, keras.layers.SimpleRNNCell,
                                                       AMSimpleRNNCell, "simple_rnn_cell")


@replaces(keras.layers.LSTM)
class AMLSTM(_AMRecurrent, keras.layers.LSTM):
    """Long Short-Term Memory layer whose products use an approximate multiplier.

    ``keras.layers.LSTM`` with an AMLSTMCell as its cell; the
    inputs' products are computed for all steps before the loop.

    Args:
        *args, **kwargs: every argument of ``keras.layers.LSTM``
            (``units``, ``activation``, ``recurrent_activation``,
            ``dropout``, ``implementation``, ``return_sequences``,
            ``return_state``, ``go_backwards``, ``stateful``, ``unroll``,
            ...).
        use_cudnn: ``"auto"`` (default) or ``False``, both the generic
            loop; ``True`` is refused.{am_args}

    Call arguments:
        As ``keras.layers.LSTM``: ``sequences``, ``initial_state``,
        ``mask``, ``training``.

    Input shape:
        3D tensor ``(batch_size, timesteps, features)``.

    Output shape:
        ``(batch_size, units)``, or ``(batch_size, timesteps, units)`` with
        ``return_sequences=True``; with ``return_state=True`` the final
        states follow.

    Example:

    >>> layer = AMLSTM(128, lut="mbm", bits=7)
    """

    _KERAS_LAYER, _KERAS_CELL, _AM_CELL, _CELL_NAME = (keras.layers.LSTM, keras.layers.LSTMCell, AMLSTMCell,
                                                       "lstm_cell")
    _CELL_KWARGS = {"implementation": 2}


@replaces(keras.layers.GRU)
class AMGRU(_AMRecurrent, keras.layers.GRU):
    """Gated Recurrent Unit whose products use an approximate multiplier.

    ``keras.layers.GRU`` with an AMGRUCell as its cell; the
    inputs' products are computed for all steps before the loop.

    Args:
        *args, **kwargs: every argument of ``keras.layers.GRU``
            (``units``, ``reset_after``, ``dropout``,
            ``implementation``, ``return_sequences``, ``return_state``,
            ``go_backwards``, ``stateful``, ``unroll``, ...).
        use_cudnn: ``"auto"`` (default) or ``False``, both the generic
            loop; ``True`` is refused.{am_args}

    Call arguments:
        As ``keras.layers.GRU``: ``sequences``, ``initial_state``,
        ``mask``, ``training``.

    Input shape:
        3D tensor ``(batch_size, timesteps, features)``.

    Output shape:
        ``(batch_size, units)``, or ``(batch_size, timesteps, units)`` with
        ``return_sequences=True``; with ``return_state=True`` the final
        states follow.

    Example:

    >>> layer = AMGRU(64, reset_after=False, lut="mbm", bits=7)
    """

    _KERAS_LAYER, _KERAS_CELL, _AM_CELL, _CELL_NAME = (keras.layers.GRU, keras.layers.GRUCell, AMGRUCell,
                                                       "gru_cell")
    _CELL_KWARGS = {"implementation": 2}


# ----------------------------------------------------------------------------------------------
# Swapping a cell (for approximate() and precise(), which rebuild the RNN around it)
# ----------------------------------------------------------------------------------------------


def _keras_cell_class(cell):
    """The Keras cell class a cell is (an AM cell counts as its Keras base)."""
    for keras_cls, am_cls in APPROXIMATE.items():
        if issubclass(am_cls, _AMCell) and (type(cell) is keras_cls or isinstance(cell, am_cls)):
            return keras_cls
    raise LayerConfigError(f"{type(cell).__name__} is not a SimpleRNNCell, LSTMCell or GRUCell, nor an AM one")


def _cell_config(cell) -> dict:
    """The cell's config without the AM arguments, with ``implementation``, which Keras' leaves out."""
    config = {k: v for k, v in cell.get_config().items() if k not in Approximate.AM_KEYS}
    if hasattr(cell, "implementation"):
        config["implementation"] = cell.implementation
    return config


def approximate_cell(cell, lut, **am_kwargs):
    """An unbuilt AM copy of a Keras RNN cell, for a ``keras.layers.RNN`` (or StackedRNNCells) to hold.

    Args:
        cell: a ``keras.layers.SimpleRNNCell``, ``LSTMCell`` or ``GRUCell``,
            or an AM cell, which takes the new multiplier.
        lut: the multiplier, as for the AM cells.
        **am_kwargs: ``bits``, ``params``, ``rounding``, ``mode``, ``gradient``.

    Returns:
        The AM cell, its config otherwise the cell's, ``implementation``
        included (Keras' cell config leaves it out).
    """
    return APPROXIMATE[_keras_cell_class(cell)].from_config({**_cell_config(cell), "lut": lut, **am_kwargs})


def precise_cell(cell):
    """An unbuilt Keras copy of an AM cell (``implementation`` included), for the reverse of
    :func:`approximate_cell`."""
    return _keras_cell_class(cell).from_config(_cell_config(cell))
