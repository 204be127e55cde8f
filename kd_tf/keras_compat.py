"""Where kd_tf reads Keras or TensorFlow private names, and how it works around Keras behaviours.

Each workaround is held by the `keras>=3.12,<3.16` pin in setup.py. `tests/test_keras_compat.py` shows for
each that the upstream behaviour is still there in the installed Keras (and fails, naming the workaround
that can go, once it is not), that the workaround does its part, and that the private names read here
still exist.

Workarounds (Keras source as of Keras 3.15.1, `keras/src/backend/tensorflow/trainer.py`):

- `first_replica_batch`: under `MultiWorkerMirroredStrategy`, `TensorFlowTrainer._maybe_symbolic_build`
  reduces the first batch with `strategy.reduce`, refused for a batch of several tensors
  (keras-team/keras#20585).
- `build_without_a_batch`: under a strategy, `TensorFlowTrainer._maybe_symbolic_build` reads the first
  batch even when everything is built, and `TensorFlowTrainer.fit` then starts the stream again.
- `build_optimizer_before_tracing`: without a strategy, `TensorFlowTrainer._maybe_symbolic_build` leaves
  the optimizer to be built in the first traced step, and TensorFlow traces a function that created
  variables a second time (tensorflow/tensorflow#48851).
- `step_outputs`: across workers, `reduce_per_replica` averages step outputs along axis 0, which a scalar
  lacks (tensorflow/tensorflow#72388).
- `multi_step_loop_fails`: Keras' loop of several steps per call fails over several replicas
  (keras-team/keras#19246).

`BuildWorkarounds` applies the first three to a model that trains a `student`. Private names read:
`TensorFlowTrainer._distribute_strategy` and `_maybe_symbolic_build`, `Trainer._symbolic_build`,
`_compile_metrics` and `_compile_loss`, `Layer._flatten_layers`, and TensorFlow's
`strategy.extended._in_multi_worker_mode`.
"""

from __future__ import annotations

import tensorflow as tf


def has_own_strategy(model) -> bool:
    """Whether `model` was created under a `tf.distribute` strategy's scope.

    Reads Keras' private `TensorFlowTrainer._distribute_strategy` (`None` otherwise): the public
    `model.distribute_strategy` falls back on the default strategy and cannot tell.
    """
    return model._distribute_strategy is not None


def all_layers_built(layer) -> bool:
    """Whether `layer` and every layer nested in it are built (Keras' private `Layer._flatten_layers`)."""
    return all(sublayer.built for sublayer in layer._flatten_layers())


def compile_state_built(model) -> bool:
    """Whether the loss and metrics `compile` added are built or absent (Keras' private
    `Trainer._compile_metrics` and `Trainer._compile_loss`)."""
    return all(
        getattr(model, attribute, None) is None or getattr(model, attribute).built
        for attribute in ("_compile_metrics", "_compile_loss")
    )


def first_replica(value):
    """The first local replica's part of a distributed value; any other value as it is."""
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def first_replica_batch(iterator, default=None):
    """The first batch of a Keras epoch iterator, each tensor its first local replica's part, for the
    symbolic build; `default` when the iterator yields nothing.

    Keras: under a strategy, `TensorFlowTrainer._maybe_symbolic_build` reduces a distributed first batch
    with `strategy.reduce("MEAN", batch, axis=None)`, which `MultiWorkerMirroredStrategy` refuses for a
    batch of several tensors (keras-team/keras#20585).
    Workaround: one replica's part of the batch has the shapes the build needs, without a reduction.
    Removable once Keras builds from a distributed batch without `strategy.reduce`.
    """
    for _, _, batches in iterator:
        return tf.nest.map_structure(first_replica, next(batches))
    return default


def build_without_a_batch(model) -> bool:
    """Builds what remains of `model` (its optimizer) without reading a batch, when its layers and compile
    state are built; returns whether it did.

    Keras: under a strategy, `TensorFlowTrainer._maybe_symbolic_build` reads the first batch for its
    shapes even when everything is built, and `TensorFlowTrainer.fit` then resets the epoch iterator
    (Keras 3.15.1): a pipeline that reshuffles every pass trains on another order than without a strategy.
    Workaround: nothing is read when no shape is needed.
    Removable once Keras reads no batch for a built model.
    """
    if not (all_layers_built(model) and compile_state_built(model)):
        return False
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=None)
    return True


def build_optimizer_before_tracing(model, trained) -> None:
    """Builds `model.optimizer` for `trained`'s variables when they all exist and it is not built yet.

    Keras: without a strategy, `TensorFlowTrainer._maybe_symbolic_build` defers building to the first
    traced step (Keras 3.15.1), where the optimizer creates its slot variables; TensorFlow traces a
    function that created variables a second time without them (tensorflow/tensorflow#48851), so each new
    model's step is traced twice.
    Workaround: the optimizer is built before the step is traced, which is then traced once.
    Removable once Keras builds the optimizer before tracing, or TensorFlow traces such a function once.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built and all_layers_built(trained):
        optimizer.build(trained.trainable_variables)


def across_workers(strategy) -> bool:
    """Whether Keras reduces step outputs across worker processes: a `MultiWorkerMirroredStrategy` in
    multi-worker mode (TensorFlow's private `strategy.extended._in_multi_worker_mode`), as Keras'
    `_collective_all_reduce_multi_worker` decides."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker_mode and in_multi_worker_mode()
    )


def step_outputs(results: dict, strategy=None) -> dict:
    """A train or test step's outputs, each with an axis 0 of size 1 across workers.

    Keras: `reduce_per_replica` (Keras 3.15.1) averages step outputs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails for a scalar (tensorflow/tensorflow#72388).
    Workaround: under `strategy` (the current one by default) across workers, each output is reshaped to
    `[1]`; the reduction then returns the scalar mean. Elsewhere the outputs are returned as they are.
    Removable once Keras reduces scalar step outputs across workers.
    """
    if across_workers(strategy or tf.distribute.get_strategy()):
        return {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results


def multi_step_loop_fails(strategy) -> bool:
    """Whether Keras' loop of several steps per call fails under `strategy`: over several replicas (GPUs,
    logical CPUs or workers) except on TPUs.

    Keras: the multi-step loop (`steps_per_execution` > 1) of `TensorFlowTrainer._make_function` fails
    over several replicas (keras-team/keras#19246); in Keras 3.15.1 its `tf.while_loop` stops with
    "You must feed a value for placeholder tensor".
    Workaround: callers take one step per call there.
    Removable once the multi-step loop runs over several replicas.
    """
    return strategy.num_replicas_in_sync > 1 and not isinstance(strategy, tf.distribute.TPUStrategy)


class BuildWorkarounds:
    """Mixin, ahead of `keras.Model` in the bases, for a model that trains its `student` attribute: its
    build before training applies `build_optimizer_before_tracing` without a strategy, and
    `build_without_a_batch` or else `first_replica_batch` under one."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds what is not built before training, as Keras does, with this module's workarounds."""
        if not has_own_strategy(self):
            build_optimizer_before_tracing(self, self.student)
        elif iterator is not None:
            if build_without_a_batch(self):
                return None
            data_batch = first_replica_batch(iterator, data_batch)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
