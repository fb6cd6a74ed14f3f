"""Keras 3 layers whose products use an approximate multiplier, on amsim's TensorFlow ops.

``AMDense``, ``AMConv2D``, ``AMDepthwiseConv2D`` and ``AMMultiHeadAttention``
are the Keras layers they replace with two things added: every product goes
through the LUT multiplier (forward and, by default, backward), and the
arguments ``lut``, ``bits``, ``params``, ``rounding``, ``mode`` and
``gradient``. ``approximate(model, lut, bits=...)`` swaps a whole model's
layers, weights kept; ``precise(model)`` swaps them back. ``am_matmul`` is
the op itself. ApproxTrain's layer names live in :mod:`amsim.keras.approxtrain`.

Needs TensorFlow (``pip install amsim[tf]``) with Keras 3 on its TensorFlow
backend. See docs/keras.md.
"""

from __future__ import annotations

try:
    import keras
    import tensorflow  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    from ..errors import AmsimError

    raise AmsimError(f"amsim.keras needs TensorFlow and Keras 3 ({exc.name} is missing): "
                     "pip install 'amsim[tf]'") from None

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment
    from ..errors import AmsimError

    raise AmsimError(f"amsim.keras runs on TensorFlow ops: Keras' backend is {keras.backend.backend()!r}; "
                     "set KERAS_BACKEND=tensorflow")

from .layers import (AMConv2D, AMDense, AMDepthwiseConv2D, AMMultiHeadAttention, LayerConfigError,  # noqa: E402
                     LayerDTypeError, LayerXlaError, approximate, precise)
from .ops import am_conv2d, am_depthwise_conv2d, am_matmul  # noqa: E402

# Registers ApproxTrain's layer names with Keras too, so that importing amsim.keras is all a
# process needs before keras.models.load_model reads a model holding any of the layers.
from . import approxtrain  # noqa: E402,F401

__all__ = ["AMDense", "AMConv2D", "AMDepthwiseConv2D", "AMMultiHeadAttention", "am_matmul", "am_conv2d",
           "am_depthwise_conv2d", "approximate", "precise", "LayerConfigError", "LayerDTypeError",
           "LayerXlaError"]
