"""ApproxTrain's layer names and arguments on amsim: ``AMConv2D`` and ``denseam`` with ``mant_mul_lut``.

A script written for ApproxTrain (``from python.keras.layers.am_convolutional
import AMConv2D``, ``from python.keras.layers.amdenselayer import denseam``)
runs on amsim with its import lines changed to::

    from amsim.keras.approxtrain import AMConv2D, denseam

``mant_mul_lut`` is ApproxTrain's LUT file ``NAME_M.bin`` (M read from the
name, the size checked against it); an amsim LUT file, a model name or a LUT
object work too (``lut=`` as in :mod:`amsim.keras`). The arithmetic is
ApproxTrain's in the normal range (``mode="approxtrain"``) unless ``mode=``
says otherwise. Unlike ApproxTrain's dense layer, ``denseam`` is approximate
for inputs of any rank.
"""

from __future__ import annotations

import keras

from .layers import AMConv2D as _AMConv2D
from .layers import AMDense as _AMDense
from .layers.base import LayerConfigError


def _lut(cls, mant_mul_lut, lut, name):
    if mant_mul_lut is not None and lut is not None:
        raise LayerConfigError(f"{cls.__name__} '{name or cls.__name__}': give mant_mul_lut= or lut=, not both")
    return lut if lut is not None else mant_mul_lut


@keras.saving.register_keras_serializable(package="amsim.approxtrain")
class AMConv2D(_AMConv2D):
    """ApproxTrain's ``AMConv2D``: :class:`amsim.keras.AMConv2D` taking ``mant_mul_lut=``.

    Args:
        *args, **kwargs: every argument of ``keras.layers.Conv2D``, and those
            of :class:`amsim.keras.AMConv2D`.
        mant_mul_lut: ApproxTrain's LUT file (``lut/MBM_7.bin``).
        mode: ``"approxtrain"`` by default.
    """

    def __init__(self, *args, mant_mul_lut=None, lut=None, mode="approxtrain", **kwargs):
        super().__init__(*args, lut=_lut(type(self), mant_mul_lut, lut, kwargs.get("name")), mode=mode, **kwargs)


@keras.saving.register_keras_serializable(package="amsim.approxtrain")
class denseam(_AMDense):  # noqa: N801 - ApproxTrain's name
    """ApproxTrain's ``denseam``: :class:`amsim.keras.AMDense` taking ``mant_mul_lut=``.

    Args:
        units, *args, **kwargs: every argument of ``keras.layers.Dense``, and
            those of :class:`amsim.keras.AMDense`.
        mant_mul_lut: ApproxTrain's LUT file (``lut/MBM_7.bin``).
        mode: ``"approxtrain"`` by default.
    """

    def __init__(self, *args, mant_mul_lut=None, lut=None, mode="approxtrain", **kwargs):
        super().__init__(*args, lut=_lut(type(self), mant_mul_lut, lut, kwargs.get("name")), mode=mode, **kwargs)


__all__ = ["AMConv2D", "denseam"]
