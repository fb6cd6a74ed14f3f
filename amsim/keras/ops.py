"""TensorFlow ops whose every product is an approximate multiplier's: matmul, conv2d, depthwise conv2d.

The ops are C++ kernels (``amsim/csrc/tf``, built on first use by
:mod:`amsim.keras.build`) that call the engine of :mod:`amsim.gemm` on
TensorFlow's buffers, so their outputs are ``amsim.gemm``'s bit for bit:
``am_matmul`` is ``gemm.matmul``, ``am_conv2d`` is ``gemm.conv2d``, and the
gradients of ``am_conv2d`` are ``gemm.conv2d_backprop_input`` and
``gemm.conv2d_backprop_filter``. They run eagerly and inside ``tf.function``;
XLA cannot compile them (``jit_compile=True`` raises :class:`XlaCompileError`).

Gradients
---------
The derivative is the straight-through one: the approximate product a (x) b is
differentiated as if it were the exact product a * b, so the gradients are the
usual GEMMs of the incoming gradient with the other operand. With
``gradient="approximate"`` (the default, as ApproxTrain) those backward GEMMs
use the same multiplier:

* matmul ``C = A (x) B``: ``dA = dC (x) B^T`` and ``dB = A^T (x) dC``;
* conv2d ``y = P (x) W`` (P the input's patches): ``dx = col2im(dy (x) W^T)``
  and ``dW = P^T (x) dy``; depthwise: the same per channel.

The left operand indexes the LUT's rows, which matters for asymmetric LUTs.
With ``gradient="exact"`` the backward GEMMs are TensorFlow's own float32
gradient ops, bit for bit what TensorFlow gives for ``tf.linalg.matmul``,
``tf.nn.conv2d`` and ``tf.nn.depthwise_conv2d``, for comparison. The LUT gets
no gradient.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import tensorflow as tf

from .. import gemm, reference
from ..errors import AmsimError
from ..gemm import conv as gemm_conv
from . import build

__all__ = ["am_matmul", "am_conv2d", "am_depthwise_conv2d", "GRADIENTS", "OpArgumentError", "OpDTypeError",
           "XlaCompileError"]

#: The backward GEMMs: with the same multiplier ("approximate") or exact float32 products.
GRADIENTS = ("approximate", "exact")


class XlaCompileError(AmsimError, RuntimeError):
    """An op met inside a function XLA compiles (``jit_compile=True``): XLA has no kernel for it."""


class OpArgumentError(AmsimError, ValueError):
    """An argument of an op outside its allowed values (rounding, mode, gradient, threads, padding)."""


class OpDTypeError(AmsimError, TypeError):
    """An operand the ops cannot take: a dtype that is not floating point, or mixed dtypes."""


# ----------------------------------------------------------------------------------------------
# The public ops
# ----------------------------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_matmul(a, b, lut, *, bits=None, params=None, transpose_a=False, transpose_b=False, rounding="truncate",
              mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.linalg.matmul(a, b)``: every product is the LUT multiplier's (``amsim.gemm.matmul``).

    Parameters
    ----------
    a, b : float tensors, shape (..., M, K) and (..., K, N)
        Rank >= 2; the leading dimensions broadcast as in ``tf.linalg.matmul``.
        Floating dtypes other than float32 are multiplied in float32 and the
        result cast back.
    lut : Multiplier, LUT, LUT file, C model (name or .c file) or (2^M, 2^M) array
        Anything :func:`amsim.gemm.resolve` takes (a resolved ``Multiplier`` costs nothing).
    bits, params : optional
        Mantissa width M (required with a model) and model parameters.
    transpose_a, transpose_b : bool
        Multiply by the transpose of the last two axes (no copy).
    rounding : {"truncate", "rne"}
    mode : {"ieee", "approxtrain"}
    gradient : {"approximate", "exact"}
        The backward GEMMs' products (see the module docstring).
    threads : int, optional
        At most this many engine threads per GEMM (default: the engine's).
    """
    lut_t, attrs = _arithmetic(lut, bits, params, rounding, mode, gradient, threads)
    (a, b), dtype = _operands("am_matmul", a=a, b=b)
    _check_matmul_shapes(a.shape, b.shape, bool(transpose_a), bool(transpose_b))
    y = _ops("am_matmul").amsim_mat_mul(a, b, lut_t, transpose_a=bool(transpose_a), transpose_b=bool(transpose_b),
                                        **attrs)
    return _restore(y, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_conv2d(x, w, lut, *, strides=1, padding="VALID", dilations=1, bits=None, params=None, rounding="truncate",
              mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.nn.conv2d`` (NHWC input, HWIO filter): ``amsim.gemm.conv2d``.

    Parameters
    ----------
    x : float tensor (N, H, W, C)
    w : float tensor (KH, KW, C, O)
    lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_matmul`.
    strides, dilations : int, (int, int) or [1, h, w, 1]
    padding : "SAME", "VALID", ((top, bottom), (left, right)) or [[0, 0], [t, b], [l, r], [0, 0]]
    """
    lut_t, attrs = _arithmetic(lut, bits, params, rounding, mode, gradient, threads)
    geometry = _conv_attrs(strides, padding, dilations)
    (x, w), dtype = _operands("am_conv2d", x=x, w=w)
    _check_conv_shapes(x.shape, w.shape, strides, padding, dilations, depthwise=False)
    y = _ops("am_conv2d").amsim_conv2d(x, w, lut_t, **geometry, **attrs)
    return _restore(y, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_depthwise_conv2d(x, w, lut, *, strides=1, padding="VALID", dilations=1, bits=None, params=None,
                        rounding="truncate", mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.nn.depthwise_conv2d``: output channel ``c * Q + q`` is input channel ``c``
    convolved with ``w[:, :, c, q]``, each channel exactly ``amsim.gemm.conv2d`` of that channel alone.

    Parameters
    ----------
    x : float tensor (N, H, W, C)
    w : float tensor (KH, KW, C, Q), Q the channel multiplier
    strides, padding, dilations, lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_conv2d`.
    """
    lut_t, attrs = _arithmetic(lut, bits, params, rounding, mode, gradient, threads)
    geometry = _conv_attrs(strides, padding, dilations)
    (x, w), dtype = _operands("am_depthwise_conv2d", x=x, w=w)
    _check_conv_shapes(x.shape, w.shape, strides, padding, dilations, depthwise=True)
    y = _ops("am_depthwise_conv2d").amsim_depthwise_conv2d(x, w, lut_t, **geometry, **attrs)
    return _restore(y, dtype)


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------

_LUT_TENSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LUT_LOCK = threading.Lock()


def _arithmetic(lut, bits, params, rounding, mode, gradient, threads):
    """(the LUT tensor, the op attributes) after checking every arithmetic argument."""
    if rounding not in reference.ROUNDINGS:
        raise OpArgumentError(f"rounding must be one of {reference.ROUNDINGS}, not {rounding!r}")
    if mode not in reference.MODES:
        raise OpArgumentError(f"mode must be one of {reference.MODES}, not {mode!r}")
    if mode == "approxtrain" and rounding != "truncate":
        raise OpArgumentError("mode='approxtrain' truncates its operands; rounding='rne' does not apply")
    if gradient not in GRADIENTS:
        raise OpArgumentError(f"gradient must be one of {GRADIENTS}, not {gradient!r}")
    if threads is None:
        threads = 0
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise OpArgumentError(f"threads must be a positive int or None, not {threads!r}")
    mult = gemm.resolve(lut, bits, params=params)
    if mult.table is None:
        raise OpArgumentError(
            f"{mult!r}: the TensorFlow ops need a LUT (M <= 12); M={mult.bits} multiplies through the model")
    mult.check(mode)
    return _lut_tensor(mult), {"rounding": rounding, "mode": mode, "threads": int(threads), "gradient": gradient}


def _lut_tensor(mult):
    """The multiplier's table as one eager tensor per multiplier: the kernels prepare a LUT once per
    tensor buffer, and a tf.function captures this tensor instead of embedding a constant."""
    tensor = _LUT_TENSORS.get(mult)
    if tensor is None:
        with _LUT_LOCK:
            tensor = _LUT_TENSORS.get(mult)
            if tensor is None:
                with tf.init_scope():
                    tensor = tf.constant(mult.table)
                _LUT_TENSORS[mult] = tensor
    return tensor


def _operands(fn, **operands):
    """The operands as float32 tensors, and the floating dtype to give the result (None: float32)."""
    tensors = {name: tf.convert_to_tensor(x) for name, x in operands.items()}
    dtypes = {t.dtype for t in tensors.values()}
    for name, t in tensors.items():
        if not t.dtype.is_floating:
            raise OpDTypeError(f"{fn}: {name} must be a floating tensor, got {t.dtype.name}")
    if len(dtypes) > 1:
        listed = ", ".join(f"{name} {t.dtype.name}" for name, t in tensors.items())
        raise OpDTypeError(f"{fn}: operands must share one dtype, got {listed}")
    dtype = dtypes.pop()
    if dtype == tf.float32:
        return list(tensors.values()), None
    return [tf.cast(t, tf.float32) for t in tensors.values()], dtype


def _restore(y, dtype):
    return y if dtype is None else tf.cast(y, dtype)


def _check_matmul_shapes(a_shape, b_shape, ta, tb):
    """Static shape checks, with amsim.gemm's errors; dimensions unknown until run time pass."""
    if a_shape.rank is None or b_shape.rank is None:
        return
    for name, s in (("a", a_shape), ("b", b_shape)):
        if s.rank < 2:
            raise gemm.ShapeError(f"am_matmul: {name} must have at least 2 dimensions, got shape {s}")
    k_a, k_b = a_shape[-2 if ta else -1], b_shape[-1 if tb else -2]
    if k_a is not None and k_b is not None and k_a != k_b:
        raise gemm.ShapeError(f"am_matmul: inner dimensions differ: a {a_shape} and b {b_shape} "
                              f"(K = {k_a} vs {k_b}{', transposed' if ta or tb else ''})")
    for da, db in zip(reversed(a_shape[:-2]), reversed(b_shape[:-2])):
        if da is not None and db is not None and da != db and 1 not in (da, db):
            raise gemm.ShapeError(f"am_matmul: batch dimensions do not broadcast: a {a_shape} and b {b_shape}")


def _conv_attrs(strides, padding, dilations) -> dict:
    """The conv ops' attributes, in TensorFlow's NHWC spelling."""
    sh, sw = gemm_conv.pair(strides, "strides")
    dh, dw = gemm_conv.pair(dilations, "dilations")
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise gemm_conv.ConvArgumentError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
        pad, explicit = padding.upper(), []
    else:
        # gemm's geometry check on a shape every padding fits gives the explicit pads, or its error
        g = gemm_conv.conv_geometry((1, 1, 1, 1), (1, 1, 1, 1), padding=padding)
        pad, explicit = "EXPLICIT", [0, 0, *g.pads, 0, 0]
    return {"strides": [1, sh, sw, 1], "padding": pad, "explicit_paddings": explicit, "dilations": [1, dh, dw, 1]}


def _check_conv_shapes(x_shape, w_shape, strides, padding, dilations, *, depthwise):
    """Static checks with amsim.gemm.conv_geometry's errors, when the shapes are known."""
    if x_shape.rank != 4 or w_shape.rank != 4:
        if x_shape.rank is not None and w_shape.rank is not None:
            raise gemm.ShapeError(f"{'depthwise ' if depthwise else ''}conv2d needs NHWC input and "
                                  f"{'(KH, KW, C, multiplier)' if depthwise else 'HWIO'} filter, "
                                  f"got {x_shape} and {w_shape}")
        return
    x_dims, w_dims = list(x_shape), list(w_shape)
    x_dims[0] = x_dims[0] if x_dims[0] is not None else 1  # the batch size changes nothing here
    if None in x_dims or None in w_dims:
        if x_dims[3] is not None and w_dims[2] is not None and x_dims[3] != w_dims[2]:
            raise gemm.ShapeError(f"conv2d: input has {x_dims[3]} channels, filter expects {w_dims[2]} "
                                  f"(input {x_shape}, filter {w_shape})")
        return
    gemm_conv.conv_geometry(x_dims, w_dims, strides, padding, dilations)


# ----------------------------------------------------------------------------------------------
# The op library
# ----------------------------------------------------------------------------------------------


def _ops(fn):
    """The loaded op library, after refusing XLA compilation (which has no kernel for the ops)."""
    if not tf.executing_eagerly() and _in_xla_context():
        raise XlaCompileError(f"{fn}: XLA cannot compile amsim's approximate ops; run without jit_compile=True "
                              "(Keras' default jit_compile='auto' does so for models holding AM layers)")
    return build.load()


def _in_xla_context() -> bool:
    """True while tracing a function XLA will compile (tf.function(jit_compile=True))."""
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - TensorFlow moved its internals: XLA's own error then
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()))


# ----------------------------------------------------------------------------------------------
# Gradients (the straight-through derivative; see the module docstring)
# ----------------------------------------------------------------------------------------------


def _arith_attrs(op) -> dict:
    attrs = {name: op.get_attr(name) for name in ("rounding", "mode", "gradient")}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    attrs["threads"] = op.get_attr("threads")
    return attrs


def _conv_geometry_attrs(op) -> dict:
    padding = op.get_attr("padding")
    return {"strides": op.get_attr("strides"), "padding": padding.decode() if isinstance(padding, bytes) else padding,
            "explicit_paddings": op.get_attr("explicit_paddings"), "dilations": op.get_attr("dilations")}


def _unbroadcast(x, grad):
    """grad (shaped as the broadcast product's operand) summed over the batch axes x was broadcast
    along, as TensorFlow's BatchMatMul gradient does."""
    xs, gs = x.shape, grad.shape
    if xs.rank is not None and gs.rank is not None and xs.rank == gs.rank and xs[:-2].is_fully_defined() \
            and xs[:-2] == gs[:-2]:
        return grad
    x_shape, g_shape = tf.shape(x), tf.shape(grad)
    axes, _ = tf.raw_ops.BroadcastGradientArgs(s0=x_shape[:-2], s1=g_shape[:-2])
    return tf.reshape(tf.reduce_sum(grad, axes), x_shape)


@tf.RegisterGradient("AmsimMatMul")
def _matmul_grad(op, grad):
    a, b, lut = op.inputs
    ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
    attrs = _arith_attrs(op)
    if attrs["gradient"] == "exact":  # TensorFlow's BatchMatMul gradient, step for step
        mm = tf.linalg.matmul
        if not ta:
            da = mm(grad, b, transpose_b=not tb)
            db = mm(a, grad, transpose_a=True) if not tb else mm(grad, a, transpose_a=True)
        else:
            da = mm(b, grad, transpose_b=True) if not tb else mm(b, grad, transpose_a=True, transpose_b=True)
            db = mm(a, grad) if not tb else mm(grad, a, transpose_a=True, transpose_b=True)
    else:
        # d op(A) = dC (x) op(B)^T and d op(B) = op(A)^T (x) dC, with dC and op(A)^T the LUT's rows
        lib = build.load()
        da = lib.amsim_mat_mul(grad, b, lut, transpose_b=not tb, **attrs)
        db = lib.amsim_mat_mul(a, grad, lut, transpose_a=not ta, **attrs)
        if ta:
            da = tf.linalg.matrix_transpose(da)
        if tb:
            db = tf.linalg.matrix_transpose(db)
    return _unbroadcast(a, da), _unbroadcast(b, db), None


@tf.RegisterGradient("AmsimConv2D")
def _conv2d_grad(op, grad):
    x, w, lut = op.inputs
    geometry, attrs = _conv_geometry_attrs(op), _arith_attrs(op)
    x_shape, w_shape = tf.shape(x), tf.shape(w)
    if attrs["gradient"] == "exact":  # TensorFlow's Conv2D gradient
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=x_shape, filter=w, out_backprop=grad, **geometry)
        dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w_shape, out_backprop=grad, **geometry)
    else:
        lib = build.load()
        dx = lib.amsim_conv2d_backprop_input(x_shape, w, grad, lut, **geometry, **attrs)
        dw = lib.amsim_conv2d_backprop_filter(x, w_shape, grad, lut, **geometry, **attrs)
    return dx, dw, None


@tf.RegisterGradient("AmsimDepthwiseConv2D")
def _depthwise_grad(op, grad):
    x, w, lut = op.inputs
    geometry, attrs = _conv_geometry_attrs(op), _arith_attrs(op)
    x_shape, w_shape = tf.shape(x), tf.shape(w)
    if attrs["gradient"] == "exact" and list(geometry["dilations"]) == [1, 1, 1, 1]:
        # TensorFlow's DepthwiseConv2dNative gradient
        dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(input_sizes=x_shape, filter=w, out_backprop=grad,
                                                           **geometry)
        dw = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(input=x, filter_sizes=w_shape, out_backprop=grad,
                                                            **geometry)
    elif attrs["gradient"] == "exact":
        # Dilated: TensorFlow's CPU kernels take no dilations, and tf.nn.depthwise_conv2d computes
        # them through space_to_batch; its gradient is TensorFlow's.
        pads = geometry["explicit_paddings"]
        padding = geometry["padding"] if geometry["padding"] != "EXPLICIT" else \
            [pads[0:2], pads[2:4], pads[4:6], pads[6:8]]
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = tf.nn.depthwise_conv2d(x, w, geometry["strides"], padding, dilations=geometry["dilations"][1:3])
        dx, dw = tape.gradient(y, [x, w], output_gradients=grad)
    else:
        lib = build.load()
        dx = lib.amsim_depthwise_conv2d_backprop_input(x_shape, w, grad, lut, **geometry, **attrs)
        dw = lib.amsim_depthwise_conv2d_backprop_filter(x, w_shape, grad, lut, **geometry, **attrs)
    return dx, dw, None
