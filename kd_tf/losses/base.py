"""The objective every method shares: `(1 - λ)·CE(y, p) + λ·T²·KL(q̃ ‖ p^T)`."""

from __future__ import annotations

import keras
import tensorflow as tf

_REGISTRY: dict[str, type[DistillationLoss]] = {}


def register(name: str, label: str | None = None, table_position: int | None = None):
    """Class decorator: makes a loss reachable as `kd_tf.losses.get(name)` and by the `--method` flag.

    `label` is the method's name in the paper's tables ("KD-pt"), what result tables print;
    `table_position` its column in them (methods without one follow, by name).
    """

    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"A loss is already registered as {name!r}: {_REGISTRY[name].__name__}.")
        cls.method_name = name
        cls.paper_label = label or name
        cls.table_position = table_position
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="kd_tf")(cls)

    return decorate


def registered() -> dict[str, type[DistillationLoss]]:
    """Flag name -> loss class, in registration order."""
    return dict(_REGISTRY)


def check_range(name, value, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Raises `ValueError` naming the argument when `value` is outside the interval."""
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value}")


def split_targets(y_true, logits_rank: int, payload_size: int):
    """Splits `y_true` into integer labels and the teacher payload that rides beside them.

    `y_true` is either the labels alone (the logits' shape without the class axis, or with a trailing 1),
    or labels packed with a cached teacher payload by `pack_targets` (trailing axis `1 + payload_size`).
    """
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == logits_rank - 1:
        if payload_size:
            raise ValueError(
                f"This loss needs {payload_size} teacher values per example beside the label, but `y_true` "
                "carries labels only. Use `kd_tf.Distiller` with a teacher, or pack cached teacher outputs "
                "with `kd_tf.pack_targets(labels, loss.teacher_payload(labels, teacher_logits))`."
            )
        return tf.cast(y_true, tf.int32), None
    width = y_true.shape[-1]
    if width != 1 + payload_size:
        raise ValueError(
            f"`y_true` must end in 1 (label) + {payload_size} (teacher payload) = {1 + payload_size} "
            f"values for this loss. Received: y_true.shape={y_true.shape}"
        )
    labels = tf.cast(tf.round(y_true[..., 0]), tf.int32)
    payload = tf.cast(y_true[..., 1:], tf.float32) if payload_size else None
    return labels, payload


def pack_targets(labels, payload=None):
    """Packs labels and a teacher payload into one float32 target tensor for a plain `Model.fit`."""
    labels = tf.cast(labels, tf.float32)[..., None]
    if payload is None:
        return labels
    return tf.concat([labels, tf.cast(payload, tf.float32)], axis=-1)


class DistillationLoss(keras.losses.Loss):
    """`(1 - alpha)·CE(y, p) + alpha·temperature²·KL(q̃ ‖ softmax(student_logits / temperature))`.

    Subclasses only say how the target distribution `q̃` is built from the teacher. What a subclass needs
    from the teacher per example (its *payload*) is all that a teacher cache stores: the full logits for
    KD, one probability for KD-pt, `2k` numbers for KD-topk, nothing for LS, KD-sim and KD-rel.

    The loss works on any leading shape: classes are the last axis of the logits, labels have the logits'
    shape without it (a language model's `[batch, time]` tokens are all examples). Reduction follows
    `keras.losses.Loss` (per-example values averaged over the batch by default).

    Args:
        temperature: softening temperature `T` of teacher and student distributions (> 0).
        alpha: weight `λ` of the distillation term, in [0, 1].
        name: loss name.
        reduction: Keras reduction of the per-example values.
        dtype: ignored; the loss is always computed in float32.
    """

    method_name = "distillation"
    # What the runner needs to know to build the loss (each method's file says it for its class):
    # `hyperparameters`, the constructor arguments a run sets from the flags of the same names, in the order
    # records list them; `needs`, what else the constructor takes: "class_vectors" (the teacher's
    # logit-layer weights, `[M, features]`) and/or "class_parents" (a class hierarchy, `[M]`).
    hyperparameters: tuple[str, ...] = ("temperature", "alpha")
    needs: frozenset[str] = frozenset()

    def __init__(self, temperature=1.0, alpha=0.5, name=None, reduction="sum_over_batch_size", dtype=None):
        check_range("temperature", temperature, low=0, low_inclusive=False)
        check_range("alpha", alpha, 0, 1)
        super().__init__(name=name or self.method_name, reduction=reduction, dtype="float32")
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def check_num_classes(self, num_classes: int) -> None:
        """Raises `ValueError` when the loss cannot serve `num_classes` classes (KD-topk's k > M)."""

    # What the teacher contributes, per example.

    def payload_size(self, num_classes: int) -> int:
        """Number of float values per example this loss needs from the teacher (0: none)."""
        return num_classes

    def teacher_payload(self, labels, teacher_logits):
        """The part of the teacher's output that `target_distribution` needs; the default is all logits."""
        return tf.cast(teacher_logits, tf.float32)

    def target_distribution(self, labels, payload, num_classes: int):
        """Builds `q̃` `[..., num_classes]` from the labels and the teacher payload."""
        raise NotImplementedError

    def teacher_distribution(self, labels, teacher_logits):
        """The distribution `q̃` the student is trained toward, `[..., num_classes]`."""
        teacher_logits = tf.convert_to_tensor(teacher_logits)
        labels = tf.cast(labels, tf.int32)
        num_classes = teacher_logits.shape[-1]
        payload = self.teacher_payload(labels, teacher_logits) if self.payload_size(num_classes) else None
        return self.target_distribution(labels, payload, num_classes)

    # The objective.

    def terms(self, labels, payload, student_logits):
        """Per-example hard cross-entropy `H(y, p)` and soft term `T²·KL(q̃ ‖ p^T)`."""
        student_logits = tf.cast(student_logits, tf.float32)
        labels = tf.cast(labels, tf.int32)
        hard = sparse_cross_entropy(labels, student_logits)
        if self.alpha == 0.0:
            return hard, tf.zeros_like(hard)
        target = self.target_distribution(labels, payload, student_logits.shape[-1])
        # log-softmax, never log(softmax + eps): an eps rounds to zero in float16. The sum is taken over
        # q̃ (log q̃ - log p^T), never as Σ q̃ log q̃ - Σ q̃ log p^T: at 10,000 classes those two sums are
        # about 9.2 each and a KL near 1e-5 would be lost in their float32 rounding.
        student_log_probs = tf.nn.log_softmax(student_logits / self.temperature, axis=-1)
        kl = tf.reduce_sum(tf.math.xlogy(target, target) - target * student_log_probs, axis=-1)
        # T² keeps the soft gradient on the scale of the hard one (Hinton et al. 2015, §2).
        return hard, self.temperature**2 * kl

    def combine(self, hard, soft):
        """`(1 - alpha)·hard + alpha·soft`."""
        return (1.0 - self.alpha) * hard + self.alpha * soft

    def per_example(self, labels, teacher_logits, student_logits):
        """Per-example loss `[...]` from full teacher logits (the online path)."""
        labels = tf.cast(labels, tf.int32)
        num_classes = student_logits.shape[-1]
        payload = None
        if self.payload_size(num_classes):
            payload = self.teacher_payload(labels, tf.convert_to_tensor(teacher_logits))
        return self.combine(*self.terms(labels, payload, student_logits))

    def call(self, y_true, y_pred):
        labels, payload = split_targets(y_true, y_pred.shape.rank, self.payload_size(y_pred.shape[-1]))
        return self.combine(*self.terms(labels, payload, y_pred))

    def get_config(self):
        return {
            "name": self.name,
            "reduction": self.reduction,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }


def sparse_cross_entropy(labels, logits):
    """`-log softmax(logits)[label]`, shape `[...]`, as `tf.nn.sparse_softmax_cross_entropy_with_logits`.

    Written as `logsumexp(logits) - logits[label]`: TensorFlow's CPU kernel for the fused op takes twice as
    long with its gradient at a 10,000-word vocabulary (52 against 26 ms for 700 x 10,000 logits). Under XLA
    the fused op is a few percent faster, which does not pay for a second code path.
    """
    label_logits = tf.gather(logits, labels, axis=-1, batch_dims=labels.shape.rank)
    return tf.reduce_logsumexp(logits, axis=-1) - label_logits


def uniform_except_target(labels, target_probability, num_classes: int):
    """`q̃_t = target_probability`, the remaining mass spread evenly over the other classes."""
    target_probability = tf.cast(target_probability, tf.float32)[..., None]
    one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    others = (1.0 - target_probability) / (num_classes - 1)
    return one_hot * target_probability + (1.0 - one_hot) * others


def gather_rows(matrix, labels):
    """Row `labels` of a `[M, M]` table of per-class target distributions."""
    return tf.gather(tf.convert_to_tensor(matrix, tf.float32), labels)


def mix_distributions(first, second, mix: float):
    """`mix·first + (1 - mix)·second`."""
    return mix * first + (1.0 - mix) * second
