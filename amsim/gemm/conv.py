"""conv2d, conv3d and their gradients: im2col GEMMs with the approximate product (TensorFlow's geometry).

The 2-D patches are the C engine's (``amsim_im2col``, ``amsim_col2im``); the
3-D ones are numpy's, in the same order: patch columns in (kd, kh, kw, c)
order, and each input position of a col2im summing the columns that cover it
in increasing (kd, kh, kw), in float32 from +0.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from ..errors import AmsimError
from . import ShapeError, _check_operand, engine, matmul

__all__ = ["conv2d", "conv2d_backprop_input", "conv2d_backprop_filter", "conv3d", "conv3d_backprop_input",
           "conv3d_backprop_filter", "conv_geometry", "ConvGeometry", "conv_nd_geometry", "ConvNdGeometry",
           "ConvArgumentError", "pair", "spatial", "MAX_GEOMETRY"]


class ConvArgumentError(AmsimError, ValueError):
    """A convolution's geometry argument (strides, dilations, padding, a size) of the wrong type or range."""


#: Largest stride, dilation, padding or size accepted: TensorFlow's int32 attributes, and
#: small enough that no byte offset the kernels compute from them overflows 64 bits.
MAX_GEOMETRY = 2**31 - 1


class ConvGeometry(NamedTuple):
    """A checked conv2d geometry (TensorFlow's rules; the C engine's ``amsim_conv_geometry``).

    ``pads`` is (top, bottom, left, right); the output is (n, oh, ow, o).
    """

    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    o: int
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]
    oh: int
    ow: int

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return self.n, self.oh, self.ow, self.o


class ConvNdGeometry(NamedTuple):
    """A checked convolution geometry of 1 to 3 spatial dimensions (TensorFlow's rules).

    The input is channels last, ``(n, *sizes, c)``, the filter ``(*ksizes, c, o)``;
    ``pads`` holds a (before, after) pair per spatial dimension and the output
    is ``(n, *out_sizes, o)``.
    """

    n: int
    sizes: tuple[int, ...]
    c: int
    ksizes: tuple[int, ...]
    o: int
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_sizes: tuple[int, ...]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.n, *self.out_sizes, self.o

    @property
    def taps(self) -> list[tuple[int, ...]]:
        """The filter's spatial positions in the order of the patch columns (row-major)."""
        return list(itertools.product(*map(range, self.ksizes)))

    def window(self, tap) -> tuple[slice, ...]:
        """The positions of the padded input that filter position ``tap`` meets, one per output
        position, as a slice per spatial dimension: k * dilation + j * stride for output position j,
        the ``out`` of them in [k * dilation, k * dilation + out * stride)."""
        return tuple(slice(k * d, k * d + o * s, s) for k, d, o, s in
                     zip(tap, self.dilations, self.out_sizes, self.strides))


#: Per spatial rank: the names of the spatial dimensions, and the layouts of the input and the filter.
_DIMS = {1: ("width",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_LAYOUTS = {1: ("NWC (batch, width, channels)", "WIO (width, in channels, out channels)"),
            2: ("NHWC (batch, height, width, channels)", "HWIO (height, width, in channels, out channels)"),
            3: ("NDHWC (batch, depth, height, width, channels)",
                "DHWIO (depth, height, width, in channels, out channels)")}


def _int(value, name: str, low: int, allowed: str) -> int:
    """``value`` as an int in [low, MAX_GEOMETRY], refusing floats, bools and other types."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not low <= value <= MAX_GEOMETRY:
        raise ConvArgumentError(f"{name} must be {allowed}, got {int(value)}")
    return int(value)


def spatial(value, name: str, rank: int = 2) -> tuple[int, ...]:
    """A stride or dilation of ``rank`` spatial dimensions: an int, ``rank`` of them, or TensorFlow's
    [1, ..., 1] form (batch and channel entries 1), each >= 1."""
    letters = ", ".join(name[0] + _DIMS[rank][i][0] for i in range(rank))
    several = "a pair of them" if rank == 2 else f"{rank} of them"
    allowed = f"a positive int, {several}, or [1, {letters}, 1]"
    if isinstance(value, (str, bytes)) or value is None:
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r}")
    if np.ndim(value) == 0:
        v = _int(value, name, 1, allowed)
        return (v,) * rank
    items = list(value) if np.ndim(value) == 1 else None
    if items is None or len(items) not in (rank, rank + 2):
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r}")
    if len(items) == rank + 2:  # TensorFlow's channels-last form: the batch and channel entries must be 1
        if any(_int(v, name, 1, allowed) != 1 for v in (items[0], items[-1])):
            form = ", ".join(d[0] for d in _DIMS[rank])
            raise ConvArgumentError(f"{name} in TensorFlow's [1, {form}, 1] form must be 1 for batch and "
                                    f"channels, got {list(value)!r}")
        items = items[1:-1]
    return tuple(_int(v, name, 1, allowed) for v in items)


def pair(value, name: str) -> tuple[int, int]:
    """A stride or dilation of a conv2d: an int, an (h, w) pair, or TensorFlow's [1, h, w, 1], each >= 1."""
    return spatial(value, name, 2)


def _padding(padding, rank: int = 2) -> str | tuple[int, ...]:
    """"SAME", "VALID", or explicit (before, after) pads of each spatial dimension, flat, from
    ((before, after), ...) or TensorFlow's [[0, 0], (before, after)..., [0, 0]]."""
    sides = {1: ["left, right"], 2: ["top, bottom", "left, right"],
             3: ["front, back", "top, bottom", "left, right"]}[rank]
    pairs = ", ".join(f"({p})" for p in sides)
    listed = ", ".join(f"[{p}]" for p in sides)
    allowed = f"'SAME', 'VALID', ({pairs}) or [[0, 0], {listed}, [0, 0]]"
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}")
        return padding.upper()
    try:
        rows = [list(p) for p in padding]
    except TypeError:
        raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}") from None
    if len(rows) not in (rank, rank + 2) or any(len(r) != 2 for r in rows):
        raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}")
    pads = [_int(v, "padding", 0, "non-negative ints") for r in rows for v in r]
    if len(rows) == rank + 2:
        if pads[0] or pads[1] or pads[-2] or pads[-1]:
            raise ConvArgumentError(f"padding of the batch and channel dimensions must be 0, got {padding!r}")
        pads = pads[2:-2]
    return tuple(pads)


def _shape(shape, name: str, what: str, rank: int = 2) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ConvArgumentError(f"{name} must be a {rank + 2}-tuple {what}, got {shape!r}") from None
    if len(dims) != rank + 2:
        raise ShapeError(f"{name} must be {rank + 2}-D {what}, got {dims}")
    return tuple(_int(d, f"{name}[{i}]", 0, "a non-negative int") for i, d in enumerate(dims))


def conv_nd_geometry(x_shape, w_shape, strides=1, padding="VALID", dilations=1, *, rank=2) -> ConvNdGeometry:
    """Check every geometry argument of a convolution of ``rank`` (1 to 3) spatial dimensions once, and
    compute its output size and padding.

    Follows TensorFlow's rules (``tf.nn.convolution``): "SAME" pads so that
    the output is ceil(input / stride), the odd element after (bottom, right,
    back). Input sizes and channels and the filter's sizes must be at least 1;
    a batch of 0, a filter of 0 output channels, or a filter that overhangs the
    padded input by less than a stride gives an empty output, as in TensorFlow.
    """
    if rank not in _DIMS:
        raise ConvArgumentError(f"rank must be 1, 2 or 3 spatial dimensions, got {rank!r}")
    x_layout, w_layout = _LAYOUTS[rank]
    x_dims = _shape(x_shape, "input shape", x_layout, rank)
    w_dims = _shape(w_shape, "filter shape", w_layout, rank)
    n, sizes, c = x_dims[0], x_dims[1:-1], x_dims[-1]
    ksizes, ci, o = w_dims[:-2], w_dims[-2], w_dims[-1]
    where = f"(input {x_dims}, filter {w_dims})"
    named = [(v, f"input {d}") for v, d in zip(sizes, _DIMS[rank])] + [(c, "input channels")]
    named += [(v, f"filter {d}") for v, d in zip(ksizes, _DIMS[rank])]
    for value, what in named:
        if value < 1:
            raise ShapeError(f"conv{rank}d: {what} must be >= 1, got {value} {where}")
    if ci != c:
        raise ShapeError(f"conv{rank}d: input has {c} channels, filter expects {ci} {where}")
    strides, dilations = spatial(strides, "strides", rank), spatial(dilations, "dilations", rank)
    spans = [(k - 1) * d + 1 for k, d in zip(ksizes, dilations)]
    pad = _padding(padding, rank)
    if pad == "VALID":
        pads = ((0, 0),) * rank
    elif pad == "SAME":
        totals = [max((-(-size // s) - 1) * s + span - size, 0) for size, s, span in zip(sizes, strides, spans)]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple(zip(pad[0::2], pad[1::2]))
    padded = [size + before + after for size, (before, after) in zip(sizes, pads)]
    outs = tuple((p - span) // s + 1 for p, span, s in zip(padded, spans, strides))
    if min(outs) < 0:  # TensorFlow gives an empty output when the filter just fits
        x = "x".join
        raise ShapeError(f"conv{rank}d: a {x(map(str, ksizes))} filter (dilation {x(map(str, dilations))}) does not "
                         f"fit a padded {x(map(str, padded))} input")
    return ConvNdGeometry(n, tuple(sizes), c, tuple(ksizes), o, strides, dilations, pads, outs)


def conv_geometry(x_shape, w_shape, strides=1, padding="VALID", dilations=1) -> ConvGeometry:
    """Check every geometry argument of a conv2d once and compute its output size and padding
    (:func:`conv_nd_geometry` of rank 2, in the C engine's form).

    Follows TensorFlow's rules (``tf.nn.conv2d``): "SAME" pads so that the
    output is ceil(input / stride), the odd pixel at the bottom and right.
    Input height, width and channels and the filter's height and width must
    be at least 1; a batch of 0, a filter of 0 output channels, or a filter
    that overhangs the padded input by less than a stride gives an empty
    output, as in TensorFlow.
    """
    g = conv_nd_geometry(x_shape, w_shape, strides, padding, dilations, rank=2)
    (top, bottom), (left, right) = g.pads
    return ConvGeometry(g.n, *g.sizes, g.c, *g.ksizes, g.o, g.strides, g.dilations, (top, bottom, left, right),
                        *g.out_sizes)


def _im2col(x, g: ConvGeometry) -> np.ndarray:
    """Patches (N*OH*OW, KH*KW*C), rows in NHW order, columns in (kh, kw, c) order (HWIO)."""
    return engine.im2col(x, g)


def _col2im(cols, g: ConvGeometry) -> np.ndarray:
    """Adjoint of _im2col: add each patch column back to its input position (kh, kw ascending)."""
    return engine.col2im(cols, g)


def _on_gpu(pass_, g: ConvGeometry, lut, x=None, w=None, dy=None, *, bits=None, params=None, rounding="truncate",
            mode="ieee", backend="cuda", method="auto", threads=None) -> np.ndarray:
    """A pass with backend="cuda": the TensorFlow GPU op's whole sequence (im2col, GEMM and col2im on
    the device, amsim.gemm.cuda.conv2d_pass), not only its GEMM. ``method`` and ``threads`` are the
    CPU's and are checked, then ignored, as by :func:`matmul`."""
    from . import check_options, cuda, resolve

    check_options(rounding, mode, backend, method, threads)
    mult = resolve(lut, bits, params=params)
    mult.check(mode)
    return cuda.conv2d_pass(pass_, g, g.o, mult, x=x, w=w, dy=dy, rounding=rounding, mode=mode)


def _check_dy(dy, g: ConvGeometry | ConvNdGeometry, fn: str):
    if dy.shape != g.out_shape:
        raise ShapeError(f"{fn}: dy has shape {dy.shape}, expected {g.out_shape}")


def conv2d(x, w, lut, strides=1, padding="VALID", dilations=1, **kwargs) -> np.ndarray:
    """Approximate 2-D convolution (cross-correlation, as TensorFlow's conv2d).

    Parameters
    ----------
    x : ndarray of float32, (N, H, W, C)
    w : ndarray of float32, (KH, KW, C, O)
    lut : see :func:`amsim.gemm.resolve`
    strides, dilations : int, (int, int) or TensorFlow's [1, h, w, 1]; each >= 1
    padding : "SAME", "VALID", ((top, bottom), (left, right)) or TensorFlow's explicit
        [[0, 0], [top, bottom], [left, right], [0, 0]]
    **kwargs
        ``bits``, ``params``, ``rounding``, ``mode``, ``backend``, ``method``,
        ``threads`` as for :func:`amsim.gemm.matmul`.

    Returns
    -------
    ndarray of float32, (N, OH, OW, O): the GEMM of the patch matrix (left
    operand, LUT rows) with the reshaped filter (right operand, LUT columns).

    Raises
    ------
    ConvArgumentError, ShapeError
        A geometry argument of the wrong type or range, or shapes that do not fit
        (:func:`conv_geometry`).
    """
    x, w = _check_operand("x", x), _check_operand("w", w)
    g = conv_geometry(x.shape, w.shape, strides, padding, dilations)
    if kwargs.get("backend") == "cuda":
        return _on_gpu("forward", g, lut, x=x, w=w, **kwargs)
    cols = _im2col(x, g)
    y = matmul(cols, w.reshape(g.kh * g.kw * g.c, g.o), lut, **kwargs)
    return y.reshape(g.out_shape)


def conv2d_backprop_input(input_shape, w, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its input.

    The patch gradients are the GEMM ``dy (N*OH*OW, O) (x) w^T (O, KH*KW*C)``:
    the incoming gradient is the left operand (LUT rows) and the filter the
    right one, as in the forward pass. Each input position then sums its
    patch gradients in (kh, kw) order.
    """
    w, dy = _check_operand("w", w), _check_operand("dy", dy)
    g = conv_geometry(input_shape, w.shape, strides, padding, dilations)
    _check_dy(dy, g, "conv2d_backprop_input")
    if kwargs.get("backend") == "cuda":
        return _on_gpu("backprop_input", g, lut, w=w, dy=dy, **kwargs)
    rows, k = g.n * g.oh * g.ow, g.kh * g.kw * g.c
    cols = matmul(dy.reshape(rows, g.o), w.reshape(k, g.o), lut, transpose_b=True, **kwargs)
    return _col2im(cols, g)


def conv2d_backprop_filter(x, filter_shape, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its filter.

    The GEMM ``patches^T (KH*KW*C, N*OH*OW) (x) dy (N*OH*OW, O)``: the input
    patches are the left operand (LUT rows), the incoming gradient the right.
    """
    x, dy = _check_operand("x", x), _check_operand("dy", dy)
    g = conv_geometry(x.shape, filter_shape, strides, padding, dilations)
    _check_dy(dy, g, "conv2d_backprop_filter")
    if kwargs.get("backend") == "cuda":
        return _on_gpu("backprop_filter", g, lut, x=x, dy=dy, **kwargs)
    cols = _im2col(x, g)
    dw = matmul(cols, dy.reshape(g.n * g.oh * g.ow, g.o), lut, transpose_a=True, **kwargs)
    return dw.reshape(g.kh, g.kw, g.c, g.o)


# ----------------------------------------------------------------------------------------------
# conv3d: numpy patches, the engine's GEMMs
# ----------------------------------------------------------------------------------------------


def _rows(g: ConvNdGeometry) -> int:
    """Rows of the patch matrix: one per output position."""
    return g.n * math.prod(g.out_sizes)


def _depth(g: ConvNdGeometry) -> int:
    """Columns of the patch matrix: one per filter position and channel."""
    return math.prod(g.ksizes) * g.c


def _patches(x, g: ConvNdGeometry) -> np.ndarray:
    """Patches (N * prod(out_sizes), prod(ksizes) * C) of a channels-last input: rows in (n, *out)
    order, columns in (*k, c) order, zeros in the padding."""
    padded = np.pad(x, ((0, 0), *g.pads, (0, 0)))
    taps = [padded[(slice(None), *g.window(tap), slice(None))] for tap in g.taps]
    return np.stack(taps, axis=-2).reshape(_rows(g), _depth(g))


def _unpatch(cols, g: ConvNdGeometry) -> np.ndarray:
    """Adjoint of :func:`_patches`: each input position sums, in float32 from +0, the patch columns
    that cover it in increasing filter position (row-major)."""
    blocks = cols.reshape(g.n, *g.out_sizes, len(g.taps), g.c)
    padded = np.zeros((g.n, *(s + b + a for s, (b, a) in zip(g.sizes, g.pads)), g.c), np.float32)
    for t, tap in enumerate(g.taps):
        padded[(slice(None), *g.window(tap), slice(None))] += blocks[..., t, :]
    return padded[(slice(None), *(slice(b, b + s) for s, (b, _) in zip(g.sizes, g.pads)), slice(None))]


def conv3d(x, w, lut, strides=1, padding="VALID", dilations=1, **kwargs) -> np.ndarray:
    """Approximate 3-D convolution (cross-correlation, as TensorFlow's conv3d).

    Parameters
    ----------
    x : ndarray of float32, (N, D, H, W, C)
    w : ndarray of float32, (KD, KH, KW, C, O)
    lut : see :func:`amsim.gemm.resolve`
    strides, dilations : int, (int, int, int) or TensorFlow's [1, d, h, w, 1]; each >= 1
    padding : "SAME", "VALID", ((front, back), (top, bottom), (left, right)) or TensorFlow's
        explicit [[0, 0], [front, back], [top, bottom], [left, right], [0, 0]]
    **kwargs
        ``bits``, ``params``, ``rounding``, ``mode``, ``backend``, ``method``,
        ``threads`` as for :func:`amsim.gemm.matmul` (the GEMM's).

    Returns
    -------
    ndarray of float32, (N, OD, OH, OW, O): the GEMM of the patch matrix (left
    operand, LUT rows; columns in (kd, kh, kw, c) order) with the reshaped filter
    (right operand, LUT columns).
    """
    x, w = _check_operand("x", x), _check_operand("w", w)
    g = conv_nd_geometry(x.shape, w.shape, strides, padding, dilations, rank=3)
    y = matmul(_patches(x, g), w.reshape(_depth(g), g.o), lut, **kwargs)
    return y.reshape(g.out_shape)


def conv3d_backprop_input(input_shape, w, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv3d` with respect to its input.

    The patch gradients are the GEMM ``dy (N*OD*OH*OW, O) (x) w^T (O, KD*KH*KW*C)``:
    the incoming gradient is the left operand (LUT rows) and the filter the
    right one. Each input position then sums its patch gradients in (kd, kh, kw)
    order, from +0.
    """
    w, dy = _check_operand("w", w), _check_operand("dy", dy)
    g = conv_nd_geometry(input_shape, w.shape, strides, padding, dilations, rank=3)
    _check_dy(dy, g, "conv3d_backprop_input")
    cols = matmul(dy.reshape(_rows(g), g.o), w.reshape(_depth(g), g.o), lut, transpose_b=True, **kwargs)
    return _unpatch(cols, g)


def conv3d_backprop_filter(x, filter_shape, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv3d` with respect to its filter.

    The GEMM ``patches^T (KD*KH*KW*C, N*OD*OH*OW) (x) dy (N*OD*OH*OW, O)``: the
    input patches are the left operand (LUT rows), the incoming gradient the right.
    """
    x, dy = _check_operand("x", x), _check_operand("dy", dy)
    g = conv_nd_geometry(x.shape, filter_shape, strides, padding, dilations, rank=3)
    _check_dy(dy, g, "conv3d_backprop_filter")
    dw = matmul(_patches(x, g), dy.reshape(_rows(g), g.o), lut, transpose_a=True, **kwargs)
    return dw.reshape(*g.ksizes, g.c, g.o)
