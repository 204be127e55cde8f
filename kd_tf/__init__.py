"""kd_tf: every method of "Understanding and Improving Knowledge Distillation" as a Keras loss."""

import models as _models
from kd_tf import losses, runtime, schedules
from kd_tf.distiller import Distiller, class_vectors
from kd_tf.losses import DistillationLoss, pack_targets

__all__ = ["DistillationLoss", "Distiller", "class_vectors", "losses", "pack_targets", "runtime", "schedules"]
__version__ = "0.1.0"

# Every class the project saves (losses, schedules, layers, models) is registered once `kd_tf` is imported,
# so `keras.saving.load_model(path, safe_mode=True)` works in any process that ran `import kd_tf`.
_models.register_all()
