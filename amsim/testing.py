"""Testing your own multiplier with pytest: hypothesis strategies for its operands, assertions of its
properties, and assertions that an approximate GEMM, convolution or layer equals the numpy oracle.

::

    from hypothesis import given
    from amsim import testing

    def test_my_model_keeps_its_claims():
        testing.assert_properties("my_model.c", bits=8)            # what its @amsim block claims

    @given(testing.operand_pairs(8))
    def test_my_own_rule(pair): ...

    def test_my_gemm_is_the_oracles():
        testing.assert_matmul_matches_reference(amsim.gemm.matmul(a, b, "my_model.c", bits=7), a, b,
                                                "my_model.c", bits=7)

The properties are those of ``amsim check`` (:mod:`amsim.check`; defined in docs/designs.md,
"Claims"); docs/test_example_multiplier.py is a complete example.
"""

from __future__ import annotations

import numpy as np

from . import gemm
from .check import DEFAULT_TIMEOUT, Report, check, float32s, mantissas, operand_pairs, operands

__all__ = ["operands", "operand_pairs", "mantissas", "float32s", "assert_properties", "assert_same_bits",
           "assert_matmul_matches_reference", "assert_conv2d_matches_reference", "assert_layer_matches_reference"]

#: Examples per sampled property in a test: fewer than ``amsim check``'s 1000, so that a suite stays quick.
TEST_EXAMPLES = 200


def assert_properties(model, bits: int | None = None, *, params=None, properties=(), max_rel_error=None,
                      max_abs_error=None, mean_rel_error=None, bias_within=None, mean_abs_error=None,
                      error_probability=None, declared=True, examples: int = TEST_EXAMPLES, seed: int = 0,
                      samples: int | None = None, timeout: float = DEFAULT_TIMEOUT, models_dirs=()) -> Report:
    """Assert that ``model`` has its properties: those always checked, those its ``@amsim`` block
    claims (``declared``) and those named here, exactly as ``amsim check`` would.

    ``model`` is what :func:`amsim.check.check` takes: a model name, a ``.c`` file, a Model, or a
    mantissa LUT (object or file). Raises AssertionError with the report, counterexamples included,
    when one fails; returns the report otherwise. Call it from a plain test function, not from a
    hypothesis ``@given`` test (hypothesis runs inside it).
    """
    extra = {} if samples is None else {"samples": samples}
    report = check(model, bits, params=params, models_dirs=models_dirs, properties=properties, declared=declared,
                   max_rel_error=max_rel_error, max_abs_error=max_abs_error, mean_rel_error=mean_rel_error,
                   bias_within=bias_within, mean_abs_error=mean_abs_error, error_probability=error_probability,
                   examples=examples, seed=seed, timeout=timeout, **extra)
    if not report.holds:
        raise AssertionError("properties do not hold:\n" + report.format())
    return report


def assert_same_bits(actual, expected, what: str = "output") -> None:
    """Assert two float32 arrays are equal bit for bit (any NaN matches any NaN; -0 is not +0)."""
    actual, expected = np.asarray(actual), np.asarray(expected, np.float32)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, the reference's is {expected.shape}")
    if actual.dtype != np.float32:
        raise AssertionError(f"{what}: dtype {actual.dtype}, the reference's is float32")
    same = (np.isnan(actual) & np.isnan(expected)) | (actual.view(np.uint32) == expected.view(np.uint32))
    if not same.all():
        index = tuple(int(i) for i in np.argwhere(~same)[0])
        raise AssertionError(f"{what} differs from the reference in {int((~same).sum())} of {same.size} elements; "
                             f"first at {index}: {float(actual[index])!r}, the reference has "
                             f"{float(expected[index])!r}")


def assert_matmul_matches_reference(actual, a, b, lut, *, bits=None, params=None, transpose_a=False,
                                    transpose_b=False, rounding="truncate", mode="ieee") -> None:
    """Assert that ``actual`` is, bit for bit, the approximate ``a @ b`` of the numpy oracle
    (:mod:`amsim.reference`, docs/numerics.md section 3). Arguments as :func:`amsim.gemm.matmul`'s."""
    expected = gemm.matmul(a, b, lut, bits=bits, params=params, transpose_a=transpose_a, transpose_b=transpose_b,
                           rounding=rounding, mode=mode, backend="reference")
    assert_same_bits(actual, expected, "matmul")


def assert_conv2d_matches_reference(actual, x, w, lut, strides=1, padding="VALID", dilations=1, *, bits=None,
                                    params=None, rounding="truncate", mode="ieee") -> None:
    """Assert that ``actual`` is, bit for bit, the approximate conv2d of the numpy oracle (im2col and its
    GEMM). Arguments as :func:`amsim.gemm.conv2d`'s."""
    expected = gemm.conv2d(x, w, lut, strides, padding, dilations, bits=bits, params=params, rounding=rounding,
                           mode=mode, backend="reference")
    assert_same_bits(actual, expected, "conv2d")


def assert_layer_matches_reference(layer, x) -> None:
    """Assert that an ``AMDense`` or ``AMConv2D`` layer's output for ``x`` is, bit for bit, the numpy
    oracle's approximate GEMM (or convolution) of ``x`` with the layer's kernel, plus its bias, through
    its activation (float32, as Keras computes them)."""
    from .keras import AMConv2D, AMDense

    if not isinstance(layer, (AMDense, AMConv2D)):
        raise TypeError(f"assert_layer_matches_reference takes AMDense and AMConv2D layers, not "
                        f"{type(layer).__name__}; compare other layers' GEMMs with assert_matmul_matches_reference")
    if layer.scheme is not None:
        raise TypeError(f"'{layer.name}' is {layer.scheme}-quantized: its reference is the integer GEMM "
                        "(amsim.gemm.int_matmul) of its quantized operands, docs/quantized.md")
    x = np.asarray(x, np.float32)
    actual = np.asarray(layer(x), np.float32)  # builds the layer, if it was not built
    kernel = np.asarray(layer.kernel, np.float32)
    arithmetic = {"rounding": layer.rounding, "mode": layer.mode, "backend": "reference"}
    if isinstance(layer, AMDense):  # every row of x times the kernel
        rows = gemm.matmul(x.reshape(-1, x.shape[-1]), kernel, layer.multiplier, **arithmetic)
        expected = rows.reshape(*x.shape[:-1], kernel.shape[-1])
        channel_axis = -1
    else:  # AMConv2D: NHWC, each group of channels with its own filters
        nhwc = x if layer.data_format == "channels_last" else x.transpose(0, 2, 3, 1)
        geometry = {"strides": tuple(layer.strides), "padding": layer.padding.upper(),
                    "dilations": tuple(layer.dilation_rate)}
        groups = zip(np.split(nhwc, layer.groups, axis=-1), np.split(kernel, layer.groups, axis=-1))
        y = np.concatenate([gemm.conv2d(xg, wg, layer.multiplier, **geometry, **arithmetic) for xg, wg in groups],
                           axis=-1)
        expected = y if layer.data_format == "channels_last" else y.transpose(0, 3, 1, 2)
        channel_axis = -1 if layer.data_format == "channels_last" else 1
    if layer.bias is not None:
        shape = [1] * expected.ndim
        shape[channel_axis] = -1
        expected = expected + np.asarray(layer.bias, np.float32).reshape(shape)
    if layer.activation is not None:
        expected = np.asarray(layer.activation(expected), np.float32)
    assert_same_bits(actual, expected, f"{type(layer).__name__} '{layer.name}'")
