"""What every approximate layer shares: its multiplier, the op options, their checks and config.

An AM layer is the Keras layer it replaces (a subclass of it) whose products
run through amsim's TensorFlow ops. :class:`Approximate` is the mixin that
holds the multiplier and the op options (``lut``, ``bits``, ``params``,
``rounding``, ``mode``, ``gradient``), checks them when the layer is made,
and writes them into the layer's config.

The config carries the LUT itself (:func:`lut_to_config`): the float32 table
the engine multiplies with, as byte planes (all first bytes, then all second
bytes, ...) compressed with zlib and base64-encoded, with its amsim.lut
checksum. Tables of a mantissa grid share most of their low bytes, so the
planes compress to a fraction of the table. A saved model therefore loads
and predicts identically where the LUT file or the C model is missing.
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
import types
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ...errors import AmsimError, LUTError
from ...gemm import Multiplier, resolve
from ...lut import LUT, LUT_SUFFIXES, table_checksum
from ...reference import MODES, ROUNDINGS
from ...gemm.circuit import circuit_to_config, resolve_circuit
from ..ops import GRADIENTS, XlaCompileError, am_conv2d, am_conv3d, am_depthwise_conv2d, am_matmul
from ..quantization import RangeObserver, check_accumulator, quantized_product, scheme_of

#: The compute dtypes an AM layer accepts: the ops multiply in float32, and these cast to it and back.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

EMBED_FORMAT = "amsim-embedded-lut"
EMBED_VERSION = 1
EMBED_ENCODING = "float32-le-byteplanes-zlib-base64"


class LayerConfigError(AmsimError, ValueError):
    """An AM layer was given an argument it cannot use; the message names the layer."""

    # Exception's own constructor: TensorFlow's autograph then re-raises the error from a traced
    # function as itself rather than as a StagingError (it rebuilds only such exceptions).
    __init__ = Exception.__init__


class LayerDTypeError(AmsimError, TypeError):
    """An AM layer was given a dtype that cannot be cast to float32; the message names the layer."""

    __init__ = Exception.__init__


class LayerXlaError(XlaCompileError):
    """An AM layer met in a function XLA compiles; the message names the layer."""

    __init__ = Exception.__init__


# ----------------------------------------------------------------------------------------------
# The LUT in a layer's config
# ----------------------------------------------------------------------------------------------


def lut_to_config(mult: Multiplier) -> dict:
    """The multiplier as a JSON-serialisable dict that :func:`lut_from_config` turns back into it."""
    config = {"format": EMBED_FORMAT, "version": EMBED_VERSION, "model": mult.name, "bits": mult.bits}
    table = np.ascontiguousarray(mult.table, dtype="<f4")
    planes = table.view(np.uint8).reshape(-1, 4).T.tobytes()
    config.update(encoding=EMBED_ENCODING, sha256=table_checksum(mult.table),
                  table=base64.b64encode(zlib.compress(planes, 9)).decode("ascii"))
    return config


# Decoded tables by checksum and name: the layers of one loaded model share one Multiplier, and with it the
# engine's prepared LUTs and cached GEMM plans.
_DECODED: dict[tuple[str, str], Multiplier] = {}
_DECODED_LOCK = threading.Lock()


def lut_from_config(config: dict) -> Multiplier:
    """Decode :func:`lut_to_config`'s dict, verifying the table against its checksum."""
    if config.get("format") != EMBED_FORMAT or config.get("version") != EMBED_VERSION:
        raise LUTError(f"not an embedded amsim LUT (format {config.get('format')!r}, version "
                       f"{config.get('version')!r}; expected {EMBED_FORMAT!r} version {EMBED_VERSION})")
    bits = int(config["bits"])
    if config.get("encoding") != EMBED_ENCODING:
        raise LUTError(f"embedded LUT encoding {config.get('encoding')!r} is not {EMBED_ENCODING!r}")
    checksum, name = str(config.get("sha256", "")), str(config.get("model", ""))
    with _DECODED_LOCK:
        mult = _DECODED.get((checksum, name))
    if mult is not None and mult.bits == bits:
        return mult
    n = 1 << bits
    try:
        planes = zlib.decompress(base64.b64decode(config["table"], validate=True))
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise LUTError(f"embedded LUT is corrupt ({exc})") from None
    if len(planes) != 4 * n * n:
        raise LUTError(f"embedded LUT holds {len(planes)} bytes; M={bits} needs {4 * n * n}")
    table = np.frombuffer(planes, np.uint8).reshape(4, n * n).T.copy().view("<f4").reshape(n, n)
    table = table.astype(np.float32)
    if table_checksum(table) != checksum:
        raise LUTError(f"embedded LUT for M={bits} does not match its checksum: the saved config is corrupt")
    mult = Multiplier(bits, table=table, name=name)
    with _DECODED_LOCK:
        _DECODED[checksum, name] = mult
    return mult


def resolve_lut(lut, bits=None, params=None) -> Multiplier:
    """The Multiplier of what a layer's ``lut`` argument may be, its embedded config dict included."""
    if isinstance(lut, dict):
        mult = lut_from_config(lut)
        if bits is not None and mult.bits != int(bits):
            raise LUTError(f"LUT is for M={mult.bits}, not M={bits}")
        return mult
    if isinstance(lut, (str, Path)) and (Path(lut).suffix in LUT_SUFFIXES and not Path(lut).is_file()):
        raise LUTError(f"{lut}: no such LUT file")
    if not isinstance(lut, (Multiplier, LUT, str, Path, np.ndarray)):
        raise LUTError(f"lut must be a model name or .c file, a LUT file, an amsim.lut.LUT, a Multiplier or a "
                       f"(2^M, 2^M) array, not {type(lut).__name__}")
    return resolve(lut, bits, params=params)


# ----------------------------------------------------------------------------------------------
# The mixin
# ----------------------------------------------------------------------------------------------


#: The AM arguments in a layer's docstring, after the Keras layer's own: :func:`replaces` puts them
#: where the docstring says ``{am_args}``.
AM_ARGS_DOC = """
        lut: the multiplier: a C model, by name or ``.c`` file (with
            ``bits``; its LUT is swept once and cached), a LUT file (``.npz``
            or ApproxTrain's ``NAME_M.bin``), an ``amsim.lut.LUT``, an
            ``amsim.gemm.Multiplier`` or a (2^M, 2^M) array.
        bits: mantissa width M; required with a model, checked against a
            LUT.
        params: model parameters, with a model.
        rounding: ``"truncate"`` (default) or ``"rne"``.
        mode: ``"ieee"`` (default) or ``"approxtrain"``.
        gradient: ``"approximate"`` (default: the backward products use the
            same multiplier) or ``"exact"``."""

#: The argument of the layers that can also compute 8-bit quantized (:class:`Quantizable`).
QUANTIZE_DOC = """
        quantize: None (default: float32 operands, mantissa products), or
            ``"uint8"`` / ``"int8"``: the input and kernel are quantized to
            8-bit integers (asymmetric per tensor / symmetric with a scale per
            output channel) and every product of them is the integer circuit
            ``lut``'s (a C model of kind int, an integer LUT file or table);
            the gradient is the straight-through estimator in float32
            (docs/quantized.md)."""

#: Each Keras layer class that has an AM version, and that version (filled by :func:`replaces`).
APPROXIMATE: dict[type, type] = {}


def replaces(keras_cls):
    """Class decorator of an AM layer: it replaces ``keras_cls`` in :func:`approximate` and back in
    :func:`precise`, and Keras finds it by name in saved models."""

    def register(am_cls):
        if not issubclass(am_cls, keras_cls):
            raise TypeError(f"{am_cls.__name__} must subclass the layer it replaces, {keras_cls.__name__}")
        APPROXIMATE[keras_cls] = am_cls
        if am_cls.__doc__:
            args = AM_ARGS_DOC + (QUANTIZE_DOC if issubclass(am_cls, Quantizable) else "")
            am_cls.__doc__ = am_cls.__doc__.replace("{am_args}", args)
        return keras.saving.register_keras_serializable(package="amsim")(am_cls)

    return register


def _choice(value, allowed, name):
    if value not in allowed:
        raise LayerConfigError(f"{name} must be one of {allowed}, not {value!r}")
    return value


class Approximate:
    """Mixin of the AM layers: the multiplier, the op options, their config and the casts.

    It comes before the Keras layer in an AM layer's bases: its ``__init__``
    takes the AM arguments, passes the rest to the Keras layer's, then checks
    them with :meth:`_init_approximate` (after the Keras layer's, so the error
    messages can name the layer). Subclasses compute with
    ``self._op_kwargs()`` and list their own options in ``get_config`` through
    :meth:`_approximate_config`.
    """

    #: The config keys this mixin adds to the Keras layer's.
    AM_KEYS = ("lut", "bits", "params", "rounding", "mode", "gradient", "quantize")
    #: The 8-bit scheme (``"uint8"``, ``"int8"``) of a quantized layer, else None (:class:`Quantizable`).
    scheme = None

    def __init__(self, *args, lut=None, bits=None, params=None, rounding="truncate", mode="ieee", gradient=None,
                 quantize=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_approximate(lut, bits, params, rounding, mode, gradient, quantize=quantize)

    def _init_approximate(self, lut, bits, params, rounding, mode, gradient, *, quantize=None):
        # XLA cannot compile amsim's ops: Keras' jit_compile="auto" leaves models holding AM layers
        # uncompiled, and compile(jit_compile=True) falls back to jit_compile=False with a warning.
        self.supports_jit = False
        try:
            if lut is None:
                raise LayerConfigError("lut= is required: a model name or .c file (with bits=M), a LUT file or a "
                                       "LUT object")
            if params is not None and not isinstance(params, dict):
                raise LayerConfigError(f"params must be a dict of model parameters, not {type(params).__name__}")
            if getattr(self, "quantization_mode", None) or getattr(self, "quantization_config", None):
                raise LayerConfigError("Keras' quantization does not apply: the products are those of the "
                                       "approximate multiplier (use quantize='uint8' or 'int8')")
            for what, dtype in (("compute", self.dtype_policy.compute_dtype),
                                ("variable", self.dtype_policy.variable_dtype)):
                if dtype not in FLOAT_DTYPES:
                    raise LayerDTypeError(f"its {what} dtype {dtype} cannot be cast to float32, which the "
                                          f"approximate ops compute in; use one of {FLOAT_DTYPES}")
            self.params = dict(params) if params else None
            if quantize is not None:
                self._init_quantized(lut, bits, rounding, mode, gradient, quantize)
                return
            self.rounding = _choice(rounding, ROUNDINGS, "rounding")
            self.mode = _choice(mode, MODES, "mode")
            self.gradient = _choice("approximate" if gradient is None else gradient, GRADIENTS, "gradient")
            if mode == "approxtrain" and rounding != "truncate":
                raise LayerConfigError("mode='approxtrain' truncates its operands; rounding='rne' does not apply")
            self.multiplier = resolve_lut(lut, bits, self.params)
            if self.multiplier.table is None:
                raise LayerConfigError(f"M={self.multiplier.bits} has no LUT (M <= 12), which the TensorFlow "
                                       "ops multiply with")
            self.multiplier.check(self.mode)
            self.bits = self.multiplier.bits
        except AmsimError as exc:
            raise self._error(exc) from None

    def _init_quantized(self, lut, bits, rounding, mode, gradient, quantize):
        if not isinstance(self, Quantizable):
            raise LayerConfigError(f"quantize={quantize!r}: {type(self).__name__} has no quantized version (the "
                                   "quantized layers are " + ", ".join(sorted(QUANTIZABLE)) + ")")
        try:
            scheme = scheme_of(quantize)
        except ValueError as exc:
            raise LayerConfigError(str(exc)) from None
        if bits is not None and bits != scheme.bits:
            raise LayerConfigError(f"quantize={quantize!r} multiplies 8-bit operands; bits={bits!r} does not apply")
        if (rounding, mode) != ("truncate", "ieee"):
            raise LayerConfigError("rounding and mode are those of float multipliers; they do not apply with "
                                   "quantize=")
        if gradient not in (None, "exact"):
            raise LayerConfigError(f"a quantized layer's gradient is the straight-through estimator in float32; "
                                   f"gradient={gradient!r} does not apply (leave it out, or 'exact')")
        self.rounding, self.mode, self.gradient = rounding, mode, "exact"
        self.scheme = scheme.name
        self.multiplier = resolve_circuit(lut, signed=scheme.signed, bits=scheme.bits, params=self.params)
        self.bits = scheme.bits

    def _error(self, exc: Exception) -> Exception:
        """A copy of ``exc`` (same class and attributes), its message prefixed with this layer's class and name."""
        named = copy.copy(exc)
        named.args = (f"{type(self).__name__} '{self.name}': {exc}",)
        return named

    def _op_kwargs(self) -> dict:
        return {"rounding": self.rounding, "mode": self.mode, "gradient": self.gradient}

    def _approximate_config(self) -> dict:
        config = {"bits": self.bits, "params": self.params, "rounding": self.rounding, "mode": self.mode,
                  "gradient": self.gradient}
        if self.scheme is None:
            return {"lut": lut_to_config(self.multiplier), **config}
        return {"lut": circuit_to_config(self.multiplier), **config, "quantize": self.scheme}

    def _to_float32(self, x):
        """``x`` as the float32 tensor the ops take, refusing what cannot be cast (strings, complex)."""
        self._refuse_xla()
        x = tf.convert_to_tensor(x)
        if x.dtype == tf.float32:
            return x
        if not (x.dtype.is_floating or x.dtype.is_integer or x.dtype.is_bool):
            raise self._error(LayerDTypeError(f"input of dtype {x.dtype.name} cannot be cast to float32"))
        return tf.cast(x, tf.float32)

    def _from_float32(self, y):
        dtype = self.compute_dtype
        return y if dtype == "float32" else tf.cast(y, dtype)

    def _refuse_xla(self):
        if not tf.executing_eagerly() and _in_xla_context():
            raise self._error(LayerXlaError(
                "XLA cannot compile amsim's approximate ops; run without jit_compile=True (Keras' default "
                "jit_compile='auto' does so for models holding AM layers)"))

    def quantize(self, *args, **kwargs):
        raise self._error(LayerConfigError(
            "AM layers cannot be quantized: their products are already those of the approximate multiplier"))


#: The op of each kind of product of a float AM layer.
_FLOAT_OPS = {"matmul": am_matmul, "conv2d": am_conv2d, "depthwise_conv2d": am_depthwise_conv2d,
              "conv3d": am_conv3d}
#: The AM layers that take quantize= (filled by :class:`Quantizable`'s subclasses).
QUANTIZABLE: set = set()


class Quantizable(Approximate):
    """Mixin of the AM layers that can also compute 8-bit quantized: ``quantize="uint8"`` or ``"int8"``.

    A subclass lists its products in ``PRODUCTS``: for each, the input it
    observes (a name), its kind (a key of
    :data:`amsim.keras.quantization.PRODUCTS`) and the kernel attribute it
    multiplies with; most layers have one, ``("input", kind, "kernel")``. It
    computes each with :meth:`_product` on the range :meth:`_input_range`
    gives for that input. A quantized layer's multiplier is a
    :class:`amsim.gemm.circuit.Circuit`; ``build`` adds a
    :class:`~amsim.keras.quantization.RangeObserver` per observed input (its
    weights ``{name}_min``, ``{name}_max``, ``{name}_observed``) and refuses a
    kernel whose sums could overflow the 32-bit accumulator.
    """

    PRODUCTS = (("input", "matmul", "kernel"),)
    #: The quantized layer's observers by input name, made in ``build`` (empty for a float layer).
    range_observers = types.MappingProxyType({})
    _calibrating = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("AM"):
            QUANTIZABLE.add(cls.__name__)

    @property
    def range_observer(self):
        """The observer of the layer's input (None for a float layer)."""
        return self.range_observers.get("input")

    def build(self, input_shape):
        super().build(input_shape)
        if self.scheme is None:
            return
        for name, kind, kernel in self.PRODUCTS:
            shape = tuple(getattr(self, kernel).shape)
            kept = 2 if kind == "depthwise_conv2d" else 1  # the output-channel axes; the others are summed
            try:
                check_accumulator(int(np.prod(shape[:-kept])), self.multiplier.table)
            except AmsimError as exc:
                raise self._error(exc) from None
        self.range_observers = {name: RangeObserver(self, name) for name, _, _ in self.PRODUCTS}

    def _observed(self) -> list:
        return [v for observer in self.range_observers.values() for v in observer.variables]

    # Keras' Dense and convolutions save and load only their kernel and bias, by position ("0", "1"):
    # the observers' weights follow them, in the positions after. (Keras' depthwise and separable
    # convolutions save and load every variable, the observers' last, which are then in those
    # positions already.)
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and self.range_observers and len(store.keys()) < len(self.variables):
            first = len(store.keys())
            for i, v in enumerate(self._observed()):
                store[str(first + i)] = v

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built and self.range_observers:
            observed = self._observed()
            first = len(store.keys()) - len(observed)
            for i, v in enumerate(observed):
                v.assign(store[str(first + i)])

    def _input_range(self, x, training, name="input"):
        """The quantization range of the input ``name`` for this call (None for a float layer)."""
        return None if self.scheme is None else self.range_observers[name](x, bool(training))

    def _product(self, x, w, x_range, kind=None, bias=None, **geometry):
        """The layer's product (of its only kind, or ``kind``) of float32 ``x`` and kernel ``w``: the AM op,
        or the quantized product, that adds ``bias`` (from :meth:`_fused_bias`, else None) itself."""
        kind = kind or self.PRODUCTS[0][1]
        if self.scheme is None:
            return _FLOAT_OPS[kind](x, w, self.multiplier, **geometry, **self._op_kwargs())
        return quantized_product(kind, x, w, self.multiplier, scheme_of(self.scheme), x_range, bias=bias, **geometry)

    def _fused_bias(self):
        """The float32 bias a quantized product adds in its scaling pass, or None where the layer adds
        its bias afterwards: a float layer, no bias, a compute dtype other than float32 (whose bias is
        added after the cast, in that dtype), or channels-first data (the op's channels-last result is
        transposed back: the bias's gradient would sum the same numbers in another order, rounding
        otherwise). One TensorFlow pass over the output fewer per call (docs/performance.md)."""
        if self.scheme is None or self.bias is None or self.compute_dtype != "float32" or \
                getattr(self, "data_format", None) == "channels_first":
            return None
        return tf.cast(self.bias, tf.float32)


def _in_xla_context() -> bool:
    """True while tracing a function XLA will compile (tf.function(jit_compile=True))."""
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - TensorFlow moved its internals: the op's own error then
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))
