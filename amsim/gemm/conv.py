"""conv2d and its gradients: im2col GEMMs with the approximate product (TensorFlow's geometry)."""

from __future__ import annotations

import numpy as np

from . import ShapeError, _check_operand, matmul



def pair(value, name):
    if np.ndim(value) == 0:
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) == 4:  # TensorFlow's [1, sh, sw, 1]
        value = value[1:3]
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be an int or a pair of positive ints, got {value}")
    return value


def conv_geometry(in_hw, k_hw, strides, padding, dilations):
    """Output size and (top, bottom, left, right) padding, following TensorFlow's rules."""
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, k_hw, strides, dilations
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if isinstance(padding, str):
        p = padding.upper()
        if p == "VALID":
            pads = (0, 0, 0, 0)
        elif p == "SAME":
            oh, ow = -(-h // sh), -(-w // sw)
            ph = max((oh - 1) * sh + ekh - h, 0)
            pw = max((ow - 1) * sw + ekw - w, 0)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
        else:
            raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    else:
        pad = [tuple(int(x) for x in p) for p in padding]
        if len(pad) == 4:  # TensorFlow's explicit NHWC form [[0,0],[t,b],[l,r],[0,0]]
            pad = pad[1:3]
        if len(pad) != 2 or any(len(p) != 2 or min(p) < 0 for p in pad):
            raise ValueError(f"explicit padding must be ((top, bottom), (left, right)), got {padding!r}")
        pads = (*pad[0], *pad[1])
    oh = (h + pads[0] + pads[1] - ekh) // sh + 1
    ow = (w + pads[2] + pads[3] - ekw) // sw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d: a {kh}x{kw} filter (dilation {dh}x{dw}) does not fit a padded {h}x{w} input")
    return (oh, ow), pads


def _im2col(x, k_hw, strides, dilations, pads, out_hw):
    """Patches (N*OH*OW, KH*KW*C), rows in NHW order, columns in (kh, kw, c) order (HWIO)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k_hw, strides, dilations, out_hw
    xp = np.pad(x, ((0, 0), (pads[0], pads[1]), (pads[2], pads[3]), (0, 0)))
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)
    return view.reshape(n * oh * ow, kh * kw * c)


def _col2im(cols, x_shape, k_hw, strides, dilations, pads, out_hw):
    """Adjoint of _im2col: add each patch column back to its input position (kh, kw ascending)."""
    n, h, w, c = x_shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k_hw, strides, dilations, out_hw
    xp = np.zeros((n, h + pads[0] + pads[1], w + pads[2] + pads[3], c), np.float32)
    patches = cols.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :] += patches[:, :, :, i, j, :]
    return xp[:, pads[0]: pads[0] + h, pads[2]: pads[2] + w, :]


def _conv_args(x_shape, w_shape, strides, padding, dilations):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(f"conv2d needs NHWC input and HWIO filter, got {tuple(x_shape)} and {tuple(w_shape)}")
    if x_shape[3] != w_shape[2]:
        raise ShapeError(f"conv2d: input has {x_shape[3]} channels, filter expects {w_shape[2]} "
                         f"(input {tuple(x_shape)}, filter {tuple(w_shape)})")
    strides, dilations = pair(strides, "strides"), pair(dilations, "dilations")
    out_hw, pads = conv_geometry(x_shape[1:3], w_shape[:2], strides, padding, dilations)
    return strides, dilations, out_hw, pads


def conv2d(x, w, lut, strides=1, padding="VALID", dilations=1, **kwargs) -> np.ndarray:
    """Approximate 2-D convolution (cross-correlation, as TensorFlow's conv2d).

    Parameters
    ----------
    x : ndarray of float32, (N, H, W, C)
    w : ndarray of float32, (KH, KW, C, O)
    lut : see :func:`resolve`
    strides, dilations : int or (int, int)
    padding : "SAME", "VALID" or ((top, bottom), (left, right))
    **kwargs
        ``bits``, ``params``, ``rounding``, ``mode``, ``backend``, ``method``,
        ``threads`` as for :func:`matmul`.

    Returns
    -------
    ndarray of float32, (N, OH, OW, O): the GEMM of the patch matrix (left
    operand, LUT rows) with the reshaped filter (right operand, LUT columns).
    """
    x, w = _check_operand("x", x), _check_operand("w", w)
    strides, dilations, out_hw, pads = _conv_args(x.shape, w.shape, strides, padding, dilations)
    cols = _im2col(x, w.shape[:2], strides, dilations, pads, out_hw)
    y = matmul(cols, w.reshape(-1, w.shape[3]), lut, **kwargs)
    return y.reshape(x.shape[0], *out_hw, w.shape[3])


def conv2d_backprop_input(input_shape, w, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its input.

    The patch gradients are the GEMM ``dy (N*OH*OW, O) (x) w^T (O, KH*KW*C)``:
    the incoming gradient is the left operand (LUT rows) and the filter the
    right one, as in the forward pass. Each input position then sums its
    patch gradients in (kh, kw) order.
    """
    w, dy = _check_operand("w", w), _check_operand("dy", dy)
    input_shape = tuple(int(s) for s in input_shape)
    strides, dilations, out_hw, pads = _conv_args(input_shape, w.shape, strides, padding, dilations)
    expected = (input_shape[0], *out_hw, w.shape[3])
    if dy.shape != expected:
        raise ShapeError(f"conv2d_backprop_input: dy has shape {dy.shape}, expected {expected}")
    cols = matmul(dy.reshape(-1, w.shape[3]), w.reshape(-1, w.shape[3]), lut, transpose_b=True, **kwargs)
    return _col2im(cols, input_shape, w.shape[:2], strides, dilations, pads, out_hw)


def conv2d_backprop_filter(x, filter_shape, dy, lut, strides=1, padding="VALID", dilations=1, **kwargs):
    """Gradient of :func:`conv2d` with respect to its filter.

    The GEMM ``patches^T (KH*KW*C, N*OH*OW) (x) dy (N*OH*OW, O)``: the input
    patches are the left operand (LUT rows), the incoming gradient the right.
    """
    x, dy = _check_operand("x", x), _check_operand("dy", dy)
    filter_shape = tuple(int(s) for s in filter_shape)
    strides, dilations, out_hw, pads = _conv_args(x.shape, filter_shape, strides, padding, dilations)
    expected = (x.shape[0], *out_hw, filter_shape[3])
    if dy.shape != expected:
        raise ShapeError(f"conv2d_backprop_filter: dy has shape {dy.shape}, expected {expected}")
    cols = _im2col(x, filter_shape[:2], strides, dilations, pads, out_hw)
    dw = matmul(cols, dy.reshape(-1, filter_shape[3]), lut, transpose_a=True, **kwargs)
    return dw.reshape(filter_shape)
