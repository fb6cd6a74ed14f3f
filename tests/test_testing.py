"""``amsim.testing``: what a designer's own pytest suite gets from amsim."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from amsim import gemm, testing

ROOT = Path(__file__).resolve().parent.parent


@given(testing.operand_pairs(5))
def test_operand_pairs_are_pairs_of_n_bit_operands(pair):
    assert len(pair) == 2 and all(0 <= x < 32 for x in pair)


@given(testing.operands(6, signed=True))
def test_signed_operands_are_twos_complement_values(x):
    assert -32 <= x < 32


@given(testing.mantissas(7))
def test_mantissas_are_indices_of_m_bit_significands(i):
    assert 0 <= i < 128


@given(testing.float32s(7))
def test_float32s_of_m_bits_are_normal_with_m_fraction_bits(x):
    assert isinstance(x, np.float32) and np.isfinite(x) and abs(x) >= np.finfo(np.float32).tiny
    assert np.float32(x).view(np.uint32) & 0xFFFF == 0  # the 23 - 7 low fraction bits


@given(testing.float32s(specials=True, normal=False))
def test_special_float32s_are_zeros_subnormals_infinities_and_nans(x):
    assert not np.isfinite(x) or abs(x) < np.finfo(np.float32).tiny


def test_assert_properties_returns_the_report_when_every_property_holds():
    report = testing.assert_properties("mitchell", 8, max_rel_error="1/9", properties=["monotone"])
    assert report.holds and report.exhaustive


def test_assert_properties_fails_with_the_report_and_its_counterexample():
    failure = r"FAILS +max_rel_error <= 0\.1 .*\n +a = 3, b = 3: exact 9, approximate 8"
    with pytest.raises(AssertionError, match=failure):
        testing.assert_properties("mitchell", 8, max_rel_error="0.1")


@pytest.fixture(scope="module")
def mitchell7():
    return gemm.resolve("mitchell", 7)


def operands(*shapes):
    rng = np.random.default_rng(4)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


def test_a_gemm_of_the_engine_matches_the_oracle_and_one_ulp_off_does_not(mitchell7):
    a, b = operands((5, 9), (9, 6))
    y = gemm.matmul(a, b, mitchell7)
    testing.assert_matmul_matches_reference(y, a, b, mitchell7)
    y[1, 2] = np.nextafter(y[1, 2], np.float32(np.inf))
    with pytest.raises(AssertionError, match=r"matmul differs from the reference in 1 of 30 elements; first at "
                                             r"\(1, 2\)"):
        testing.assert_matmul_matches_reference(y, a, b, mitchell7)


def test_transposed_operands_and_options_reach_the_oracle(mitchell7):
    a, b = operands((9, 5), (6, 9))
    y = gemm.matmul(a, b, mitchell7, transpose_a=True, transpose_b=True, rounding="rne")
    testing.assert_matmul_matches_reference(y, a, b, mitchell7, transpose_a=True, transpose_b=True, rounding="rne")
    with pytest.raises(AssertionError, match="differs from the reference"):
        testing.assert_matmul_matches_reference(y, a, b, mitchell7, transpose_a=True, transpose_b=True)


def test_a_convolution_of_the_engine_matches_the_oracle(mitchell7):
    x, w = operands((2, 7, 7, 3), (3, 3, 3, 4))
    y = gemm.conv2d(x, w, mitchell7, strides=2, padding="SAME")
    testing.assert_conv2d_matches_reference(y, x, w, mitchell7, strides=2, padding="SAME")


def test_same_bits_tells_signed_zeros_apart_and_lets_any_nan_match_any_nan():
    nans = np.array([0x7FC00000, 0xFFC00001], np.uint32).view(np.float32)
    testing.assert_same_bits(nans, nans[::-1])
    with pytest.raises(AssertionError, match="first at \\(0,\\): -0.0"):
        testing.assert_same_bits(np.array([-0.0], np.float32), np.array([0.0], np.float32))
    with pytest.raises(AssertionError, match="shape"):
        testing.assert_same_bits(np.zeros(2, np.float32), np.zeros(3, np.float32))


def test_a_dense_and_a_conv_layer_match_the_oracle(mitchell7):
    keras = pytest.importorskip("keras")
    from amsim.keras import AMConv2D, AMDense

    x, = operands((4, 6))
    dense = AMDense(3, activation="relu", lut=mitchell7, bias_initializer="random_normal")
    testing.assert_layer_matches_reference(dense, x)
    images, = operands((2, 6, 6, 4))
    conv = AMConv2D(4, 3, padding="same", groups=2, activation="tanh", lut=mitchell7,
                    bias_initializer="random_normal")
    testing.assert_layer_matches_reference(conv, images)
    with pytest.raises(TypeError, match="takes AMDense and AMConv2D"):
        testing.assert_layer_matches_reference(keras.layers.Dense(2), x)


def test_the_example_in_docs_passes_as_a_designer_would_run_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "docs" / "test_example_multiplier.py")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout
