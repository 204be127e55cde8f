"""`Distiller`: a `keras.Model` that trains a student against a frozen teacher with a distillation loss."""

from __future__ import annotations

import keras
import tensorflow as tf

from kd_tf import keras_compat
from kd_tf.losses.base import DistillationLoss, split_targets


def num_classes_of(model: keras.Model) -> int | None:
    """The size of a model's last output axis, or `None` when the model is not built yet."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], list | tuple):
        shape = shape[0]
    return None if shape is None else shape[-1]


def class_vectors(model: keras.Model, layer_name: str = "logits"):
    """The logit layer's kernel, shape `(h, M)`: its columns are the class vectors KD-sim compares.

    A model whose output layer reuses another variable (AWD-LSTM's tied embedding) exposes it as
    `model.output_kernel`.
    """
    if hasattr(model, "output_kernel"):
        return keras.ops.convert_to_numpy(model.output_kernel)
    try:
        layer = model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(
            f"The teacher has no layer named {layer_name!r}; KD-sim reads the class vectors from it."
        ) from error
    return keras.ops.convert_to_numpy(layer.kernel)


def sparse_categorical_accuracy(labels, logits):
    """`keras.metrics.sparse_categorical_accuracy` (1.0 where the arg-max class is the label), with its ties.

    Keras ranks -0.0 below +0.0 (its arg-max first maps -0.0 to -tiny), which costs it three more passes
    over the logits; `tf.argmax` ranks them equal. Both take the first of equal maxima, so they can only
    disagree in a row whose maximum is zero, and only then is Keras' own function run.
    """
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(labels, tf.int32)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    maxima = tf.gather(logits, predicted, axis=-1, batch_dims=predicted.shape.rank)
    return tf.cond(
        tf.reduce_any(tf.equal(maxima, 0.0)),
        lambda: keras.metrics.sparse_categorical_accuracy(labels, logits),
        lambda: tf.cast(tf.equal(predicted, labels), keras.backend.floatx()),
    )


class Distiller(keras_compat.BuildWorkarounds, keras.Model):
    """Trains `student` toward a frozen `teacher` with a `DistillationLoss`.

    The teacher runs with `training=False` and its payload passes through `stop_gradient`, so only the
    student's variables are updated. With `teacher=None`, each batch's targets must carry the cached
    teacher payload packed by `kd_tf.pack_targets` (offline distillation). The loss is the per-example loss summed over the replica's
    batch and divided by the global batch, so `tf.distribute` strategies make the same update as one device.
    Where Keras' training loop needs working around, `kd_tf.keras_compat` does it.

    Args:
        student: model mapping inputs to logits; what `call`, `predict` and saving see.
        teacher: frozen model mapping the same inputs to logits over the same classes, or `None`.
        loss: a `kd_tf.losses.DistillationLoss`.

    Example:
    >>> distiller = kd_tf.Distiller(student, teacher, kd_tf.losses.get("kd", temperature=4, alpha=0.9))
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> distiller.fit(train_ds, validation_data=test_ds, epochs=10)
    """

    def __init__(self, student, teacher=None, loss=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(loss, DistillationLoss):
            raise ValueError(
                "`loss` must be a kd_tf.losses.DistillationLoss (e.g. kd_tf.losses.get('kd')). "
                f"Received: loss={loss!r}"
            )
        self.student = student
        self.teacher = teacher
        self.distillation_loss = loss
        if teacher is not None:
            teacher.trainable = False
            student_classes, teacher_classes = num_classes_of(student), num_classes_of(teacher)
            if None not in (student_classes, teacher_classes) and student_classes != teacher_classes:
                raise ValueError(
                    f"The teacher predicts {teacher_classes} classes but the student {student_classes}: "
                    "a teacher can only be distilled into a student over the same classes."
                )
        # The Distiller owns no variables of its own: it is built once its student is.
        self.built = bool(getattr(student, "built", False))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.hard_loss_tracker = keras.metrics.Mean(name="hard_loss")
        self.soft_loss_tracker = keras.metrics.Mean(name="soft_loss")
        # Keras' SparseCategoricalAccuracy values, at a quarter of its cost on 10,000-class logits.
        self.accuracy = keras.metrics.MeanMetricWrapper(sparse_categorical_accuracy, name="accuracy")
        # Top-5 accuracy is measured in evaluation only (`test_step`): in training it would cost a top-k
        # pass over every example's logits at every step and tell little beside accuracy.
        self.top5_accuracy = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.hard_loss_tracker,
            self.soft_loss_tracker,
            self.accuracy,
            self.top5_accuracy,
        ]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _distillation_terms(self, inputs, targets, student_logits):
        """Labels and per-example (hard, soft, total) losses; the teacher payload is computed by the frozen
        teacher, or carried by the targets when there is no teacher."""
        loss = self.distillation_loss
        payload_size = loss.payload_size(student_logits.shape[-1])
        if self.teacher is None or not payload_size:
            labels, payload = split_targets(targets, student_logits.shape.rank, payload_size)
        else:
            labels = tf.cast(targets, tf.int32)
            teacher_logits = self.teacher(inputs, training=False)
            if teacher_logits.shape[-1] != student_logits.shape[-1]:
                raise ValueError(
                    f"The teacher predicts {teacher_logits.shape[-1]} classes but the student "
                    f"{student_logits.shape[-1]}."
                )
            payload = tf.stop_gradient(loss.teacher_payload(labels, teacher_logits))
        hard, soft = loss.terms(labels, payload, student_logits)
        return labels, hard, soft, loss.combine(hard, soft)

    def _update_metrics(self, labels, hard, soft, total, student_logits, weights=None, top5=False):
        num_classes = student_logits.shape[-1]
        flat_labels = tf.reshape(labels, [-1])
        flat_logits = tf.reshape(student_logits, [-1, num_classes])
        flat_weights = None if weights is None else tf.reshape(weights, [-1])
        self.loss_tracker.update_state(total, sample_weight=weights)
        self.hard_loss_tracker.update_state(hard, sample_weight=weights)
        self.soft_loss_tracker.update_state(soft, sample_weight=weights)
        self.accuracy.update_state(flat_labels, flat_logits, sample_weight=flat_weights)
        trackers = self.metrics if top5 else self.metrics[:-1]
        if top5:
            self.top5_accuracy.update_state(flat_labels, flat_logits, sample_weight=flat_weights)
        return keras_compat.step_outputs({metric.name: metric.result() for metric in trackers})

    @staticmethod
    def _example_weights(data, total):
        """The batch's `sample_weight` (a third element, as `Model.fit` passes it), one per example of
        `total` (a `[batch]` weight covers every time step of a `[batch, time]` example), or `None`."""
        if not isinstance(data, tuple | list) or len(data) < 3 or data[2] is None:
            return None
        weights = tf.cast(data[2], tf.float32)
        extra = total.shape.rank - weights.shape.rank
        if extra > 0:
            weights = tf.reshape(weights, tf.concat([tf.shape(weights), tf.ones([extra], tf.int32)], 0))
        return tf.broadcast_to(weights, tf.shape(total))

    def train_step(self, data):
        inputs, targets = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            student_logits = tf.cast(self.student(inputs, training=True), tf.float32)
            labels, hard, soft, total = self._distillation_terms(inputs, targets, student_logits)
            weights = self._example_weights(data, total)
            weighted = total if weights is None else total * weights
            # Sum over this replica's examples, divide by the global count: replicas' gradients are summed.
            # With sample weights this is Keras' "sum_over_batch_size": Σ w·loss over the examples.
            global_count = tf.cast(tf.size(total) * replicas, tf.float32)
            objective = tf.reduce_sum(weighted) / global_count
            if self.student.losses:
                objective += tf.add_n(self.student.losses) / replicas
            scaled = self.optimizer.scale_loss(objective)
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(labels, hard, soft, total, student_logits, weights)

    def test_step(self, data):
        inputs, targets = data[0], data[1]
        student_logits = tf.cast(self.student(inputs, training=False), tf.float32)
        labels, hard, soft, total = self._distillation_terms(inputs, targets, student_logits)
        return self._update_metrics(
            labels, hard, soft, total, student_logits, self._example_weights(data, total), top5=True
        )

    def save(self, filepath, *args, **kwargs):
        """Refused: a Distiller is a training harness. Save what it trained, `distiller.student.save(path)`,
        which loads anywhere after `import kd_tf`; the teacher and the loss are saved by whoever made them."""
        raise NotImplementedError(
            "A Distiller is not saved: save its student with `distiller.student.save(path)` (and the "
            "teacher, if needed, with `teacher.save(path)`); both load with keras.saving.load_model after "
            "`import kd_tf`."
        )

    def predict_step(self, data):
        inputs = data[0] if isinstance(data, tuple) else data
        return self.student(inputs, training=False)
