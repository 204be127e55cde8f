"""Tests of the CIFAR ResNets: exact sizes, shortcut wiring, weight decay, dtypes, validation."""

import keras
import numpy as np
import pytest

from models import resnet_cifar

# Parameter counts with 100 classes, derived layer by layer (count_params includes the BN moving
# statistics: a BN over c channels holds 4c numbers, 2c trainable).
#   conv kxk c_in -> c_out: k*k*c_in*c_out (no bias); dense 64 -> 100: 64*100 + 100 = 6,500.
# v2 (pre-activation), n units per stage:
#   stem 3*3*3*16 = 432
#   stage 1 unit: BN(16) 64 + conv 16->16 2,304 + BN(16) 64 + conv 2,304 = 4,736 (every unit)
#   stage 2 first: BN(16) 64 + conv 16->32 4,608 + BN(32) 128 + conv 32->32 9,216 = 14,016; others
#       BN(32) 128 + 9,216 + 128 + 9,216 = 18,688
#   stage 3 first: BN(32) 128 + conv 32->64 18,432 + BN(64) 256 + conv 64->64 36,864 = 55,680; others
#       256 + 36,864 + 256 + 36,864 = 74,240
#   head BN(64) 256 + dense 6,500; the option-A shortcuts have no parameters.
#   ResNet-20 (n=3): 432 + 3*4,736 + 14,016 + 2*18,688 + 55,680 + 2*74,240 + 256 + 6,500 = 276,948
#   ResNet-56 (n=9): 432 + 9*4,736 + 14,016 + 8*18,688 + 55,680 + 8*74,240 + 256 + 6,500 = 862,932
# v1 (post-activation): stem conv 432 + BN(16) 64; each stage's first block adds a 1x1 projection + BN:
#   stage 1 first: 4,736 + 1*1*16*16 256 + BN 64 = 5,056; stage 2 first: conv 16->32 4,608 + BN 128 +
#       conv 9,216 + BN 128 + 1x1 16*32 512 + BN 128 = 14,720; stage 3 first: 18,432 + 256 + 36,864 +
#       256 + 1x1 32*64 2,048 + 256 = 58,112; identity blocks as in v2 (4,736 / 18,688 / 74,240);
#       no head BN; dense 6,500.
#   ResNet-20: 496 + 5,056 + 2*4,736 + 14,720 + 2*18,688 + 58,112 + 2*74,240 + 6,500 = 280,212
#   ResNet-56: 496 + 5,056 + 8*4,736 + 14,720 + 8*18,688 + 58,112 + 8*74,240 + 6,500 = 866,196
EXPECTED_PARAMS = {
    ("v2", 20): 276_948,
    ("v2", 56): 862_932,
    ("v1", 20): 280_212,
    ("v1", 56): 866_196,
}


@pytest.mark.parametrize("variant, depth", list(EXPECTED_PARAMS))
def test_parameter_count(variant, depth):
    model = resnet_cifar.resnet(depth, num_classes=100, variant=variant)
    assert model.count_params() == EXPECTED_PARAMS[(variant, depth)]


def test_trainable_parameter_count_resnet20_v2():
    # 276,948 minus the moving mean and variance of 19 BNs: 2 * (7*16 + 6*32 + 6*64) = 1,376.
    model = resnet_cifar.resnet20(num_classes=100)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == 276_948 - 1_376


def test_output_shape_and_dtype():
    model = resnet_cifar.resnet20(num_classes=100)
    logits = model(np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32"))
    assert tuple(logits.shape) == (4, 100)
    assert logits.dtype == "float32"
    assert model.get_layer("logits").kernel.shape == (64, 100)


def test_depth_counts_weighted_layers():
    # Conv layers + the dense layer = depth (the v2 shortcuts carry no conv).
    model = resnet_cifar.resnet32(num_classes=10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) + 1 == 32
    assert model.name == "resnet32"


@pytest.mark.parametrize(
    "builder, depth",
    [
        (resnet_cifar.resnet8, 8),
        (resnet_cifar.resnet20, 20),
        (resnet_cifar.resnet32, 32),
        (resnet_cifar.resnet56, 56),
        (resnet_cifar.resnet110, 110),
    ],
)
def test_builders_pass_depth_and_options(monkeypatch, builder, depth):
    calls = []
    monkeypatch.setattr(resnet_cifar, "resnet", lambda *args, **kwargs: calls.append((args, kwargs)))
    builder(7, weight_decay=1e-3, variant="v1")
    assert calls == [((depth, 7), dict(weight_decay=1e-3, variant="v1"))]


def test_preactivation_shortcut_wiring():
    model = resnet_cifar.resnet20(num_classes=10)

    def add_inputs(name):
        return {id(tensor) for tensor in model.get_layer(name).input}

    # First unit: the shortcut takes the shared BN-ReLU output ("activate before residual").
    assert id(model.get_layer("stage1_unit1_preact_relu").output) in add_inputs("stage1_unit1_add")
    # Later units add their raw input.
    assert id(model.get_layer("stage1_unit1_add").output) in add_inputs("stage1_unit2_add")
    # Width changes: 2x2 average pool of the raw input, then 8 zero channels on each side.
    pool = model.get_layer("stage2_unit1_shortcut_pool")
    assert id(pool.input) == id(model.get_layer("stage1_unit3_add").output)
    assert pool.pool_size == (2, 2) and pool.strides == (2, 2) and pool.padding == "valid"
    pad = model.get_layer("stage2_unit1_shortcut_pad")
    assert (pad.before, pad.after) == (8, 8)
    assert id(pad.output) in add_inputs("stage2_unit1_add")


def test_zero_pad_channels_values():
    inputs = np.arange(2 * 1 * 1 * 3, dtype="float32").reshape(2, 1, 1, 3)
    padded = keras.ops.convert_to_numpy(resnet_cifar.ZeroPadChannels(1, 2)(inputs))
    np.testing.assert_array_equal(padded[0, 0, 0], [0, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(padded[1, 0, 0], [0, 3, 4, 5, 0, 0])


@pytest.mark.parametrize(
    "variant, momentum, epsilon, activation, slope",
    [("v2", 0.9, 1e-3, keras.layers.LeakyReLU, 0.1), ("v1", 0.997, 1e-5, keras.layers.ReLU, None)],
)
def test_variant_constants(variant, momentum, epsilon, activation, slope):
    model = resnet_cifar.resnet20(num_classes=10, variant=variant)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(layer.momentum, layer.epsilon) for layer in norms} == {(momentum, epsilon)}
    activations = [layer for layer in model.layers if isinstance(layer, activation)]
    assert activations
    if slope is not None:
        assert {layer.negative_slope for layer in activations} == {slope}
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(layer.use_bias for layer in convs)


def test_leakiness_override():
    model = resnet_cifar.resnet20(num_classes=10, relu_leakiness=0.0)
    assert not any(isinstance(layer, keras.layers.LeakyReLU) for layer in model.layers)


@pytest.mark.parametrize("variant", ["v2", "v1"])
def test_weight_decay_is_tf_l2_loss_rate(variant):
    weight_decay = 1e-3
    model = resnet_cifar.resnet20(num_classes=100, weight_decay=weight_decay, variant=variant)
    kernels = [weight for weight in model.trainable_weights if "kernel" in weight.path]
    penalised = list(kernels)
    if variant == "v1":
        # The TF2 Keras source also decays the dense bias; the legacy code only its `DW` kernels.
        penalised.append(model.get_layer("logits").bias)
    # TF: weight_decay * sum(tf.nn.l2_loss(w)) = weight_decay * sum(w**2) / 2.
    expected = weight_decay * sum(float(np.sum(keras.ops.convert_to_numpy(w) ** 2)) for w in penalised) / 2
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert len(model.losses) == len(penalised)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    # 19 conv kernels + the dense kernel (20 = depth), plus v1's three 1x1 projections.
    assert len(kernels) == (20 if variant == "v2" else 23)


def test_no_weight_decay():
    assert resnet_cifar.resnet20(num_classes=10, weight_decay=0.0).losses == []


def test_mixed_float16_gives_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = resnet_cifar.resnet20(num_classes=100)
    logits = model(np.zeros((2, 32, 32, 3), dtype="float32"), training=False)
    assert logits.dtype == "float32"
    assert model.get_layer("stem_conv").compute_dtype == "float16"
    assert model.get_layer("logits").compute_dtype == "float32"


def test_save_and_load_round_trip(tmp_path):
    model = resnet_cifar.resnet20(num_classes=10)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "resnet20.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images)),
        keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_other_input_shape():
    model = resnet_cifar.resnet20(num_classes=7, input_shape=(16, 16, 1))
    assert tuple(model(np.zeros((3, 16, 16, 1), dtype="float32")).shape) == (3, 7)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(depth=21), "`depth` must be 6n\\+2 with n >= 1. Received: depth=21"),
        (dict(depth=2), "Received: depth=2"),
        (dict(num_classes=0), "Received: num_classes=0"),
        (dict(variant="v3"), "Received: variant='v3'"),
        (dict(weight_decay=-1.0), "Received: weight_decay=-1.0"),
        (dict(relu_leakiness=1.5), "Received: relu_leakiness=1.5"),
        (dict(input_shape=(32, 32)), "Received: input_shape=\\(32, 32\\)"),
    ],
)
def test_invalid_arguments(options, message):
    arguments = dict(depth=20, num_classes=10) | options
    with pytest.raises(ValueError, match=message):
        resnet_cifar.resnet(**arguments)


def test_unknown_option_is_refused():
    with pytest.raises(TypeError):
        resnet_cifar.resnet20(num_classes=10, widht=2)
