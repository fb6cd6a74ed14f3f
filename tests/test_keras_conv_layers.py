"""The convolution family of amsim.keras: 1-D, 3-D, transposed, separable and depthwise 1-D layers.

Each AM layer is the Keras layer it replaces with every product approximate: with ``mbm`` it is
``amsim.gemm``'s convolutions bit for bit, forward and backward; with the exact LUT it is Keras'
layer. The 3-D convolutions' numpy oracle (``amsim.gemm.conv3d`` and its gradients) is checked
against TensorFlow here too.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import amsim.keras as ak  # noqa: E402
from amsim import gemm, reference  # noqa: E402
from amsim.gemm import ShapeError  # noqa: E402

from keras_support import M, exact, mbm  # noqa: E402,F401 (fixtures)




@pytest.fixture(scope="module")
def asymmetric(mbm):
    """mbm's table with the entries below its diagonal scaled: a (x) b and b (x) a differ."""
    table = mbm.table.copy()
    table[np.tril_indices(len(table), -1)] *= 0.75
    return gemm.resolve(table)


def normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def small_integers(rng, shape):
    """Integers in [-3, 3]. Products and sums of them stay integers below 2^8 through the two products
    in a row of a separable convolution, so they are exact at M = 7 bits and in float32 in any order:
    with the exact LUT an AM layer must give its Keras layer's results exactly."""
    return rng.integers(-3, 4, size=shape).astype(np.float32)


def forward_and_gradients(layer, x, cotangent):
    """[y, dx, d weight for each trainable weight] of sum(layer(x) * cotangent): a linear loss makes the
    incoming gradient the cotangent itself."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * cotangent)
    return [y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)]


def assert_bits_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))


# ----------------------------------------------------------------------------------------------
# The layers, and their oracle in amsim.gemm
# ----------------------------------------------------------------------------------------------

#: name: (AM layer, Keras layer, arguments, input shape)
CASES = {
    "conv1d_same_strided": (ak.AMConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, strides=2,
                                                                  padding="same"), (2, 9, 3)),
    "conv1d_causal_dilated": (ak.AMConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, padding="causal",
                                                                    dilation_rate=2), (2, 9, 3)),
    "conv1d_groups_channels_first": (ak.AMConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, groups=2,
                                                                           data_format="channels_first"), (2, 4, 9)),
    "conv1d_strided_channels_first": (ak.AMConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, strides=2,
                                                                            data_format="channels_first"), (2, 3, 9)),
    "conv3d_same_strided": (ak.AMConv3D, keras.layers.Conv3D, dict(filters=4, kernel_size=(2, 3, 2),
                                                                  strides=(1, 2, 1), padding="same"), (2, 4, 5, 6, 3)),
    "conv3d_dilated_channels_first": (ak.AMConv3D, keras.layers.Conv3D, dict(
        filters=4, kernel_size=2, dilation_rate=2, data_format="channels_first"), (2, 3, 5, 5, 7)),
    "conv3d_groups": (ak.AMConv3D, keras.layers.Conv3D, dict(filters=4, kernel_size=2, groups=2), (2, 3, 4, 4, 4)),
    "depthwise1d_strided": (ak.AMDepthwiseConv1D, keras.layers.DepthwiseConv1D, dict(
        kernel_size=3, strides=2, depth_multiplier=2), (2, 9, 3)),
    "depthwise1d_dilated_channels_first": (ak.AMDepthwiseConv1D, keras.layers.DepthwiseConv1D, dict(
        kernel_size=3, padding="same", dilation_rate=2, data_format="channels_first"), (2, 3, 9)),
    "conv1d_transpose_output_padding": (ak.AMConv1DTranspose, keras.layers.Conv1DTranspose, dict(
        filters=4, kernel_size=3, strides=2, output_padding=1), (2, 5, 3)),
    "conv1d_transpose_same_channels_first": (ak.AMConv1DTranspose, keras.layers.Conv1DTranspose, dict(
        filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_first"), (2, 3, 5)),
    "conv2d_transpose_same_strided": (ak.AMConv2DTranspose, keras.layers.Conv2DTranspose, dict(
        filters=4, kernel_size=3, strides=2, padding="same"), (2, 4, 5, 3)),
    "conv2d_transpose_output_padding": (ak.AMConv2DTranspose, keras.layers.Conv2DTranspose, dict(
        filters=4, kernel_size=(3, 2), strides=(2, 3), output_padding=(1, 2)), (2, 4, 5, 3)),
    "conv2d_transpose_dilated": (ak.AMConv2DTranspose, keras.layers.Conv2DTranspose, dict(
        filters=4, kernel_size=3, dilation_rate=2, padding="same"), (2, 6, 5, 3)),
    "conv2d_transpose_channels_first": (ak.AMConv2DTranspose, keras.layers.Conv2DTranspose, dict(
        filters=4, kernel_size=3, strides=2, data_format="channels_first"), (2, 3, 4, 5)),
    "conv3d_transpose_same_strided": (ak.AMConv3DTranspose, keras.layers.Conv3DTranspose, dict(
        filters=4, kernel_size=2, strides=2, padding="same"), (2, 3, 4, 3, 3)),
    "conv3d_transpose_output_padding": (ak.AMConv3DTranspose, keras.layers.Conv3DTranspose, dict(
        filters=4, kernel_size=3, strides=(2, 1, 2), output_padding=(1, 0, 1)), (2, 3, 4, 3, 3)),
    "conv3d_transpose_channels_first": (ak.AMConv3DTranspose, keras.layers.Conv3DTranspose, dict(
        filters=4, kernel_size=2, strides=2, data_format="channels_first"), (2, 3, 3, 4, 3)),
    "separable1d_same": (ak.AMSeparableConv1D, keras.layers.SeparableConv1D, dict(
        filters=4, kernel_size=3, depth_multiplier=2, padding="same"), (2, 9, 3)),
    "separable2d_strided": (ak.AMSeparableConv2D, keras.layers.SeparableConv2D, dict(
        filters=4, kernel_size=3, strides=2, depth_multiplier=2), (2, 9, 8, 3)),
    "separable2d_dilated_channels_first": (ak.AMSeparableConv2D, keras.layers.SeparableConv2D, dict(
        filters=4, kernel_size=3, dilation_rate=2, padding="same", data_format="channels_first"), (2, 3, 9, 8)),
}
#: Keras' own Conv1D computes channels-first strided convolutions wrongly on TensorFlow's CPU (its
#: output disagrees with the definition; AMConv1D agrees with amsim.gemm): compared with amsim.gemm only.
KERAS_WRONG = {"conv1d_strided_channels_first"}


def built(case, **am):
    """The case's AM layer (with ``am`` arguments) and its Keras layer, built."""
    am_cls, keras_cls, args, shape = CASES[case]
    layer, reference_layer = am_cls(**args, **am), keras_cls(**args)
    layer.build(shape)
    reference_layer.build(shape)
    return layer, reference_layer


def channels_last(a, layer):
    return np.moveaxis(a, 1, -1) if layer.data_format == "channels_first" else a


def from_channels_last(a, layer):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1) if layer.data_format == "channels_first" else a)


def geometry_2d_or_3d(layer):
    """The layer's strides, padding and dilations as amsim.gemm takes them: a 1-D layer's on a height-1
    axis, its causal padding as explicit padding on the left."""
    strides, dilations, padding = tuple(layer.strides), tuple(layer.dilation_rate), layer.padding.upper()
    if layer.rank == 1:
        strides, dilations = (1, *strides), (1, *dilations)
        if padding == "CAUSAL":
            padding = ((0, 0), (layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0))
    return {"strides": strides, "padding": padding, "dilations": dilations}


def conv_family(rank):
    """amsim.gemm's (conv, backprop_input, backprop_filter) for a layer of this rank (1-D: 2-D's)."""
    if rank == 3:
        return gemm.conv3d, gemm.conv3d_backprop_input, gemm.conv3d_backprop_filter
    return gemm.conv2d, gemm.conv2d_backprop_input, gemm.conv2d_backprop_filter


def transposed(lut):
    """The multiplier with its table transposed: a (x) b under it is b (x) a under ``lut``."""
    return gemm.resolve(np.ascontiguousarray(lut.table.T))


def depthwise_oracle(x, kernel, lut, geometry, cot=None):
    """Each channel c is amsim.gemm's conv2d of x[..., c] with kernel[..., c, :] (channels-last): the
    output, and with the cotangent ``cot`` the input and kernel gradients too."""
    conv, backprop_input, backprop_filter = conv_family(2)
    q = kernel.shape[-1]
    parts = []
    for c in range(x.shape[-1]):
        xc, kc = np.ascontiguousarray(x[..., c:c + 1]), np.ascontiguousarray(kernel[..., c:c + 1, :])
        part = [conv(xc, kc, lut, **geometry)]
        if cot is not None:
            cc = np.ascontiguousarray(cot[..., c * q:(c + 1) * q])
            part += [backprop_input(xc.shape, kc, cc, lut, **geometry), backprop_filter(xc, kc.shape, cc, lut,
                                                                                       **geometry)]
        parts.append(part)
    return [np.concatenate(p, -2 if i == 2 else -1) for i, p in enumerate(zip(*parts))]


def oracle(layer, x, weights, cot, lut):
    """[y, dx, d kernel(s)] of the layer by amsim.gemm (the bias added to y; its gradient left out)."""
    geometry = geometry_2d_or_3d(layer)
    lift = (lambda a: a[:, None]) if layer.rank == 1 else (lambda a: a)
    lower = (lambda a: a[:, 0]) if layer.rank == 1 else (lambda a: a)
    x, cot = (np.ascontiguousarray(lift(channels_last(a, layer))) for a in (x, cot))
    kernels = [w[None] if layer.rank == 1 else w for w in weights[:-1]]
    conv, backprop_input, backprop_filter = conv_family(layer.rank)
    if isinstance(layer, (ak.AMConv1D, ak.AMConv3D)):
        # one convolution per group, concatenated
        groups = [(np.ascontiguousarray(xg), np.ascontiguousarray(kg), np.ascontiguousarray(cg)) for xg, kg, cg in
                  zip(*(np.split(a, layer.groups, -1) for a in (x, kernels[0], cot)))]
        y, dx, dk = (np.concatenate(parts, -1) for parts in zip(*[
            (conv(xg, kg, lut, **geometry), backprop_input(xg.shape, kg, cg, lut, **geometry),
             backprop_filter(xg, kg.shape, cg, lut, **geometry)) for xg, kg, cg in groups]))
        d_kernels = [dk]
    elif isinstance(layer, ak.AMDepthwiseConv1D):
        y, dx, dk = depthwise_oracle(x, kernels[0], lut, geometry, cot)
        d_kernels = [dk]
    elif isinstance(layer, (ak.AMConv1DTranspose, ak.AMConv3DTranspose, ak.AMConv2DTranspose)):
        # the input gradient of the convolution it transposes, of input shape output_shape
        kernel = kernels[0]
        out_shape = (x.shape[0], *cot.shape[1:-1], kernel.shape[-2])
        y = backprop_input(out_shape, kernel, x, lut, **geometry)
        dx = conv(cot, kernel, lut, **geometry)
        # dW^T = x^T (x) patches(cot): the input indexes the LUT's rows here too. amsim.gemm's filter
        # gradient computes patches(cot)^T (x) x; under the transposed table its products are x (x) patch.
        d_kernels = [backprop_filter(cot, kernel.shape, x, transposed(lut), **geometry)]
    else:  # separable: depthwise, then a 1x1 convolution of its result
        depthwise_kernel, pointwise_kernel = kernels
        mid, = depthwise_oracle(x, depthwise_kernel, lut, geometry)
        y = conv(mid, pointwise_kernel, lut)
        d_mid = backprop_input(mid.shape, pointwise_kernel, cot, lut)
        d_pointwise = backprop_filter(mid, pointwise_kernel.shape, cot, lut)
        _, dx, d_depthwise = depthwise_oracle(x, depthwise_kernel, lut, geometry, d_mid)
        d_kernels = [d_depthwise, d_pointwise]
    y = lower(y) + weights[-1]
    return [from_channels_last(y, layer), from_channels_last(lower(dx), layer),
            *(k[0] if layer.rank == 1 else k for k in d_kernels)]


@pytest.mark.parametrize("case", CASES)
def test_with_mbm_each_layer_is_amsim_gemm_bit_for_bit_forward_and_backward(case, mbm):
    layer, _ = built(case, lut=mbm)
    rng = np.random.default_rng(1)
    weights = [normal(rng, w.shape) for w in layer.weights]
    layer.set_weights(weights)
    shape = CASES[case][3]
    x, cot = normal(rng, shape), normal(rng, layer.compute_output_shape(shape))
    got = forward_and_gradients(layer, x, cot)
    assert_bits_equal(got[:-1], oracle(layer, x, weights, cot, mbm))  # the last: the bias gradient


@pytest.mark.parametrize("gradient", ["approximate", "exact"])
@pytest.mark.parametrize("case", sorted(set(CASES) - KERAS_WRONG))
def test_with_the_exact_lut_each_layer_is_its_keras_layer_forward_and_backward(case, gradient, exact):
    layer, reference_layer = built(case, lut=exact, gradient=gradient)
    rng = np.random.default_rng(2)
    weights = [small_integers(rng, w.shape) for w in reference_layer.weights]
    reference_layer.set_weights(weights)
    layer.set_weights(weights)
    shape = CASES[case][3]
    x, cot = small_integers(rng, shape), small_integers(rng, reference_layer.compute_output_shape(shape))
    got, want = forward_and_gradients(layer, x, cot), forward_and_gradients(reference_layer, x, cot)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("layer, shape", [
    (lambda: ak.AMConv2D(4, 3, data_format="channels_first", lut="mbm", bits=M), (1, 3, 6, 6)),
    (lambda: ak.AMConv3D(4, 2, data_format="channels_first", lut="mbm", bits=M), (1, 3, 3, 3, 5)),
    (lambda: ak.AMConv1DTranspose(4, 2, data_format="channels_first", lut="mbm", bits=M), (1, 3, 3)),
])
def test_a_channels_first_bias_is_added_along_the_channels_where_the_last_size_is_the_filter_count(layer, shape):
    # Keras' own Conv2D and Conv3D add it along the last axis then (keras.ops.add takes a bias
    # reshaped for channels first for a channels-last one when both axes have its size).
    layer = layer()
    layer.build(shape)
    bias = np.array([1, 2, 3, 4], np.float32)
    layer.set_weights([np.zeros(layer.kernel.shape, np.float32), bias])
    y = layer(np.ones(shape, np.float32)).numpy()
    assert y.shape[-1] == 4
    np.testing.assert_array_equal(y, np.broadcast_to(bias.reshape(1, 4, *[1] * (len(shape) - 2)), y.shape))


# ----------------------------------------------------------------------------------------------
# The transposed and 3-D ops: which operand is which, TensorFlow's exact gradient
# ----------------------------------------------------------------------------------------------


def with_grads(fn, x, w, cot):
    x, w = tf.constant(x), tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = fn(x, w)
    return [y.numpy(), *(g.numpy() for g in tape.gradient(y, [x, w], output_gradients=tf.constant(cot)))]


@pytest.mark.parametrize("rank", [2, 3])
def test_transposed_ops_take_their_input_as_the_luts_row_operand_forward_and_for_the_kernel(rank, asymmetric):
    # One input element a, one kernel element b, one output gradient c: every result is one product.
    a, b, c = np.float32(1.5), np.float32(1.25), np.float32(1.75)
    one = (1,) * (rank + 2)
    op = ak.am_conv2d_transpose if rank == 2 else ak.am_conv3d_transpose
    y, dx, dw = with_grads(lambda x, w: op(x, w, one, asymmetric), np.full(one, a), np.full(one, b),
                           np.full(one, c))
    product = lambda p, q: reference.approx_multiply(p, q, asymmetric.table, M)  # noqa: E731
    assert product(a, b) != product(b, a) and product(a, c) != product(c, a)
    assert y.item() == product(a, b)     # input (x) kernel
    assert dw.item() == product(a, c)    # input (x) output gradient
    assert dx.item() == product(c, b)    # output gradient (x) kernel, as a convolution's forward pass


@pytest.mark.parametrize("am_3d, am_2d", [
    (lambda **a: ak.AMConv3D(4, (1, 3, 2), strides=(1, 2, 1), padding="same", **a),
     lambda **a: ak.AMConv2D(4, (3, 2), strides=(2, 1), padding="same", **a)),
    (lambda **a: ak.AMConv3DTranspose(4, (1, 3, 2), strides=(1, 2, 1), padding="same", **a),
     lambda **a: ak.AMConv2DTranspose(4, (3, 2), strides=(2, 1), padding="same", **a)),
])
def test_a_3d_layer_on_a_depth_of_one_is_the_2d_layer_bit_for_bit(am_3d, am_2d, asymmetric):
    """The 3-D layers (patches and am_matmul) and the 2-D ones (the engine's conv ops) give the same
    products in the same sums, operand roles included (an asymmetric LUT tells them apart)."""
    rng = np.random.default_rng(3)
    x = normal(rng, (2, 5, 6, 3))
    layer_3d, layer_2d = am_3d(lut=asymmetric), am_2d(lut=asymmetric)
    layer_3d.build((2, 1, 5, 6, 3))
    layer_2d.build(x.shape)
    weights = [normal(rng, w.shape) for w in layer_2d.weights]
    layer_2d.set_weights(weights)
    layer_3d.set_weights([weights[0][None], weights[1]])
    cot = normal(rng, layer_2d.compute_output_shape(x.shape))
    y3, dx3, dk3, db3 = forward_and_gradients(layer_3d, x[:, None], cot[:, None])
    assert_bits_equal([y3[:, 0], dx3[:, 0], dk3[0], db3], forward_and_gradients(layer_2d, x, cot))


def test_exact_gradient_of_am_conv2d_transpose_is_tensorflows_bit_for_bit(mbm):
    rng = np.random.default_rng(4)
    x, w = normal(rng, (2, 4, 5, 3)), normal(rng, (3, 3, 2, 3))
    out_shape = (2, 8, 10, 2)
    cot = normal(rng, out_shape)
    got = with_grads(lambda x, w: ak.am_conv2d_transpose(x, w, out_shape, mbm, strides=2, padding="SAME",
                                                         gradient="exact"), x, w, cot)
    want = with_grads(lambda x, w: tf.nn.conv2d_transpose(x, w, out_shape, 2, "SAME"), x, w, cot)
    assert_bits_equal(got[1:], want[1:])
    assert_bits_equal(got[:1], [gemm.conv2d_backprop_input(out_shape, w, x, mbm, 2, "SAME")])


def test_transposed_and_3d_ops_in_a_graph_with_an_unknown_batch_give_the_eager_bits(mbm):
    rng = np.random.default_rng(5)
    x2, w2 = normal(rng, (3, 4, 5, 2)), normal(rng, (3, 3, 4, 2))
    x3, w3 = normal(rng, (3, 3, 4, 5, 2)), normal(rng, (2, 3, 2, 2, 4))

    def ops(x2, x3):
        return (ak.am_conv2d_transpose(x2, w2, (None, 8, 10, 4), mbm, strides=2, padding="SAME"),
                ak.am_conv3d(x3, w3, mbm, padding="SAME"),
                ak.am_conv3d_transpose(x3, np.swapaxes(w3, -1, -2), (None, 3, 4, 5, 4), mbm, padding="SAME"))

    graph = tf.function(ops, input_signature=[tf.TensorSpec([None, 4, 5, 2]), tf.TensorSpec([None, 3, 4, 5, 2])])
    assert_bits_equal([t.numpy() for t in graph(x2, x3)], [t.numpy() for t in ops(x2, x3)])


# ----------------------------------------------------------------------------------------------
# amsim.gemm's conv3d: TensorFlow's conv3d, conv2d at a depth of one
# ----------------------------------------------------------------------------------------------

CONV3D_CASES = [  # (x shape, w shape, strides, padding, dilations)
    ((2, 5, 6, 7, 3), (2, 3, 2, 3, 4), 1, "SAME", 1),
    ((2, 5, 6, 7, 3), (2, 3, 2, 3, 4), (1, 2, 3), "VALID", 1),
    ((1, 7, 7, 7, 2), (2, 2, 3, 2, 3), 1, "SAME", (2, 3, 1)),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, padding, dilations", CONV3D_CASES)
def test_gemm_conv3d_with_the_exact_lut_is_tensorflows_conv3d_forward_and_backward(exact, x_shape, w_shape, strides,
                                                                                    padding, dilations):
    rng = np.random.default_rng(6)
    x, w = small_integers(rng, x_shape), small_integers(rng, w_shape)
    geometry = {"strides": strides, "padding": padding, "dilations": dilations}
    y = gemm.conv3d(x, w, exact, **geometry)
    cot = small_integers(rng, y.shape)
    tf_strides = [1, *gemm.conv.spatial(strides, "strides", 3), 1]
    tf_dilations = [1, *gemm.conv.spatial(dilations, "dilations", 3), 1]
    want = with_grads(lambda x, w: tf.nn.conv3d(x, w, tf_strides, padding, dilations=tf_dilations), x, w, cot)
    got = [y, gemm.conv3d_backprop_input(x.shape, w, cot, exact, **geometry),
           gemm.conv3d_backprop_filter(x, w.shape, cot, exact, **geometry)]
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)


def test_gemm_conv3d_on_a_depth_of_one_is_gemm_conv2d_bit_for_bit(mbm):
    rng = np.random.default_rng(7)
    x, w = normal(rng, (2, 1, 6, 7, 3)), normal(rng, (1, 3, 2, 3, 4))
    geometry = {"strides": (1, 2, 1), "padding": "SAME", "dilations": 1}
    geometry_2d = {"strides": (2, 1), "padding": "SAME", "dilations": 1}
    y = gemm.conv3d(x, w, mbm, **geometry)
    dy = normal(rng, y.shape)
    assert_bits_equal([y[:, 0], gemm.conv3d_backprop_input(x.shape, w, dy, mbm, **geometry)[:, 0],
                       gemm.conv3d_backprop_filter(x, w.shape, dy, mbm, **geometry)[0]],
                      [gemm.conv2d(x[:, 0], w[0], mbm, **geometry_2d),
                       gemm.conv2d_backprop_input(x[:, 0].shape, w[0], dy[:, 0], mbm, **geometry_2d),
                       gemm.conv2d_backprop_filter(x[:, 0], w[0].shape, dy[:, 0], mbm, **geometry_2d)])


# ----------------------------------------------------------------------------------------------
# Models: converting, saving, configs
# ----------------------------------------------------------------------------------------------


def keras_models():
    """Sequential models holding every Keras layer this family replaces."""
    return [
        keras.Sequential([keras.Input((12, 3)), keras.layers.Conv1D(4, 3, padding="causal"),
                          keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
                          keras.layers.SeparableConv1D(4, 3, padding="same"),
                          keras.layers.Conv1DTranspose(3, 3, strides=2)]),
        keras.Sequential([keras.Input((8, 8, 3)), keras.layers.SeparableConv2D(4, 3, depth_multiplier=2),
                          keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")]),
        keras.Sequential([keras.Input((4, 6, 6, 2)), keras.layers.Conv3D(4, 2, padding="same"),
                          keras.layers.Conv3DTranspose(2, 3, strides=(1, 2, 2), padding="same")]),
    ]


def test_approximate_swaps_every_layer_with_bitwise_identical_weights_and_precise_swaps_them_back(mbm):
    for model in keras_models():
        approx = ak.approximate(model, mbm)
        assert [type(layer).__name__ for layer in approx.layers] == [
            "AM" + type(layer).__name__ for layer in model.layers]
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), approx.get_weights()))
        back = ak.precise(approx)
        assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), back.get_weights()))


def test_a_keras_file_of_these_layers_loads_and_predicts_bit_for_bit(tmp_path, mbm):
    for i, model in enumerate(keras_models()):
        approx = ak.approximate(model, mbm)
        x = np.random.default_rng(8).standard_normal((3, *model.input_shape[1:])).astype(np.float32)
        expected = approx.predict(x, verbose=0)
        approx.save(tmp_path / f"model{i}.keras")
        loaded = keras.models.load_model(tmp_path / f"model{i}.keras")
        assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in approx.layers]
        assert np.array_equal(loaded.predict(x, verbose=0), expected)


@pytest.mark.parametrize("case", CASES)
def test_get_config_round_trips_every_layer(case, mbm):
    layer, _ = built(case, lut=mbm, rounding="rne", gradient="exact")
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config
    assert np.array_equal(again.multiplier.table, mbm.table)


# ----------------------------------------------------------------------------------------------
# Bad input: one clear error
# ----------------------------------------------------------------------------------------------


def test_layers_refuse_bad_approximate_arguments_naming_themselves():
    with pytest.raises(ak.LayerConfigError, match="AMSeparableConv2D 'sep'.*lut= is required"):
        ak.AMSeparableConv2D(4, 3, name="sep")
    with pytest.raises(ak.LayerConfigError, match="AMConv1DTranspose 't'.*rounding"):
        ak.AMConv1DTranspose(4, 3, lut="mbm", bits=M, rounding="nearest", name="t")
    layer = ak.AMConv3D(4, 2, lut="mbm", bits=M, name="c")
    layer.build((1, 3, 4, 4, 2))
    with pytest.raises(ak.LayerConfigError, match="AMConv3D 'c'.*cannot be quantized"):
        layer.quantize("int8")


def test_3d_layers_need_their_input_shape_known_when_traced(mbm):
    for layer in (ak.AMConv3D(4, 2, lut=mbm), ak.AMConv3DTranspose(4, 2, lut=mbm)):
        traced = tf.function(layer, input_signature=[tf.TensorSpec([None, None, 4, 4, 2])], autograph=False)
        with pytest.raises(ShapeError, match=r"am_conv3d\w* needs .* known when traced"):
            traced.get_concrete_function()


@pytest.mark.parametrize("call, words", [
    (lambda lut: ak.am_conv2d_transpose(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 5, 2), np.float32),
                                        (1, 11, 11, 5), lut, strides=2),
     r"^am_conv2d_transpose: input has shape \(1, 4, 4, 2\), but the convolution it transposes .* gives "
     r"\(1, 5, 5, 2\)$"),
    (lambda lut: ak.am_conv2d_transpose(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 5, 2), np.float32),
                                        (1, 9, 5), lut), r"^am_conv2d_transpose: output_shape must be 4 sizes"),
    (lambda lut: ak.am_conv3d_transpose(np.ones((1, 2, 4, 4, 2), np.float32), np.ones((1, 3, 3, 5, 2), np.float32),
                                        (1, 2, 4, 4), lut), r"^am_conv3d_transpose: output_shape must be 5 sizes"),
    (lambda lut: ak.am_conv3d(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 4), np.float32), lut),
     r"^am_conv3d needs NDHWC input and a DHWIO filter"),
    (lambda lut: ak.am_conv3d(np.ones((1, 2, 4, 4, 2), np.float32), np.ones((1, 3, 3, 3, 4), np.float32), lut),
     r"^conv3d: input has 2 channels, filter expects 3"),
])
def test_ops_refuse_shapes_that_do_not_fit_with_one_line_errors(mbm, call, words):
    with pytest.raises(ShapeError, match=words) as info:
        call(mbm)
    assert "\n" not in str(info.value)
