"""AMConv1DTranspose, AMConv2DTranspose and AMConv3DTranspose: Keras' transposed convolutions with every
product approximate.

A transposed convolution is the input gradient of the convolution it
transposes: each input position's products with the kernel (the GEMM
``x (x) W^T``, the layer input the LUT's row operand and the kernel its column
operand) summed into the output positions they reach (col2im).
:func:`amsim.keras.ops.am_conv2d_transpose` computes it with the engine's
conv ops, for 1-D layers on a height-1 axis; :func:`~amsim.keras.ops.am_conv3d_transpose`
through ``am_matmul`` and :mod:`amsim.keras.patches`. The output shape,
``output_padding`` included, is Keras' own (the layer's
``compute_output_shape``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..ops import am_conv2d_transpose, am_conv3d_transpose
from .base import replaces
from .conv_base import ConvBase


class _AMConvTranspose(ConvBase):
    """The transposed convolution of the layer's rank, to Keras' output shape."""

    def call(self, inputs):
        x, w = self._channels_last(inputs), self._op_kernel(self.kernel)
        op = am_conv3d_transpose if self.rank == 3 else am_conv2d_transpose
        y = op(x, w, self._op_output_shape(inputs), self.multiplier, **self._op_geometry(), **self._op_kwargs())
        return self._finish(self._from_channels_last(y), self.bias)

    def _op_output_shape(self, inputs) -> list:
        """Keras' output shape (sizes unknown until run time as tensors) in the op's channels-last order."""
        shape = [d if d is not None else tf.shape(inputs)[i] for i, d in enumerate(inputs.shape)]
        shape[0] = None  # the op's: the batch of its input
        out = list(self.compute_output_shape(shape))
        if self.data_format == "channels_first":
            out = [out[0], *out[2:], out[1]]
        return [out[0], 1, *out[1:]] if self.rank == 1 else out

    def get_config(self):
        return {**super().get_config(), **self._approximate_config()}


@replaces(keras.layers.Conv1DTranspose)
class AMConv1DTranspose(_AMConvTranspose, keras.layers.Conv1DTranspose):
    """Transposed 1-D convolution whose products use an approximate multiplier.

    ``keras.layers.Conv1DTranspose`` with every product of an input element and
    the kernel the LUT multiplier's (the input is the LUT's row operand, the
    kernel its column operand): the 2-D transposed op on a height-1 axis. Sums,
    the bias and the activation as in Keras.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv1DTranspose``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``output_padding``, ``data_format``, ``dilation_rate``,
            ``activation``, ...).{am_args}

    Input shape:
        3D tensor ``(batch_size, steps, channels)``, or
        ``(batch_size, channels, steps)`` with ``data_format="channels_first"``.

    Output shape:
        3D tensor ``(batch_size, new_steps, filters)``, or
        ``(batch_size, filters, new_steps)`` with ``data_format="channels_first"``.
    """


@replaces(keras.layers.Conv2DTranspose)
class AMConv2DTranspose(_AMConvTranspose, keras.layers.Conv2DTranspose):
    """Transposed 2-D convolution whose products use an approximate multiplier.

    ``keras.layers.Conv2DTranspose`` with every product of an input element and
    the kernel the LUT multiplier's (the input is the LUT's row operand, the
    kernel its column operand), :func:`amsim.keras.ops.am_conv2d_transpose`.
    Sums, the bias and the activation as in Keras.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv2DTranspose``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``output_padding``, ``data_format``, ``dilation_rate``,
            ``activation``, ...).{am_args}

    Input shape:
        4D tensor ``(batch_size, height, width, channels)``, or
        ``(batch_size, channels, height, width)`` with
        ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, filters)``, or
        ``(batch_size, filters, new_height, new_width)`` with
        ``data_format="channels_first"``.

    Example:

    >>> layer = AMConv2DTranspose(16, 3, strides=2, padding="same", lut="mbm", bits=7)
    """


@replaces(keras.layers.Conv3DTranspose)
class AMConv3DTranspose(_AMConvTranspose, keras.layers.Conv3DTranspose):
    """Transposed 3-D convolution whose products use an approximate multiplier.

    ``keras.layers.Conv3DTranspose`` with every product of an input element and
    the kernel the LUT multiplier's (the input is the LUT's row operand, the
    kernel its column operand), :func:`amsim.keras.ops.am_conv3d_transpose`.
    Sums, the bias and the activation as in Keras. The input's shape but the
    batch must be known when the layer is traced (the patches are static).

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv3DTranspose``
            (``filters``, ``kernel_size``, ``strides``, ``padding``,
            ``output_padding``, ``data_format``, ``dilation_rate``,
            ``activation``, ...).{am_args}

    Input shape:
        5D tensor ``(batch_size, spatial_dim1, spatial_dim2, spatial_dim3, channels)``,
        or ``(batch_size, channels, spatial_dim1, spatial_dim2, spatial_dim3)``
        with ``data_format="channels_first"``.

    Output shape:
        5D tensor ``(batch_size, new_spatial_dim1, new_spatial_dim2, new_spatial_dim3, filters)``,
        or channels first likewise.
    """

