"""Teacher cache: exact round trip, stale-cache refusal, offline = online loss, atomic writes, sequences."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kd_tf
from kd_tf import losses, teacher_cache

NUM_CLASSES, DIM, EXAMPLES, BATCH = 6, 8, 48, 16


def mlp(width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((DIM,))
    hidden = keras.layers.Dense(width, activation="tanh")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(hidden))


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(EXAMPLES, DIM)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=EXAMPLES).astype(np.int32)
    return inputs, labels


def ordered(inputs, labels, batch_size=BATCH):
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)


def get_loss(name, **settings):
    defaults = {"kd_topk": {"topk": 2}}.get(name, {})
    return losses.get(name, **{"temperature": 2.0, "alpha": 0.7, **defaults, **settings})


@pytest.fixture
def teacher():
    return mlp(16, seed=1)


def test_round_trip_is_exact_and_the_manifest_describes_the_payload(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd_topk", topk=3)
    built = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "cache")
    loaded = teacher_cache.load_cache(tmp_path / "cache", loss=loss, teacher=teacher, data=(inputs, labels))
    np.testing.assert_array_equal(loaded.payload, built.payload)
    assert loaded.payload.shape == (EXAMPLES, 6) and loaded.payload.dtype == np.float32
    expected = loss.teacher_payload(tf.constant(labels), teacher(inputs, training=False)).numpy()
    np.testing.assert_allclose(loaded.payload[:, :3], expected[:, :3], rtol=1e-6)
    np.testing.assert_array_equal(loaded.payload[:, 3:], expected[:, 3:])  # class indices, exact
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["method"] == "kd_topk"
    assert manifest["payload"]["settings"] == {"temperature": 2.0, "topk": 3}
    assert manifest["payload_shape"] == [EXAMPLES, 6]
    assert manifest["bytes_per_position"] == 24
    assert manifest["data"]["examples"] == EXAMPLES
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # no temporary directory left behind


def test_write_cache_stores_a_payload_computed_elsewhere_in_the_same_format(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd_topk", topk=3)
    built = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "built")
    examples = {"inputs": inputs, "labels": labels, "teacher": teacher, "num_classes": NUM_CLASSES}
    written = teacher_cache.write_cache(tmp_path / "written", loss, built.payload, **examples)
    loaded = teacher_cache.load_cache(tmp_path / "written", loss=loss, teacher=teacher, data=(inputs, labels))
    np.testing.assert_array_equal(loaded.payload, written.payload)
    np.testing.assert_array_equal(loaded.payload, built.payload)
    assert loaded.manifest["data"] == built.manifest["data"]
    with pytest.raises(ValueError, match="already exists"):
        teacher_cache.write_cache(tmp_path / "written", loss, built.payload, **examples)
    with pytest.raises(ValueError, match="must have shape"):
        teacher_cache.write_cache(tmp_path / "bad", loss, built.payload[:, :2], **examples)
    assert sorted(os.listdir(tmp_path)) == ["built", "written"]  # no temporary directory left behind


def test_full_logits_in_float16_are_the_rounded_float32_logits(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd")
    exact = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "f32")
    half = teacher_cache.build_cache(
        teacher, loss, ordered(inputs, labels), tmp_path / "f16", payload_dtype="float16"
    )
    assert half.payload.dtype == np.float16 and half.manifest["bytes_per_position"] == 2 * NUM_CLASSES
    np.testing.assert_array_equal(half.payload, exact.payload.astype(np.float16))
    with pytest.raises(ValueError, match="full logits only"):
        teacher_cache.build_cache(
            teacher, get_loss("kd_topk"), ordered(inputs, labels), tmp_path / "x", payload_dtype="float16"
        )


def test_a_cache_from_other_teacher_weights_is_refused(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd")
    teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "cache")
    teacher.get_layer("logits").bias.assign(teacher.get_layer("logits").bias + 1e-3)
    with pytest.raises(ValueError, match="another teacher"):
        teacher_cache.load_cache(tmp_path / "cache", loss=loss, teacher=teacher)
    # Batch-norm statistics are not trained but change the outputs: they count too.
    other = mlp(16, seed=1)
    other.layers[2].moving_variance.assign(other.layers[2].moving_variance * 2.0)
    with pytest.raises(ValueError, match="another teacher"):
        teacher_cache.load_cache(tmp_path / "cache", loss=loss, teacher=other)


def test_the_fingerprint_ignores_layer_names_and_freezing(teacher):
    twin = mlp(16, seed=1)  # same weights; Keras numbers its auto-named layers differently
    assert [layer.name for layer in twin.layers] != [layer.name for layer in teacher.layers]
    twin.trainable = False
    assert teacher_cache.teacher_fingerprint(twin) == teacher_cache.teacher_fingerprint(teacher)
    assert teacher_cache.teacher_fingerprint(mlp(17, seed=1)) != teacher_cache.teacher_fingerprint(teacher)


@pytest.mark.parametrize(
    ("name", "built_with", "loaded_with", "message"),
    [
        ("kd_topk", {}, {"temperature": 3.0}, "temperature=2.0"),
        ("kd_topk", {}, {"topk": 3}, "topk=2"),
        ("kd_pt", {}, {"temperature": 4.0}, "temperature=2.0"),
    ],
)
def test_a_cache_for_other_loss_settings_is_refused(
    tmp_path, teacher, name, built_with, loaded_with, message
):
    inputs, labels = arrays()
    teacher_cache.build_cache(teacher, get_loss(name, **built_with), ordered(inputs, labels), tmp_path / "c")
    with pytest.raises(ValueError, match=f"stale for this loss.*{message}"):
        teacher_cache.load_cache(tmp_path / "c", loss=get_loss(name, **loaded_with), teacher=teacher)
    with pytest.raises(ValueError, match="stale for this loss"):
        teacher_cache.load_cache(tmp_path / "c", loss=get_loss("kd"), teacher=teacher)


def test_full_logits_serve_kd_at_any_temperature_and_alpha(tmp_path, teacher):
    inputs, labels = arrays()
    teacher_cache.build_cache(teacher, get_loss("kd"), ordered(inputs, labels), tmp_path / "c")
    other = losses.get("kd", temperature=7.0, alpha=0.2)
    assert teacher_cache.load_cache(tmp_path / "c", loss=other, teacher=teacher).payload.shape == (
        EXAMPLES,
        NUM_CLASSES,
    )


def test_a_cache_built_on_other_data_is_refused(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd_pt")
    cache = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c")
    changed_labels = labels.copy()
    changed_labels[5] = (changed_labels[5] + 1) % NUM_CLASSES
    with pytest.raises(ValueError, match="other data"):
        teacher_cache.load_cache(tmp_path / "c", loss=loss, data=(inputs, changed_labels))
    permutation = np.random.default_rng(3).permutation(EXAMPLES)
    with pytest.raises(ValueError, match="other data"):
        teacher_cache.load_cache(
            tmp_path / "c", loss=loss, data=ordered(inputs[permutation], labels[permutation])
        )
    with pytest.raises(ValueError, match="holds 48 examples"):
        teacher_cache.load_cache(tmp_path / "c", loss=loss, expected_examples=50)
    with pytest.raises(ValueError, match="inputs differ"):
        teacher_cache.cached_dataset(inputs + 1.0, labels, cache, BATCH)
    # The same data loads, as a dataset in other batch sizes or as float64 arrays.
    teacher_cache.load_cache(tmp_path / "c", loss=loss, data=ordered(inputs, labels, batch_size=5))
    teacher_cache.load_cache(tmp_path / "c", loss=loss, data=(inputs.astype(np.float64), labels))


@pytest.mark.parametrize("name", ["kd", "kd_pt", "kd_topk"])
def test_offline_distillation_from_the_cache_gives_the_online_loss(tmp_path, teacher, name):
    inputs, labels = arrays()
    loss = get_loss(name)
    student = mlp(4, seed=2)
    cache = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c")
    online = kd_tf.Distiller(student, teacher, loss)
    offline = kd_tf.Distiller(student, None, loss)
    for model in (online, offline):
        model.compile(optimizer=keras.optimizers.SGD(0.0))
    online_result = online.evaluate(inputs, labels, batch_size=BATCH, verbose=0, return_dict=True)
    shuffled = teacher_cache.cached_dataset(inputs, labels, cache, BATCH, shuffle_seed=4)
    offline_result = offline.evaluate(shuffled, verbose=0, return_dict=True)
    for metric in ("loss", "hard_loss", "soft_loss", "accuracy"):
        np.testing.assert_allclose(offline_result[metric], online_result[metric], rtol=1e-5)
    # Shuffled batches keep each example's own teacher outputs.
    batch_inputs, packed = next(iter(shuffled))
    batch_labels = tf.cast(packed[:, 0], tf.int32)
    assert not np.array_equal(batch_labels.numpy(), labels[:BATCH])
    student_logits = student(batch_inputs)
    expected = loss.per_example(batch_labels, teacher(batch_inputs, training=False), student_logits)
    np.testing.assert_allclose(loss.call(packed, student_logits), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["kd_sim", "kd_rel", "ls", "student"])
def test_methods_that_need_nothing_from_the_teacher_store_only_a_manifest(tmp_path, teacher, name):
    inputs, labels = arrays()
    settings = {
        "kd_sim": {"class_vectors": kd_tf.class_vectors(teacher)},
        "kd_rel": {"class_parents": np.arange(NUM_CLASSES) // 2, "rel_target": 0.5, "rel_sibling": 0.2},
    }.get(name, {})
    loss = losses.get(name, **settings)
    cache = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c")
    assert os.listdir(tmp_path / "c") == ["manifest.json"]
    assert cache.payload is None and cache.manifest["bytes_per_position"] == 0
    assert cache.manifest["payload"] == {"kind": "none", "size": 0}
    batch_inputs, packed = next(iter(teacher_cache.cached_dataset(inputs, labels, cache, BATCH)))
    np.testing.assert_array_equal(packed.numpy(), labels[:BATCH, None].astype(np.float32))
    distiller = kd_tf.Distiller(mlp(4, seed=2), None, loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    assert np.isfinite(distiller.train_on_batch(batch_inputs, packed, return_dict=True)["loss"])


def test_an_augmented_training_pipeline_is_refused_unless_allowed(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd")
    with pytest.raises(ValueError, match="unaugmented inputs only"):
        teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c", augmented=True)
    assert not os.path.exists(tmp_path / "c")
    cache = teacher_cache.build_cache(
        teacher, loss, ordered(inputs, labels), tmp_path / "c", augmented=True, allow_augmented=True
    )
    assert cache.manifest["training_augmented"] is True
    with pytest.raises(ValueError, match="unaugmented inputs only"):
        teacher_cache.load_cache(tmp_path / "c", loss=loss, augmented=True)
    flip = lambda x: -x
    with pytest.raises(ValueError, match="allow_augmented=True"):
        teacher_cache.cached_dataset(inputs, labels, cache, BATCH, augment=flip)
    batch_inputs, _ = next(
        iter(teacher_cache.cached_dataset(inputs, labels, cache, BATCH, augment=flip, allow_augmented=True))
    )
    np.testing.assert_array_equal(batch_inputs, -inputs[:BATCH])


def failing_dataset(inputs, labels, fail_at_batch=2):
    """Yields batches until `fail_at_batch`, then fails, like a reader hitting a corrupt file."""

    def check(index, element):
        tf.debugging.assert_less(index, tf.constant(fail_at_batch, tf.int64), message="input pipeline failed")
        return element

    return ordered(inputs, labels).enumerate().map(check)


def test_an_interrupted_build_leaves_nothing_that_loads(tmp_path, teacher, monkeypatch):
    inputs, labels = arrays()
    loss = get_loss("kd")
    with pytest.raises(tf.errors.InvalidArgumentError, match="input pipeline failed"):
        teacher_cache.build_cache(teacher, loss, failing_dataset(inputs, labels), tmp_path / "c")
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="No teacher cache"):
        teacher_cache.load_cache(tmp_path / "c", loss=loss)
    # A process killed mid-build cannot clean up: what it leaves is a hidden directory without a manifest.
    monkeypatch.setattr(teacher_cache.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(tf.errors.InvalidArgumentError):
        teacher_cache.build_cache(teacher, loss, failing_dataset(inputs, labels), tmp_path / "c")
    (leftover,) = os.listdir(tmp_path)
    assert leftover.startswith(".c.building-")
    assert "manifest.json" not in os.listdir(tmp_path / leftover)
    for directory in (tmp_path / "c", tmp_path / leftover):
        with pytest.raises(FileNotFoundError):
            teacher_cache.load_cache(directory, loss=loss)


def test_a_failed_rebuild_keeps_the_previous_cache(tmp_path, teacher):
    inputs, labels = arrays()
    loss = get_loss("kd")
    first = teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c")
    with pytest.raises(ValueError, match="already exists"):
        teacher_cache.build_cache(teacher, loss, ordered(inputs, labels), tmp_path / "c")
    with pytest.raises(tf.errors.InvalidArgumentError):
        teacher_cache.build_cache(
            teacher, loss, failing_dataset(inputs, labels), tmp_path / "c", overwrite=True
        )
    kept = teacher_cache.load_cache(tmp_path / "c", loss=loss, teacher=teacher)
    np.testing.assert_array_equal(kept.payload, first.payload)
    other = get_loss("kd_pt")
    teacher_cache.build_cache(teacher, other, ordered(inputs, labels), tmp_path / "c", overwrite=True)
    assert teacher_cache.load_cache(tmp_path / "c", loss=other).payload.shape == (EXAMPLES, 1)
    assert sorted(os.listdir(tmp_path)) == ["c"]


def sequence_model(width, seed, vocabulary=50):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(vocabulary, width)(inputs)
    return keras.Model(inputs, keras.layers.Dense(vocabulary, name="logits")(hidden))


def test_sequence_payloads_are_per_token_and_topk_stores_2k_over_m_of_the_logits(tmp_path):
    vocabulary, sequences, time, topk = 50, 12, 6, 3
    teacher = sequence_model(16, seed=1)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocabulary, size=(sequences, time + 1)).astype(np.int32)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    windows = ordered(inputs, labels, batch_size=4)
    topk_loss = losses.get("kd_topk", topk=topk, temperature=2.0)
    topk_cache = teacher_cache.build_cache(teacher, topk_loss, windows, tmp_path / "topk")
    full_cache = teacher_cache.build_cache(teacher, losses.get("kd"), windows, tmp_path / "full")
    assert topk_cache.payload.shape == (sequences, time, 2 * topk)
    assert full_cache.payload.shape == (sequences, time, vocabulary)
    ratio = topk_cache.manifest["bytes_per_position"] / full_cache.manifest["bytes_per_position"]
    assert ratio == pytest.approx(2 * topk / vocabulary)  # 24 bytes per token instead of 200
    payload_bytes = os.path.getsize(tmp_path / "topk" / "payload.npy")
    assert payload_bytes < 2 * topk / vocabulary * os.path.getsize(tmp_path / "full" / "payload.npy") + 256
    # PTB's 10,000 words: 40,000 bytes of logits per token in float32, 8k bytes for the top k.
    kd_bytes = teacher_cache.payload_bytes_per_position(losses.get("kd"), 10_000)
    topk_bytes = teacher_cache.payload_bytes_per_position(losses.get("kd_topk", topk=5), 10_000)
    assert (kd_bytes, topk_bytes) == (40_000, 40) and topk_bytes / kd_bytes <= 2 * 5 / 10_000
    student = sequence_model(4, seed=2)
    offline = kd_tf.Distiller(student, None, topk_loss)
    online = kd_tf.Distiller(student, teacher, topk_loss)
    for model in (offline, online):
        model.compile(optimizer=keras.optimizers.SGD(0.0))
    dataset = teacher_cache.cached_dataset(inputs, labels, topk_cache, 4, shuffle_seed=1)
    offline_loss = offline.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    online_loss = online.evaluate(inputs, labels, batch_size=4, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(offline_loss, online_loss, rtol=1e-5)


def test_sequence_windows_of_different_lengths_are_refused(tmp_path):
    teacher = sequence_model(8, seed=1)
    windows = tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros((2, 5), np.int32),) * 2, (np.zeros((2, 3), np.int32),) * 2]),
        output_signature=(tf.TensorSpec((2, None), tf.int32),) * 2,
    )
    with pytest.raises(ValueError, match="windows of one length"):
        teacher_cache.build_cache(teacher, losses.get("kd_topk", topk=2), windows, tmp_path / "c")
    assert os.listdir(tmp_path) == []
