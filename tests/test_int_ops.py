"""amsim.keras.int_ops: am_int_matmul is amsim.gemm.int_matmul on TensorFlow tensors, batched, exact, unwrapped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from amsim import gemm  # noqa: E402
from amsim.errors import RangeError  # noqa: E402
from amsim.gemm import int_matmul  # noqa: E402
from amsim.gemm.integer import IntegerOperandError, accumulator_dtype  # noqa: E402
from amsim.keras import build  # noqa: E402
from amsim.keras.int_ops import am_int_matmul  # noqa: E402
from amsim.keras.ops import OpArgumentError, OpDTypeError, XlaCompileError  # noqa: E402
from amsim.lut import LUT  # noqa: E402
from int_support import (EXACT_S8, EXACT_U8, FULL, K32, assert_refused_with_one_line, circuit,  # noqa: E402
                         exact_table, sums_beyond_int32, value_range)

#: Every integer dtype that holds every n-bit value, n <= 8, of each signedness.
DTYPES = {False: [tf.uint8, tf.uint16, tf.uint32, tf.uint64, tf.int16, tf.int32, tf.int64],
          True: [tf.int8, tf.int16, tf.int32, tf.int64]}


def oracle(a, b, table, bits, signed):
    """amsim.gemm.int_matmul's reference backend, matrix by matrix of the batch (int64)."""
    out = np.zeros(a.shape[:-1] + b.shape[-1:], np.int64)
    for index in np.ndindex(*a.shape[:-2]):
        out[index] = int_matmul(a[index], b if b.ndim == 2 else b[index], table, bits=bits, signed=signed,
                                backend="reference")
    return out


def run(mode, a, b, lut, **kwargs):
    """am_int_matmul eagerly, or inside a tf.function (the operands its arguments)."""
    if mode == "eager":
        return am_int_matmul(a, b, lut, **kwargs)
    return tf.function(lambda x, y: am_int_matmul(x, y, lut, **kwargs))(a, b)


@st.composite
def problems(draw):
    """(a, b, table, bits, signed, out_dtype): a batch of up to two leading dimensions (sizes from 0),
    b shared or batched, M, K, N from 0, values over the whole range in any dtype holding them, and a
    table of arbitrary 16-bit circuit outputs."""
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    m, k, n = (draw(st.integers(0, 8)) for _ in range(3))
    shared_b = draw(st.booleans())
    dtype = draw(st.sampled_from(DTYPES[signed]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo, hi = value_range(bits, signed)
    a = rng.integers(lo, hi, batch + (m, k))
    b = rng.integers(lo, hi, (k, n) if shared_b else batch + (k, n))
    out_lo, out_hi = (-(1 << 15), 1 << 15) if signed else (0, 1 << 16)
    table = rng.integers(out_lo, out_hi, (1 << bits, 1 << bits))
    out_dtype = draw(st.sampled_from([None, "int32", tf.int64, np.int64]))
    return tf.constant(a, dtype), tf.constant(b, dtype), table, bits, signed, out_dtype


@pytest.mark.parametrize("mode", ["eager", "function"])
@settings(max_examples=60, deadline=None)
@given(p=problems())
def test_the_op_is_gemm_int_matmul_of_each_matrix(mode, p):
    a, b, table, bits, signed, out_dtype = p
    got = run(mode, a, b, table, bits=bits, signed=signed, out_dtype=out_dtype)
    want = oracle(a.numpy().astype(np.int64), b.numpy().astype(np.int64), table, bits, signed)
    k = a.shape[-1]
    assert got.dtype == (tf.as_dtype(out_dtype) if out_dtype is not None else accumulator_dtype(k, table))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("shared_b", [True, False], ids=["shared_b", "batched_b"])
def test_the_exact_table_gives_tf_matmul(bits, signed, shared_b):
    """The exact table indexed by two's-complement patterns is integer matmul, batched or broadcast."""
    rng = np.random.default_rng(bits)
    lo, hi = value_range(bits, signed)
    a = rng.integers(lo, hi, (3, 2, 17, 40))
    b = rng.integers(lo, hi, (40, 9) if shared_b else (3, 2, 40, 9))
    got = am_int_matmul(a, b, exact_table(bits, signed), bits=bits, signed=signed)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), tf.linalg.matmul(tf.constant(a, tf.int32),
                                                                tf.constant(b, tf.int32)).numpy())


@pytest.mark.parametrize("lut, signed", [(EXACT_U8, False), (EXACT_S8, True)], ids=["exact_int", "mul8s_exact"])
def test_exact_circuits_give_tf_matmul(lut, signed):
    rng = np.random.default_rng(1)
    lo, hi = value_range(8, signed)
    a, b = rng.integers(lo, hi, (2, 30, 129)), rng.integers(lo, hi, (129, 45))
    a[0, 0, :4] = b[:4, 0] = [lo, lo + 1, hi - 2, hi - 1]  # the corners of the range
    dtype = tf.int8 if signed else tf.uint8
    got = am_int_matmul(tf.constant(a, dtype), tf.constant(b, dtype), lut, signed=signed)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), tf.linalg.matmul(tf.constant(a, tf.int32),
                                                                tf.constant(b, tf.int32)).numpy())


@pytest.mark.parametrize("name, signed", [("mul8s_trunc", True), ("mitchell", False)])
def test_approximate_circuits_are_gemm_int_matmul(name, signed):
    lut = circuit(name)
    rng = np.random.default_rng(2)
    lo, hi = value_range(8, signed)
    a, b = rng.integers(lo, hi, (2, 41, 97)), rng.integers(lo, hi, (2, 97, 38))
    got = am_int_matmul(a, b, lut, signed=signed).numpy()
    np.testing.assert_array_equal(got, oracle(a, b, lut.table, 8, signed))
    assert (got != a @ b).any()  # the circuit is approximate: it is in the loop


def test_the_result_does_not_depend_on_threads():
    rng = np.random.default_rng(4)
    a, b = rng.integers(-128, 128, (2, 150, 90)), rng.integers(-128, 128, (90, 70))
    lut = circuit("mul8s_trunc")
    results = [am_int_matmul(a, b, lut, signed=True, threads=t).numpy() for t in (None, 1, 2, 3, 8)]
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])
    np.testing.assert_array_equal(results[0], oracle(a, b, lut.table, 8, True))


# ---- the output dtype: exact sums, never wrapped ------------------------------------------------------

@pytest.mark.parametrize("k, dtype", [(K32, tf.int32), (K32 + 1, tf.int64)])
def test_the_default_output_is_int32_exactly_where_every_sum_fits(k, dtype):
    c = am_int_matmul(tf.ones((2, k), tf.uint8), tf.ones((k, 3), tf.uint8), FULL, bits=1)
    assert c.dtype == dtype
    assert c.numpy().tolist() == [[k * (2**16 - 1)] * 3] * 2


def test_int64_sums_beyond_int32_are_exact():
    a, b, table = sums_beyond_int32()
    c = am_int_matmul(a, b, table, signed=True, bits=2)
    assert c.dtype == tf.int64 and c.numpy().max() < -(2**31)
    np.testing.assert_array_equal(c.numpy(), oracle(a, b, table, 2, True))


def test_k_unknown_when_traced_gives_int64_and_static_shapes():
    spec = [tf.TensorSpec((None, 5, None), tf.int32), tf.TensorSpec((None, 4), tf.int32)]
    fn = tf.function(lambda x, y: am_int_matmul(x, y, EXACT_U8), input_signature=spec)
    out = fn.get_concrete_function().structured_outputs
    assert out.dtype == tf.int64 and out.shape.as_list() == [None, 5, 4]
    a, b = np.arange(2 * 5 * 7).reshape(2, 5, 7) % 256, np.arange(7 * 4).reshape(7, 4) % 256
    np.testing.assert_array_equal(fn(a, b).numpy(), a @ b)


def test_an_int32_output_some_sum_could_overflow_is_refused_when_run():
    """K unknown when traced: the kernel checks K against the table when it runs, and refuses."""
    spec = [tf.TensorSpec((2, None), tf.uint8), tf.TensorSpec((None, 3), tf.uint8)]
    fn = tf.function(lambda x, y: am_int_matmul(x, y, FULL, bits=1, out_dtype=tf.int32), input_signature=spec)
    assert fn(tf.ones((2, K32), tf.uint8), tf.ones((K32, 3), tf.uint8)).numpy().max() == K32 * (2**16 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"K = {K32 + 1} products of magnitude up to 65535 "
                                                             "can overflow int32"):
        fn(tf.ones((2, K32 + 1), tf.uint8), tf.ones((K32 + 1, 3), tf.uint8))


# ---- no gradient ----------------------------------------------------------------------------------------


def test_the_op_has_no_gradient():
    """Registered as not differentiable: TensorFlow finds no gradient function (the quantized layers
    supply a straight-through one), and a tape through it gives None, not an error."""
    from tensorflow.python.framework import ops as tf_ops

    graph = tf.function(lambda x: am_int_matmul(x, x, EXACT_U8)).get_concrete_function(
        tf.TensorSpec((3, 3), tf.uint8)).graph
    (op,) = [op for op in graph.get_operations() if op.type == "AmsimIntMatMul"]
    assert tf_ops.get_gradient_function(op) is None
    x = tf.Variable(np.eye(3, dtype=np.float32))
    with tf.GradientTape() as tape:
        y = tf.cast(am_int_matmul(tf.cast(x, tf.uint8), tf.ones((3, 2), tf.uint8), EXACT_U8), tf.float32)
    assert tape.gradient(y, x) is None


# ---- bad input: one clear error each ------------------------------------------------------------------

A = np.zeros((2, 3), np.uint8)
B = np.zeros((3, 4), np.uint8)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"a": A.astype(np.float32)}, OpDTypeError, "am_int_matmul: a must be an integer tensor, got float32"),
    ({"b": B.astype(bool)}, OpDTypeError, "am_int_matmul: b must be an integer tensor, got bool"),
    ({"a": np.zeros(3, np.uint8)}, gemm.ShapeError, "am_int_matmul: a must have at least 2 dimensions"),
    ({"b": np.zeros((4, 4), np.uint8)}, gemm.ShapeError, "am_int_matmul: inner dimensions differ"),
    ({"a": np.zeros((2, 2, 3), np.uint8), "b": np.zeros((3, 3, 4), np.uint8)}, gemm.ShapeError,
     "b must be (K, N) or have a's batch dimensions"),
    ({"b": np.zeros((1, 3, 4), np.uint8)}, gemm.ShapeError, "b must be (K, N) or have a's batch dimensions"),
    ({"a": np.full((2, 3), 256)}, IntegerOperandError,
     "am_int_matmul: a holds 256, outside the unsigned 8-bit range 0..255"),
    ({"b": np.full((3, 4), -1, np.int8)}, IntegerOperandError,
     "am_int_matmul: b holds -1, outside the unsigned 8-bit range 0..255"),
    ({"a": np.full((2, 3), 128, np.uint8), "lut": EXACT_S8, "signed": True}, IntegerOperandError,
     "am_int_matmul: a holds 128, outside the signed 8-bit range -128..127"),
    ({"b": np.full((3, 4), -3, np.int8), "lut": exact_table(2, True), "bits": 2, "signed": True},
     IntegerOperandError, "am_int_matmul: b holds -3, outside the signed 2-bit range -2..1"),
    ({"a": np.full((2, 3), 4, np.uint8), "lut": exact_table(2, False), "bits": 2}, IntegerOperandError,
     "am_int_matmul: a holds 4, outside the unsigned 2-bit range 0..3"),
    ({"lut": np.zeros((256, 255), np.int32)}, gemm.ShapeError, "must be (256, 256) for 8-bit operands"),
    ({"lut": exact_table(7, False)}, gemm.ShapeError, "must be (256, 256) for 8-bit operands, got shape (128, 128)"),
    ({"lut": EXACT_U8.table.astype(np.float32)}, IntegerOperandError, "lut must be an integer array"),
    ({"lut": np.full((256, 256), 2**16)}, IntegerOperandError,
     "the LUT holds 65536, outside the unsigned 16-bit circuit outputs 0..65535"),
    ({"lut": EXACT_S8}, IntegerOperandError, "the LUT's circuit is signed; am_int_matmul was called with signed=False"),
    ({"lut": circuit("exact_int", 4)}, gemm.ShapeError, "the LUT is of 4-bit operands, not bits=8"),
    ({"lut": LUT(table=np.ones((4, 4), np.float32), bits=2)}, IntegerOperandError,
     "am_int_matmul needs an integer LUT, not a mantissa LUT"),
    ({"bits": 0}, RangeError, "bits (the operand width n) must be an integer in 1..8, not 0"),
    ({"bits": 9}, RangeError, "bits (the operand width n) must be an integer in 1..8, not 9"),
    ({"threads": 0}, RangeError, "threads (None: the engine's default) must be an integer >= 1, not 0"),
    ({"out_dtype": tf.float32}, OpArgumentError, "out_dtype must be int32, int64 or None, not tf.float32"),
    ({"out_dtype": "int16"}, OpArgumentError, "out_dtype must be int32, int64 or None, not 'int16'"),
    ({"a": np.ones((2, K32 + 1), np.uint8), "b": np.ones((K32 + 1, 3), np.uint8), "lut": FULL, "bits": 1,
      "out_dtype": "int32"}, RangeError,
     f"am_int_matmul: K = {K32 + 1} products of magnitude up to 65535 can overflow out_dtype=int32"),
])
def test_bad_input_is_refused_with_one_line(kwargs, error, message):
    args = {"a": A, "b": B, "lut": EXACT_U8, **kwargs}
    assert_refused_with_one_line(error, message, am_int_matmul, args.pop("a"), args.pop("b"), args.pop("lut"), **args)


def test_values_out_of_range_are_refused_when_a_function_runs():
    """Traced, the values are unknown: an assertion refuses them before the kernel reads anything."""
    fn = tf.function(lambda x, y: am_int_matmul(x, y, exact_table(4, True), bits=4, signed=True))
    assert fn(tf.constant([[-8, 7]]), tf.constant([[1], [1]])).numpy().tolist() == [[-1]]
    for a, b, name, bad in (([[-9, 7]], [[1], [1]], "a", "-9"), ([[0, 0]], [[1], [8]], "b", "8")):
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            fn(tf.constant(a), tf.constant(b))
        text = str(caught.value)
        assert f"am_int_matmul: {name} holds values outside the signed 4-bit range -8..7" in text and bad in text


def test_a_table_tensor_needs_its_value_when_traced():
    table = exact_table(2, False)
    a, b = [[1, 2]], [[3], [1]]
    assert am_int_matmul(a, b, tf.Variable(table), bits=2).numpy().tolist() == [[5]]
    assert tf.function(lambda: am_int_matmul(a, b, tf.constant(table), bits=2))().numpy().tolist() == [[5]]
    with pytest.raises(OpArgumentError, match="lut must be a table known when traced"):
        tf.function(lambda t: am_int_matmul(a, b, t, bits=2), autograph=False)(tf.constant(table))


def test_shapes_known_only_at_run_time_are_checked_by_the_kernel():
    fn = tf.function(lambda x, y: am_int_matmul(x, y, EXACT_U8),
                     input_signature=[tf.TensorSpec(None, tf.uint8)] * 2)
    for a, b, message in ((np.zeros((2, 3)), np.zeros((4, 5)), "inner dimensions differ"),
                          (np.zeros((2, 2, 3)), np.zeros((3, 2, 3, 5)), "b must be (K, N) or have a's batch"),
                          (np.zeros(3), np.zeros((3, 5)), "a and b need at least 2 dimensions")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
            fn(a.astype(np.uint8), b.astype(np.uint8))


@pytest.mark.parametrize("a, lut, attrs, message", [
    ([[1, 16]], exact_table(4, False), {"bits": 4}, "AmsimIntMatMul: a holds the pattern 16, not a 4-bit one "
                                                    r"\(0..15\)"),
    ([[1, 1]], exact_table(4, False), {"bits": 3}, r"AmsimIntMatMul: lut must be \[8,8\] for 3-bit operands"),
    ([[1, 1]], exact_table(4, False), {"bits": 9}, "AmsimIntMatMul: bits must be in 1..8, got 9"),
])
def test_the_raw_op_refuses_what_would_read_outside_the_table(a, lut, attrs, message):
    """The op as a graph author calls it, patterns unchecked by the Python wrapper."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        build.load().amsim_int_mat_mul(tf.constant(a, tf.uint8), tf.ones((2, 1), tf.uint8),
                                       tf.constant(lut, tf.int32), **attrs)


def test_xla_compilation_is_refused_with_a_clear_error():
    fn = tf.function(lambda x: am_int_matmul(x, x, EXACT_U8), jit_compile=True, autograph=False)
    with pytest.raises(XlaCompileError, match="am_int_matmul: XLA cannot compile .* jit_compile=True"):
        fn(tf.ones((2, 2), tf.uint8))


def test_the_kernel_prepares_each_distinct_table_and_sees_a_table_assigned_in_place():
    """The kernels prepare a table once and find it again by its buffer or its entries: tables that
    alternate give each its own sums, and a variable assigned new entries gives the new sums (the
    prepared table holds the old buffer, so the assignment cannot overwrite it in place)."""
    rng = np.random.default_rng(21)
    a, b = rng.integers(0, 256, (70, 40), dtype=np.uint8), rng.integers(0, 256, (40, 90), dtype=np.uint8)
    tables = [rng.integers(0, 2**15, (256, 256)).astype(np.int32) for _ in range(2)]
    for table in tables + tables:
        np.testing.assert_array_equal(am_int_matmul(a, b, table).numpy(), oracle(a, b, table, 8, False))
    variable = tf.Variable(tables[0])
    op = build.load().amsim_int_mat_mul
    for table in tables + tables[:1]:
        variable.assign(table)
        np.testing.assert_array_equal(op(a, b, variable, bits=8, Tout=tf.int32).numpy(),
                                      oracle(a, b, table, 8, False))


def test_a_table_edited_between_eager_calls_gives_its_new_sums():
    table = exact_table(8, False)
    a, b = np.full((1, 1), 3, np.uint8), np.full((1, 1), 5, np.uint8)
    assert am_int_matmul(a, b, table).numpy()[0, 0] == 15
    table[3, 5] = 7
    assert am_int_matmul(a, b, table).numpy()[0, 0] == 7
    assert am_int_matmul(a, b, gemm.IntegerTable(table)).numpy()[0, 0] == 7
