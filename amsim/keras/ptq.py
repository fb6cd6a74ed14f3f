"""Post-training quantization: a trained float model's copy on an 8-bit integer circuit, calibrated, no training.

``quantize(model, calibration_data, "mul8u_x")`` is :func:`amsim.keras.approximate` with
``quantize=`` (every multiplying layer with a quantized version becomes it, the others are named in
an ``ExactLayersWarning``) followed by :func:`calibrate`: the calibration data run through the copy
once, each quantized layer's input range set to the extremes it saw (docs/quantized.md,
"Post-training quantization").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import AmsimError, check_integer
from ..specs import SpecError, parse_spec
from .layers import approximate
from .layers.base import LayerConfigError
from .quantization import calibrating, scheme_of

__all__ = ["quantize", "calibrate", "CalibrationError"]


class CalibrationError(AmsimError, ValueError):
    """Calibration data that cannot go through the model: wrong type, shape or no examples."""


def _batches(model, data, batch_size):
    """The calibration inputs, batch by batch, checked against the model's input shape."""
    if isinstance(data, tf.data.Dataset):
        for element in data:
            yield _checked(model, element[0] if isinstance(element, (tuple, list)) else element, batched=True)
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and not np.isscalar(data[0]):
        data = data[0]  # (x, y): the inputs
    x = _checked(model, data, batched=False)
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


def _checked(model, x, batched):
    try:
        x = np.asarray(x) if not tf.is_tensor(x) else x
    except (ValueError, TypeError) as exc:
        raise CalibrationError(f"calibration data must be an array of inputs: {exc}") from None
    if getattr(x, "dtype", None) is None or not (x.dtype.kind in "fiub" if isinstance(x, np.ndarray)
                                                  else (x.dtype.is_floating or x.dtype.is_integer)):
        raise CalibrationError(f"calibration data must be numbers, not {getattr(x, 'dtype', type(x).__name__)}")
    expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    shape = tuple(x.shape)
    if expected is not None and (len(shape) != len(expected) + 1 or
                                 any(e is not None and e != s for e, s in zip(expected, shape[1:]))):
        what = "a batch" if batched else "the calibration data"
        raise CalibrationError(f"{what} has shape {shape}; the model takes inputs of shape "
                               f"(batch, {', '.join('?' if e is None else str(e) for e in expected)})")
    if not shape[0]:
        raise CalibrationError("the calibration data holds no example")
    return x


def calibrate(model, data, *, batch_size: int = 64) -> int:
    """Set every quantized layer's input range to the extremes the calibration data reach there.

    Args:
        model: a model holding quantized AM layers (``quantize="uint8"``/``"int8"``).
        data: the calibration inputs: an array ``(examples, ...)``, an ``(x, y)`` pair, or a
            ``tf.data.Dataset`` of batches (of inputs or ``(inputs, targets)``).
        batch_size: examples per call, for arrays.

    Returns:
        The number of examples seen.

    Raises:
        CalibrationError: data of the wrong shape or type, or none; a model with no quantized layer.
    """
    check_integer(batch_size, "batch_size", 1)
    seen = 0
    with calibrating(model) as layers:
        if not layers:
            raise CalibrationError("the model has no quantized layer to calibrate")
        for batch in _batches(model, data, batch_size):
            model(batch, training=False)
            seen += int(batch.shape[0])
    if not seen:
        raise CalibrationError("the calibration data holds no example")
    return seen


def quantize(model, calibration_data, multiplier, *, scheme=None, batch_size: int = 64, **kwargs):
    """A copy of a trained ``model`` computing 8-bit quantized on an integer circuit, calibrated.

    Args:
        model: a trained Sequential or functional ``keras.Model`` (float, or holding AM layers).
        calibration_data: inputs whose ranges the quantization is set from (:func:`calibrate`): a
            few hundred training examples are typical.
        multiplier: the integer circuit: a C model's name or ``.c`` file, an integer LUT file or
            table, or its text with the scheme, ``"uint8:mul8u_x"``; or a per-layer assignment, as
            :func:`amsim.keras.approximate` takes.
        scheme: ``"uint8"`` or ``"int8"``; None takes it from the multiplier's text, else uint8.
        batch_size: calibration examples per call.
        **kwargs: ``layers``, ``skip``, ``strict``, ``params`` as :func:`amsim.keras.approximate`.

    Returns:
        The calibrated, uncompiled copy: compile it and evaluate.
    """
    if scheme is None and isinstance(multiplier, str):
        try:
            scheme = parse_spec(multiplier).quantize
        except SpecError:
            scheme = None
    try:
        scheme = scheme_of(scheme or "uint8").name
    except ValueError as exc:
        raise LayerConfigError(f"quantize(): {exc}") from None
    copy = approximate(model, multiplier, quantize=scheme, **kwargs)
    calibrate(copy, calibration_data, batch_size=batch_size)
    return copy
