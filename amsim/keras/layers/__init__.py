"""The approximate Keras layers (one module each) and the model converters."""

from .attention import AMMultiHeadAttention, am_einsum
from .base import LayerConfigError, LayerDTypeError, LayerXlaError
from .conv import AMConv2D, AMDepthwiseConv2D
from .convert import approximate, precise
from .dense import AMDense

__all__ = ["AMDense", "AMConv2D", "AMDepthwiseConv2D", "AMMultiHeadAttention", "am_einsum",
           "approximate", "precise", "LayerConfigError", "LayerDTypeError", "LayerXlaError"]
