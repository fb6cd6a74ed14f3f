"""TensorFlow ops whose every product is an approximate multiplier's: matmul, conv2d, depthwise conv2d, einsum,
transposed and 3-D convolutions.

The ops are C++ kernels (``amsim/csrc/tf``, built on first use by
:mod:`amsim.keras.build`) that call the engine of :mod:`amsim.gemm` on
TensorFlow's buffers, so their outputs are ``amsim.gemm``'s bit for bit:
``am_matmul`` is ``gemm.matmul`` (``am_einsum`` is one batched
``am_matmul``), ``am_conv2d`` is ``gemm.conv2d``, and the
gradients of ``am_conv2d`` are ``gemm.conv2d_backprop_input`` and
``gemm.conv2d_backprop_filter``. ``am_conv2d_transpose`` is the C++ input
gradient of a conv2d, ``gemm.conv2d_backprop_input``. ``am_conv3d`` and
``am_conv3d_transpose`` have no kernel of their own: they are ``am_matmul`` of
patches cut and summed by :mod:`amsim.keras.patches` in a fixed order, and
``gemm.conv3d`` and ``gemm.conv3d_backprop_input`` bit for bit. They run eagerly
and inside ``tf.function``; XLA cannot compile them (``jit_compile=True``
raises :class:`XlaCompileError`).

One file: the ops share their argument checks, the op library and the
gradient functions registered with TensorFlow when this module is imported.

Gradients
---------
The derivative is the straight-through one: the approximate product a (x) b is
differentiated as if it were the exact product a * b, so the gradients are the
usual GEMMs of the incoming gradient with the other operand. With
``gradient="approximate"`` (the default, as ApproxTrain) those backward GEMMs
use the same multiplier:

* matmul ``C = A (x) B``: ``dA = dC (x) B^T`` and ``dB = A^T (x) dC``;
* conv2d ``y = P (x) W`` (P the input's patches): ``dx = col2im(dy (x) W^T)``
  and ``dW = P^T (x) dy``; depthwise: the same per channel;
* transposed conv ``z = col2im(x (x) W^T)``: ``dx = P(dz) (x) W`` (a conv2d of
  ``dz``) and ``dW^T = x^T (x) P(dz)``, the input the row operand as forward.

The left operand indexes the LUT's rows, which matters for asymmetric LUTs.
With ``gradient="exact"`` the backward GEMMs are TensorFlow's own float32
gradient ops, bit for bit what TensorFlow gives for ``tf.linalg.matmul``,
``tf.nn.conv2d``, ``tf.nn.depthwise_conv2d`` and ``tf.nn.conv2d_transpose``, for
comparison (the 3-D ops: exact matmuls of the same patches). The LUT gets no
gradient.
"""

from __future__ import annotations

import string
import threading
import weakref

import numpy as np
import tensorflow as tf

from .. import gemm, reference
from ..errors import AmsimError
from ..gemm import conv as gemm_conv
from . import build, patches

__all__ = ["am_matmul", "am_einsum", "am_conv2d", "am_depthwise_conv2d", "am_conv2d_transpose", "am_conv3d",
           "am_conv3d_transpose", "GRADIENTS", "OpArgumentError", "OpDTypeError", "XlaCompileError"]

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


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_conv2d_transpose(x, w, output_shape, lut, *, strides=1, padding="VALID", dilations=1, bits=None,
                        params=None, rounding="truncate", mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.nn.conv2d_transpose`` (NHWC): the input gradient of a conv2d,
    ``amsim.gemm.conv2d_backprop_input(output_shape, w, x)``.

    The GEMM ``x (N*H*W, C_in) (x) w^T (C_in, KH*KW*C_out)`` then col2im: ``x``,
    the input, is the LUT's row operand and the filter its column operand (the
    C++ pass ``AmsimConv2DBackpropInput`` takes its incoming gradient, here
    ``x``, as the left operand). The gradients are the straight-through ones
    with ``x`` the row operand again (see the module docstring).

    Parameters
    ----------
    x : float tensor (N, H, W, C_in)
    w : float tensor (KH, KW, C_out, C_in), ``tf.nn.conv2d_transpose``'s filter
    output_shape : (N, OH, OW, C_out)
        The shape of the input of the conv2d this transposes: the conv2d of that
        shape with ``w`` (strides, padding, dilations) must have ``x``'s shape.
        A sequence (entries may be scalar tensors; a batch of None is ``x``'s)
        or an int vector.
    strides, padding, dilations, lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_conv2d`.
    """
    lut_t, attrs = _arithmetic(lut, bits, params, rounding, mode, gradient, threads)
    geometry = _conv_attrs(strides, padding, dilations)
    (x, w), dtype = _operands("am_conv2d_transpose", x=x, w=w)
    known, sizes = _output_sizes("am_conv2d_transpose", output_shape, x, 4)
    _check_transposed_shapes("am_conv2d_transpose", x.shape, w.shape, known, strides, padding, dilations)
    y = _ops("am_conv2d_transpose").amsim_conv2d_backprop_input(sizes, w, x, lut_t, **geometry, **attrs)
    return _restore(y, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_conv3d(x, w, lut, *, strides=1, padding="VALID", dilations=1, bits=None, params=None, rounding="truncate",
              mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.nn.conv3d`` (NDHWC input, DHWIO filter): ``amsim.gemm.conv3d``.

    The input's patch matrix (:func:`amsim.keras.patches.im2col`: rows the
    output positions, columns in (kd, kh, kw, c) order) times the filter
    reshaped to (KD*KH*KW*C, O), through :func:`am_matmul`: the patches are the
    LUT's row operand. Its gradients are am_matmul's, and col2im's in a fixed
    order (:mod:`amsim.keras.patches`), so they are ``amsim.gemm``'s
    ``conv3d_backprop_input`` and ``conv3d_backprop_filter`` bit for bit.

    Parameters
    ----------
    x : float tensor (N, D, H, W, C), its depth, height, width and channels known when traced
    w : float tensor (KD, KH, KW, C, O)
    strides, dilations : int, (int, int, int) or [1, d, h, w, 1]
    padding : "SAME", "VALID", ((front, back), (top, bottom), (left, right)) or
        [[0, 0], [front, back], [top, bottom], [left, right], [0, 0]]
    lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_matmul`.
    """
    (x, w), dtype = _operands("am_conv3d", x=x, w=w)
    g = conv3d_geometry("am_conv3d", x.shape, w.shape, strides, padding, dilations)
    y = am_matmul(patches.im2col(x, g), tf.reshape(w, [-1, g.o]), lut, bits=bits, params=params,
                  rounding=rounding, mode=mode, gradient=gradient, threads=threads)
    y = tf.reshape(y, [tf.shape(x)[0], *g.out_sizes, g.o])
    y.set_shape([x.shape[0], *g.out_sizes, g.o])
    return _restore(y, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_conv3d_transpose(x, w, output_shape, lut, *, strides=1, padding="VALID", dilations=1, bits=None,
                        params=None, rounding="truncate", mode="ieee", gradient="approximate", threads=None):
    """Approximate ``tf.nn.conv3d_transpose`` (NDHWC): ``amsim.gemm.conv3d_backprop_input(output_shape, w, x)``.

    The GEMM ``x (N*D*H*W, C_in) (x) w^T (C_in, KD*KH*KW*C_out)`` through
    :func:`am_matmul` (``x`` the LUT's row operand, the filter its column
    operand), then :func:`amsim.keras.patches.col2im`.

    Parameters
    ----------
    x : float tensor (N, D, H, W, C_in), its shape but the batch known when traced
    w : float tensor (KD, KH, KW, C_out, C_in), ``tf.nn.conv3d_transpose``'s filter
    output_shape : (N, OD, OH, OW, C_out)
        The shape of the input of the conv3d this transposes, its sizes and
        channels known when traced (N may be None, ``x``'s batch): the conv3d
        of that shape with ``w`` must have ``x``'s shape.
    strides, padding, dilations, lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_conv3d`.
    """
    (x, w), dtype = _operands("am_conv3d_transpose", x=x, w=w)
    known, _ = _output_sizes("am_conv3d_transpose", output_shape, x, 5)
    g = None
    if x.shape[1:].is_fully_defined():
        g = _check_transposed_shapes("am_conv3d_transpose", x.shape, w.shape, known, strides, padding, dilations)
    if g is None:
        raise gemm.ShapeError(f"am_conv3d_transpose needs output_shape (N, OD, OH, OW, C_out), the input's shape "
                              f"but the batch and the filter's shape known when traced (its patches are static "
                              f"slices), got {output_shape!r}, {x.shape} and {w.shape}")
    rows = tf.reshape(x, [-1, g.o])
    cols = am_matmul(rows, tf.reshape(w, [-1, g.o]), lut, bits=bits, params=params, transpose_b=True,
                     rounding=rounding, mode=mode, gradient=gradient, threads=threads)
    y = patches.col2im(cols, g, tf.shape(x)[0])
    y.set_shape([x.shape[0], *g.sizes, g.c])
    return _restore(y, dtype)


@tf.autograph.experimental.do_not_convert  # plain Python: nothing for autograph to rewrite
def am_einsum(equation, x, y, lut, *, bits=None, params=None, rounding="truncate", mode="ieee",
              gradient="approximate", threads=None):
    """Approximate ``tf.einsum(equation, x, y)`` of two operands: one batched :func:`am_matmul`.

    Parameters
    ----------
    equation : str
        ``"X,Y->Z"``, one letter per axis. A letter of X, Y and Z is a batch
        axis, one of X and Y only is summed, one of a single operand and Z is
        a free axis of that operand. ``...`` stands for an operand's unnamed
        axes, numpy's way (both operands' align from the right; those of both
        are batch axes), and must be in Z too. Anything else is not a product
        of two operands and is refused: a third operand, an implicit output,
        a letter repeated within a term (a diagonal), a letter of one operand
        missing from Z (a sum over one operand), a letter of Z in neither.
    x, y : float tensors
        ``x`` is the LUT's row operand, as ``a`` of :func:`am_matmul`. Batch
        axes do not broadcast: their sizes must be equal.
    lut, bits, params, rounding, mode, gradient, threads
        As for :func:`am_matmul`; gradients flow as through it.

    The operands are laid out as (batch, free, summed) and (batch, summed,
    free), flattened to three dimensions (two without batch axes) and
    multiplied; a transposed view stands in for a copy where an operand
    already has the summed axes before its free ones. Each output therefore
    sums its products in increasing order of the summed axes, taken in X's
    order, as ``amsim.gemm.matmul`` of the same layout does.
    """
    (x, y), dtype = _operands("am_einsum", x=x, y=y)
    xs, ys, zs = _einsum_axes(equation, x.shape, y.shape)
    batch = [c for c in xs if c in ys and c in zs]
    summed = [c for c in xs if c in ys and c not in zs]
    free_x = [c for c in xs if c not in ys]
    free_y = [c for c in ys if c not in xs]
    static = {c: t.shape[i] for t, axes in ((x, xs), (y, ys)) for i, c in enumerate(axes)
              if t.shape.rank is not None and t.shape[i] is not None}

    def size(letters):
        """The number of elements along these axes: an int when the shapes say, else a tensor."""
        if all(c in static for c in letters):
            return int(np.prod([static[c] for c in letters], dtype=np.int64))
        return tf.reduce_prod(tf.stack([static[c] if c in static else
                                        tf.shape(x)[xs.index(c)] if c in xs else tf.shape(y)[ys.index(c)]
                                        for c in letters]))

    def arrange(t, have, first, second):
        """t as (batch, first, second), or as a view of (batch, second, first) and True."""
        transposed = have == batch + second + first and have != batch + first + second
        if not transposed and have != batch + first + second:
            t = tf.transpose(t, [have.index(c) for c in batch + first + second])
        lead, rest = (second, first) if transposed else (first, second)
        return tf.reshape(t, ([size(batch)] if batch else []) + [size(lead), size(rest)]), transposed

    a, ta = arrange(x, xs, free_x, summed)
    b, tb = arrange(y, ys, summed, free_y)
    z = am_matmul(a, b, lut, bits=bits, params=params, transpose_a=ta, transpose_b=tb, rounding=rounding,
                  mode=mode, gradient=gradient, threads=threads)
    order = batch + free_x + free_y
    z = tf.reshape(z, [size([c]) for c in order])
    if order != zs:
        z = tf.transpose(z, [order.index(c) for c in zs])
    z.set_shape([static.get(c) for c in zs])
    return _restore(z, dtype)


# ----------------------------------------------------------------------------------------------
# Einsum equations
# ----------------------------------------------------------------------------------------------


def _einsum_axes(equation, x_shape, y_shape):
    """The letters of X, Y and Z, one per axis with ``...`` spelt out, after checking that the
    equation is a product of two operands of these shapes (OpArgumentError, gemm.ShapeError)."""
    if not isinstance(equation, str):
        raise OpArgumentError(f"am_einsum: equation must be a str, not {type(equation).__name__}")
    spec = equation.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",") + [output]
    if not arrow or len(terms) != 3:
        raise OpArgumentError(f"am_einsum: {equation!r} is not 'X,Y->Z': two operands and an explicit output")
    if not all(set(t.replace("...", "", 1)) <= set(string.ascii_letters) for t in terms):
        raise OpArgumentError(f"am_einsum: {equation!r}: axes are letters, with at most one '...' per term")
    if ("..." in output) != ("..." in inputs):
        raise OpArgumentError(f"am_einsum: {equation!r}: '...' must be in the output and at least one operand")
    # An operand's '...' stands for the axes its letters leave over; those of both operands align
    # from the right, spelt with letters the equation does not use.
    spare = [c for c in string.ascii_letters if c not in spec]
    counts = []
    for name, term, shape in (("x", terms[0], x_shape), ("y", terms[1], y_shape)):
        named = len(term.replace("...", ""))
        if "..." in term and shape.rank is None:
            raise OpArgumentError(f"am_einsum: {equation!r}: '...' needs {name} of known rank")
        if shape.rank is not None and (shape.rank < named if "..." in term else shape.rank != named):
            raise gemm.ShapeError(f"am_einsum: {equation!r}: {name} has shape {shape}, the equation names "
                                  f"{named} axes{' and ...' if '...' in term else ''}")
        counts.append(shape.rank - named if "..." in term else 0)
    dots = "".join(spare[:max(counts)])
    xs, ys = (list(t.replace("...", dots[len(dots) - n:])) for t, n in zip(terms, counts))
    zs = list(output.replace("...", dots))
    for name, axes in (("x", xs), ("y", ys), ("the output", zs)):
        repeated = "".join(sorted({c for c in axes if axes.count(c) > 1}))
        if repeated:
            raise OpArgumentError(f"am_einsum: {equation!r}: {repeated!r} repeats in {name} (a diagonal, "
                                  "not a product)")
    lone = "".join(c for c in xs + ys if c not in zs and not (c in xs and c in ys))
    if lone:
        raise OpArgumentError(f"am_einsum: {equation!r}: {lone!r} of one operand is missing from the output "
                              "(a sum over one operand, not a product)")
    unknown = "".join(c for c in zs if c not in xs and c not in ys)
    if unknown:
        raise OpArgumentError(f"am_einsum: {equation!r}: output axes {unknown!r} are in neither operand")
    for c in set(xs) & set(ys):
        nx = x_shape[xs.index(c)] if x_shape.rank is not None else None
        ny = y_shape[ys.index(c)] if y_shape.rank is not None else None
        if nx is not None and ny is not None and nx != ny:
            axis = f"axis {c!r}" if c not in dots else "a '...' axis"
            raise gemm.ShapeError(f"am_einsum: {equation!r}: {axis} is {nx} in x and {ny} in y "
                                  "(shared axes do not broadcast)")
    return xs, ys, zs


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


def conv3d_geometry(fn, x_shape, w_shape, strides, padding, dilations):
    """The conv3d geometry of these static shapes (the batch may be unknown: it changes nothing here)."""
    if x_shape.rank != 5 or w_shape.rank != 5:
        raise gemm.ShapeError(f"{fn} needs NDHWC input and a DHWIO filter, got {x_shape} and {w_shape}")
    if not x_shape[1:].is_fully_defined() or not w_shape.is_fully_defined():
        raise gemm.ShapeError(f"{fn} needs the input's depth, height, width and channels and the filter's shape "
                              f"known when traced (its patches are static slices), got {x_shape} and {w_shape}")
    n = x_shape[0] if x_shape[0] is not None else 1
    return gemm_conv.conv_nd_geometry((n, *x_shape[1:]), tuple(w_shape), strides, padding, dilations, rank=3)


def _output_sizes(fn, output_shape, x, count):
    """A transposed convolution's ``output_shape`` of ``count`` sizes: as ints (None for each unknown
    until run time) and as an int32 vector; a batch of None is ``x``'s."""
    if isinstance(output_shape, (tf.Tensor, tf.Variable)):
        vector = tf.cast(output_shape, tf.int32)
        if vector.shape.rank != 1 or vector.shape[0] not in (None, count):
            raise gemm.ShapeError(f"{fn}: output_shape must be {count} sizes, got a tensor of shape {vector.shape}")
        values = tf.get_static_value(vector, partial=True)
        known = [None] * count if values is None else [None if v is None else int(v) for v in values]
        return known, vector
    try:
        entries = list(output_shape)
    except TypeError:
        entries = None
    if entries is None or len(entries) != count:
        raise gemm.ShapeError(f"{fn}: output_shape must be {count} sizes, got {output_shape!r}")
    if entries[0] is None:
        entries[0] = tf.shape(x)[0]
    known = [tf.get_static_value(d) if isinstance(d, tf.Tensor) else d for d in entries]
    if any(v is not None and (np.ndim(v) or np.asarray(v).dtype.kind not in "iu") for v in known):
        raise gemm.ShapeError(f"{fn}: output_shape must be {count} int sizes, got {output_shape!r}")
    return [None if v is None else int(v) for v in known], tf.stack([tf.cast(d, tf.int32) for d in entries])


def _check_transposed_shapes(fn, x_shape, w_shape, output_shape, strides, padding, dilations):
    """The geometry of the convolution a transposed one transposes (input ``output_shape``, filter
    ``w``), after checking that its output has the shape of ``x``, the transposed one's input; None
    where a size it needs is unknown until run time (the kernel checks it then)."""
    rank = len(output_shape) - 2
    if x_shape.rank not in (None, rank + 2) or w_shape.rank not in (None, rank + 2):
        raise gemm.ShapeError(f"{fn} needs {rank + 2}-D input and filter, got {x_shape} and {w_shape}")
    if None in output_shape[1:] or not w_shape.is_fully_defined():
        return None
    n = output_shape[0] if output_shape[0] is not None else 1  # the batch changes nothing here
    g = gemm_conv.conv_nd_geometry((n, *output_shape[1:]), tuple(w_shape), strides, padding, dilations, rank=rank)
    want = (output_shape[0], *g.out_sizes, g.o)
    if x_shape.rank is not None and any(a is not None and b is not None and a != b for a, b in zip(x_shape, want)):
        raise gemm.ShapeError(f"{fn}: input has shape {tuple(x_shape)}, but the convolution it transposes (input "
                              f"{tuple(output_shape)}, filter {tuple(w_shape)}) gives {want}")
    return g


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


@tf.RegisterGradient("AmsimConv2DBackpropInput")
def _conv2d_transpose_grad(op, grad):
    """As the gradient of am_conv2d_transpose, z = col2im(x (x) W^T): dx = patches(dz) (x) W, which is
    am_conv2d(dz, w), and dW^T = x^T (x) patches(dz), x the row operand as in the forward pass."""
    sizes, w, x, lut = op.inputs
    geometry, attrs = _conv_geometry_attrs(op), _arith_attrs(op)
    if attrs["gradient"] == "exact":  # TensorFlow's Conv2DBackpropInput gradient
        dw = tf.raw_ops.Conv2DBackpropFilter(input=grad, filter_sizes=tf.shape(w), out_backprop=x, **geometry)
        dx = tf.raw_ops.Conv2D(input=grad, filter=w, **geometry)
    else:
        lib = build.load()
        dx = lib.amsim_conv2d(grad, w, lut, **geometry, **attrs)
        # The filter-gradient op computes patches(dz)^T (x) x, the patches as the row operand. With the
        # LUT transposed each product is x (x) patch (a (x)_L b = b (x)_L^T a: the same entry, sign and
        # exponents), in the same order: dW^T = x^T (x) patches(dz), bit for bit.
        dw = lib.amsim_conv2d_backprop_filter(grad, tf.shape(w), x, tf.transpose(lut), **geometry, **attrs)
    return None, dw, dx, None

