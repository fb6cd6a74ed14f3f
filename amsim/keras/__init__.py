"""Keras 3 layers whose products use an approximate multiplier, on amsim's TensorFlow ops.

``AMDense``, the convolutions (``AMConv1D``/``2D``/``3D``, their transposes,
``AMDepthwiseConv1D``/``2D``, ``AMSeparableConv1D``/``2D``),
``AMMultiHeadAttention``, ``AMEinsumDense``, ``AMSimpleRNN``, ``AMLSTM``,
``AMGRU`` (and their cells) are the Keras layers they replace with two
things added: every product goes through the LUT multiplier (forward and, by default, backward), and the
arguments ``lut``, ``bits``, ``params``, ``rounding``, ``mode`` and
``gradient``. ``approximate(model, lut, bits=...)`` swaps a whole model's
layers, weights kept (naming in one ``ExactLayersWarning`` any multiplying layer it
leaves exact); ``precise(model)`` swaps them back; ``coverage(model)`` counts
which products are approximate, layer by layer. ``am_matmul`` and
``am_einsum`` are the ops. ApproxTrain's layer names live in :mod:`amsim.keras.approxtrain`.

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

from .layers import (AMGRU, AMLSTM, AMConv2D, AMDense, AMDepthwiseConv2D, AMEinsumDense, AMGRUCell,  # noqa: E402
                     AMLSTMCell, AMMultiHeadAttention, AMSimpleRNN, AMSimpleRNNCell, LayerConfigError,
                     LayerDTypeError, LayerXlaError, approximate, precise)
from .layers import (AMConv1D, AMConv1DTranspose, AMConv2DTranspose, AMConv3D, AMConv3DTranspose,  # noqa: E402
                     AMDepthwiseConv1D, AMSeparableConv1D, AMSeparableConv2D)
from .ops import am_conv2d, am_depthwise_conv2d, am_einsum, am_matmul  # noqa: E402
from .ops import am_conv2d_transpose, am_conv3d, am_conv3d_transpose  # noqa: E402

from .layers import ExactLayersWarning  # noqa: E402
from .int_ops import (am_clipped_gradient, am_dequantize, am_int_conv2d, am_int_dequantize,  # noqa: E402
                      am_int_matmul, am_minmax, am_quantize)
from .ptq import CalibrationError, calibrate, quantize  # noqa: E402
from .quantization import AccumulatorOverflowError  # noqa: E402
from ..gemm.circuit import CircuitError  # noqa: E402
from .coverage import Coverage, CoverageError, ElementwiseCount, LayerCoverage, coverage  # noqa: E402

# Registers ApproxTrain's layer names with Keras too, so that importing amsim.keras is all a
# process needs before keras.models.load_model reads a model holding any of the layers.
from . import approxtrain  # noqa: E402,F401

__all__ = ["AMDense", "AMConv1D", "AMConv2D", "AMConv3D", "AMDepthwiseConv1D", "AMDepthwiseConv2D",
           "AMConv1DTranspose", "AMConv2DTranspose", "AMConv3DTranspose", "AMSeparableConv1D", "AMSeparableConv2D",
           "AMMultiHeadAttention", "AMEinsumDense", "AMSimpleRNN",
           "AMLSTM", "AMGRU", "AMSimpleRNNCell", "AMLSTMCell", "AMGRUCell", "am_matmul", "am_einsum", "am_conv2d",
           "am_depthwise_conv2d", "am_conv2d_transpose", "am_conv3d", "am_conv3d_transpose", "approximate",
           "precise", "ExactLayersWarning", "coverage", "Coverage", "LayerCoverage", "ElementwiseCount",
           "CoverageError", "LayerConfigError", "LayerDTypeError", "LayerXlaError", "am_int_matmul", "am_int_conv2d",
           "am_minmax", "am_quantize", "am_dequantize", "am_clipped_gradient", "am_int_dequantize", "quantize",
           "calibrate", "CalibrationError", "AccumulatorOverflowError", "CircuitError"]
