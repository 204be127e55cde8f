"""kd_tf: every method of "Understanding and Improving Knowledge Distillation" as a Keras loss."""

from kd_tf import losses, runtime
from kd_tf.distiller import Distiller, class_vectors
from kd_tf.losses import DistillationLoss, pack_targets

__all__ = ["DistillationLoss", "Distiller", "class_vectors", "losses", "pack_targets", "runtime"]
__version__ = "0.1.0"
