"""The Distiller: frozen teacher, student-only updates, distribution, mixed precision, offline targets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kd_tf
from kd_tf import losses

NUM_CLASSES, DIM = 5, 8


def mlp(width, name, seed, batch_norm=True):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((DIM,))
    hidden = keras.layers.Dense(width, activation="tanh")(inputs)
    if batch_norm:
        # Per-replica batch statistics differ from the global batch's (unless `synchronized=True`).
        hidden = keras.layers.BatchNormalization()(hidden)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(hidden)
    return keras.Model(inputs, logits, name=name)


def data(size=64, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(size, DIM)).astype(np.float32)
    labels = (inputs[:, :NUM_CLASSES].argmax(axis=1)).astype(np.int32)
    return inputs, labels


def weights(model):
    return [np.array(v) for v in model.weights]


def test_fit_updates_the_student_only_and_reports_metrics():
    teacher, student = mlp(32, "teacher", 1), mlp(4, "student", 2)
    teacher_before, student_before = weights(teacher), weights(student)
    distiller = kd_tf.Distiller(student, teacher, losses.get("kd", temperature=2.0, alpha=0.5))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    inputs, labels = data()
    history = distiller.fit(inputs, labels, batch_size=16, epochs=2, verbose=0)
    for before, after in zip(teacher_before, weights(teacher), strict=True):
        np.testing.assert_array_equal(before, after)  # includes BatchNorm moving statistics
    assert any(not np.allclose(b, a) for b, a in zip(student_before, weights(student), strict=True))
    # Top-5 accuracy is an evaluation metric: it costs a top-k pass a step and tells little in training.
    assert set(history.history) == {"loss", "hard_loss", "soft_loss", "accuracy"}
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    results = distiller.evaluate(inputs, labels, verbose=0, return_dict=True)
    assert 0.0 <= results["accuracy"] <= 1.0
    np.testing.assert_allclose(distiller.predict(inputs, verbose=0), student.predict(inputs, verbose=0))


def test_the_reported_loss_is_the_loss_on_the_batch():
    teacher, student = mlp(32, "teacher", 1), mlp(4, "student", 2)
    loss = losses.get("kd_topk", topk=2, temperature=3.0, alpha=0.8)
    distiller = kd_tf.Distiller(student, teacher, loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    inputs, labels = data(16)
    results = distiller.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)
    expected = loss.per_example(labels, teacher(inputs), student(inputs)).numpy().mean()
    np.testing.assert_allclose(results["loss"], expected, rtol=1e-5)


def one_step_weights(strategy, loss_name="kd"):
    with strategy.scope():
        teacher, student = mlp(16, "teacher", 1), mlp(6, "student", 2, batch_norm=False)
        distiller = kd_tf.Distiller(student, teacher, losses.get(loss_name, temperature=2.0, alpha=0.7))
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    inputs, labels = data(32)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(32)
    distiller.fit(dataset, epochs=1, verbose=0)
    return [np.array(v) for v in student.trainable_weights]


@pytest.mark.parametrize("loss_name", ["kd", "kd_pt"])
def test_mirrored_strategy_over_two_devices_makes_the_single_device_update(strategies, loss_name):
    one_device, mirrored_strategy = strategies
    assert mirrored_strategy.num_replicas_in_sync == 2
    single = one_step_weights(one_device, loss_name)
    mirrored = one_step_weights(mirrored_strategy, loss_name)
    for one, two in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(one, two, atol=1e-5)


def test_weight_decay_is_counted_once_under_mirrored_strategy(strategies):
    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(4)
            inputs = keras.Input((DIM,))
            logits = keras.layers.Dense(
                NUM_CLASSES, name="logits", kernel_regularizer=keras.regularizers.L2(0.5)
            )(inputs)
            student = keras.Model(inputs, logits)
            distiller = kd_tf.Distiller(student, None, losses.get("student"))
            distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        distiller.fit(*data(32), batch_size=32, epochs=1, verbose=0)
        return np.array(student.trainable_weights[0])

    one_device, mirrored = strategies
    np.testing.assert_allclose(run(one_device), run(mirrored), atol=1e-5)


def test_mixed_float16_step_with_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    teacher, student = mlp(16, "teacher", 1), mlp(6, "student", 2)
    assert student.layers[1].compute_dtype == "float16"
    before = weights(student)
    distiller = kd_tf.Distiller(student, teacher, losses.get("kd_topk", topk=2))
    optimizer = kd_tf.runtime.wrap_optimizer(keras.optimizers.SGD(0.1), "mixed_float16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    distiller.compile(optimizer=optimizer)
    history = distiller.fit(*data(32), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, a) for b, a in zip(before, weights(student), strict=True))


def cached_targets(loss, teacher, inputs, labels):
    payload = loss.teacher_payload(tf.constant(labels), teacher(inputs, training=False))
    return kd_tf.pack_targets(labels, payload).numpy()


@pytest.mark.parametrize("name", ["kd", "kd_pt", "kd_topk"])
def test_offline_distiller_gives_the_online_loss(name):
    teacher, student = mlp(32, "teacher", 1), mlp(4, "student", 2)
    loss = losses.get(name, temperature=2.0, alpha=0.6, **({"topk": 2} if name == "kd_topk" else {}))
    inputs, labels = data(16)
    online = kd_tf.Distiller(student, teacher, loss)
    offline = kd_tf.Distiller(student, None, loss)
    for model in (online, offline):
        model.compile(optimizer=keras.optimizers.SGD(0.0))
    targets = cached_targets(loss, teacher, inputs, labels)
    online_result = online.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)
    offline_result = offline.evaluate(inputs, targets, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(offline_result["loss"], online_result["loss"], rtol=1e-6)


def test_plain_student_fit_on_cached_teacher_outputs():
    teacher, student = mlp(32, "teacher", 1), mlp(4, "student", 2)
    loss = losses.get("kd_topk", topk=2, temperature=2.0, alpha=0.9)
    inputs, labels = data(64)
    targets = cached_targets(loss, teacher, inputs, labels)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(16)
    student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    first = student.evaluate(dataset, verbose=0)
    expected = loss.per_example(labels, teacher(inputs), student(inputs)).numpy().mean()
    np.testing.assert_allclose(first, expected, rtol=1e-5)
    history = student.fit(dataset, epochs=5, verbose=0)
    assert history.history["loss"][-1] < first


def test_teacher_and_student_over_different_classes_are_refused():
    inputs = keras.Input((DIM,))
    other = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES + 1)(inputs))
    with pytest.raises(ValueError, match="6 classes but the student 5"):
        kd_tf.Distiller(mlp(4, "student", 2), other, losses.get("kd"))


def test_the_loss_must_be_a_distillation_loss():
    with pytest.raises(ValueError, match="DistillationLoss"):
        kd_tf.Distiller(mlp(4, "student", 2), mlp(8, "teacher", 1), keras.losses.KLDivergence())


def test_sequence_models_distil_every_position():
    """A language model's `[batch, time]` labels: each position is an example."""

    def sequence_model(width, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((7,), dtype="int32")
        hidden = keras.layers.Embedding(NUM_CLASSES, width)(inputs)
        return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(hidden))

    teacher, student = sequence_model(16, 1), sequence_model(4, 2)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, NUM_CLASSES, size=(8, 8)).astype(np.int32)
    loss = losses.get("kd_topk", topk=3)
    distiller = kd_tf.Distiller(student, teacher, loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    results = distiller.evaluate(tokens[:, :-1], tokens[:, 1:], batch_size=8, verbose=0, return_dict=True)
    expected = loss.per_example(tokens[:, 1:], teacher(tokens[:, :-1]), student(tokens[:, :-1]))
    np.testing.assert_allclose(results["loss"], expected.numpy().mean(), rtol=1e-5)


def test_class_vectors_are_the_logit_kernel_columns():
    teacher = mlp(8, "teacher", 1)
    vectors = kd_tf.class_vectors(teacher)
    assert vectors.shape == (8, NUM_CLASSES)
    np.testing.assert_array_equal(vectors, np.array(teacher.get_layer("logits").kernel))


def test_accuracy_metric_equals_keras_with_ties_and_signed_zeros():
    """Integer-valued logits tie often, and -0.0 against +0.0 is a tie Keras breaks toward +0.0."""
    rng = np.random.default_rng(5)
    logits = rng.integers(-2, 3, size=(600, 7)).astype(np.float32)
    logits[rng.random(logits.shape) < 0.4] *= -1.0  # turns some zeros into -0.0
    labels = rng.integers(0, 7, size=600).astype(np.int32)
    assert np.any(np.signbit(logits) & (logits == 0))
    for rows in (logits, logits + 3.0, logits - 3.0):
        expected = keras.metrics.sparse_categorical_accuracy(labels, rows).numpy()
        eager = kd_tf.distiller.sparse_categorical_accuracy(labels, rows).numpy()
        compiled = tf.function(kd_tf.distiller.sparse_categorical_accuracy, jit_compile=True)(labels, rows)
        np.testing.assert_array_equal(eager, expected)
        np.testing.assert_array_equal(compiled.numpy(), expected)
    negative_zero_first = np.array([[-0.0, 0.0, -1.0]], np.float32)
    np.testing.assert_array_equal(
        kd_tf.distiller.sparse_categorical_accuracy([1], negative_zero_first), [1.0]
    )


def test_reported_accuracies_equal_the_keras_metrics():
    teacher, student = mlp(32, "teacher", 1), mlp(4, "student", 2)
    distiller = kd_tf.Distiller(student, teacher, losses.get("kd", temperature=2.0, alpha=0.5))
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    inputs, labels = data(48)
    results = distiller.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)
    logits = student(inputs)
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    accuracy.update_state(labels, logits)
    top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=5)
    top5.update_state(labels, logits)
    np.testing.assert_allclose(results["accuracy"], float(accuracy.result()), rtol=1e-6)
    np.testing.assert_allclose(results["top5_accuracy"], float(top5.result()), rtol=1e-6)


def test_sample_weight_trains_as_keras_model_fit_does():
    """A Student-loss Distiller with sample weights makes the updates of a plain Keras model with the same
    weights (Keras' "sum_over_batch_size": Σ w·loss / batch)."""
    inputs, labels = data(64)
    sample_weight = np.random.default_rng(3).uniform(0, 2, size=64).astype(np.float32)
    plain = mlp(8, "plain", 2, batch_norm=False)
    plain.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(True))
    plain.fit(inputs, labels, sample_weight=sample_weight, batch_size=16, shuffle=False, epochs=2, verbose=0)
    student = mlp(8, "student", 2, batch_norm=False)
    distiller = kd_tf.Distiller(student, None, losses.get("student"))
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    distiller.fit(
        inputs, labels, sample_weight=sample_weight, batch_size=16, shuffle=False, epochs=2, verbose=0
    )
    for got, want in zip(weights(student), weights(plain), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    unweighted = mlp(8, "unweighted", 2, batch_norm=False)
    other = kd_tf.Distiller(unweighted, None, losses.get("student"))
    other.compile(optimizer=keras.optimizers.SGD(0.5))
    other.fit(inputs, labels, batch_size=16, shuffle=False, epochs=2, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(weights(unweighted), weights(student), strict=True)) > 1e-3


def test_zero_weights_leave_what_the_other_half_alone_gives():
    inputs, labels = data(32)
    half = np.r_[np.ones(16), np.zeros(16)].astype(np.float32)
    teacher = mlp(16, "teacher", 1)
    loss = losses.get("kd", temperature=2.0, alpha=0.5)

    def one_step(x, y, learning_rate, sample_weight=None):
        student = mlp(8, "student", 2, batch_norm=False)
        distiller = kd_tf.Distiller(student, teacher, loss)
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate))
        distiller.fit(
            x, y, sample_weight=sample_weight, batch_size=len(x), shuffle=False, epochs=1, verbose=0
        )
        return distiller, weights(student)

    # Hard and soft terms alike: the zero-weighted half adds nothing, and the sum is over the whole batch
    # (32), so the step equals the half alone (16 examples) at half the rate.
    weighted, weighted_weights = one_step(inputs, labels, 0.2, half)
    alone, alone_weights = one_step(inputs[:16], labels[:16], 0.1)
    for got, want in zip(weighted_weights, alone_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Metrics are weighted means: evaluating with the zero weights gives the first half's numbers.
    with_weights = weighted.evaluate(
        inputs, labels, sample_weight=half, batch_size=32, verbose=0, return_dict=True
    )
    first_half = weighted.evaluate(inputs[:16], labels[:16], batch_size=16, verbose=0, return_dict=True)
    for name in ("loss", "hard_loss", "soft_loss", "accuracy", "top5_accuracy"):
        assert with_weights[name] == pytest.approx(first_half[name], rel=1e-5), name


def test_saving_a_distiller_says_to_save_its_student(tmp_path):
    distiller = kd_tf.Distiller(mlp(4, "student", 2), mlp(8, "teacher", 1), losses.get("kd"))
    with pytest.raises(NotImplementedError, match=r"distiller.student.save\(path\)"):
        distiller.save(str(tmp_path / "d.keras"))


def test_a_new_students_step_is_traced_once():
    """Keras builds the optimizer inside the first traced step without a strategy; TensorFlow then traces a
    step that created variables a second time. The Distiller builds it first: one trace per `fit`."""

    class Counting(kd_tf.Distiller):
        traces = 0

        def train_step(self, data):
            Counting.traces += 1  # Python runs only while TensorFlow traces
            return super().train_step(data)

    inputs, labels = data(64)
    distiller = Counting(mlp(4, "student", 2), mlp(8, "teacher", 1), losses.get("kd"))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=2)
    distiller.fit(inputs, labels, batch_size=16, epochs=2, verbose=0)
    assert Counting.traces == 1
