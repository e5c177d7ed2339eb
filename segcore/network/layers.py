"""Custom Keras layers of the DeepLabV3+ model, registered for ``.keras`` serialization.

Reference: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation" (DeepLabV3+), ECCV 2018, https://arxiv.org/abs/1802.02611.

All layers are fully convolutional and work on inputs whose height and width are only known at
run time (``Input((None, None, 3))``); none is a ``Lambda`` layer, so saved models load with
``keras.saving.load_model(path, safe_mode=True)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import layers

PACKAGE = "segcore"

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
"""Per-channel means (B, G, R) that Keras' ResNet50 subtracts from 0–255 inputs ("caffe" mode)."""


class _DilatedConv2D(layers.Conv2D):
    """Conv2D with dilation that works at inference on any input size.

    Keras runs dilated convolutions through ``tf.nn.convolution``, which emulates dilation with
    SpaceToBatchND. When the traced input shape is only partly known (``model.predict`` relaxes
    its trace to e.g. ``(1, 48, None, 3)`` after seeing several image sizes) that path computes
    its padding wrongly and fails ("padded_shape[1]=57 is not divisible by block_shape[1]=18").
    At inference (``training`` falsy) this layer calls ``tf.nn.conv2d`` with the dilation
    instead, a single native convolution with no such step. In training it keeps the Keras path,
    because the native op's gradient is not implemented on CPU; training runs on fixed-size
    crops, where the Keras path is correct.
    """

    def call(self, inputs, training=None):
        if training:
            return super().call(inputs)
        outputs = tf.nn.conv2d(
            inputs, self.kernel, strides=1, padding="SAME", dilations=self.dilation_rate
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(layers.Layer):
    """Conv2D, then BatchNormalization and an activation when ``batch`` is on.

    Args:
        filters: int. Number of output channels, defaults to 256.
        kernel_size: int. Square kernel side, defaults to 3.
        dilation_rate: int. Dilation of the convolution, defaults to 1.
        use_bias: bool. Whether the convolution has a bias, defaults to False (BatchNorm follows).
        batch: bool. Apply BatchNormalization and ``activation`` after the convolution,
            defaults to True.
        activation: str. Activation applied when ``batch`` is on, defaults to ``"relu"``.
        batchnorm_trainable: bool. Whether the BatchNormalization is trained (False: it runs in
            inference mode, as :func:`segcore.training.models.freeze_batchnorm` leaves it);
            saved with the layer so a resumed run keeps it, defaults to True.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Example:
        >>> block = ConvBlock(filters=48, kernel_size=1)
        >>> block(np.zeros((1, 32, 32, 8))).shape
        TensorShape([1, 32, 32, 48])
    """

    def __init__(
        self,
        filters: int = 256,
        kernel_size: int = 3,
        dilation_rate: int = 1,
        use_bias: bool = False,
        batch: bool = True,
        activation: str = "relu",
        batchnorm_trainable: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.use_bias = bool(use_bias)
        self.batch = bool(batch)
        self.activation = activation
        conv_class = _DilatedConv2D if self.dilation_rate > 1 else layers.Conv2D
        self.conv = conv_class(
            self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            padding="same",
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.HeNormal(),
            dtype=self.dtype_policy,
            name="conv",
        )
        self.bn = layers.BatchNormalization(dtype=self.dtype_policy, name="bn") if batch else None
        if self.bn is not None:
            self.bn.trainable = bool(batchnorm_trainable)
        self.act = layers.Activation(activation, dtype=self.dtype_policy) if batch else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv(inputs, training=training)
        if self.bn is not None:
            x = self.bn(x, training=training)
            x = self.act(x)
        return x

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            use_bias=self.use_bias,
            batch=self.batch,
            activation=self.activation,
            batchnorm_trainable=self.bn.trainable if self.bn is not None else True,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeLike(layers.Layer):
    """Bilinearly resizes ``inputs[0]`` to the run-time height and width of ``inputs[1]``.

    ``keras.ops.image.resize`` needs a size known when the graph is traced; this layer reads the
    reference's shape at run time, so a model built on ``Input((None, None, 3))`` works at any size.

    Args:
        interpolation: str. A ``tf.image.resize`` method, defaults to ``"bilinear"``.
        **kwargs: base ``keras.layers.Layer`` arguments.
    """

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        return tf.cast(tf.image.resize(x, size, method=self.interpolation), x.dtype)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageNetNormalization(layers.Layer):
    """Turns RGB images in ``[0, 1]`` into what Keras' ResNet50 expects ("caffe" mode).

    Scales to 0–255, reorders RGB to BGR and subtracts the ImageNet channel means, as
    ``keras.applications.resnet50.preprocess_input`` does, but inside the model so a saved model
    carries it.

    Args:
        **kwargs: base ``keras.layers.Layer`` arguments.
    """

    def call(self, inputs):
        x = inputs * 255.0
        x = x[..., ::-1]
        return x - keras.ops.cast(keras.ops.array(IMAGENET_BGR_MEAN), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class DSPP(layers.Layer):
    """Dilated spatial pyramid pooling (the ASPP module of DeepLabV3).

    Five parallel branches on the same feature map, concatenated on channels and projected by a
    1×1 :class:`ConvBlock`:

    * image-level features: global average pooling, a 1×1 ConvBlock (with bias), bilinear
      upsampling back to the feature map's size;
    * a 1×1 ConvBlock;
    * one 3×3 ConvBlock per dilation rate in ``rates``.

    Args:
        filters: int. Channels of every branch and of the output, defaults to 256.
        rates: sequence of int. Dilation rates of the 3×3 branches, defaults to ``(6, 12, 18)``.
        batchnorm_trainable: bool. Whether the branches' BatchNormalization layers are trained
            (see :class:`ConvBlock`); saved as False when all of them are frozen, defaults to True.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> DSPP(filters=32, rates=(2, 4))(np.zeros((1, 16, 16, 64))).shape
        TensorShape([1, 16, 16, 32])
    """

    def __init__(
        self,
        filters: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        batchnorm_trainable: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)
        block = functools.partial(
            ConvBlock, dtype=self.dtype_policy, batchnorm_trainable=batchnorm_trainable
        )
        self.pool_conv = block(self.filters, 1, use_bias=True, name="pool_conv")
        self.resize = ResizeLike(dtype=self.dtype_policy, name="pool_resize")
        self.conv_1x1 = block(self.filters, 1, name="conv_1x1")
        self.dilated = [
            block(self.filters, 3, dilation_rate=rate, name=f"conv_3x3_rate{rate}")
            for rate in self.rates
        ]
        self.concat = layers.Concatenate(axis=-1, dtype=self.dtype_policy)
        self.project = block(self.filters, 1, name="project")

    def build(self, input_shape):
        pooled_shape = (input_shape[0], 1, 1, input_shape[-1])
        self.pool_conv.build(pooled_shape)
        self.conv_1x1.build(input_shape)
        for block in self.dilated:
            block.build(input_shape)
        n_branches = 2 + len(self.rates)
        self.project.build((*input_shape[:-1], self.filters * n_branches))
        super().build(input_shape)

    def call(self, inputs, training=None):
        pooled = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
        pooled = self.pool_conv(pooled, training=training)
        branches = [self.resize([pooled, inputs]), self.conv_1x1(inputs, training=training)]
        branches += [block(inputs, training=training) for block in self.dilated]
        return self.project(self.concat(branches), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        blocks = [self.pool_conv, self.conv_1x1, *self.dilated, self.project]
        config.update(
            filters=self.filters,
            rates=list(self.rates),
            batchnorm_trainable=any(block.bn.trainable for block in blocks),
        )
        return config
