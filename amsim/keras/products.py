"""The products one call of a Keras layer computes, per example: by formula, or from its traced graph.

A layer's *matrix products* are the multiplications of its matrix products and convolutions
(where an approximate multiplier replaces the exact one, and where the energy is). Each is counted
once per example in the forward pass, and with the gradients it causes in training: a product
``Y = X W`` of an activation and a weight has two gradients as large as itself, ``dX = dY Wᵀ``
(the *input gradient*, computed only when a gradient flows back to ``X``: something upstream of it
trains, or ``X`` is itself computed from this layer's trainable weights) and ``dW = Xᵀ dY`` (the
*weight gradient*, only when the layer trains). A product of two activations (attention) has two
input gradients. *Element-wise* products (normalisation scales, ``Rescaling``, ``Multiply``, the
gates of recurrent cells, attention's query scaling) are counted apart: they stay exact float32.

Keras' built-in classes are counted by formula (one function per kind); recurrent layers as their
cell's step times the timesteps, ``TimeDistributed`` as its layer times the timesteps,
``Bidirectional`` as both directions. A layer of any other class (a custom layer, ``Lambda``) is
traced at batch 1 in a ``tf.function`` and the product ops of its graph are counted (:func:`trace`):
TensorFlow's ``MatMul``, ``BatchMatMul*``, ``Einsum``, ``Conv*``, ``DepthwiseConv2dNative`` as
exact, amsim's ``Amsim*`` ops as approximate, with the multiplier their LUT tensor belongs to.
A traced loop's body is counted once (its trip count is not known when tracing).

Each count is kept under the arithmetic that performs it: ``(multiplier, gradient)``, the
multiplier's label (``"mbm:7"``) or ``None`` for exact float32 products, and whether the backward
products use it (``"approximate"``) or are exact (``"exact"``).

This is one file, over the usual length, because the formulas and the tracer are two ways of
filling one tally with the same operand roles, and each falls back on the other: a recurrent layer
with a cell of no known class traces the cell's step, and a wrapper counts its layer by either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math

import keras
import tensorflow as tf

from ..errors import AmsimError
from .layers.base import APPROXIMATE, Approximate

__all__ = ["CoverageError", "In", "Call", "Tally", "Part", "Act", "WEIGHT", "CONST", "EXACT", "count_call",
           "multiplies", "trace", "trace_cell", "Trace", "Traced", "einsum_products", "multiplier_label",
           "keras_class"]

#: The arithmetic of exact float32 products: no multiplier, exact gradients.
EXACT = (None, "exact")


class CoverageError(AmsimError, ValueError):
    """A layer's products cannot be counted: an unknown dimension, or a layer that cannot be traced."""

    __init__ = Exception.__init__


def error_line(exc: BaseException) -> str:
    """The first line of the error that started ``exc`` (TensorFlow and Keras re-raise a layer's error
    from a traced call with their own tracebacks around it)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def multiplier_label(mult, params=None, scheme=None) -> str:
    """A multiplier as the command line names it: ``NAME:M[:key=value...]`` (``lut:M`` when unnamed), or
    an 8-bit circuit (:class:`amsim.gemm.circuit.Circuit`) of a quantization ``scheme`` as
    ``SCHEME:NAME[:key=value...]``."""
    if scheme is not None:
        return f"{scheme}:{mult.label}"
    fields = [mult.name or "lut", str(mult.bits), *(f"{k}={v}" for k, v in sorted((params or {}).items()))]
    return ":".join(fields)


def keras_class(layer) -> type:
    """The Keras class a layer is: an AM layer counts as the Keras layer it replaces."""
    for keras_cls, am_cls in APPROXIMATE.items():
        if isinstance(layer, am_cls):
            return keras_cls
    return type(layer)


def _arithmetic(layer):
    if isinstance(layer, Approximate):
        return multiplier_label(layer.multiplier, layer.params, layer.scheme), layer.gradient
    return EXACT


# ----------------------------------------------------------------------------------------------
# What a call is given, and the tally of its products
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class In:
    """A tensor a layer is called with: its shape per example (batch left out), dtype, and the
    tensors of the model it is computed from (whose gradient needs decide its own)."""

    shape: tuple
    dtype: str
    deps: frozenset
    derived: bool = False  # computed from the layer's own weights too (a recurrent state, a projection)

    def dims(self, layer) -> list[int]:
        if any(d is None for d in self.shape):
            raise CoverageError(
                f"layer {layer.name!r} ({type(layer).__name__}): its input shape {(None, *self.shape)} has an "
                "unknown dimension its products depend on; pass input_shape= (without the batch dimension)")
        return [int(d) for d in self.shape]

    def inner(self, shape) -> In:
        """A part of this tensor with another shape (one timestep, one wrapped call)."""
        return In(tuple(shape), self.dtype, self.deps, self.derived)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a layer: its arguments, with an :class:`In` for every tensor."""

    args: tuple
    kwargs: dict

    def arg(self, layer, name, default=None):
        """The argument ``name`` of ``layer.call`` as bound from this call's arguments."""
        try:
            bound = inspect.signature(layer.call).bind(*self.args, **self.kwargs).arguments
        except TypeError:
            bound = dict(zip(inspect.signature(layer.call).parameters, self.args)) | self.kwargs
        return bound.get(name, default)

    def tensors(self) -> list[In]:
        return [x for x in keras.tree.flatten((list(self.args), self.kwargs)) if isinstance(x, In)]


@dataclasses.dataclass
class Part:
    """Matrix products per example under one arithmetic."""

    forward: int = 0
    input_grad: int = 0
    weight_grad: int = 0


#: Operand roles of a product: a weight of the layer, and a constant (no gradient).
WEIGHT, CONST = "weight", "const"


@dataclasses.dataclass(frozen=True)
class Act:
    """An activation operand: computed from ``deps``; ``derived`` when also from the layer's weights."""

    deps: frozenset
    derived: bool = False


def act(*ins: In, derived=False) -> Act:
    return Act(frozenset().union(*(x.deps for x in ins)), derived or any(x.derived for x in ins))


class Tally:
    """Adds up the products of one layer call, per example, by arithmetic.

    Args:
        needs: ``needs(dep)``: whether a gradient flows back to the model tensor ``dep``.
    """

    def __init__(self, needs):
        self.needs = needs
        self.parts: dict[tuple, Part] = {}
        self.elementwise = 0
        self._repeat = 1
        self._arith = EXACT
        self._trainable = False

    @contextlib.contextmanager
    def within(self, layer, repeat: int = 1, inherit: bool = False):
        """Count the products of ``layer`` (its arithmetic, whether it trains), ``repeat`` times.

        ``inherit``: a part of the layer counted before (a recurrent layer's cell) that is not an AM
        layer itself computes with the arithmetic of its layer.
        """
        saved = self._repeat, self._arith, self._trainable
        self._repeat *= repeat
        if not inherit or isinstance(layer, Approximate):
            self._arith = _arithmetic(layer)
        self._trainable = bool(layer.trainable_weights)
        try:
            yield
        finally:
            self._repeat, self._arith, self._trainable = saved

    def product(self, n: int, a, b, arith=None):
        """``n`` products of operands ``a`` and ``b`` (:data:`WEIGHT`, :data:`CONST` or an :class:`Act`)."""
        n *= self._repeat
        part = self.parts.setdefault(arith or self._arith, Part())
        part.forward += n
        for operand in (a, b):
            if operand == WEIGHT:
                part.weight_grad += n if self._trainable else 0
            elif isinstance(operand, Act) and (any(self.needs(d) for d in operand.deps)
                                               or (operand.derived and self._trainable)):
                part.input_grad += n

    def elementwise_products(self, n: int):
        self.elementwise += n * self._repeat


# ----------------------------------------------------------------------------------------------
# Formulas of Keras' built-in layers
# ----------------------------------------------------------------------------------------------


def einsum_products(equation: str, *shapes) -> int:
    """Multiplications of an einsum of full shapes: the product of every index's size (0 for one operand)."""
    operands = equation.replace(" ", "").split("->")[0].split(",")
    if len(operands) < 2:
        return 0
    sizes, ellipses = {}, []
    for spec, shape in zip(operands, shapes):
        shape = [int(d) for d in shape]
        head, dots, tail = spec.partition("...")
        if dots:
            ellipses.append(shape[len(head):len(shape) - len(tail)])
            shape = shape[:len(head)] + shape[len(shape) - len(tail):]
        for letter, size in zip(head + tail, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)  # a size-1 axis broadcasts
    width = max((len(e) for e in ellipses), default=0)
    broadcast = [max([e[i - width + len(e)] for e in ellipses if i - width + len(e) >= 0]) for i in range(width)]
    return math.prod(sizes.values()) * math.prod(broadcast)


def _output(layer, x: In) -> list[int]:
    """The per-example output shape of a single-input layer called on ``x``."""
    shape = layer.compute_output_shape((1, *x.dims(layer)))
    return [int(d) for d in shape[1:]]


def _channels(layer, shape) -> tuple[int, list[int]]:
    """(channels, spatial dims) of a per-example shape in the layer's data format."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return shape[0], shape[1:]
    return shape[-1], shape[:-1]


def _dense(t: Tally, layer, call: Call):
    x = call.arg(layer, "inputs")
    dims = x.dims(layer)
    t.product(math.prod(dims) * layer.units, act(x), WEIGHT)


def _einsum_dense(t: Tally, layer, call: Call, x: In | None = None):
    x = x or call.arg(layer, "inputs")
    t.product(einsum_products(layer.equation, (1, *x.dims(layer)), layer.kernel.shape), act(x), WEIGHT)


def _conv(t: Tally, layer, call: Call):
    x = call.arg(layer, "inputs")
    cin, _ = _channels(layer, x.dims(layer))
    _, spatial = _channels(layer, _output(layer, x))
    t.product(math.prod(spatial) * layer.filters * math.prod(layer.kernel_size) * cin // layer.groups,
              act(x), WEIGHT)


def _conv_transpose(t: Tally, layer, call: Call):
    # Every input value meets every tap of every filter (the gradient of a convolution).
    x = call.arg(layer, "inputs")
    cin, spatial = _channels(layer, x.dims(layer))
    t.product(math.prod(spatial) * cin * math.prod(layer.kernel_size) * layer.filters, act(x), WEIGHT)


def _depthwise(t: Tally, layer, call: Call):
    x = call.arg(layer, "inputs")
    cin, _ = _channels(layer, x.dims(layer))
    _, spatial = _channels(layer, _output(layer, x))
    t.product(math.prod(spatial) * cin * layer.depth_multiplier * math.prod(layer.kernel_size), act(x), WEIGHT)


def _separable(t: Tally, layer, call: Call):
    x = call.arg(layer, "inputs")
    cin, _ = _channels(layer, x.dims(layer))
    _, spatial = _channels(layer, _output(layer, x))
    depthwise = math.prod(spatial) * cin * layer.depth_multiplier
    t.product(depthwise * math.prod(layer.kernel_size), act(x), WEIGHT)
    t.product(depthwise * layer.filters, act(x, derived=True), WEIGHT)  # the pointwise 1x1 convolution


def _attention_inputs(layer, call: Call):
    query, value = call.arg(layer, "query"), call.arg(layer, "value")
    return query, value, call.arg(layer, "key") or value


def _projection(t: Tally, dense, x: In, shape=None):
    """A projection sublayer (EinsumDense) of an attention layer applied to ``x`` (or to ``shape``)."""
    full = (1, *(shape if shape is not None else x.dims(dense)))
    t.product(einsum_products(dense.equation, full, dense.kernel.shape), act(x, derived=shape is not None), WEIGHT)
    return _einsum_shape(dense.equation, full, dense.kernel.shape)


def _attention(t: Tally, layer, call: Call):
    """MultiHeadAttention and GroupQueryAttention: the projections (their EinsumDense sublayers), the
    scores, the weighted values, and the output projection."""
    from keras import layers as L

    query, value, key = _attention_inputs(layer, call)
    q = _projection(t, layer._query_dense, query)
    k = _projection(t, layer._key_dense, key)
    v = _projection(t, layer._value_dense, value)
    if getattr(layer, "_gate_dense", None) is not None:
        _projection(t, layer._gate_dense, query)
    if isinstance(layer, L.GroupQueryAttention):  # keys and values repeated to the query's heads first
        k[2] = v[2] = q[2]
    t.elementwise_products(math.prod(q[1:]))  # the scaling by 1/sqrt(key_dim)
    # MultiHeadAttention's equation takes (key, query), GroupQueryAttention's (query, key).
    first, second = ((k, key), (q, query)) if isinstance(layer, L.MultiHeadAttention) else ((q, query), (k, key))
    t.product(einsum_products(layer._dot_product_equation, first[0], second[0]), act(first[1], derived=True),
              act(second[1], derived=True))
    scores = _einsum_shape(layer._dot_product_equation, first[0], second[0])
    t.product(einsum_products(layer._combine_equation, scores, v), act(query, key, derived=True),
              act(value, derived=True))
    combined = _einsum_shape(layer._combine_equation, scores, v)
    _projection(t, layer._output_dense, act_in(query, key, value), combined[1:])


def act_in(*ins: In) -> In:
    """An :class:`In` standing for a tensor the layer computes from ``ins`` (its shape given apart)."""
    return In((), ins[0].dtype, frozenset().union(*(x.deps for x in ins)), derived=True)


def _einsum_shape(equation, *shapes) -> list[int]:
    operands, out = equation.replace(" ", "").split("->")
    sizes = {c: int(d) for spec, shape in zip(operands.split(","), shapes) for c, d in zip(spec, shape)}
    return [sizes[c] for c in out]


def _dot_attention(t: Tally, layer, call: Call):
    """Attention and AdditiveAttention: the scores (a product only for dot scores), the weighted values."""
    from keras import layers as L

    inputs = call.arg(layer, "inputs")
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    (tq, dim), (tv, dv) = query.dims(layer)[-2:], value.dims(layer)[-2:]
    lead = math.prod(query.dims(layer)[:-2])
    if isinstance(layer, L.AdditiveAttention):  # scores: the sum over the features of scale * tanh(q + k)
        t.elementwise_products(lead * tq * tv * dim if layer.use_scale else 0)
    elif layer.score_mode == "concat":  # scores: the weight times the sum of tanh(scale * (q + k))
        t.elementwise_products(lead * tq * tv * ((dim if layer.use_scale else 0) + 1))
    else:
        t.product(lead * tq * tv * dim, act(query), act(key))
        t.elementwise_products(lead * tq * tv if layer.use_scale else 0)
    t.product(lead * tq * tv * dv, act(query, key), act(value))


def _dot(t: Tally, layer, call: Call):
    x, y = call.arg(layer, "inputs")
    xd, yd = x.dims(layer), y.dims(layer)
    axes = layer.axes if isinstance(layer.axes, (list, tuple)) else (layer.axes, layer.axes)
    ax = axes[0] % (len(xd) + 1) - 1  # Keras' axes count the batch axis
    if layer.normalize:
        t.elementwise_products(math.prod(xd) + math.prod(yd))
    t.product(math.prod(xd) * math.prod(yd) // xd[ax], act(x), act(y))


def _rnn(t: Tally, layer, call: Call, sequences: In | None = None):
    x = sequences or call.arg(layer, "sequences")
    dims = x.dims(layer)
    with t.within(layer.cell, repeat=dims[0], inherit=True):  # the cell's step, once per timestep
        _cell(t, layer.cell, x.inner(dims[1:]), layer)


def _cell(t: Tally, cell, x: In, rnn):
    """One step of ``cell`` on the step input ``x`` (per example)."""
    from keras import layers as L

    if isinstance(cell, L.StackedRNNCells):
        for inner in cell.cells:
            with t.within(inner, inherit=True):
                _cell(t, inner, x, rnn)
            size = inner.output_size if getattr(inner, "output_size", None) is not None else inner.state_size
            x = act_in(x).inner([size[0] if isinstance(size, (list, tuple)) else size])
        return
    gates = {L.SimpleRNNCell: 1, L.LSTMCell: 4, L.GRUCell: 3}
    for cls, n in gates.items():
        if isinstance(cell, cls):
            (features,) = x.dims(rnn)
            t.product(features * n * cell.units, act(x), WEIGHT)
            t.product(cell.units * n * cell.units, act(x, derived=True), WEIGHT)  # the recurrent state
            t.elementwise_products(0 if n == 1 else 3 * cell.units)  # c = f*c + i*g, h = o*tanh(c); GRU's z, r
            return
    if hasattr(cell, "recurrent_conv") and hasattr(cell, "filters"):  # ConvLSTM's cell
        cin, _ = _channels(cell, x.dims(rnn))
        out = cell.compute_output_shape((1, *x.dims(rnn)))[0][1:]
        _, spatial = _channels(cell, [int(d) for d in out])
        taps = math.prod(spatial) * 4 * cell.filters * math.prod(cell.kernel_size)
        t.product(taps * cin, act(x), WEIGHT)
        t.product(taps * cell.filters, act(x, derived=True), WEIGHT)  # 'same', stride 1, on the state
        t.elementwise_products(3 * math.prod(spatial) * cell.filters)
        return
    _count_traced(t, cell, trace_cell(cell, x, rnn))


def _bidirectional(t: Tally, layer, call: Call):
    x = call.arg(layer, "sequences")
    for direction in (layer.forward_layer, layer.backward_layer):
        with t.within(direction):
            _rnn(t, direction, call, x)
    if layer.merge_mode == "mul":
        out = layer.forward_layer.compute_output_shape((1, *x.dims(layer)))
        out = out[0] if layer.return_state else out
        t.elementwise_products(math.prod(int(d) for d in out[1:]))


def _time_distributed(t: Tally, layer, call: Call):
    x = call.arg(layer, "inputs")
    dims = x.dims(layer)
    count_call(t, layer.layer, Call((x.inner(dims[1:]),), {}), repeat=dims[0])


def _spectral_normalization(t: Tally, layer, call: Call):
    count_call(t, layer.layer, Call((call.arg(layer, "inputs"),), {}))


def _elementwise(t: Tally, layer, call: Call):
    """One product per output element: normalisation scales, Rescaling, PReLU."""
    t.elementwise_products(math.prod(call.tensors()[0].dims(layer)))


def _multiply(t: Tally, layer, call: Call):
    inputs = call.arg(layer, "inputs")
    out = layer.compute_output_shape([(1, *x.dims(layer)) for x in inputs])
    t.elementwise_products((len(inputs) - 1) * math.prod(int(d) for d in out[1:]))


@functools.cache
def _formulas() -> tuple:
    """(Keras classes, the function counting one call of them), the first match deciding."""
    from keras import layers as L

    return (
        (L.Dense, _dense), (L.EinsumDense, _einsum_dense),
        ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), _conv_transpose),
        ((L.SeparableConv1D, L.SeparableConv2D), _separable),
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise),
        ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
        ((L.MultiHeadAttention, L.GroupQueryAttention), _attention),
        (L.Attention, _dot_attention), (L.AdditiveAttention, _dot_attention), (L.Dot, _dot),
        (L.Bidirectional, _bidirectional), (L.RNN, _rnn), (L.TimeDistributed, _time_distributed),
        (L.SpectralNormalization, _spectral_normalization),
        ((L.BatchNormalization, L.LayerNormalization, L.GroupNormalization, L.RMSNormalization,
          L.UnitNormalization, L.Rescaling, L.PReLU), _elementwise),
        (L.Multiply, _multiply),
    )


@functools.cache
def _no_products() -> tuple:
    """Keras classes that compute no products: counted as none without tracing them."""
    from keras import layers as L

    names = ("InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D",
             "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
             "ActivityRegularization", "Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D", "Cropping2D",
             "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "UpSampling1D", "UpSampling2D",
             "UpSampling3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
             "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
             "GlobalMaxPooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
             "Add", "Subtract", "Concatenate", "Average", "Maximum", "Minimum", "Embedding", "Masking",
             "Identity", "Resizing", "CenterCrop")
    return tuple(getattr(L, n) for n in names if hasattr(L, n))


def count_call(t: Tally, layer, call: Call, repeat: int = 1):
    """Add the products of ``layer`` called with ``call`` to ``t`` (``repeat`` times)."""
    for classes, formula in _formulas():
        if isinstance(layer, classes):
            with t.within(layer, repeat):
                formula(t, layer, call)
            return
    if isinstance(layer, _no_products()):
        return
    with t.within(layer, repeat):
        _count_traced(t, layer, trace(layer, call))


def multiplies(layer) -> bool | None:
    """Whether ``layer`` computes matrix products, by its class: True, False, or None where its class
    does not tell (a custom layer, a wrapper of one, a custom recurrent cell: its graph tells)."""
    from keras import layers as L

    if isinstance(layer, (L.TimeDistributed, L.SpectralNormalization)):
        return multiplies(layer.layer)
    if isinstance(layer, L.Bidirectional):
        return multiplies(layer.forward_layer)
    if isinstance(layer, L.RNN) or isinstance(layer, L.StackedRNNCells):
        cells = layer.cell.cells if isinstance(layer, L.RNN) and isinstance(layer.cell, L.StackedRNNCells) \
            else layer.cells if isinstance(layer, L.StackedRNNCells) else [layer.cell]
        known = [c for c in cells if isinstance(c, (L.SimpleRNNCell, L.LSTMCell, L.GRUCell))
                 or (hasattr(c, "recurrent_conv") and hasattr(c, "filters"))]
        return True if known else None
    elementwise = (_elementwise, _multiply)
    for classes, formula in _formulas():
        if isinstance(layer, classes):
            return formula not in elementwise
    return False if isinstance(layer, _no_products()) else None


# ----------------------------------------------------------------------------------------------
# Tracing a layer of a class without a formula
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Traced:
    """A product op of a traced graph: its count (None where a shape is unknown), operands, arithmetic."""

    op: str
    count: int | None
    a: object
    b: object
    arith: tuple


@dataclasses.dataclass(frozen=True)
class Trace:
    products: tuple
    elementwise: int | None


#: TensorFlow's product ops (exact float32) and amsim's (approximate).
EXACT_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv", "Conv2D", "Conv3D",
             "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2")
AMSIM_OPS = ("AmsimMatMul", "AmsimConv2D", "AmsimDepthwiseConv2D", "AmsimConv2DBackpropInput",
             "AmsimDepthwiseConv2DBackpropInput")
_BODIES = ("f", "then_branch", "else_branch", "body", "cond", "branches")
# Ops a LUT tensor passes through on its way to an op (a transposed LUT for a transposed product).
_PASS = ("Identity", "Cast", "Reshape", "Transpose")


def trace(layer, call: Call) -> Trace:
    """The product ops of ``layer`` called as ``call``, traced at batch 1."""
    ins = call.tensors()
    specs = [tf.TensorSpec((1, *x.shape), x.dtype) for x in ins]

    def run(*tensors):
        it = iter(tensors)
        args, kwargs = keras.tree.map_structure(lambda v: next(it) if isinstance(v, In) else v,
                                                (list(call.args), dict(call.kwargs)))
        return layer(*args, **kwargs)

    return _trace(layer, run, specs, ins)


def trace_cell(cell, x: In, rnn) -> Trace:
    """The product ops of one step of a recurrent ``cell`` on the step input ``x``."""
    sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    states = [tf.TensorSpec((1, *(s if isinstance(s, (list, tuple)) else [s])), x.dtype) for s in sizes]
    state_in = act_in(x)

    def run(step, *state):
        return cell(step, list(state))

    return _trace(rnn, run, [tf.TensorSpec((1, *x.dims(rnn)), x.dtype), *states], [x, *[state_in] * len(states)])


def _trace(layer, run, specs, ins) -> Trace:
    try:
        concrete = tf.function(run).get_concrete_function(*specs)
    except Exception as exc:  # noqa: BLE001 - any failure means: this layer cannot be inspected
        raise CoverageError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be traced to count its "
                            f"products: {error_line(exc)}") from None
    graph = concrete.graph
    externals = {_key(internal): external for external, internal in graph.captures}
    roles = {_key(p): act(x) for p, x in zip(graph.inputs, ins)}
    everything = act(*ins, derived=True)
    links: dict = {}
    products, elementwise = [], 0
    for g in _graphs(graph, links):
        for op in g.get_operations():
            if op.type in EXACT_OPS or op.type in AMSIM_OPS:
                a, b = _operands(op)
                products.append(Traced(op.type, _op_count(op), _role(a, roles, links, everything),
                                       _role(b, roles, links, everything), _op_arithmetic(op, externals, links)))
            elif op.type == "Mul" and op.outputs[0].shape.rank:
                n = op.outputs[0].shape.num_elements()
                elementwise = None if n is None or elementwise is None else elementwise + n
    return Trace(tuple(products), elementwise)


def _key(tensor):
    """A tensor's key across the graphs of one trace (names repeat between a function and its caller)."""
    return id(tensor.graph), tensor.name


# Ops that call a function on their inputs (its arguments are those inputs), and branches, whose
# arguments are the inputs after the condition; a loop's arguments change from one iteration to the next.
_CALLS = {"PartitionedCall": 0, "StatefulPartitionedCall": 0, "If": 1, "StatelessIf": 1, "Case": 1,
          "StatelessCase": 1}


def _graphs(graph, links):
    """``graph`` and, after it, the graphs of the functions its ops call (loop bodies, branches, nested
    functions), once per calling op; ``links`` maps a called function's arguments to the caller's tensors."""
    yield graph
    for op in graph.get_operations():
        for attr in _BODIES:
            try:
                value = op.get_attr(attr)
            except (ValueError, TypeError):
                continue
            for fn in value if isinstance(value, list) else [value]:
                name = getattr(fn, "name", None)
                body = graph._functions.get(name) if name else None  # noqa: SLF001 - TF keeps no public map
                if body is None:
                    continue
                if op.type in _CALLS:
                    for inner, outer in zip(body.graph.inputs, list(op.inputs)[_CALLS[op.type]:]):
                        links[_key(inner)] = outer
                yield from _graphs(body.graph, links)


def _operands(op):
    """The two multiplied inputs of a product op (a transposed convolution's: filter, gradient)."""
    if "BackpropInput" in op.type:
        return op.inputs[1], op.inputs[2]
    return op.inputs[0], op.inputs[1]


def _op_count(op) -> int | None:
    t = op.type.removeprefix("Amsim")
    a, b = _operands(op)
    out = op.outputs[0].shape
    if not (a.shape.is_fully_defined() and b.shape.is_fully_defined() and out.is_fully_defined()):
        return None
    if t == "Einsum":
        return einsum_products(op.get_attr("equation").decode(), *(i.shape for i in op.inputs))
    if t == "MatMul" and op.type == "MatMul":
        return out.num_elements() * a.shape[0 if op.get_attr("transpose_a") else 1]
    if t == "MatMul":  # amsim's, batched
        return out.num_elements() * a.shape[-2 if op.get_attr("transpose_a") else -1]
    if t.startswith("BatchMatMul"):
        return out.num_elements() * a.shape[-2 if op.get_attr("adj_x") else -1]
    if "BackpropInput" in t:  # every value of the gradient meets every tap of its filters
        taps = math.prod(a.shape[:-2] if "Depthwise" in t else a.shape[:-1])
        return b.shape.num_elements() * taps
    if t.startswith("Depthwise"):
        return out.num_elements() * math.prod(b.shape[:-2])
    return out.num_elements() * math.prod(b.shape[:-1])  # Conv*: kernel taps x input channels per group


def _role(tensor, roles, links, everything):
    """What an operand is: a weight (read directly, or computed from weights alone), a constant, or an
    activation computed from the layer's inputs, ``derived`` when from its weights too."""
    inputs, weights, seen, todo = [], False, set(), [tensor]
    while todo:
        t = todo.pop()
        if _key(t) in seen:
            continue
        seen.add(_key(t))
        if _key(t) in roles:
            inputs.append(roles[_key(t)])
        elif t.op.type in ("ReadVariableOp", "ResourceGather") or t.dtype == tf.resource:
            weights = True
        elif _key(t) in links:
            todo.append(links[_key(t)])
        elif t.op.type == "Placeholder":  # a loop's argument: anything the layer computes
            return everything
        else:
            todo.extend(t.op.inputs)
    if not inputs:
        return WEIGHT if weights else CONST
    return Act(frozenset().union(*(a.deps for a in inputs)), weights or any(a.derived for a in inputs))


def _op_arithmetic(op, externals, links) -> tuple:
    if op.type in EXACT_OPS:
        return EXACT
    from .ops import _LUT_TENSORS  # noqa: PLC0415 - the ops' own map of multipliers to LUT tensors

    gradient = op.get_attr("gradient")
    gradient = gradient.decode() if isinstance(gradient, bytes) else gradient
    lut = op.inputs[-1]
    while (lut.op.type in _PASS and lut.op.inputs) or _key(lut) in links:
        lut = links[_key(lut)] if _key(lut) in links else lut.op.inputs[0]
    external = externals.get(_key(lut))
    for mult, tensor in list(_LUT_TENSORS.items()):
        if tensor is external:
            return multiplier_label(mult), gradient
    return "approximate", gradient


def _count_traced(t: Tally, layer, traced: Trace):
    for p in traced.products:
        if p.count is None:
            raise CoverageError(f"layer {layer.name!r} ({type(layer).__name__}): a {p.op} of unknown shape in its "
                                "graph; pass input_shape= (without the batch dimension)")
        t.product(p.count, p.a, p.b, p.arith)
    if traced.elementwise:
        t.elementwise_products(traced.elementwise)
