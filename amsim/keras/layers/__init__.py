"""The approximate Keras layers (one module each) and the model converters."""

from .attention import AMMultiHeadAttention
from .base import LayerConfigError, LayerDTypeError, LayerXlaError
from .conv import AMConv1D, AMConv2D, AMConv3D, AMDepthwiseConv1D, AMDepthwiseConv2D
from .conv_transpose import AMConv1DTranspose, AMConv2DTranspose, AMConv3DTranspose
from .convert import ExactLayersWarning, approximate, precise
from .dense import AMDense
from .einsum_dense import AMEinsumDense
from .recurrent import AMGRU, AMLSTM, AMGRUCell, AMLSTMCell, AMSimpleRNN, AMSimpleRNNCell
from .separable import AMSeparableConv1D, AMSeparableConv2D

__all__ = ["AMDense", "AMConv1D", "AMConv2D", "AMConv3D", "AMDepthwiseConv1D", "AMDepthwiseConv2D",
           "AMConv1DTranspose", "AMConv2DTranspose", "AMConv3DTranspose", "AMSeparableConv1D", "AMSeparableConv2D",
           "AMMultiHeadAttention", "AMEinsumDense", "AMSimpleRNN", "AMLSTM", "AMGRU", "AMSimpleRNNCell", "AMLSTMCell",
           "AMGRUCell", "approximate", "precise", "ExactLayersWarning", "LayerConfigError", "LayerDTypeError",
           "LayerXlaError"]
