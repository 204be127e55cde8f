"""`kd_tf.keras_compat`: each Keras behaviour it works around is still there, and each workaround works.

A `test_upstream_*` test fails once the installed Keras (or TensorFlow) no longer behaves as its workaround
assumes; its message names the workaround that can go. Runs across worker processes are in
tests/test_multi_worker.py; here two replicas are the two logical CPUs of conftest's `strategies`.
"""

import inspect
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_trainer
from tensorflow.python.distribute.collective_all_reduce_strategy import CollectiveAllReduceExtended

import kd_tf
from kd_tf import distiller as distiller_module
from kd_tf import keras_compat, losses

NUM_CLASSES, DIM, SIZE, BATCH = 3, 4, 16, 8
VERSIONS = f"Keras {keras.__version__}, TensorFlow {tf.__version__}"


def fixed(workaround):
    return f"{VERSIONS} no longer behaves this way: `kd_tf.keras_compat.{workaround}` can go."


def still_fails(call, errors, workaround):
    """Runs `call`, which the upstream behaviour makes raise one of `errors`."""
    try:
        call()
    except errors:
        return
    pytest.fail(fixed(workaround))


class Stop(Exception):
    """Raised by a patched Keras function to end `fit` before it trains."""


def data():
    inputs = np.random.default_rng(0).normal(size=(SIZE, DIM)).astype(np.float32)
    return inputs, (np.arange(SIZE) % NUM_CLASSES).astype(np.int32)


def counted_dataset(starts):
    """The data in batches of `BATCH`; each pass appends to `starts`."""
    inputs, labels = data()

    def generate():
        starts.append(1)
        yield from zip(inputs, labels, strict=True)

    signature = (tf.TensorSpec((DIM,), tf.float32), tf.TensorSpec((), tf.int32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(SIZE)).batch(BATCH)


def built(name="model", cls=keras.Model):
    inputs = keras.Input((DIM,))
    return cls(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(inputs), name=name)


def unbuilt(name="student"):
    return keras.Sequential([keras.layers.Dense(NUM_CLASSES, name="logits")], name=name)


def distiller(student, cls=kd_tf.Distiller):
    return cls(student, None, losses.get("student"))


def record_reduce(monkeypatch, strategy, stop=False):
    """Records each `strategy.reduce` call; with `stop`, ends the caller there."""
    calls, reduce = [], type(strategy).reduce

    def recording(self, reduce_op, value, axis):
        calls.append((reduce_op, axis))
        if stop:
            raise Stop
        return reduce(self, reduce_op, value, axis)

    monkeypatch.setattr(type(strategy), "reduce", recording)
    return calls


def test_private_names_still_exist(strategies):
    """What `keras_compat` reads of Keras and TensorFlow beyond their public API is still there."""
    for owner, name, parameters in [
        (keras.Model, "_maybe_symbolic_build", ["self", "iterator", "data_batch"]),
        (keras.Model, "_symbolic_build", ["self", "iterator", "data_batch"]),
        (keras.Model, "_flatten_layers", None),
        (CollectiveAllReduceExtended, "_in_multi_worker_mode", None),
        (type(strategies[1].extended), "_in_multi_worker_mode", None),
    ]:
        assert hasattr(owner, name), f"{VERSIONS}: {owner.__name__}.{name} is gone; see kd_tf.keras_compat"
        if parameters:
            found = list(inspect.signature(getattr(owner, name)).parameters)
            assert found == parameters, f"{VERSIONS}: {owner.__name__}.{name} takes {found}"
    with strategies[1].scope():
        model = built()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for name in ("_distribute_strategy", "_compile_metrics", "_compile_loss"):
        assert hasattr(model, name), f"{VERSIONS}: a compiled model has no {name}; see kd_tf.keras_compat"
    assert keras_compat.has_own_strategy(model) and not keras_compat.has_own_strategy(built())
    assert keras_compat.all_layers_built(model) and not keras_compat.all_layers_built(unbuilt())
    assert not keras_compat.compile_state_built(model)
    assert keras_compat.across_workers(strategies[1]) is False
    assert strategies[1].extended._in_multi_worker_mode() is False


def test_the_distiller_reads_no_private_keras_name():
    source = inspect.getsource(distiller_module)
    private = ["_distribute_strategy", "_flatten_layers", "_compile_", "_symbolic_build", "_multi_worker"]
    read = [name for name in private if name in source]
    assert not read, f"kd_tf/distiller.py reads {read}: that belongs in kd_tf/keras_compat.py"
    assert kd_tf.Distiller.__mro__.index(keras_compat.BuildWorkarounds) < kd_tf.Distiller.__mro__.index(
        keras.Model
    )


# `first_replica_batch`: keras-team/keras#20585.


def test_upstream_symbolic_build_reduces_a_distributed_batch(strategies, monkeypatch):
    mirrored = strategies[1]
    with mirrored.scope():
        model = unbuilt("model")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    calls = record_reduce(monkeypatch, mirrored, stop=True)
    try:
        model.fit(*data(), batch_size=BATCH, verbose=0)
    except Stop:
        pass
    assert calls == [("MEAN", None)], fixed("first_replica_batch")


def test_a_new_student_is_built_from_one_replicas_part_of_the_first_batch(strategies, monkeypatch):
    mirrored = strategies[1]
    with mirrored.scope():
        student = unbuilt()
        model = distiller(student)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    reduced = record_reduce(monkeypatch, mirrored)
    batches, keras_build = [], keras_trainer.TensorFlowTrainer._maybe_symbolic_build

    def recording_build(self, iterator=None, data_batch=None):
        batches.append(data_batch)
        keras_build(self, iterator=iterator, data_batch=data_batch)
        raise Stop

    monkeypatch.setattr(keras_trainer.TensorFlowTrainer, "_maybe_symbolic_build", recording_build)
    with pytest.raises(Stop):
        model.fit(*data(), batch_size=BATCH, verbose=0)
    assert not reduced
    (batch,) = batches
    tensors = [value for value in tf.nest.flatten(batch) if value is not None]
    assert all(isinstance(value, tf.Tensor) for value in tensors)
    assert [tuple(value.shape) for value in tensors] == [(BATCH // 2, DIM), (BATCH // 2,)]
    assert student.built and model.optimizer.built


# `build_without_a_batch`: `TensorFlowTrainer._maybe_symbolic_build` and `fit`, Keras 3.15.1.


def test_upstream_fit_under_a_strategy_starts_the_data_twice_for_a_built_model(strategies):
    with strategies[1].scope():
        model = built()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    starts = []
    model.fit(counted_dataset(starts), epochs=1, shuffle=False, verbose=0)
    assert len(starts) == 2, fixed("build_without_a_batch")


def test_a_built_students_data_starts_once_a_pass_under_a_strategy(strategies):
    with strategies[1].scope():
        model = distiller(built("student"))
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    starts = []
    model.fit(counted_dataset(starts), epochs=2, shuffle=False, verbose=0)
    assert len(starts) == 2


# `build_optimizer_before_tracing`: `TensorFlowTrainer._maybe_symbolic_build`, Keras 3.15.1, and
# tensorflow/tensorflow#48851.


def traces_of_a_new_model(make):
    """How many times two epochs of `fit` trace the train step of `make(Counting)`, a new model whose
    train step counts its traces."""

    class Counting:
        traces = 0

        def train_step(self, data):
            Counting.traces += 1  # Python runs only while TensorFlow traces
            return super().train_step(data)

    model = make(Counting)
    model.fit(*data(), batch_size=BATCH, epochs=2, verbose=0)
    return Counting.traces


def test_upstream_a_new_models_step_is_traced_twice():
    def make(counting):
        model = built(cls=type("CountingModel", (counting, keras.Model), {}))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        return model

    assert traces_of_a_new_model(make) == 2, fixed("build_optimizer_before_tracing")


def test_a_new_students_step_is_traced_once():
    def make(counting):
        model = distiller(built("student"), type("CountingDistiller", (counting, kd_tf.Distiller), {}))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    assert traces_of_a_new_model(make) == 1


# `step_outputs`: `reduce_per_replica`, Keras 3.15.1, and tensorflow/tensorflow#72388.


def test_upstream_outputs_across_workers_are_averaged_along_axis_0(strategies, monkeypatch):
    class Recording:
        calls = []

        def reduce(self, reduce_op, value, axis=None):
            self.calls.append((reduce_op, axis))
            return value

    monkeypatch.setattr(keras_trainer, "_collective_all_reduce_multi_worker", lambda strategy: True)
    keras_trainer.reduce_per_replica({"loss": tf.constant(1.0)}, Recording(), reduction="auto")
    assert Recording.calls == [("MEAN", 0)], fixed("step_outputs")
    mirrored = strategies[1]
    scalars = mirrored.run(lambda: tf.constant(1.0))
    still_fails(lambda: mirrored.reduce("MEAN", scalars, axis=0), ValueError, "step_outputs")


def test_step_outputs_have_an_axis_0_across_workers_only(strategies, monkeypatch):
    results = {"loss": tf.constant(2.0), "accuracy": tf.constant(0.5)}
    for strategy in (tf.distribute.get_strategy(), *strategies):
        assert keras_compat.step_outputs(results, strategy) is results
    workers = mock.Mock(spec=tf.distribute.MultiWorkerMirroredStrategy)
    workers.extended._in_multi_worker_mode.return_value = False
    assert keras_compat.step_outputs(results, workers) is results
    workers.extended._in_multi_worker_mode.return_value = True
    assert {
        name: tuple(value.shape) for name, value in keras_compat.step_outputs(results, workers).items()
    } == {
        "loss": (1,),
        "accuracy": (1,),
    }
    # Reduced as Keras reduces them across workers, they give the scalar mean.
    monkeypatch.setattr(keras_compat, "across_workers", lambda strategy: True)
    mirrored = strategies[1]

    def step():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return keras_compat.step_outputs({"loss": tf.cast(replica, tf.float32) + 1.0})

    mean = mirrored.reduce("MEAN", mirrored.run(step)["loss"], axis=0)
    assert mean.shape == () and float(mean) == 1.5


# `multi_step_loop_fails`: keras-team/keras#19246.


def test_upstream_multi_step_loop_fails_over_two_replicas(strategies):
    with strategies[1].scope():
        model = built()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=2)
    fit = lambda: model.fit(*data(), batch_size=BATCH // 2, verbose=0)
    still_fails(fit, tf.errors.InvalidArgumentError, "multi_step_loop_fails")


def test_multi_step_loop_fails_over_several_replicas_but_tpus(strategies):
    one_device, mirrored = strategies
    assert not keras_compat.multi_step_loop_fails(tf.distribute.get_strategy())
    assert not keras_compat.multi_step_loop_fails(one_device)
    assert keras_compat.multi_step_loop_fails(mirrored)
    tpu = mock.Mock(spec=tf.distribute.TPUStrategy, num_replicas_in_sync=8)
    assert not keras_compat.multi_step_loop_fails(tpu)
