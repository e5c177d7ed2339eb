"""The DeepLabV3+ layers and model: shapes, any-size inference, serialization, weights."""

from __future__ import annotations

import socket
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import segcore
from segcore.errors import BackboneWeightsError, ConfigError
from segcore.network.layers import DSPP, ConvBlock, ImageNetNormalization, ResizeLike
from segcore.network.model import ModelConfig, build_deeplabv3plus


@pytest.fixture(scope="module")
def model():
    return build_deeplabv3plus(backbone_weights=None)


def keras_io_reference(size: int) -> keras.Model:
    """The keras.io DeepLabV3+ example, written out independently of segcore's layers."""

    def block(x, filters=256, kernel=3, rate=1, bias=False):
        x = layers.Conv2D(filters, kernel, dilation_rate=rate, padding="same", use_bias=bias)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    inputs = keras.Input((size, size, 3))
    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_tensor=inputs)
    x = resnet.get_layer("conv4_block6_2_relu").output
    d = x.shape[1]
    pool = layers.AveragePooling2D(pool_size=(d, d))(x)
    pool = layers.UpSampling2D(size=(d, d), interpolation="bilinear")(
        block(pool, kernel=1, bias=True)
    )
    branches = [pool, block(x, kernel=1)] + [block(x, rate=r) for r in (6, 12, 18)]
    x = block(layers.Concatenate()(branches), kernel=1)
    x = layers.UpSampling2D(size=(4, 4), interpolation="bilinear")(x)
    low = block(resnet.get_layer("conv2_block3_2_relu").output, filters=48, kernel=1)
    x = block(block(layers.Concatenate()([x, low])))
    x = layers.UpSampling2D(size=(4, 4), interpolation="bilinear")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1, padding="same")(x))


def test_public_imports():
    from segcore import (  # noqa: F401
        DSPP,
        ConvBlock,
        build_deeplabv3plus,
        dice_coef,
        dice_coef_loss,
        jaccard_coef,
    )

    assert segcore.ConvBlock is ConvBlock


def test_parameter_count_matches_keras_io_reference(model):
    assert model.count_params() == keras_io_reference(64).count_params() == 11_852_353


def test_skip_features_come_from_the_documented_layers(model):
    assert model.get_layer("conv4_block6_2_relu").output.shape[-1] == 256
    assert model.get_layer("conv2_block3_2_relu").output.shape[-1] == 64
    assert model.get_layer("low_level_reduce").filters == 48
    assert model.get_layer("dspp").rates == (6, 12, 18)


@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (48, 80), (48, 112), (128, 48)])
def test_any_multiple_of_16(model, shape):
    out = model.predict(np.random.default_rng(0).random((2, *shape, 3), np.float32), verbose=0)
    assert out.shape == (2, *shape, 1)
    assert out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))


def test_predict_on_a_sequence_of_sizes_after_relaxed_retrace(model):
    # model.predict relaxes its trace to (1, 48, None, 3) here; TensorFlow's SpaceToBatch
    # dilation used to fail for some widths in that case.
    fn = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, 48, None, 3])]
    )
    for width in (96, 80, 112):
        assert fn(tf.zeros((1, 48, width, 3))).shape == (1, 48, width, 1)


def test_save_and_reload_safe_mode(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(1).random((1, 64, 96, 3), np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert not any(isinstance(layer, layers.Lambda) for layer in loaded.layers)


def test_input_shape_validation():
    with pytest.raises(ConfigError, match="multiples of 16"):
        build_deeplabv3plus((100, 100, 3))
    with pytest.raises(ConfigError, match="RGB"):
        build_deeplabv3plus((64, 64, 1))


def test_fixed_size_model():
    fixed = build_deeplabv3plus((64, 64, 3), aspp_filters=32, decoder_filters=32, aspp_rates=(2, 4))
    assert fixed.output_shape == (None, 64, 64, 1)
    assert fixed.get_layer("dspp").rates == (2, 4)


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = build_deeplabv3plus((32, 32, 3), aspp_filters=16, decoder_filters=16)
        assert mixed.get_layer("logits").compute_dtype == "float16"
        out = mixed(np.zeros((1, 32, 32, 3), np.float32))
        assert out.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_model_config_roundtrip():
    config = ModelConfig(aspp_rates=(3, 6), decoder_filters=64)
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError):
        ModelConfig(aspp_rates=())
    with pytest.raises(ConfigError, match="unknown"):
        ModelConfig.from_dict({"filters": 3})


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(self, address, *args):
        calls.append(address)
        raise OSError(101, "Network is unreachable (blocked by test)")

    def no_dns(host, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return calls


def test_random_backbone_never_touches_network(no_network):
    build_deeplabv3plus((32, 32, 3), backbone_weights=None, aspp_filters=8, decoder_filters=8)
    assert no_network == []


def test_imagenet_offline_fails_fast_with_advice(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsError) as excinfo:
        build_deeplabv3plus((32, 32, 3), backbone_weights="imagenet")
    assert time.perf_counter() - start < 10
    message = str(excinfo.value)
    assert "backbone_weights=None" in message and "--backbone-weights none" in message
    assert str(tmp_path / "keras_home" / "models") in message
    assert no_network  # it did try, once, and did not hang


def test_backbone_weights_from_local_file(tmp_path, no_network):
    # Write random ResNet50 weights in the legacy HDF5 layout of Keras' ImageNet file.
    from keras.src.legacy.saving import legacy_h5_format

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    built = build_deeplabv3plus(
        (32, 32, 3), backbone_weights=path, aspp_filters=8, decoder_filters=8
    )
    np.testing.assert_array_equal(
        built.get_layer("conv1_conv").kernel.numpy(), source.get_layer("conv1_conv").kernel.numpy()
    )
    with pytest.raises(BackboneWeightsError, match="not found"):
        build_deeplabv3plus(backbone_weights=tmp_path / "missing.h5")


def test_convblock_batch_flag_and_config():
    with_bn = ConvBlock(filters=8, kernel_size=3, dilation_rate=2)
    out = with_bn(np.random.default_rng(0).normal(size=(1, 16, 16, 4)).astype("float32"))
    assert out.shape == (1, 16, 16, 8) and float(tf.reduce_min(out)) >= 0  # ReLU
    assert len(with_bn.weights) == 1 + 4  # kernel, BN gamma/beta/mean/var
    plain = ConvBlock(filters=8, kernel_size=1, use_bias=True, batch=False)
    out = plain(np.full((1, 4, 4, 2), -1.0, "float32"))
    assert len(plain.weights) == 2 and out.shape == (1, 4, 4, 8)
    clone = ConvBlock.from_config(with_bn.get_config())
    assert clone.get_config() == with_bn.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(plain))
    assert isinstance(restored, ConvBlock) and restored.batch is False and restored.use_bias


def test_dspp_shapes_and_config():
    dspp = DSPP(filters=16, rates=(2, 3))
    for size in ((8, 8), (6, 10)):
        assert dspp(np.zeros((2, *size, 32), "float32")).shape == (2, *size, 16)
    assert len(dspp.dilated) == 2
    clone = DSPP.from_config(dspp.get_config())
    assert clone.rates == (2, 3) and clone.filters == 16


def test_frozen_batchnorm_is_saved_with_the_model_and_kept_by_fit(tmp_path):
    from segcore.training.models import freeze_batchnorm

    model = build_deeplabv3plus(
        config=ModelConfig(aspp_filters=8, aspp_rates=(2,), low_level_filters=8, decoder_filters=8)
    )
    norms = [
        layer for layer in model._flatten_layers() if isinstance(layer, layers.BatchNormalization)
    ]
    assert freeze_batchnorm(model) == len(norms) > 0
    statistics = [np.asarray(w).copy() for layer in norms for w in layer.weights]
    trainable = len(model.trainable_weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 3), np.float32)
    model.fit(x, (x[..., :1] > 0.5).astype("float32"), epochs=1, verbose=0)
    for before, w in zip(statistics, (w for layer in norms for w in layer.weights), strict=True):
        np.testing.assert_array_equal(before, np.asarray(w))  # inference mode: nothing moves
    # Saved and loaded (a resumed run): every BatchNormalization is still frozen, nested ones
    # inside ConvBlock and DSPP included, so the optimizer's state matches its variables.
    model.save(tmp_path / "frozen.keras")
    loaded = keras.saving.load_model(tmp_path / "frozen.keras", safe_mode=True)
    assert len(loaded.trainable_weights) == trainable
    assert not any(
        layer.trainable
        for layer in loaded._flatten_layers()
        if isinstance(layer, layers.BatchNormalization)
    )
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)


def test_resize_like_and_normalization():
    x = np.arange(16, dtype="float32").reshape(1, 2, 2, 4)
    out = ResizeLike()([x, np.zeros((1, 6, 4, 1), "float32")])
    assert out.shape == (1, 6, 4, 4)
    rgb = np.array([[[[1.0, 0.5, 0.0]]]], "float32")
    expected = keras.applications.resnet50.preprocess_input(rgb * 255.0)
    np.testing.assert_allclose(ImageNetNormalization()(rgb), expected, rtol=1e-6)


@pytest.mark.slow
def test_dilated_conv_paths_agree_and_train_on_cpu():
    block = ConvBlock(filters=4, kernel_size=3, dilation_rate=3, batch=False, use_bias=True)
    x = np.random.default_rng(0).normal(size=(2, 12, 20, 5)).astype("float32")
    native = block(x, training=False)
    emulated = block(x, training=True)  # the Keras SpaceToBatch path, used for training
    np.testing.assert_allclose(native, emulated, atol=1e-5)
    # Training steps (gradients of dilated convolutions) run on CPU.
    tiny = build_deeplabv3plus((32, 32, 3), aspp_filters=8, decoder_filters=8, low_level_filters=8)
    tiny.compile(optimizer="adam", loss="binary_crossentropy")
    y = (np.random.default_rng(1).random((2, 32, 32, 1)) > 0.5).astype("float32")
    loss = tiny.train_on_batch(np.random.default_rng(2).random((2, 32, 32, 3)), y)
    assert np.isfinite(loss)
