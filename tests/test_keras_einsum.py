"""am_einsum and AMEinsumDense: two-operand einsums as one batched approximate matmul."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim import gemm  # noqa: E402
from amsim.keras.ops import OpArgumentError  # noqa: E402

from keras_support import M, at_m_bits, exact, mbm  # noqa: E402,F401 (fixtures)





def mm(a, b, lut):
    return gemm.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), lut)


# (equation, x shape, y shape, the same products as amsim.gemm.matmul of the operands laid out by hand)
EQUATIONS = [
    ("ab,bc->ac", (5, 7), (7, 3), lambda x, y, L: mm(x, y, L)),
    ("ji,jk->ik", (7, 5), (7, 3), lambda x, y, L: mm(x.T, y, L)),  # x stored transposed
    ("ij,kj->ik", (5, 7), (3, 7), lambda x, y, L: mm(x, y.T, L)),  # y stored transposed
    ("abc,cd->abd", (2, 3, 7), (7, 4), lambda x, y, L: mm(x.reshape(6, 7), y, L).reshape(2, 3, 4)),
    ("abc,cde->abde", (2, 3, 7), (7, 2, 3), lambda x, y, L: mm(x.reshape(6, 7), y.reshape(7, 6), L)
     .reshape(2, 3, 2, 3)),
    ("cab,cd->abd", (7, 2, 3), (7, 4), lambda x, y, L: mm(x.reshape(7, 6).T, y, L).reshape(2, 3, 4)),
    # attention: scores of query (a, e, c, d) and key (a, b, c, d), batch a c, summed d
    ("aecd,abcd->acbe", (2, 5, 3, 4), (2, 6, 3, 4), lambda x, y, L: mm(x.transpose(0, 2, 1, 3),
                                                                         y.transpose(0, 2, 3, 1), L)
     .transpose(0, 1, 3, 2)),
    # attention: scores (a, c, b, e) times value (a, e, c, d), summed e
    ("acbe,aecd->abcd", (2, 3, 4, 5), (2, 5, 3, 6), lambda x, y, L: mm(x, y.transpose(0, 2, 1, 3), L)
     .transpose(0, 2, 1, 3)),
    ("...b,bc->...c", (2, 3, 7), (7, 4), lambda x, y, L: mm(x.reshape(6, 7), y, L).reshape(2, 3, 4)),
    ("ab...,bc->ac...", (2, 7, 3), (7, 4), lambda x, y, L: mm(x.transpose(0, 2, 1).reshape(6, 7), y, L)
     .reshape(2, 3, 4).transpose(0, 2, 1)),
    ("...ij,...jk->...ik", (2, 3, 7), (2, 7, 4), lambda x, y, L: mm(x, y, L)),
    ("a,b->ab", (5,), (3,), lambda x, y, L: mm(x[:, None], y[None, :], L)),  # nothing summed
    ("ab,b->a", (5, 7), (7,), lambda x, y, L: mm(x, y[:, None], L)[:, 0]),
    ("ab,ab->ab", (5, 3), (5, 3), lambda x, y, L: mm(x.reshape(15, 1, 1), y.reshape(15, 1, 1), L).reshape(5, 3)),
]


@pytest.mark.parametrize("equation, x_shape, y_shape, oracle", EQUATIONS, ids=[e[0] for e in EQUATIONS])
def test_am_einsum_is_amsim_gemm_matmul_of_the_operands_laid_out_bit_for_bit(equation, x_shape, y_shape,
                                                                              oracle, mbm):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(x_shape, np.float32), rng.standard_normal(y_shape, np.float32)
    want = oracle(x, y, mbm)
    got = ak.am_einsum(equation, x, y, mbm).numpy()
    assert got.shape == np.einsum(equation, x, y).shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_am_einsum_takes_dimensions_known_only_when_the_graph_runs(mbm):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 5, 3, 4), np.float32), rng.standard_normal((2, 6, 3, 4), np.float32)
    spec = tf.TensorSpec([None, None, 3, None])
    dynamic = tf.function(lambda x, y: ak.am_einsum("aecd,abcd->acbe", x, y, mbm), input_signature=[spec, spec])
    assert dynamic.get_concrete_function().structured_outputs.shape.as_list() == [None, 3, None, None]
    np.testing.assert_array_equal(dynamic(x, y).numpy(), ak.am_einsum("aecd,abcd->acbe", x, y, mbm).numpy())
    unranked = tf.function(lambda x, y: ak.am_einsum("aecd,abcd->acbe", x, y, mbm),
                           input_signature=[tf.TensorSpec(None), spec])
    np.testing.assert_array_equal(unranked(x, y).numpy(), dynamic(x, y).numpy())


@pytest.mark.parametrize("equation, x_shape, y_shape", [e[:3] for e in EQUATIONS[::2]], ids=[e[0] for e in
                                                                                          EQUATIONS[::2]])
@pytest.mark.parametrize("gradient", ["approximate", "exact"])
def test_am_einsum_with_the_exact_lut_is_tf_einsum_forward_and_backward(equation, x_shape, y_shape, gradient,
                                                                        exact):
    rng = np.random.default_rng(3)
    x, y = tf.constant(at_m_bits(rng, x_shape)), tf.constant(at_m_bits(rng, y_shape))
    cotangent = at_m_bits(rng, np.einsum(equation, x.numpy(), y.numpy()).shape)
    results = []
    for einsum in (lambda a, b: ak.am_einsum(equation, a, b, exact, gradient=gradient), tf.einsum):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            z = einsum(equation, x, y) if einsum is tf.einsum else einsum(x, y)
            loss = tf.reduce_sum(z * cotangent)
        results.append([z.numpy(), *(g.numpy() for g in tape.gradient(loss, [x, y]))])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("equation, x_shape, y_shape, error, match", [
    ("ab,bc", (2, 3), (3, 4), OpArgumentError, "explicit output"),
    ("ab,bc,cd->ad", (2, 3), (3, 4), OpArgumentError, "two operands"),
    ("aa,ab->ab", (3, 3), (3, 4), OpArgumentError, "'a' repeats in x"),
    ("ab,bc->a", (2, 3), (3, 4), OpArgumentError, "'c' of one operand is missing from the output"),
    ("ab,bc->acd", (2, 3), (3, 4), OpArgumentError, "'d' are in neither operand"),
    ("a1,bc->ac", (2, 3), (3, 4), OpArgumentError, "letters"),
    ("...ab,bc->ac", (2, 2, 3), (3, 4), OpArgumentError, "'...' must be in the output"),
    ("ab,bc->ac", (2, 3), (5, 4), gemm.ShapeError, "'b' is 3 in x and 5 in y"),
    ("abc,cd->abd", (2, 3), (3, 4), gemm.ShapeError, "x has shape \\(2, 3\\), the equation names 3 axes"),
    ("...ij,...jk->...ik", (2, 3, 4), (5, 4, 6), gemm.ShapeError, "a '...' axis is 2 in x and 5 in y"),
])
def test_am_einsum_refuses_what_is_not_a_product_of_two_operands(equation, x_shape, y_shape, error, match, mbm):
    with pytest.raises(error, match=match):
        ak.am_einsum(equation, np.ones(x_shape, np.float32), np.ones(y_shape, np.float32), mbm)


# ----------------------------------------------------------------------------------------------
# AMEinsumDense
# ----------------------------------------------------------------------------------------------

DENSE_CASES = {  # equation: (output_shape, bias_axes, input shape)
    "ab,bc->ac": (6, "c", (4, 5)),
    "abc,cd->abd": ((None, 6), "d", (2, 3, 5)),
    "abc,cde->abde": ((None, 2, 3), "de", (2, 3, 5)),
    "abc,cd->abcd": ((None, 5, 3), None, (2, 3, 5)),  # c kept: a batch axis of input and kernel, no sum
    "...b,bc->...c": (6, "c", (2, 3, 5)),
    "ab...,bc->ac...": (6, "c", (2, 5, 3)),
}


@pytest.mark.parametrize("equation", sorted(DENSE_CASES))
def test_with_the_exact_lut_am_einsum_dense_is_keras_einsum_dense_forward_and_backward(equation, exact):
    output_shape, bias_axes, shape = DENSE_CASES[equation]
    kwargs = {"output_shape": output_shape, "bias_axes": bias_axes, "activation": "relu"}
    rng = np.random.default_rng(4)
    layer = ak.AMEinsumDense(equation, lut=exact, **kwargs)
    reference = keras.layers.EinsumDense(equation, **kwargs)
    layer.build(shape)
    reference.build(shape)
    weights = [at_m_bits(rng, w.shape) for w in reference.weights]
    layer.set_weights(weights)
    reference.set_weights(weights)
    x = tf.constant(at_m_bits(rng, shape))
    cotangent = at_m_bits(rng, reference(x).shape)
    results = []
    for dense in (layer, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(dense(x) * cotangent)
        results.append([dense(x).numpy(), *(g.numpy() for g in tape.gradient(loss, [x, *dense.trainable_weights]))])
    assert results[1][0].any()
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_with_mbm_am_einsum_dense_computes_amsim_gemm_plus_bias(mbm):
    rng = np.random.default_rng(5)
    layer = ak.AMEinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d", lut=mbm,
                             bias_initializer="random_normal")
    x = rng.standard_normal((2, 3, 5), np.float32)
    y = layer(x).numpy()
    kernel, bias = (w.numpy() for w in layer.weights)
    np.testing.assert_array_equal(y, mm(x.reshape(6, 5), kernel, mbm).reshape(2, 3, 6) + bias)


def test_an_equation_keras_takes_but_that_is_no_product_is_refused_naming_the_layer(mbm):
    layer = ak.AMEinsumDense("aa,ab->ab", output_shape=(3,), lut=mbm, name="diag")  # a diagonal
    with pytest.raises(OpArgumentError, match="AMEinsumDense 'diag'.*'a' repeats in x"):
        layer(np.ones((3, 3), np.float32))


def einsum_model():
    tokens = keras.Input((4, 5))
    x = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", name="heads")(tokens)
    x = keras.layers.Reshape((4, 6))(x)
    return keras.Model(tokens, keras.layers.EinsumDense("...b,bc->...c", output_shape=3, name="head")(x))


def test_approximate_and_precise_swap_einsum_dense_keeping_the_weights_bitwise():
    model = einsum_model()
    approx = ak.approximate(model, "mbm", bits=M)
    assert [type(layer).__name__ for layer in approx.layers[1:]] == ["AMEinsumDense", "Reshape", "AMEinsumDense"]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), approx.get_weights()))
    back = ak.precise(approx)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    x = np.random.default_rng(6).standard_normal((2, 4, 5), np.float32)
    assert np.array_equal(back(x).numpy(), model(x).numpy())


def test_a_keras_file_holding_am_einsum_dense_predicts_bit_for_bit(tmp_path, mbm):
    model = ak.approximate(einsum_model(), mbm, gradient="exact")
    x = np.random.default_rng(7).standard_normal((3, 4, 5), np.float32)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert np.array_equal(loaded.predict(x, verbose=0), expected)
    layer = loaded.get_layer("heads")
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.gradient == "exact" and np.array_equal(layer.multiplier.table, mbm.table)
