"""Distribution strategy and mixed-precision policy, chosen by name (the `--strategy`/`--precision` flags)."""

from __future__ import annotations

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def make_strategy(name: str = "default", tpu: str | None = None) -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy named by `--strategy`.

    Args:
        name: one of `default` (the current strategy, one device), `mirrored` (all local GPUs, or the CPU),
            `multi_worker_mirrored` (workers from `TF_CONFIG`), `tpu`.
        tpu: the TPU name or address for `name="tpu"` (`""` or `"local"` for a TPU VM).
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
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
