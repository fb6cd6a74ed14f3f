"""Testing your own approximate multiplier with ``amsim.testing``: a complete example.

Run it with ``pytest docs/test_example_multiplier.py``; amsim's own suite runs it as well
(tests/test_testing.py). The model is written out by a fixture so that this file stands alone; yours
would be a ``.c`` file of its own, or a folder of them (``models_dirs``).
"""

import numpy as np
import pytest
from hypothesis import given

import amsim
from amsim import gemm, testing

#: Clears the two low bits of each operand: cheaper partial products, never an overestimate.
MODEL = """\
/* @amsim
 * name:          trunc2
 * kind:          int
 * bits:          4..16
 * description:   exact product of the operands with their two low bits cleared
 * properties:    commutative, zero, monotone, no-overestimate
 * max_rel_error: 1
 */
#include <stdint.h>

uint64_t trunc2(uint64_t a, uint64_t b) { return (a & ~3ull) * (b & ~3ull); }
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "trunc2.c"
    path.write_text(MODEL)
    return path


@pytest.fixture(scope="module")
def compiled(model):
    return amsim.load_model(model).compile(12)


def test_it_keeps_its_claims_on_every_pair_at_8_bits(model):
    testing.assert_properties(model, bits=8)  # what the @amsim block claims, and what every model must do


def test_it_keeps_them_on_sampled_pairs_at_16_bits(model):
    testing.assert_properties(model, bits=16, examples=100)  # 2^32 pairs: hypothesis samples them


def test_a_claim_it_does_not_keep_fails_with_the_smallest_counterexample(model):
    with pytest.raises(AssertionError, match=r"FAILS +one .*\n +a = 1, b = 1: exact 1, approximate 0"):
        testing.assert_properties(model, bits=8, properties=["one"])


@given(pair=testing.operand_pairs(12))
def test_multiples_of_four_multiply_exactly(compiled, pair):  # a property of this design alone
    a, b = (x & ~3 for x in pair)
    assert compiled.evaluate(a, b) == a * b


def test_its_gemm_is_the_numpy_oracles_bit_for_bit(model):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 32), dtype=np.float32)
    b = rng.standard_normal((32, 5), dtype=np.float32)
    multiplier = gemm.resolve(str(model), 7)  # lifted to a bfloat16 mantissa multiplier (width 8)
    testing.assert_matmul_matches_reference(gemm.matmul(a, b, multiplier), a, b, multiplier)
