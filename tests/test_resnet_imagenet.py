"""ImageNet ResNet v1.5: exact parameter counts, zero-initialised last BN, padding, decay, float32 logits."""

import keras
import numpy as np
import pytest

from models import resnet_imagenet


@pytest.fixture(scope="module")
def resnet50_model():
    """One ResNet-50 (1000 classes, 224 x 224) shared by the tests that only inspect it."""
    return resnet_imagenet.resnet50(num_classes=1000, input_shape=(224, 224, 3))


def _trainable_parameters(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def test_parameter_counts(resnet50_model):
    # The published counts of ResNet-50 and ResNet-152 (e.g. torchvision's), all trainable; the count
    # does not depend on the input size, so ResNet-152 is built small.
    assert _trainable_parameters(resnet50_model) == 25_557_032
    resnet152 = resnet_imagenet.resnet152(num_classes=1000, input_shape=(32, 32, 3))
    assert _trainable_parameters(resnet152) == 60_192_808


def test_resnet50_shapes_and_block_structure(resnet50_model):
    model = resnet50_model
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["stem_conv"] == (112, 112, 64)
    assert shapes["stem_pool"] == (56, 56, 64)
    assert shapes["group1_block3_out"] == (56, 56, 256)
    assert shapes["group2_block1_conv1"] == (56, 56, 128)  # v1.5: the 1x1 conv keeps stride 1,
    assert shapes["group2_block1_conv2"] == (28, 28, 128)  # the 3x3 conv carries the stride.
    assert shapes["group3_block6_out"] == (14, 14, 1024)
    assert shapes["group4_block3_out"] == (7, 7, 2048)
    # Projection shortcuts only in each group's first block.
    projections = sorted(layer.name for layer in model.layers if layer.name.endswith("projection"))
    assert projections == [f"group{group}_block1_projection" for group in (1, 2, 3, 4)]
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 53
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in batch_norms)
    assert not any(layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


def test_last_batch_norm_of_every_block_starts_at_zero(resnet50_model):
    model = resnet50_model
    last_batch_norms = [layer for layer in model.layers if layer.name.endswith("_bn3")]
    assert len(last_batch_norms) == 3 + 4 + 6 + 3
    for layer in last_batch_norms:
        np.testing.assert_array_equal(layer.gamma.numpy(), 0.0)
    other_batch_norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer not in last_batch_norms
    ]
    for layer in other_batch_norms:
        np.testing.assert_array_equal(layer.gamma.numpy(), 1.0)


def test_zero_gamma_blocks_start_as_identity_and_logits_start_small(resnet50_model):
    model = resnet50_model
    images = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    pooled = keras.Model(model.input, model.get_layer("stem_pool").output)(images)
    first_block = keras.Model(model.input, model.get_layer("group1_block2_out").output)(images)
    second_input = keras.Model(model.input, model.get_layer("group1_block1_out").output)(images)
    # With gamma = 0 a non-projection block outputs relu(shortcut) = its (non-negative) input.
    np.testing.assert_allclose(first_block, second_input, atol=1e-6)
    assert np.all(np.asarray(pooled) >= 0)
    logits = model(images, training=False).numpy()
    # Dense init N(0, 0.01^2): logits are tiny at initialisation.
    assert logits.shape == (2, 1000) and np.abs(logits).max() < 1.0


def test_fixed_padding_for_strided_convs(resnet50_model):
    model = resnet50_model
    stem_pad = model.get_layer("stem_conv_pad")
    assert stem_pad.padding == ((3, 3), (3, 3))
    assert model.get_layer("stem_conv").padding == "valid"
    assert model.get_layer("group2_block1_conv2_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("group2_block1_conv2").padding == "valid"
    assert model.get_layer("group1_block1_conv2").padding == "same"
    # A strided 1x1 projection needs no padding.
    names = {layer.name for layer in model.layers}
    assert "group2_block1_projection_pad" not in names


def test_initialisers_follow_the_tpu_code(resnet50_model):
    model = resnet50_model
    kernel = model.get_layer("group4_block1_conv2").kernel.numpy()
    fan_in = 3 * 3 * 512
    # VarianceScaling(scale=1, fan_in, truncated normal): std sqrt(1 / fan_in), |w| <= 2 std / 0.88.
    assert kernel.std() == pytest.approx(np.sqrt(1 / fan_in), rel=0.02)
    assert np.abs(kernel).max() <= 2 * np.sqrt(1 / fan_in) / 0.8796 + 1e-7
    logit_kernel = model.get_layer("logits").kernel.numpy()
    assert logit_kernel.std() == pytest.approx(0.01, rel=0.02)
    np.testing.assert_array_equal(model.get_layer("logits").bias.numpy(), 0.0)


def test_weight_decay_is_half_the_tpu_factor_on_every_non_batch_norm_variable(resnet50_model):
    weight_decay = 1e-4
    model = resnet50_model
    decayed = [
        weight
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
        for weight in layer.trainable_weights
    ]
    # 53 conv kernels, the logit kernel and the logit bias.
    assert len(model.losses) == len(decayed) == 55
    # The TPU code's penalty weight_decay * sum(tf.nn.l2_loss(v)) = weight_decay * sum(v^2) / 2.
    expected = weight_decay * sum(float(np.sum(np.square(w.numpy()))) for w in decayed) / 2
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_mixed_bfloat16_gives_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = resnet_imagenet.resnet50(num_classes=1000, input_shape=(64, 64, 3))
    assert model.get_layer("group1_block1_conv1").compute_dtype == "bfloat16"
    logits = model(np.zeros((2, 64, 64, 3), np.float32), training=False)
    assert logits.shape == (2, 1000)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.get_layer("logits").compute_dtype == "float32"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resnet_depth": 34}, "Received: resnet_depth=34"),
        ({"resnet_depth": 50, "num_classes": 0}, "Received: num_classes=0"),
        ({"resnet_depth": 50, "weight_decay": -1.0}, "Received: weight_decay=-1.0"),
        ({"resnet_depth": 50, "input_shape": (64, 64)}, "Received: input_shape=\\(64, 64\\)"),
    ],
)
def test_bad_arguments_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        resnet_imagenet.resnet(**options)


def test_no_decay_and_options_meant_for_other_models_are_ignored():
    model = resnet_imagenet.resnet50(
        num_classes=7, input_shape=(32, 32, 3), weight_decay=0, depth=20, width=4
    )
    assert model.output.shape[-1] == 7 and model.name == "resnet50"
    assert model.losses == []
