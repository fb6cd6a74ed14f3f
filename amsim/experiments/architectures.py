"""The networks a study trains, built as plain Keras models (float32, uncompiled).

Each architecture comes with the training settings it is usually trained with (optimizer,
learning rate, batch size) and the preprocessing its inputs get; a run may override the settings.
Approximate versions are made from these models by :func:`amsim.keras.approximate`, so every
multiplier trains the same graph.

* ``mlp``: Flatten, Dense 128 ReLU, Dense softmax. Adam 1e-3, batch 32.
* ``lenet5``: LeCun et al. 1998's layout (6 and 16 5x5 convolutions, 2x2 pooling, dense 120-84),
  with ReLU and max pooling; the first convolution pads ("same"), as for 28x28 MNIST, and on
  inputs under 16 pixels the second one too. Adam 1e-3, batch 64.
* ``alexnet``: the reference study's AlexNet (Knauth 2023, appendix 7.2): inputs resized to
  227x227, convolutions 96 (11x11 stride 4), 256 (5x5), 384, 384, 256 (3x3), each followed by
  batch normalisation, 3x3 stride-2 max pooling after the first, second and fifth, two Dense 4096
  with dropout 0.5, Dense softmax; SGD with learning rate 0.001, batch 32; images standardised
  per image as there.
* ``alexnet-cifar``: the same layers on the 32x32 images themselves (no resizing; the first
  convolution keeps stride 4 and pads, the pools pad), so that it trains on a CPU.
* ``resnet``: a small ResNet (He et al. 2016): a 3x3 stem of 16 channels and three stages of
  one basic block each (16, 32, 64 channels, stride 2 between stages) with batch
  normalisation, global average pooling, Dense softmax. Adam 1e-3, batch 64.
* ``mobilenetv2``: ``keras.applications.MobileNetV2`` (Sandler et al. 2018) at width multiplier
  0.35, untrained (``weights=None``: nothing is downloaded), with its own classifier (global average
  pooling, Dense softmax); images smaller than the 32x32 it accepts at least are resized to it
  first (digits' 8x8, MNIST's 28x28). Adam 1e-3, batch 64.
* ``lstm``: the image read row by row as a sequence (H steps of W*C features): LSTM of 64 units,
  Dense softmax on its last output. Adam 1e-3, batch 64.
* ``transformer``: a one-block encoder (Vaswani et al. 2017, post-norm) with the image's rows as
  tokens: a linear embedding to 32 features whose bias, one per token and feature, is the learned
  position embedding (an EinsumDense), 4-head self-attention with a residual connection and layer
  normalisation, a feed-forward Dense 64 ReLU, Dense 32 with a residual connection and layer
  normalisation, average over the tokens, Dense softmax. Adam 1e-3, batch 64.
"""

from __future__ import annotations

import dataclasses

from . import ExperimentError

__all__ = ["Architecture", "ARCHITECTURES", "get_architecture", "build_model", "make_optimizer", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    build: object  # (input_shape, classes) -> keras.Model
    optimizer: str
    learning_rate: float
    batch_size: int
    preprocess: str = "unit"  # "unit": pixels in [0, 1]; "per_image": standardised per image
    description: str = ""


def _mlp(input_shape, classes):
    from keras import Input, Sequential, layers

    return Sequential([Input(input_shape), layers.Flatten(), layers.Dense(128, activation="relu"),
                       layers.Dense(classes, activation="softmax")], name="mlp")


def _lenet5(input_shape, classes):
    from keras import Input, Sequential, layers

    small = min(input_shape[:2]) < 16
    return Sequential([
        Input(input_shape),
        layers.Conv2D(6, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, padding="same" if small else "valid", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(classes, activation="softmax"),
    ], name="lenet5")


def _alexnet_layers(classes, *, cifar: bool):
    from keras import layers

    pad = "same" if cifar else "valid"
    return [
        layers.Conv2D(96, 11, strides=4, activation="relu", padding=pad),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2, padding=pad),
        layers.Conv2D(256, 5, activation="relu", padding="same"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2, padding=pad),
        layers.Conv2D(384, 3, activation="relu", padding="same"),
        layers.BatchNormalization(),
        layers.Conv2D(384, 3, activation="relu", padding="same"),
        layers.BatchNormalization(),
        layers.Conv2D(256, 3, activation="relu", padding="same"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2, padding=pad),
        layers.Flatten(),
        layers.Dense(4096, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(4096, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(classes, activation="softmax"),
    ]


def _alexnet(input_shape, classes):
    from keras import Input, Sequential, layers

    return Sequential([Input(input_shape), layers.Resizing(227, 227), *_alexnet_layers(classes, cifar=False)],
                      name="alexnet")


def _alexnet_cifar(input_shape, classes):
    from keras import Input, Sequential

    return Sequential([Input(input_shape), *_alexnet_layers(classes, cifar=True)], name="alexnet_cifar")


def _resnet(input_shape, classes):
    from keras import Input, Model, layers

    def block(x, filters, stride):
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.BatchNormalization()(y)
        y = layers.Activation("relu")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
            shortcut = layers.BatchNormalization()(shortcut)
        return layers.Activation("relu")(layers.Add()([y, shortcut]))

    inputs = Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    return Model(inputs, layers.Dense(classes, activation="softmax")(x), name="resnet")


#: The smallest image side keras.applications.MobileNetV2 accepts.
_MOBILENET_MIN_SIDE = 32


def _mobilenetv2(input_shape, classes):
    import keras
    from keras import Input, Sequential, layers

    height, width, channels = input_shape
    size = (max(height, _MOBILENET_MIN_SIDE), max(width, _MOBILENET_MIN_SIDE))
    resize = [layers.Resizing(*size)] if size != (height, width) else []
    return Sequential([
        Input(input_shape),
        *resize,
        keras.applications.MobileNetV2(input_shape=(*size, channels), alpha=0.35, weights=None, classes=classes),
    ], name="mobilenetv2")


def _lstm(input_shape, classes):
    from keras import Input, Sequential, layers

    height, width, channels = input_shape
    return Sequential([Input(input_shape), layers.Reshape((height, width * channels)), layers.LSTM(64),
                       layers.Dense(classes, activation="softmax")], name="lstm")


def _transformer(input_shape, classes, *, d_model=32, heads=4, d_ff=64):
    from keras import Input, Model, layers

    height, width, channels = input_shape
    inputs = Input(input_shape)
    tokens = layers.Reshape((height, width * channels))(inputs)
    # x_t W + b + p_t with a learned p_t per token t is x_t W plus one bias per (token, feature).
    x = layers.EinsumDense("btf,fd->btd", output_shape=(height, d_model), bias_axes="td",
                           bias_initializer="random_normal", name="embedding")(tokens)
    attended = layers.MultiHeadAttention(heads, d_model // heads)(x, x)
    x = layers.LayerNormalization()(layers.Add()([x, attended]))
    fed = layers.Dense(d_model)(layers.Dense(d_ff, activation="relu")(x))
    x = layers.LayerNormalization()(layers.Add()([x, fed]))
    x = layers.GlobalAveragePooling1D()(x)
    return Model(inputs, layers.Dense(classes, activation="softmax")(x), name="transformer")


ARCHITECTURES = {a.name: a for a in (
    Architecture("mlp", _mlp, "adam", 1e-3, 32, description="Flatten, Dense 128 ReLU, Dense softmax"),
    Architecture("lenet5", _lenet5, "adam", 1e-3, 64, description="LeNet-5 layout, ReLU, max pooling"),
    Architecture("alexnet", _alexnet, "sgd", 1e-3, 32, "per_image",
                 "the reference study's AlexNet, inputs resized to 227x227"),
    Architecture("alexnet-cifar", _alexnet_cifar, "sgd", 1e-3, 32, "per_image",
                 "the reference study's AlexNet layers on 32x32 inputs"),
    Architecture("resnet", _resnet, "adam", 1e-3, 64, description="small ResNet: 3 stages of one basic block"),
    Architecture("mobilenetv2", _mobilenetv2, "adam", 1e-3, 64,
                 description="keras.applications.MobileNetV2, width 0.35, on images of at least 32x32"),
    Architecture("lstm", _lstm, "adam", 1e-3, 64, description="rows as a sequence: LSTM 64, Dense softmax"),
    Architecture("transformer", _transformer, "adam", 1e-3, 64,
                 description="rows as tokens: one encoder block of 4-head attention, d_model 32"),
)}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ExperimentError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def build_model(name: str, input_shape, classes: int):
    """The float32 Keras model of architecture ``name`` for inputs of ``input_shape`` (H, W, C)."""
    arch = get_architecture(name)
    if len(input_shape) != 3:
        raise ExperimentError(f"architecture {name!r} takes images (H, W, C), not inputs of shape {input_shape}")
    return arch.build(tuple(input_shape), int(classes))


def make_optimizer(name: str, learning_rate: float):
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    raise ExperimentError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
