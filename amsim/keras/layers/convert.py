"""approximate() and precise(): a model's copy with its multiplying layers swapped, weights kept.

Both clone the model's structure (``keras.models.clone_model``, nested models
too), build each swapped layer from the original's config, and then copy
every weight of the original into the copy, variable by variable, so the two
start from bitwise identical weights. The copy is not compiled.
"""

from __future__ import annotations

import keras

from ...errors import AmsimError
from .base import APPROXIMATE, Approximate, LayerConfigError, resolve_lut


def _keras_class(layer):
    """The Keras class a layer is (an AM layer counts as the class it replaces), or None."""
    for keras_cls, am_cls in APPROXIMATE.items():
        if type(layer) is keras_cls or isinstance(layer, am_cls):
            return keras_cls
    return None


def _selector(layers):
    """A predicate for the layers to swap: all of them, or those named or of a type in ``layers``."""
    if layers is None:
        return lambda layer: True, set()
    if isinstance(layers, (str, type)):
        layers = [layers]
    names = {x for x in layers if isinstance(x, str)}
    types = tuple(x for x in layers if isinstance(x, type))
    bad = [x for x in layers if not isinstance(x, (str, type))]
    if bad:
        raise LayerConfigError(f"layers= takes layer names and layer classes, not {bad!r}")
    return (lambda layer: layer.name in names or isinstance(layer, types)), names


def _clone(model, swap, names, what):
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise LayerConfigError(f"{what}() takes a Sequential or functional keras.Model, not "
                               f"{type(model).__name__} (a subclassed model has no graph to copy)")
    seen = set()

    def clone_layer(layer):
        seen.add(layer.name)
        new = swap(layer)
        return new if new is not None else layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    missing = sorted(names - seen)
    if missing:
        raise LayerConfigError(f"{what}(): the model has no layer named {', '.join(map(repr, missing))}")
    _copy_weights(model, copy, what)
    return copy


def _is_graph_model(model) -> bool:
    """Sequential and functional models have a graph of layers to copy; subclassed ones only code."""
    return any(cls.__name__ in ("Sequential", "Functional") for cls in type(model).__mro__)


def _copy_weights(source, target, what):
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise LayerConfigError(f"{what}(): the copy has {len(dst)} weights, the model {len(src)}")
    for s, d in zip(src, dst):
        if tuple(s.shape) != tuple(d.shape):
            raise LayerConfigError(f"{what}(): weight {s.path} {tuple(s.shape)} does not fit {d.path} "
                                   f"{tuple(d.shape)}")
        d.assign(s.value)


def approximate(model, lut, *, bits=None, layers=None, **am_kwargs):
    """A copy of ``model`` whose Dense, Conv2D, DepthwiseConv2D and MultiHeadAttention layers are approximate.

    Args:
        model: a Sequential or functional ``keras.Model`` (nested models too).
        lut: the multiplier, as for the AM layers (a C model's name or
            ``.c`` file with ``bits``, a LUT file, a LUT object, ...).
        bits: mantissa width M.
        layers: ``None`` (every such layer), or layer names and/or classes
            (e.g. ``["fc1", keras.layers.Conv2D]``): only those.
        **am_kwargs: ``params``, ``rounding``, ``mode``, ``gradient``.

    Returns:
        An uncompiled copy holding weights bitwise identical to ``model``'s.
        AM layers among the selected ones take the new multiplier.
    """
    wanted, names = _selector(layers)
    unknown = set(am_kwargs) - {"params", "rounding", "mode", "gradient"}
    if unknown:
        raise LayerConfigError(f"approximate(): unknown arguments {sorted(unknown)}; "
                               "use params, rounding, mode, gradient")
    try:
        # resolved once: every layer shares the multiplier (one LUT, prepared once by the ops)
        mult = resolve_lut(lut, bits, am_kwargs.get("params"))
    except AmsimError as exc:
        exc.args = (f"approximate(): {exc}",)
        raise

    def swap(layer):
        keras_cls = _keras_class(layer)
        if keras_cls is None or not wanted(layer):
            return None
        config = {k: v for k, v in layer.get_config().items() if k not in Approximate.AM_KEYS}
        return APPROXIMATE[keras_cls].from_config({**config, "lut": mult, **am_kwargs})

    return _clone(model, swap, names, "approximate")


def precise(model, *, layers=None):
    """A copy of ``model`` whose AM layers are the Keras layers they replace, with the same weights.

    Args:
        model: a Sequential or functional ``keras.Model``.
        layers: ``None`` (every AM layer), or layer names and/or classes.
    """
    wanted, names = _selector(layers)

    def swap(layer):
        if not isinstance(layer, Approximate) or not wanted(layer):
            return None
        config = {k: v for k, v in layer.get_config().items() if k not in Approximate.AM_KEYS}
        return _keras_class(layer).from_config(config)

    return _clone(model, swap, names, "precise")
