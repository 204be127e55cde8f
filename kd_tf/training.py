"""Training one Keras model, student or teacher: optimizer and schedule, callbacks, fit with the best
validation epoch kept, checkpoints every epoch, and atomic saving. A library module: it reads no flags."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import zipfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

import data as datasets
from kd_tf import history, losses, runtime
from kd_tf.checkpoint import EpochCheckpoint, position_code
from kd_tf.distiller import Distiller
from kd_tf.io import (
    DamagedFileError,
    atomic_write_text,
    read_json,
    replaced_atomically,
    sha256_of_file,
    verify_sha256,
)
from kd_tf.schedules import make_learning_rate


@dataclasses.dataclass
class TrainConfig:
    """How one model is trained (every field is a flag of the same name)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    lr_schedule: str = "constant"
    lr_boundary_epochs: Sequence[float] = ()
    lr_multipliers: Sequence[float] = ()
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    jit_compile: bool | str = "auto"
    steps_per_execution: int = 1
    verbose: int = 1
    tensorboard: bool = True  # with a run directory: TensorBoard logs under <run_dir>/logs
    checkpoint_every_steps: int = 0  # with a run directory: a checkpoint every N steps too (0: epochs only)


def learning_rate_of(config: TrainConfig, steps_per_epoch: int):
    """The run's learning rate: a float, or the schedule (boundaries and warm-up in steps)."""
    return make_learning_rate(
        config.lr_schedule,
        config.learning_rate,
        steps_per_epoch=steps_per_epoch,
        boundary_epochs=config.lr_boundary_epochs,
        multipliers=config.lr_multipliers,
        warmup_epochs=config.warmup_epochs,
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int, precision: str):
    learning_rate = learning_rate_of(config, steps_per_epoch)
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov)
    else:
        raise ValueError(f"`optimizer` must be adam or sgd. Received: optimizer={config.optimizer!r}")
    return runtime.wrap_optimizer(optimizer, precision)


class BestValidation(keras.callbacks.Callback):
    """Keeps the student weights of the epoch with the best validation accuracy (the paper's selection).

    Its state is written to `state_path` every epoch so that a resumed run keeps its best-so-far: the weights
    to `STATE.npz`, and `STATE.json` with their accuracy, epoch and SHA-256. New weights go first to
    `STATE.pending.npz`, then the state naming them, then the rename onto `STATE.npz`: a kill between any two
    steps leaves the old pair or the new one (a resume finishes a rename the kill cut off).
    """

    def __init__(self, model_to_keep: keras.Model, state_path: str | None = None):
        super().__init__()
        self.model_to_keep = model_to_keep
        self.state_path = state_path
        self.best_accuracy, self.best_epoch, self.best_weights = -1.0, -1, None
        self._sha256 = None  # of the stored weights
        if state_path and os.path.exists(state_path + ".json"):
            state = read_json(state_path + ".json")
            self.best_accuracy, self.best_epoch = state["best_accuracy"], state["best_epoch"]
            weights_path, expected = state_path + ".npz", state.get("sha256")
            pending = state_path + ".pending.npz"
            if expected and os.path.exists(pending) and sha256_of_file(pending) == expected:
                os.replace(pending, weights_path)  # the state was written, its rename was not
            verify_sha256(weights_path, expected)
            self._sha256 = expected
            try:
                with np.load(weights_path) as stored:
                    self.best_weights = [stored[f"w{i}"] for i in range(len(stored.files))]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise DamagedFileError(weights_path, f"it does not read ({error})") from error

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy")
        if accuracy is None:
            raise ValueError("BestValidation needs validation data (no val_accuracy in the logs).")
        improved = accuracy > self.best_accuracy
        if improved:
            self.best_accuracy, self.best_epoch = float(accuracy), epoch
            self.best_weights = [np.array(w) for w in self.model_to_keep.get_weights()]
            if self.state_path:
                with replaced_atomically(self.state_path + ".pending.npz") as temporary:
                    np.savez(temporary, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
                    self._sha256 = sha256_of_file(temporary)
        if self.state_path:
            state = {"best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch}
            if self._sha256:
                state["sha256"] = self._sha256
            atomic_write_text(self.state_path + ".json", json.dumps(state))
            if improved:
                os.replace(self.state_path + ".pending.npz", self.state_path + ".npz")

    @staticmethod
    def forget(state_path: str) -> None:
        """Removes a stored best-so-far (its epoch's checkpoint is gone, so a new run must not inherit it)."""
        for suffix in (".json", ".npz", ".pending.npz"):
            if os.path.exists(state_path + suffix):
                os.remove(state_path + suffix)

    def restore(self):
        if self.best_weights is not None:
            self.model_to_keep.set_weights(self.best_weights)


def train(
    *,
    student: keras.Model,
    teacher: keras.Model | None,
    loss: losses.DistillationLoss,
    splits: datasets.Splits,
    config: TrainConfig,
    precision: str = "float32",
    run_dir: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains `student` (against `teacher`, if any) and returns its metrics at the best validation epoch,
    and its test accuracy at the last epoch (`last_epoch_test_accuracy`).

    Model selection uses `splits.validation`, or `splits.test` when there is none (as the paper did for
    CIFAR-100 and ImageNet). With `run_dir`, training is checkpointed every epoch and resumes from the last
    checkpoint when called again with the same arguments.
    """
    steps_per_epoch = splits.train_examples // config.batch_size
    distiller = Distiller(student, teacher, loss)
    distiller.compile(
        optimizer=make_optimizer(config, max(steps_per_epoch, 1), precision),
        jit_compile=config.jit_compile,
        # More steps per call than an epoch has would run past the epoch's end.
        steps_per_execution=max(1, min(config.steps_per_execution, steps_per_epoch)),
    )
    finished_epochs, steps_done = 0, 0
    checkpoint = None
    best = None
    if run_dir:
        checkpoint = EpochCheckpoint(os.path.join(run_dir, "backup"), config.checkpoint_every_steps)
        finished_epochs, steps_done = _agreed_resume_position(checkpoint)
        if steps_done >= steps_per_epoch:  # a checkpoint of another batch size: resume at its epoch
            finished_epochs, steps_done = _agreed_resume_position(checkpoint, (finished_epochs, 0))
        if finished_epochs or steps_done:
            try:
                best = BestValidation(student, os.path.join(run_dir, "best"))
            except DamagedFileError as error:
                # The best-so-far of the finished epochs is lost with it: only a new start gives it again.
                print(f"Warning: {error}; training starts over.", flush=True)
                checkpoint.clear()
                finished_epochs, steps_done = 0, 0
        if finished_epochs or steps_done:
            inside = f", step {steps_done} of epoch {finished_epochs + 1}" if steps_done else ""
            print(f"Resuming from epoch {finished_epochs}{inside} ({checkpoint.directory}).", flush=True)
        else:
            BestValidation.forget(os.path.join(run_dir, "best"))  # a fresh start keeps no stale best
    if best is None:
        best = BestValidation(student, os.path.join(run_dir, "best") if run_dir else None)
    # The best-so-far and the history are stored before the epoch's checkpoint: a kill between them reruns
    # that epoch, which finds the same best again, instead of resuming past an epoch never recorded.
    records = []
    if run_dir:
        records.append(history.EpochHistory(os.path.join(run_dir, "history.csv"), finished_epochs))
        if config.tensorboard:
            records.append(history.EpochSummaries(os.path.join(run_dir, "logs")))
    all_callbacks = [
        StopOnNonFiniteLoss(),
        best,
        *records,
        *([checkpoint] if checkpoint else []),
        runtime.StopOnInterrupt(),
        *callbacks,
    ]
    # One endless pass-after-pass stream: a resumed run skips the batches already trained on (input work
    # only) and so sees exactly the batches an uninterrupted run would, from the step where it stopped.
    strategy = tf.distribute.get_strategy()
    validation_source = splits.validation if splits.validation is not None else splits.test
    validation = runtime.split_batches(strategy, validation_source)

    def fit(first_epoch: int, last_epoch: int, steps: int, skip: int):
        return distiller.fit(
            training_stream(strategy, splits, skip),
            shuffle=False,  # the pipelines shuffle themselves
            steps_per_epoch=steps,
            validation_data=validation,
            validation_steps=_batches_of(validation_source, validation),
            initial_epoch=first_epoch,
            epochs=last_epoch,
            callbacks=all_callbacks,
            verbose=config.verbose,
        )

    start = time.perf_counter()
    # With checkpoints, SIGTERM stops training at the next step boundary, after a checkpoint of that step.
    fitted = None  # the last `fit`'s History: its last validation pass is the last epoch's
    with runtime.deferring_terminations() if checkpoint else contextlib.nullcontext():
        if steps_done:
            # The rest of the epoch that stopped inside, as an epoch of its own; then the epochs after it.
            checkpoint.resume_inside(finished_epochs, steps_done)
            skip = finished_epochs * steps_per_epoch + steps_done
            fitted = fit(finished_epochs, finished_epochs + 1, steps_per_epoch - steps_done, skip)
            finished_epochs += 1
        if finished_epochs < config.epochs or not steps_done:
            fitted = fit(finished_epochs, config.epochs, steps_per_epoch, finished_epochs * steps_per_epoch)
    wall_time = time.perf_counter() - start
    test_batches = runtime.split_batches(strategy, splits.test)

    def test_metrics():
        return distiller.evaluate(
            test_batches, steps=_batches_of(splits.test, test_batches), verbose=0, return_dict=True
        )

    # The last epoch's test accuracy beside the selected epoch's: where selection reads a validation
    # split, the test pass at the last epoch is the only unselected number. Without one, the last epoch's
    # validation pass was the test pass.
    last_validation = fitted.history.get("val_accuracy") if fitted is not None else None
    if splits.validation is None and last_validation:
        last_epoch_test_accuracy = float(last_validation[-1])
    else:
        last_epoch_test_accuracy = float(test_metrics()["accuracy"])
    best.restore()
    test = test_metrics()
    return {
        "best_validation_accuracy": best.best_accuracy,
        "best_epoch": best.best_epoch + 1,
        "selected_on": "test" if splits.validation is None else "validation",
        "test_accuracy": float(test["accuracy"]),
        "test_top5_accuracy": float(test["top5_accuracy"]),
        "test_cross_entropy": float(test["hard_loss"]),
        "last_epoch_test_accuracy": last_epoch_test_accuracy,
        "wall_time_s": wall_time,
    }


def training_stream(strategy: tf.distribute.Strategy, splits: datasets.Splits, skip: int):
    """Every training batch after the first `skip`, pass after pass, as `strategy` feeds them.

    Across workers, a dataset that shards its files (`splits.train_pipeline`) gives each worker its own
    files; any other is read whole by every worker, each keeping its replicas' part of every global batch
    (`runtime.split_batches`).
    """
    if runtime.across_workers(strategy) and splits.train_pipeline is not None:
        return strategy.distribute_datasets_from_function(
            lambda context: splits.train_pipeline(context).repeat().skip(skip)
        )
    return runtime.split_batches(strategy, splits.train.repeat().skip(skip))


def _batches_of(source, split) -> int | None:
    """The batch count of `source` when it was split among workers (Keras cannot count the split batches,
    and warns at their end); `None` otherwise, where Keras counts them itself."""
    if split is source:
        return None
    count = int(source.cardinality())
    return count if count > 0 else None


def _agreed_resume_position(checkpoint: EpochCheckpoint, at_most=None) -> tuple[int, int]:
    """(whole epochs, steps into the next) to resume from: the newest checkpoint, or across workers the
    newest that every worker holds (each keeps its own; one killed between two saves is a checkpoint behind,
    and the others still hold that one)."""
    strategy = tf.distribute.get_strategy()
    position = checkpoint.restorable_position(at_most)
    for _ in range(2):  # a second round settles a worker whose agreed checkpoint turned out damaged
        agreed = runtime.agreed_minimum(strategy, position_code(*position))
        if agreed != position_code(*position):
            position = checkpoint.restorable_position(divmod(agreed, 2**32))
    if runtime.agreed_minimum(strategy, position_code(*position)) != position_code(*position):
        raise RuntimeError(
            f"The workers hold no common checkpoint in {checkpoint.directory}; rerun with --overwrite."
        )
    return position


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training when a loss term turns NaN/Inf, naming the epoch and the term.

    It checks the epoch's running means, so it costs nothing per step. It runs before the checkpoint
    callback saves, so the last good checkpoint (the previous epoch's) is what a rerun resumes from.
    """

    TERMS = {"soft_loss": "soft term T²·KL(q̃ ‖ p^T)", "hard_loss": "hard cross-entropy H(y, p)"}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        bad = [
            f"the {description} became {logs[key]}"
            for key, description in self.TERMS.items()
            if key in logs and not np.isfinite(logs[key])
        ]
        if bad:
            raise NonFiniteLossError(
                f"During epoch {epoch + 1}, {' and '.join(bad)}; training stopped, and the checkpoint of "
                f"epoch {epoch} is kept. Lower --learning_rate, or check the inputs and the teacher for NaNs."
            )


def save_model(model: keras.Model, path: str) -> None:
    """`model.save(path)` through a temporary name and a rename: `path` is whole or absent, never half."""
    with replaced_atomically(path) as temporary:
        model.save(temporary)


def load_model(path: str) -> keras.Model:
    """Loads a `.keras` file in safe mode, or raises `SavedModelError` naming the file and what is wrong."""
    if not os.path.isfile(path):
        raise SavedModelError(f"{path} does not exist.")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # zipfile, h5py, JSON and Keras all raise their own kinds
        raise SavedModelError(
            f"{path} could not be loaded as a Keras model ({type(error).__name__}: {error}). The file is "
            "damaged, truncated or not a `.keras` file; train it again (rerun its --mode=teacher command "
            "with --overwrite) or point to another directory."
        ) from error


class SavedModelError(ValueError):
    """A saved model file is missing, damaged or not a Keras file."""
