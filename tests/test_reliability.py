"""Interrupted runs resume to the same result, deterministic runs repeat, crashes never corrupt results."""

import json
import os
import signal

import keras
import numpy as np
import pytest
from runner import TINY_SYNTHETIC, run_in_process

import data.synthetic
import models
from kd_tf import io, losses, training

DATA = dict(
    num_classes=8,
    num_superclasses=2,
    dim=16,
    tau=0.5,
    difficulty=1,
    train_examples=512,
    validation_examples=128,
    test_examples=128,
)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1}")


def train_kd(run_dir, callbacks=()):
    keras.utils.set_random_seed(0)  # the pipeline's shuffle order depends on the global seed too
    splits = data.synthetic.load(batch_size=64, seed=3, **DATA)
    keras.utils.set_random_seed(1)
    teacher = models.builder("mlp")(num_classes=8, input_shape=(16,), width=32)
    keras.utils.set_random_seed(2)
    student = models.builder("mlp")(num_classes=8, input_shape=(16,), width=8)
    config = training.TrainConfig(epochs=4, batch_size=64, learning_rate=1e-2, jit_compile=False, verbose=0)
    result = training.train(
        student=student,
        teacher=teacher,
        loss=losses.get("kd", temperature=2.0, alpha=0.5),
        splits=splits,
        config=config,
        run_dir=run_dir,
        callbacks=callbacks,
    )
    return result, [np.array(w) for w in student.weights]


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference, reference_weights = train_kd(str(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train_kd(str(tmp_path / "resumed"), callbacks=[Interrupt(epoch=1)])
    metadata = json.load(open(tmp_path / "resumed" / "backup" / "latest.json"))
    assert metadata["epoch"] == 2
    resumed, resumed_weights = train_kd(str(tmp_path / "resumed"))
    for expected, actual in zip(reference_weights, resumed_weights, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    for key in ("best_validation_accuracy", "best_epoch", "test_accuracy"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


TINY = [*TINY_SYNTHETIC, "--taus=0.5", "--methods=student,kd,kd_topk", "--topk=2", "--deterministic"]


def without_times(path):
    records = json.load(open(path))
    for record in records:
        record.pop("wall_time_s")
    return json.dumps(records, sort_keys=True)


@pytest.mark.slow
def test_deterministic_runs_write_identical_results(tmp_path):
    for name in ("first", "second"):
        run_in_process([*TINY, f"--output_dir={tmp_path / name}"])
    assert without_times(tmp_path / "first" / "results.json") == without_times(
        tmp_path / "second" / "results.json"
    )
    table = (tmp_path / "first" / "results.md").read_text().split("\n\n", 2)[-1]
    assert table == (tmp_path / "second" / "results.md").read_text().split("\n\n", 2)[-1]


@pytest.mark.slow
def test_a_finished_table_is_reused_not_retrained(tmp_path):
    output_dir = tmp_path / "table"
    run_in_process([*TINY, f"--output_dir={output_dir}"])
    first = json.load(open(output_dir / "results.json"))
    os.remove(output_dir / "results.json")  # as if the run died after its last model
    run_in_process([*TINY, f"--output_dir={output_dir}"])
    assert json.load(open(output_dir / "results.json")) == first  # wall times included: nothing retrained


def test_a_crash_while_writing_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "results.json")
    io.atomic_write_text(path, '{"previous": true}')

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text(path, '{"new": true, "half": ')
    assert json.load(open(path)) == {"previous": True}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


def test_a_non_finite_loss_stops_the_run_naming_the_term_and_keeps_the_last_checkpoint(tmp_path):
    splits = data.synthetic.load(batch_size=64, seed=3, **DATA)
    student = models.builder("mlp")(num_classes=8, input_shape=(16,), width=8)
    teacher = models.builder("mlp")(num_classes=8, input_shape=(16,), width=16)

    class Poison(keras.callbacks.Callback):
        """Makes the teacher's outputs NaN from the second epoch on."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = teacher.get_layer("logits").kernel
                kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    config = training.TrainConfig(epochs=3, batch_size=64, jit_compile=False, verbose=0)
    with pytest.raises(training.NonFiniteLossError, match="During epoch 2, the soft term .* became nan"):
        training.train(
            student=student,
            teacher=teacher,
            loss=losses.get("kd"),
            splits=splits,
            config=config,
            run_dir=str(tmp_path),
            callbacks=[Poison()],
        )
    metadata = json.load(open(tmp_path / "backup" / "latest.json"))
    assert metadata["epoch"] == 1  # the good first epoch's checkpoint


def test_a_damaged_checkpoint_falls_back_to_the_previous_epoch_and_a_lost_one_restarts(tmp_path, capsys):
    from kd_tf.checkpoint import EpochCheckpoint

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_kd(str(run_dir), callbacks=[Interrupt(epoch=2)])  # epochs 1..3 checkpointed
    backup = run_dir / "backup"
    assert json.load(open(backup / "latest.json"))["epoch"] == 3
    assert sorted(p.name for p in backup.glob("epoch-*")) == [
        "epoch-00002.weights.npz",
        "epoch-00003.weights.npz",
    ]
    newest = backup / "epoch-00003.weights.npz"
    newest.write_bytes(newest.read_bytes()[:1000])  # damaged by something outside the run
    assert EpochCheckpoint(str(backup)).restorable_epoch() == 2
    assert "damaged" in capsys.readouterr().out
    # Resuming from epoch 2 still ends where an uninterrupted run does.
    reference, reference_weights = train_kd(str(tmp_path / "whole"))
    resumed, resumed_weights = train_kd(str(run_dir))
    for expected, actual in zip(reference_weights, resumed_weights, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # With no file that opens, training starts over instead of crashing.
    for path in backup.glob("epoch-*"):
        path.write_bytes(b"not a checkpoint")
    assert EpochCheckpoint(str(backup)).restorable_epoch() == 0


def test_a_ctrl_c_that_python_discarded_still_stops_training_at_the_epoch_end(monkeypatch):
    from kd_tf import runtime

    monkeypatch.setattr(runtime, "_interrupted", False)
    try:  # what a finalizer does with a KeyboardInterrupt raised inside it: prints it and goes on
        runtime._on_interrupt(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    epochs_seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs_seen.append(epoch))
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            np.zeros((4, 3)),
            np.zeros((4, 2)),
            epochs=5,
            verbose=0,
            callbacks=[record, runtime.StopOnInterrupt()],
        )
    assert epochs_seen == [0]


class _Killed(BaseException):
    """A SIGKILL at a chosen moment: nothing after it runs (not even `except Exception` handlers)."""


def test_a_kill_at_any_step_of_storing_a_new_best_resumes_with_the_old_best_or_the_new(tmp_path, monkeypatch):
    """The best-so-far is a weights file and a state file naming its SHA-256: a kill between their writes must
    leave a pair a resume reads (the old best or the new one), never a mismatch that restarts the run."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    old, new = model.get_weights(), [w + 1.0 for w in model.get_weights()]
    real_replace = os.replace
    outcomes = set()
    for kill_at in range(1, 10):
        state = str(tmp_path / f"kill{kill_at}" / "best")
        os.makedirs(os.path.dirname(state))
        model.set_weights(old)
        training.BestValidation(model, state).on_epoch_end(0, {"val_accuracy": 0.5})
        model.set_weights(new)
        calls = 0

        def replace(source, target, kill_at=kill_at):
            nonlocal calls
            calls += 1
            if calls == kill_at:
                raise _Killed
            real_replace(source, target)

        monkeypatch.setattr(os, "replace", replace)
        try:
            training.BestValidation(model, state).on_epoch_end(1, {"val_accuracy": 0.75})
            finished = True
        except _Killed:
            finished = False
        monkeypatch.setattr(os, "replace", real_replace)
        resumed = training.BestValidation(model, state)
        kept = (resumed.best_epoch, resumed.best_accuracy, [w.tolist() for w in resumed.best_weights])
        assert kept in ((0, 0.5, [w.tolist() for w in old]), (1, 0.75, [w.tolist() for w in new])), kill_at
        outcomes.add(kept[0])
        if finished:
            break
    assert outcomes == {0, 1} and calls < kill_at  # kills landed before and after the new state, then none
