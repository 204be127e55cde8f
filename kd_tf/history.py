"""What a run records every epoch: `history.csv` and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import os
import time

import keras
import numpy as np

from kd_tf.io import atomic_write_text


class EpochHistory(keras.callbacks.Callback):
    """`history.csv`: one row per finished epoch (epoch, learning rate, every metric), rewritten whole each
    epoch. Rows past the epoch a run resumes from are dropped, so a rerun epoch is never listed twice."""

    def __init__(self, path: str, finished_epochs: int):
        super().__init__()
        self.path = path
        self.rows = []
        if os.path.exists(path):
            with open(path, encoding="utf-8", newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= finished_epochs]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "learning_rate": current_learning_rate(self.model.optimizer)}
        row.update({key: float(value) for key, value in (logs or {}).items() if np.ndim(value) == 0})
        self.rows.append(row)
        fields = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def current_learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard scalars per epoch, under the names `keras.callbacks.TensorBoard` gives them: `epoch_<metric>`
    and `epoch_learning_rate` in `<log_dir>/train`, `epoch_<metric>` of the validation in
    `<log_dir>/validation`.

    The events are written by TensorBoard's own file writer, in microseconds an epoch: Keras' callback costs
    tens of milliseconds an epoch (summary ops run one by one, and a hook at every batch), more than a whole
    epoch of a table's small models.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, name: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if name not in self._writers:
            self._writers[name] = EventFileWriter(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        scalars = {"train": {"learning_rate": current_learning_rate(self.model.optimizer)}, "validation": {}}
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                split = "validation" if key.startswith("val_") else "train"
                scalars[split][key.removeprefix("val_")] = float(value)
        now = time.time()
        for split, values in scalars.items():
            if not values:
                continue
            summary = summary_pb2.Summary(
                value=[
                    summary_pb2.Summary.Value(tag=f"epoch_{name}", simple_value=v)
                    for name, v in values.items()
                ]
            )
            writer = self._writer(split)
            writer.add_event(event_pb2.Event(wall_time=now, step=epoch, summary=summary))
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
