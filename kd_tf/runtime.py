"""Distribution strategy and mixed-precision policy, chosen by name (the `--strategy`/`--precision` flags)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def split_cpu(devices: int) -> None:
    """Splits the host CPU into `devices` logical devices, so that `MirroredStrategy` has several replicas
    without accelerators (a rehearsal of a multi-device run). Must run before TensorFlow uses a device."""
    if devices < 1:
        raise ValueError(f"`devices` must be at least 1. Received: devices={devices}")
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def make_strategy(
    name: str = "default", tpu: str | None = None, collective_timeout: float | None = None
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy named by `--strategy`.

    Args:
        name: one of `default` (the current strategy, one device), `mirrored` (all local GPUs, else every
            logical CPU), `multi_worker_mirrored` (workers from `TF_CONFIG`), `tpu`.
        tpu: the TPU name or address for `name="tpu"` (`""` or `"local"` for a TPU VM).
        collective_timeout: with `multi_worker_mirrored`, seconds a collective may wait for the other workers
            before it fails (a lost worker then stops the others instead of hanging them); `None`: forever.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        _reclaim_sigterm()
        return strategy
    if tpu is None:
        raise ValueError("`strategy=tpu` needs `tpu` (the TPU name, or 'local' on a TPU VM).")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def set_precision(name: str = "float32") -> None:
    """Sets the global Keras dtype policy named by `--precision`.

    Models keep float32 logits and the losses compute in float32 whatever the policy.
    """
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}. Received: precision={name!r}")
    keras.mixed_precision.set_global_policy(name)


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """Wraps `optimizer` in a `LossScaleOptimizer` under `mixed_float16`, where small gradients underflow."""
    if precision == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place among the workers of a run: `index` of `count`; the chief writes the results."""

    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0


def worker_of(strategy: tf.distribute.Strategy) -> Worker:
    """The worker this process is under `strategy` (worker 0 of 1 unless it spans several processes).

    Worker 0 is the chief: the cluster's `chief` task, or else `worker` 0, as `TF_CONFIG` conventions have it.
    """
    if not across_workers(strategy):
        return Worker()
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    workers = spec.num_tasks("worker") if "worker" in spec.jobs else 0
    if resolver.task_type == "chief":
        index = 0
    else:
        index = chiefs + int(resolver.task_id)
    return Worker(index=index, count=chiefs + workers)


def across_workers(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` trains across several worker processes (`TF_CONFIG` naming more than one)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")) > 1


def agreed_minimum(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest of every worker's `value` (each worker's own where there is one worker).

    Workers that resume must agree where: each keeps its own checkpoints, and a worker killed between two
    saves is one epoch behind the others.
    """
    if not across_workers(strategy):
        return int(value)
    local = tf.constant([int(value)], tf.int64)
    gathered = strategy.gather(strategy.run(lambda: local), axis=0)
    return int(tf.reduce_min(gathered))


def split_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """`dataset`'s global batches, each split among the replicas of every worker as one process splits it.

    Across workers, each worker reads the whole pipeline (in memory: cheap) and keeps its replicas' slices
    of every global batch, so that the workers together take the very steps a single process would; a last
    smaller batch is split as evenly as it goes. TensorFlow's own auto-sharding would instead give each
    worker every other example before the shuffle: other batches than one process sees. Elsewhere `dataset`
    is returned as it is (Keras splits it).
    """
    if not across_workers(strategy):
        return dataset
    replicas = strategy.num_replicas_in_sync

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices(*batch):
            size = tf.shape(tf.nest.flatten(batch)[0], out_type=tf.int64)[0]

            def part(k):
                start, end = size * (first + k) // replicas, size * (first + k + 1) // replicas
                parts = tf.nest.map_structure(lambda tensor: tensor[start:end], batch)
                return parts if len(parts) > 1 else parts[0]

            return tf.data.Dataset.range(local).map(part)

        return dataset.flat_map(slices)

    return strategy.distribute_datasets_from_function(pipeline)


_interrupted = False


def catch_interrupts() -> None:
    """Ctrl-C raises `KeyboardInterrupt` as usual and is also remembered, so that `raise_if_interrupted`
    stops the run even when the exception landed where Python discards it (a finalizer running during
    garbage collection prints "Exception ignored" and goes on)."""
    signal.signal(signal.SIGINT, _on_interrupt)


def _on_interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raises `KeyboardInterrupt` if Ctrl-C came since `catch_interrupts` (called between epochs)."""
    if _interrupted:
        raise KeyboardInterrupt


class StopOnInterrupt(keras.callbacks.Callback):
    """Ends training at the end of the epoch in which a Ctrl-C was lost (see `catch_interrupts`)."""

    def on_epoch_end(self, epoch, logs=None):
        raise_if_interrupted()


class Terminated(SystemExit):
    """The process got SIGTERM (a preempted VM, a batch scheduler's notice before SIGKILL).

    A `SystemExit` with status 143 (128 + SIGTERM, what a shell reports for a process SIGTERM ended): no
    `except Exception` swallows it, and a worker process it ends exits with that status and no traceback.
    `message` says what was saved.
    """

    def __init__(self, message: str = "Terminated (SIGTERM); run the same command again to resume."):
        super().__init__(143)
        self.message = message


def stopped_message(epoch: int, step: int) -> str:
    """`Terminated`'s message once a loop saved its state in `epoch` (1-based) after `step` of its steps."""
    return (
        f"Terminated (SIGTERM): checkpoint saved at epoch {epoch}, step {step}; run the same command again to "
        "resume."
    )


_terminated = False
_deferred = 0  # > 0 while a training loop stops at its next step boundary itself
_exit_at_once = False


def catch_terminations(exit_at_once: bool = False) -> None:
    """Turns SIGTERM into `Terminated`: at once, or, inside `deferring_terminations()` (a training loop that
    checkpoints), at the loop's next step boundary, after it has saved (`StopOnTermination`). A second
    SIGTERM while that save runs is ignored: the save finishes, then the run stops.

    Args:
        exit_at_once: outside a deferring loop, end the process at once (`os._exit(143)`) instead of
            raising: for a worker process whose files are all written atomically, where an unwinding
            interpreter would only take longer to go.
    """
    global _exit_at_once
    _exit_at_once = exit_at_once
    signal.signal(signal.SIGTERM, _on_terminate)


def _reclaim_sigterm() -> None:
    """Puts `catch_terminations`'s handler back where it was installed. TensorFlow's coordination service
    (multi-worker training) installs a SIGTERM handler of its own in C++, its preemption notifier, which only
    notes the signal's time: the process would then train on as if nothing had come."""
    if signal.getsignal(signal.SIGTERM) is _on_terminate:
        signal.signal(signal.SIGTERM, _on_terminate)


def _on_terminate(signum, frame):
    global _terminated
    _terminated = True
    if _deferred:
        return
    if _exit_at_once:
        os._exit(143)
    raise Terminated()


def terminated() -> bool:
    """Whether SIGTERM came to this process since `catch_terminations`."""
    return _terminated


def terminated_everywhere() -> bool:
    """Whether SIGTERM came to this process or, across workers, to any of them: each worker asks at the same
    step, so that all of them save that step and stop together (one scalar gathered per call)."""
    strategy = tf.distribute.get_strategy()
    if not across_workers(strategy):
        return _terminated
    return agreed_minimum(strategy, -int(_terminated)) < 0


@contextlib.contextmanager
def deferring_terminations():
    """Within the block, SIGTERM only sets `terminated()`: the block's training loop saves a checkpoint at
    its next step boundary and raises `Terminated` itself. One that came and was not acted on (it arrived
    after the loop's last step) is raised when the block ends."""
    global _deferred
    _reclaim_sigterm()
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if _terminated and not _deferred:
        raise Terminated()


class _NoRetracingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_warnings() -> None:
    """Drops TensorFlow's "triggered tf.function retracing" warnings: a process that trains one model after
    another compiles each model's own step functions, which TensorFlow counts as retracing one function."""
    tf.get_logger().addFilter(_NoRetracingWarnings())
