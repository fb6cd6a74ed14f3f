"""approximate() and precise(): a model's copy with its multiplying layers swapped, weights kept.

Both clone the model's structure (``keras.models.clone_model``, nested models too), build each
swapped layer from the original's config, and then copy every weight of the original into the
copy, variable by variable, so the two start from bitwise identical weights. The copy is not
compiled. Wrappers (``Bidirectional``, ``TimeDistributed``, ``RNN(cell)``, ``StackedRNNCells``,
``SpectralNormalization``) are rebuilt around their swapped layers or cells.

approximate() never leaves a multiplying layer exact without saying so: every layer it cannot
convert (a multiplying Keras layer without an AM version, an argument the AM layer refuses, a
custom layer whose traced graph holds exact matrix products, a layer that cannot be traced) is
named, with the reason, in one :class:`ExactLayersWarning`, or in one ``LayerConfigError`` with
``strict=True``. Layers left exact on purpose (``skip=``, the value ``"exact"``, layers outside
``layers=``) are not mentioned.
"""

from __future__ import annotations

import fnmatch
import warnings

import keras

from ...errors import AmsimError
from ...specs import EXACT, FLOAT32, SpecError, parse_spec
from ..products import Call, CoverageError, In, keras_class, multiplies, trace, trace_cell
from ...gemm.circuit import resolve_circuit
from ..quantization import observed_variables, scheme_of
from .base import APPROXIMATE, Approximate, LayerConfigError, LayerDTypeError, Quantizable, resolve_lut
from .recurrent import approximate_cell, precise_cell

__all__ = ["approximate", "precise", "ExactLayersWarning"]

#: The keyword arguments of approximate() that go to every AM layer it makes.
_AM_KWARGS = ("params", "rounding", "mode", "gradient", "quantize")


class ExactLayersWarning(UserWarning):
    """approximate() left layers that multiply exact without being told to.

    Attributes:
        layers: ``(layer name, reason)`` for each such layer.
    """

    def __init__(self, message, layers=()):
        super().__init__(message)
        self.layers = tuple(layers)


# ----------------------------------------------------------------------------------------------
# Which layers, and with which multiplier
# ----------------------------------------------------------------------------------------------


def _matcher(key, what):
    """A predicate on layers for a key: a layer name, an fnmatch pattern of names, or a layer class."""
    if isinstance(key, str):
        return lambda layer: fnmatch.fnmatchcase(layer.name, key)
    if isinstance(key, type) and issubclass(key, keras.layers.Layer):
        return lambda layer: isinstance(layer, key)
    raise LayerConfigError(f"{what} takes layer names, fnmatch patterns of names and Keras layer classes, not "
                           f"{key!r}")


def _keys(keys) -> list:
    """A key or keys of skip= or layers= as a list."""
    if keys is None:
        return []
    return [keys] if isinstance(keys, (str, type)) else list(keys)


def _is_name(key) -> bool:
    """A plain name (no wildcard): one the model must have."""
    return isinstance(key, str) and not any(c in key for c in "*?[")


class _Multipliers:
    """Resolved multipliers by what the user wrote, each resolved once (one LUT per multiplier)."""

    def __init__(self, bits, params, quantize):
        self.bits, self.params, self.quantize, self._done = bits, params, quantize, {}

    def get(self, value, *, assigned=True):
        """``(Multiplier or Circuit, params, quantize)`` for a value, or None for a layer left exact on purpose.

        ``"exact"`` and ``"float32"`` leave a layer exact only as values of an assignment (``assigned``):
        as the one multiplier of every layer, ``"exact"`` is the C model of that name (``exact:7`` is it
        in an assignment), whose products are the exact ones at M bits.
        """
        key = (repr(value) if isinstance(value, (str, tuple)) else id(value), assigned)
        if key not in self._done:
            self._done[key] = self._resolve(value, assigned)
        return self._done[key]

    def _resolve(self, value, assigned):
        bits, params, quantize = self.bits, self.params, self.quantize
        if assigned and isinstance(value, str) and value.strip() in (EXACT, FLOAT32):
            return None
        if isinstance(value, tuple):
            if not 2 <= len(value) <= 3:
                raise LayerConfigError(f"approximate(): a multiplier tuple is (name, bits[, params]), not {value!r}")
            value, bits, params = value[0], value[1], (value[2] if len(value) == 3 else params)
        elif isinstance(value, str) and ":" in value:
            try:
                written = parse_spec(value)
            except SpecError as exc:
                raise LayerConfigError(f"approximate(): {exc}") from None
            value = written.name
            bits = written.bits if written.bits is not None else bits
            params = {**(params or {}), **dict(written.params)} or None
            quantize = written.quantize or quantize
        try:
            if quantize is not None:
                scheme = scheme_of(quantize)
                return resolve_circuit(value, signed=scheme.signed, bits=scheme.bits, params=params), params, quantize
            return resolve_lut(value, bits, params), params, None
        except ValueError as exc:
            if not isinstance(exc, AmsimError):  # the scheme's name
                raise LayerConfigError(f"approximate(): {exc}") from None
            exc.args = (f"approximate(): {exc}",)
            raise
        except AmsimError as exc:
            exc.args = (f"approximate(): {exc}",)
            raise


class _Plan:
    """What approximate() does with each layer: the assignment, skip= and layers=, and what it left exact."""

    def __init__(self, lut, bits, layers, skip, am_kwargs):
        self.multipliers = _Multipliers(bits, am_kwargs.get("params"), am_kwargs.get("quantize"))
        self.am_kwargs = {k: v for k, v in am_kwargs.items() if k not in ("params", "quantize")}
        self.assigned = isinstance(lut, dict)
        if self.assigned:
            self.entries = [(_matcher(k, "the assignment"), v) for k, v in lut.items()]
            named = [k for k in lut if _is_name(k)]
        else:
            self.entries = [(lambda layer: True, lut)]
            named = []
        for _, value in self.entries:  # every multiplier resolved (and checked) before anything is cloned
            self.multiplier(value)
        self.skip = [_matcher(k, "skip=") for k in _keys(skip)]
        selected = _keys(layers)
        self.selected = [_matcher(k, "layers=") for k in selected] if layers is not None else None
        self.names = {k for k in named + _keys(skip) + selected if _is_name(k)}
        self.unconverted: list[tuple[str, str]] = []

    def multiplier(self, value):
        """``(Multiplier or Circuit, params, quantize)`` of an entry's value, or None for a layer left exact on
        purpose."""
        return self.multipliers.get(value, assigned=self.assigned)

    def left_alone(self, layer) -> bool:
        """Skipped, or outside layers=: left as it is, on purpose (a wrapper by itself or its layers)."""
        targets = [layer, *_inner_layers(layer)]
        if any(match(x) for match in self.skip for x in targets):
            return True
        return self.selected is not None and not any(match(x) for match in self.selected for x in targets)

    def value(self, layer, inner=()):
        """The first entry matching the layer (or one of a wrapper's layers), or the marker ``_NONE``."""
        for match, value in self.entries:
            if match(layer) or any(match(x) for x in inner):
                return value
        return _NONE

    def refuse(self, layer, reason: str):
        self.unconverted.append((layer.name, reason))

    def report(self, strict: bool):
        if not self.unconverted:
            return
        n = len(self.unconverted)
        listed = "; ".join(f"{name!r}: {why}" for name, why in self.unconverted)
        message = (f"approximate(): {n} layer{'s' if n > 1 else ''} that multipl{'y' if n > 1 else 'ies'} "
                   f"{'are' if n > 1 else 'is'} left exact: {listed}. Pass skip=[...] to leave "
                   f"{'them' if n > 1 else 'it'} exact on purpose")
        if strict:
            raise LayerConfigError(message)
        warnings.warn(ExactLayersWarning(message + ", or strict=True to make this an error", self.unconverted),
                      stacklevel=3)


_NONE = object()


# ----------------------------------------------------------------------------------------------
# Swapping one layer
# ----------------------------------------------------------------------------------------------


def _inner_layers(layer) -> list:
    """The layers or cells a wrapper computes with (empty for any other layer)."""
    L = keras.layers
    if isinstance(layer, L.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, (L.TimeDistributed, L.SpectralNormalization)):
        return [layer.layer]
    if isinstance(layer, L.StackedRNNCells):
        return list(layer.cells)
    if isinstance(layer, L.RNN) and "cell" in layer.get_config():
        return [layer.cell]
    return []


def _rebuild(layer, inner: list):
    """A wrapper of the class and config of ``layer`` around the layers or cells ``inner``."""
    L = keras.layers
    config = {k: v for k, v in layer.get_config().items() if k not in ("layer", "backward_layer", "cell", "cells")}
    if isinstance(layer, L.Bidirectional):
        return type(layer)(inner[0], backward_layer=inner[1], **config)
    if isinstance(layer, L.StackedRNNCells):
        return type(layer)(inner, **config)
    return type(layer)(inner[0], **config)


def _copy(layer):
    """A new layer of the same config; a Lambda itself (it holds no state, and Keras rebuilds a Python
    function from its config only in unsafe mode)."""
    if isinstance(layer, keras.layers.Lambda):
        return layer
    return layer.__class__.from_config(layer.get_config())


def _construct(make, *args, **kwargs):
    """``make(...)``, raising the AM layer's own error where Keras' from_config wraps it in a TypeError."""
    try:
        return make(*args, **kwargs)
    except TypeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (LayerConfigError, LayerDTypeError)):
            raise cause from None
        raise


def _is_cell(layer) -> bool:
    return isinstance(layer, (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell))


def _am_config(layer) -> dict:
    return {k: v for k, v in layer.get_config().items() if k not in Approximate.AM_KEYS}


def _first_call(layer) -> Call | None:
    """The arguments of the layer's first call in its model, as the tracer takes them."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return None
    args, kwargs = nodes[0].arguments.args, nodes[0].arguments.kwargs
    return Call(*keras.tree.map_structure(
        lambda v: In(tuple(v.shape[1:]), v.dtype, frozenset()) if isinstance(v, keras.KerasTensor) else v,
        (tuple(args), dict(kwargs))))


def _exact_products(layer, call: Call | None, wrapper=None) -> str | None:
    """Why a layer of a class approximate() does not know stays exact, or None when it has no exact products."""
    try:
        if call is None:
            raise CoverageError("it is not called in the model, so its products cannot be traced")
        if wrapper is not None and isinstance(wrapper, keras.layers.RNN):  # a cell: trace one step
            sequences = call.arg(wrapper, "sequences")
            traced = trace_cell(layer, sequences.inner(sequences.shape[1:]), wrapper)
        elif wrapper is not None:  # the layer of a TimeDistributed or SpectralNormalization
            x = call.arg(wrapper, "inputs")
            step = x.inner(x.shape[1:]) if isinstance(wrapper, keras.layers.TimeDistributed) else x
            traced = trace(layer, Call((step,), {}))
        else:
            traced = trace(layer, call)
    except CoverageError as exc:
        return f"cannot be inspected ({str(exc).split(': ', 1)[-1]})"
    ops = sorted({p.op for p in traced.products if p.arith[0] is None})
    if not ops:
        return None
    return (f"{type(layer).__name__} is not a layer approximate() converts, and its graph holds exact matrix "
            f"products ({', '.join(ops)})")


def _swap(layer, mult, params, quantize, am_kwargs, plan: _Plan, outer=None):
    """The AM version of ``layer`` (or a wrapper rebuilt around AM layers), or None to keep a copy.

    ``quantize``: the 8-bit scheme, or None. ``outer``: the wrapper ``layer`` is the layer or cell
    of; a reason names the wrapper, and its layer.
    """
    def refuse(reason):
        plan.refuse(outer or layer, reason if outer is None else f"its {layer.name}: {reason}")

    keras_cls = keras_class(layer)
    if keras_cls in APPROXIMATE:
        am_cls = APPROXIMATE[keras_cls]
        if quantize is not None and not issubclass(am_cls, Quantizable):
            refuse(f"{am_cls.__name__} has no {quantize} quantized version")
            return None
        extra = {} if quantize is None else {"quantize": quantize}
        try:
            if _is_cell(layer):  # the recurrent module's copy keeps what a cell's config leaves out
                return _construct(approximate_cell, layer, mult, params=params, **am_kwargs)
            return _construct(am_cls.from_config, {**_am_config(layer), "lut": mult, "params": params, **am_kwargs,
                                                   **extra})
        except (LayerConfigError, LayerDTypeError) as exc:  # this layer's arguments: it stays exact
            refuse(str(exc))
            return None
    inner = _inner_layers(layer)
    if inner:
        swapped = [_swap(x, mult, params, quantize, am_kwargs, plan, outer or layer) for x in inner]
        if all(s is None for s in swapped):
            return None
        return _rebuild(layer, [s if s is not None else _copy(x) for s, x in zip(swapped, inner)])
    known = multiplies(layer)
    if known:
        refuse(f"Keras' {keras_cls.__name__} has no approximate version")
    elif known is None:
        reason = _exact_products(layer, _first_call(outer or layer), outer)
        if reason:
            refuse(reason)
    return None


def _unassigned(layer, plan: _Plan):
    """A layer no entry of the assignment matches: named when it multiplies exactly."""
    if isinstance(layer, Approximate):
        return
    inner = _inner_layers(layer)
    targets = inner or [layer]
    if any(keras_class(x) in APPROXIMATE or multiplies(x) for x in targets):
        plan.refuse(layer, "no entry of the assignment matches it")
    elif any(multiplies(x) is None for x in targets) and _exact_products(layer, _first_call(layer)):
        plan.refuse(layer, "no entry of the assignment matches it, and its graph holds exact matrix products")


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def _clone(model, swap, names, what):
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise LayerConfigError(f"{what}() takes a Sequential or functional keras.Model, not "
                               f"{type(model).__name__} (a subclassed model has no graph to copy)")
    seen = set()

    def clone_layer(layer):
        seen.add(layer.name)
        for x in _inner_layers(layer):
            seen.add(x.name)
        new = swap(layer)
        return new if new is not None else _copy(layer)

    copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    missing = sorted(names - seen)
    if missing:
        raise LayerConfigError(f"{what}(): the model has no layer named {', '.join(map(repr, missing))}")
    _copy_weights(model, copy, what)
    return copy


def _is_graph_model(model) -> bool:
    """Sequential and functional models have a graph of layers to copy; subclassed ones only code."""
    return any(cls.__name__ in ("Sequential", "Functional") for cls in type(model).__mro__)


def _network_weights(model) -> list:
    """The weights a copy takes from its model: all but quantized layers' input ranges, observed anew."""
    observed = {id(v) for v in observed_variables(model)}
    return [w for w in model.weights if id(w) not in observed]


def _copy_weights(source, target, what):
    src, dst = _network_weights(source), _network_weights(target)
    if len(src) != len(dst):
        raise LayerConfigError(f"{what}(): the copy has {len(dst)} weights, the model {len(src)}")
    for s, d in zip(src, dst):
        if tuple(s.shape) != tuple(d.shape):
            raise LayerConfigError(f"{what}(): weight {s.path} {tuple(s.shape)} does not fit {d.path} "
                                   f"{tuple(d.shape)}")
        d.assign(s.value)


def approximate(model, lut, *, bits=None, layers=None, skip=None, strict=False, **am_kwargs):
    """A copy of ``model`` whose multiplying layers compute with approximate multipliers.

    Every layer with an AM version (``amsim.keras``' layers, each registered for the Keras class
    it replaces) becomes that AM layer, also inside ``Bidirectional``, ``TimeDistributed``,
    ``RNN(cell)`` and ``SpectralNormalization``; an AM layer already in the model takes the new
    multiplier. A layer that multiplies and cannot be converted (a Keras layer without an AM
    version, an argument its AM layer refuses, a custom layer or ``Lambda`` whose graph holds exact
    matrix products, a layer that cannot be traced) stays exact and is named, with the reason, in
    one :class:`ExactLayersWarning`.

    Args:
        model: a Sequential or functional ``keras.Model`` (nested models too).
        lut: the multiplier of every layer, as for the AM layers (a C model's name or ``.c`` file
            with ``bits``, a LUT file, a LUT object, ...) or as its text ``"NAME:M[:key=value...]"``
            (``"drum:7:k=4"``, :mod:`amsim.specs`); or a per-layer assignment: a dict whose keys
            are layer names, fnmatch patterns of names (``"conv*"``) or Keras layer classes, and
            whose values are multipliers (as ``lut``, their text, or a tuple ``(name, bits[,
            params])``) or ``"exact"`` (left exact on purpose). A layer takes the value of the
            first key it matches, in the dict's order (put ``"*"`` last as the default); a
            wrapper matches by its own name and class or by those of its layers. A multiplying
            layer no key matches stays exact and is warned about.
        bits: mantissa width M, for multipliers that do not give it.
        layers: ``None`` (every layer), or layer names, patterns and classes: only those are
            converted, the others left as they are, on purpose.
        skip: layer names, patterns and classes left as they are, on purpose.
        strict: raise ``LayerConfigError`` naming the layers instead of warning.
        **am_kwargs: ``params``, ``rounding``, ``mode``, ``gradient``, for every AM layer made;
            ``quantize="uint8"`` or ``"int8"`` makes every multiplier an 8-bit integer circuit
            (``lut`` a C model of kind int, an integer LUT file or table) and the layers quantized
            (docs/quantized.md): a layer with no quantized version stays exact and is warned
            about. A multiplier's text may carry its scheme instead (``"uint8:exact_int"``).

    Returns:
        An uncompiled copy holding weights bitwise identical to ``model``'s.

    Raises:
        LayerConfigError: an unknown argument or key, a name the model does not have, or (with
            ``strict=True``) layers left exact.

    Warns:
        ExactLayersWarning: layers that multiply were left exact without being told to.
    """
    unknown = set(am_kwargs) - set(_AM_KWARGS)
    if unknown:
        raise LayerConfigError(f"approximate(): unknown arguments {sorted(unknown)}; "
                               "use params, rounding, mode, gradient, quantize")
    plan = _Plan(lut, bits, layers, skip, am_kwargs)

    def swap(layer):
        if plan.left_alone(layer):
            return None
        value = plan.value(layer, _inner_layers(layer))
        if value is _NONE:
            _unassigned(layer, plan)
            return None
        resolved = plan.multiplier(value)
        if resolved is None:  # "exact": the Keras layer, silently
            return precise_layer(layer)
        return _swap(layer, *resolved, plan.am_kwargs, plan)

    copy = _clone(model, swap, plan.names, "approximate")
    plan.report(strict)
    return copy


def precise_layer(layer):
    """The Keras layer an AM layer replaces (a wrapper rebuilt around them), or None when it holds none."""
    if isinstance(layer, Approximate):
        return precise_cell(layer) if _is_cell(layer) else keras_class(layer).from_config(_am_config(layer))
    inner = _inner_layers(layer)
    swapped = [precise_layer(x) for x in inner]
    if any(s is not None for s in swapped):
        return _rebuild(layer, [s if s is not None else _copy(x) for s, x in zip(swapped, inner)])
    return None


def precise(model, *, layers=None):
    """A copy of ``model`` whose AM layers are the Keras layers they replace, with the same weights.

    Args:
        model: a Sequential or functional ``keras.Model``.
        layers: ``None`` (every AM layer), or layer names, patterns and/or classes.
    """
    selected = [_matcher(k, "layers=") for k in _keys(layers)]
    names = {k for k in _keys(layers) if _is_name(k)}

    def swap(layer):
        if layers is not None and not any(match(layer) for match in selected):
            return None
        return precise_layer(layer)

    return _clone(model, swap, names, "precise")
