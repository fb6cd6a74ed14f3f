"""conv2d and its gradients: im2col GEMMs with the approximate product (TensorFlow's geometry)."""

from __future__ import annotations

import numpy as np

from typing import NamedTuple

from ..errors import AmsimError
from . import ShapeError, _check_operand, engine, matmul

__all__ = ["conv2d", "conv2d_backprop_input", "conv2d_backprop_filter", "conv_geometry", "ConvGeometry",
           "ConvArgumentError", "pair", "MAX_GEOMETRY"]


class ConvArgumentError(AmsimError, ValueError):
    """A conv2d geometry argument (strides, dilations, padding, a size) of the wrong type or range."""


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


def _int(value, name: str, low: int, allowed: str) -> int:
    """``value`` as an int in [low, MAX_GEOMETRY], refusing floats, bools and other types."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if not low <= value <= MAX_GEOMETRY:
        raise ConvArgumentError(f"{name} must be {allowed}, got {int(value)}")
    return int(value)


def pair(value, name: str) -> tuple[int, int]:
    """A stride or dilation: an int, an (h, w) pair, or TensorFlow's [1, h, w, 1], each >= 1."""
    allowed = f"a positive int, a pair of them, or [1, {name[0]}h, {name[0]}w, 1]"
    if isinstance(value, (str, bytes)) or value is None:
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r}")
    if np.ndim(value) == 0:
        v = _int(value, name, 1, allowed)
        return v, v
    items = list(value) if np.ndim(value) == 1 else None
    if items is None or len(items) not in (2, 4):
        raise ConvArgumentError(f"{name} must be {allowed}, got {value!r}")
    if len(items) == 4:  # TensorFlow's NHWC form: the batch and channel entries must be 1
        if any(_int(v, name, 1, allowed) != 1 for v in (items[0], items[3])):
            raise ConvArgumentError(f"{name} in TensorFlow's [1, h, w, 1] form must be 1 for batch and channels, "
                                    f"got {list(value)!r}")
        items = items[1:3]
    return _int(items[0], name, 1, allowed), _int(items[1], name, 1, allowed)


def _padding(padding) -> str | tuple[int, int, int, int]:
    """"SAME", "VALID", or explicit (top, bottom, left, right) from ((t, b), (l, r)) or TensorFlow's
    [[0, 0], [t, b], [l, r], [0, 0]]."""
    allowed = "'SAME', 'VALID', ((top, bottom), (left, right)) or [[0, 0], [top, bottom], [left, right], [0, 0]]"
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}")
        return padding.upper()
    try:
        rows = [list(p) for p in padding]
    except TypeError:
        raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}") from None
    if len(rows) not in (2, 4) or any(len(r) != 2 for r in rows):
        raise ConvArgumentError(f"padding must be {allowed}, got {padding!r}")
    pads = [_int(v, "padding", 0, "non-negative ints") for r in rows for v in r]
    if len(rows) == 4:
        if pads[0] or pads[1] or pads[6] or pads[7]:
            raise ConvArgumentError(f"padding of the batch and channel dimensions must be 0, got {padding!r}")
        pads = pads[2:6]
    return tuple(pads)


def _shape(shape, name: str, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ConvArgumentError(f"{name} must be a 4-tuple {what}, got {shape!r}") from None
    if len(dims) != 4:
        raise ShapeError(f"{name} must be 4-D {what}, got {dims}")
    return tuple(_int(d, f"{name}[{i}]", 0, "a non-negative int") for i, d in enumerate(dims))


def conv_geometry(x_shape, w_shape, strides=1, padding="VALID", dilations=1) -> ConvGeometry:
    """Check every geometry argument of a conv2d once and compute its output size and padding.

    Follows TensorFlow's rules (``tf.nn.conv2d``): "SAME" pads so that the
    output is ceil(input / stride), the odd pixel at the bottom and right.
    Input height, width and channels and the filter's height and width must
    be at least 1; a batch of 0, a filter of 0 output channels, or a filter
    that overhangs the padded input by less than a stride gives an empty
    output, as in TensorFlow.
    """
    n, h, w, c = _shape(x_shape, "input shape", "NHWC (batch, height, width, channels)")
    kh, kw, ci, o = _shape(w_shape, "filter shape", "HWIO (height, width, in channels, out channels)")
    for value, name in ((h, "input height"), (w, "input width"), (c, "input channels"),
                        (kh, "filter height"), (kw, "filter width")):
        if value < 1:
            raise ShapeError(f"conv2d: {name} must be >= 1, got {value} (input {(n, h, w, c)}, filter {(kh, kw, ci, o)})")
    if ci != c:
        raise ShapeError(f"conv2d: input has {c} channels, filter expects {ci} "
                         f"(input {(n, h, w, c)}, filter {(kh, kw, ci, o)})")
    (sh, sw), (dh, dw) = pair(strides, "strides"), pair(dilations, "dilations")
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    pad = _padding(padding)
    if pad == "VALID":
        pads = (0, 0, 0, 0)
    elif pad == "SAME":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + ekh - h, 0)
        pw = max((ow - 1) * sw + ekw - w, 0)
        pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    else:
        pads = pad
    oh = (h + pads[0] + pads[1] - ekh) // sh + 1
    ow = (w + pads[2] + pads[3] - ekw) // sw + 1
    if oh < 0 or ow < 0:  # TensorFlow gives an empty output when the filter just fits
        raise ShapeError(f"conv2d: a {kh}x{kw} filter (dilation {dh}x{dw}) does not fit a padded "
                         f"{h + pads[0] + pads[1]}x{w + pads[2] + pads[3]} input")
    return ConvGeometry(n, h, w, c, kh, kw, o, (sh, sw), (dh, dw), tuple(pads), oh, ow)


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


def _check_dy(dy, g: ConvGeometry, fn: str):
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
