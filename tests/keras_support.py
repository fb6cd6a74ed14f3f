"""What the tests of the TensorFlow ops and Keras layers share: the mantissa width, its exact and MBM
multipliers (as module fixtures), and operands the exact multiplier multiplies exactly."""

import numpy as np
import pytest

from amsim import gemm

M = 7


@pytest.fixture(scope="module")
def exact():
    return gemm.resolve("exact", M)


@pytest.fixture(scope="module")
def mbm():
    return gemm.resolve("mbm", M)


def at_m_bits(rng, shape, bits=M):
    """Values whose significands have at most ``bits`` fraction bits: the exact LUT multiplies them exactly."""
    return (rng.integers(-(1 << bits), 1 << bits, size=shape) / (1 << (bits - 1))).astype(np.float32)
