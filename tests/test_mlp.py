"""Tests of the synthetic experiment's residual MLP and its cosine logit layer."""

import keras
import numpy as np
import pytest

from models import mlp as mlp_module
from models.mlp import CosineLogits, mlp


def _inputs(batch=16, dim=10, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, dim)).astype(np.float32)


@pytest.mark.parametrize("width, depth", [(8, 2), (48, 2), (10, 3)])
def test_requested_widths_and_depth(width, depth):
    model = mlp(7, input_shape=(10,), width=width, depth=depth)
    hidden = [layer for layer in model.layers if layer.name.startswith("dense_")]
    assert [layer.units for layer in hidden] == [width] * depth
    assert model.get_layer("logits").kernel.shape == (width, 7)
    assert model(_inputs()).shape == (16, 7)
    # Projection shortcut only where the width changes (input 10 -> width), identity elsewhere.
    projections = [layer for layer in model.layers if layer.name.startswith("projection_")]
    assert len(projections) == (0 if width == 10 else 1)
    # Parameters: hidden kernels (no bias), BN (4 per unit), projection, logit kernel.
    expected = 10 * width + (depth - 1) * width * width + depth * 4 * width + width * 7
    expected += 0 if width == 10 else 10 * width
    assert model.count_params() == expected


def test_logits_are_scaled_cosines():
    model = mlp(5, input_shape=(10,), width=12, logit_scale=3.0)
    logits = keras.ops.convert_to_numpy(model(_inputs(64), training=False))
    penultimate = keras.Model(model.input, model.get_layer("residual_2").output)
    hidden = keras.ops.convert_to_numpy(penultimate(_inputs(64), training=False))
    kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    cosines = (hidden / np.linalg.norm(hidden, axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    )
    np.testing.assert_allclose(logits, 3.0 * cosines, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() <= 3.0 + 1e-5


def test_input_aligned_with_a_class_vector_gets_the_full_scale():
    layer = CosineLogits(4, scale=5.0)
    layer.build((None, 6))
    kernel = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    layer.kernel.assign(kernel)
    aligned = 2.5 * kernel[:, 2][None, :]
    logits = keras.ops.convert_to_numpy(layer(aligned))
    np.testing.assert_allclose(logits[0, 2], 5.0, rtol=1e-6)
    assert np.all(np.abs(logits) <= 5.0 + 1e-5)
    opposite = keras.ops.convert_to_numpy(layer(-aligned))
    np.testing.assert_allclose(opposite[0, 2], -5.0, rtol=1e-6)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = mlp(6, input_shape=(10,), width=16, logit_scale=7.0)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    labels = np.arange(32) % 6
    model.fit(_inputs(32), labels, epochs=1, batch_size=16, verbose=0)  # moves BN statistics
    path = tmp_path / "mlp.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored.get_layer("logits"), CosineLogits)
    assert restored.get_layer("logits").scale == 7.0
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(_inputs(), training=False)),
        keras.ops.convert_to_numpy(model(_inputs(), training=False)),
    )


def test_mixed_float16_gives_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = mlp(5, input_shape=(10,), width=8)
    assert model.get_layer("dense_1").compute_dtype == "float16"
    logits = model(_inputs())
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
    assert np.abs(keras.ops.convert_to_numpy(logits)).max() <= 16.0 + 1e-3


def test_weight_decay_follows_the_l2_loss_convention():
    model = mlp(5, input_shape=(10,), width=8, weight_decay=2e-4)
    penalised = ("dense_1", "projection_1", "dense_2")
    squares = sum(np.sum(keras.ops.convert_to_numpy(model.get_layer(name).kernel) ** 2) for name in penalised)
    # rate · Σw²/2, as TF's `l2_loss`; the logit kernel is not penalised.
    np.testing.assert_allclose(sum(float(loss) for loss in model.losses), 2e-4 * squares / 2, rtol=1e-5)
    assert len(model.losses) == 3
    assert mlp(5, input_shape=(10,), width=8).losses == []


def test_registered_for_serialization():
    assert keras.saving.get_registered_object("kd_tf>CosineLogits") is CosineLogits
    assert mlp_module.CosineLogits.__module__ == "models.mlp"


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"num_classes": 0}, "num_classes"),
        ({"logit_scale": 0.0}, "logit_scale"),
        ({"weight_decay": -1e-4}, "weight_decay"),
    ],
)
def test_refuses_bad_arguments_by_name(kwargs, argument):
    options = dict(num_classes=5, input_shape=(10,)) | kwargs
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
        mlp(**options)
