"""`python run.py` as users run it: a new process per command (tests/cli_process.py), so nothing of the project is
shared between commands.

The two-command flows (teacher, then a student from its directory), the precedence of the flags the user set,
refused and interrupted `--overwrite`, Ctrl-C, SIGKILL at random moments, and two runs into one directory.
"""

import csv
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time

import cli_process
import numpy as np
import pytest
from cli_process import ROOT, TINY, check_ok, run_cli, start_cli, tiny_ptb, wait_for


def snapshot(directory) -> dict:
    """Relative path -> SHA-256 of every file under `directory` (the lock file and a staged overwrite aside)."""
    digests = {}
    for folder, folders, files in os.walk(directory):
        folders[:] = [name for name in folders if name != ".overwrite"]
        for name in files:
            path = os.path.join(folder, name)
            if name != ".lock":
                digests[os.path.relpath(path, directory)] = hashlib.sha256(
                    open(path, "rb").read()
                ).hexdigest()
    return digests


def results(directory) -> list:
    return json.load(open(os.path.join(directory, "results.json")))


def without_times(records) -> str:
    return json.dumps([{k: v for k, v in r.items() if k != "wall_time_s"} for r in records], sort_keys=True)


@pytest.fixture(scope="module")
def synthetic_teacher(tmp_path_factory):
    """A tiny synthetic teacher trained by `--mode=teacher` in its own process."""
    teacher_dir = str(tmp_path_factory.mktemp("flows") / "teacher")
    # 8 classes in 2 super-classes: KD-rel's default a, b do not fit, and a teacher run must not care.
    check_ok(run_cli([*TINY, "--mode=teacher", f"--output_dir={teacher_dir}"]))
    return teacher_dir


def test_a_student_distils_from_a_teacher_saved_by_another_process(synthetic_teacher, tmp_path):
    # KD-sim loads the teacher (its cosine-logit layer) and reads its class vectors.
    completed = check_ok(
        run_cli(
            [
                *TINY,
                "--mode=student",
                "--method=kd_sim",
                "--temperature=4",
                "--alpha=0.9",
                f"--teacher_dir={synthetic_teacher}",
                f"--output_dir={tmp_path / 'kd_sim'}",
            ]
        )
    )
    assert "Traceback" not in completed.stderr
    (record,) = results(tmp_path / "kd_sim")
    assert record["method"] == "kd_sim"
    assert record["hyperparameters"] == {
        "temperature": 4.0,
        "alpha": 0.9,
        "sim_power": 1.0,
        "sim_temperature": 0.1,
    }


def test_without_hyperparameter_flags_the_synthetic_preset_applies_and_is_recorded(
    synthetic_teacher, tmp_path
):
    check_ok(
        run_cli(
            [
                *TINY,
                "--mode=student",
                "--method=kd_pt",
                f"--teacher_dir={synthetic_teacher}",
                f"--output_dir={tmp_path / 'kd_pt'}",
            ]
        )
    )
    (record,) = results(tmp_path / "kd_pt")
    assert record["hyperparameters"] == {"temperature": 1.0, "alpha": 0.3}


def test_a_damaged_teacher_file_gets_a_message_naming_it(synthetic_teacher, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(synthetic_teacher, damaged)
    model = damaged / "teacher.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    completed = run_cli(
        [*TINY, "--mode=student", f"--teacher_dir={damaged}", f"--output_dir={tmp_path / 'student'}"]
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert f"Error: {model} could not be loaded as a Keras model" in completed.stderr
    assert "Traceback" not in completed.stderr


SAVE_MODELS = """
import sys, numpy as np, keras, models
directory = sys.argv[1]
builds = {
    "mlp": lambda: models.builder("mlp")(num_classes=5, input_shape=(6,), width=8),
    "resnet20": lambda: models.builder("resnet20")(num_classes=5, input_shape=(16, 16, 3)),
    "resnet50": lambda: models.builder("resnet50")(num_classes=5, input_shape=(32, 32, 3)),
}
# ResNet-20 holds every layer class of the CIFAR ResNets (ResNet-56 only repeats its units).
inputs = {"mlp": (2, 6), "resnet20": (2, 16, 16, 3), "resnet50": (2, 32, 32, 3)}
for name, build in builds.items():
    model = build()
    x = np.random.default_rng(0).normal(size=inputs[name]).astype("float32")
    model.save(f"{directory}/{name}.keras")
    np.savez(f"{directory}/{name}.npz", x=x, y=np.asarray(model(x, training=False)))
lm = models.builder("awd_lstm")(17, embedding_size=8, hidden_size=12)
ids = np.arange(6, dtype="int32").reshape(2, 3) % 17
lm(ids, training=False, states=lm.initial_states(2), return_states=True)
lm.save(f"{directory}/awd_lstm.keras")
out = lm(ids, training=False, states=lm.initial_states(2), return_states=True)
np.savez(f"{directory}/awd_lstm.npz", x=ids, y=np.asarray(out.logits))
"""

LOAD_MODELS = """
import sys, numpy as np, keras
import kd_tf  # all that a user's script needs for the project's saved models
directory = sys.argv[1]
for name in ("mlp", "resnet20", "resnet50", "awd_lstm"):
    model = keras.saving.load_model(f"{directory}/{name}.keras", safe_mode=True)
    stored = np.load(f"{directory}/{name}.npz")
    if name == "awd_lstm":
        y = model(stored["x"], training=False, states=model.initial_states(2), return_states=True).logits
    else:
        y = model(stored["x"], training=False)
    np.testing.assert_allclose(np.asarray(y), stored["y"], rtol=1e-5, atol=1e-5)
    print("loaded", name)
"""


@pytest.mark.slow
def test_saved_models_load_in_a_new_process_after_import_kd_tf(tmp_path):
    from cli_process import environment

    for script in (SAVE_MODELS, LOAD_MODELS):
        completed = cli_process.run(
            [sys.executable, "-c", script, str(tmp_path)],
            cwd=ROOT,
            env=environment(),
            timeout=300,
        )
        check_ok(completed)
    assert completed.stdout.split() == [
        word for name in ("mlp", "resnet20", "resnet50", "awd_lstm") for word in ("loaded", name)
    ]


@pytest.mark.slow
def test_a_cifar_resnet_teacher_saved_by_the_runner_teaches_in_another_process(tmp_path):
    """The CIFAR ResNet path (ZeroPadChannels shortcuts) through the runner's own save and load, on digits;
    ResNet-8 has every layer of the family (one unit a stage, the channel-padding shortcut between them)."""
    pytest.importorskip("sklearn")
    common = [
        "--dataset=digits",
        "--teacher_model=resnet8",
        "--student_model=resnet8",
        "--batch_size=32",
        "--steps_per_epoch=2",
        "--epochs=1",
        "--teacher_epochs=1",
        "--progress=none",
        "--jit_compile=false",
    ]
    teacher_dir = str(tmp_path / "teacher")
    check_ok(run_cli([*common, "--mode=teacher", f"--output_dir={teacher_dir}"]))
    check_ok(
        run_cli(
            [
                *common,
                "--mode=student",
                "--method=kd_topk",
                "--topk=3",
                f"--teacher_dir={teacher_dir}",
                f"--output_dir={tmp_path / 'student'}",
            ]
        )
    )
    (record,) = results(tmp_path / "student")
    assert record["method"] == "kd_topk" and record["hyperparameters"]["topk"] == 3


@pytest.mark.slow
def test_ptb_teacher_then_kd_topk_student_in_two_processes(tmp_path):
    tiny = tiny_ptb(tmp_path / "ptb")
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    check_ok(run_cli(["--flagfile=configs/ptb_teacher.flags", *tiny, f"--output_dir={teacher_dir}"]))
    check_ok(
        run_cli(
            [
                "--flagfile=configs/ptb_kd_topk.flags",
                *tiny,
                "--learning_rate=20",
                "--temperature=2",
                f"--teacher_dir={teacher_dir}",
                f"--output_dir={student_dir}",
            ]
        )
    )
    (record,) = results(student_dir)
    assert record["method"] == "kd_topk"
    assert "| student | KD-topk |" in open(os.path.join(student_dir, "results.md")).read()
    assert "| 63.59 / 60.85 |" in open(os.path.join(student_dir, "results.md")).read()
    # The flagfile's k and the command line's T, exactly; no preset reaches PTB.
    assert record["hyperparameters"]["topk"] == 5 and record["hyperparameters"]["temperature"] == 2.0
    assert np.isfinite(record["validation_perplexity"]) and record["validation_perplexity"] > 1


@pytest.fixture(scope="module")
def finished_table(tmp_path_factory):
    """A finished tiny `--mode=table` run (a teacher and one KD student)."""
    output_dir = str(tmp_path_factory.mktemp("table") / "table")
    check_ok(run_cli([*TINY, "--methods=kd", f"--output_dir={output_dir}"]))
    return output_dir


@pytest.mark.slow
def test_a_refused_overwrite_leaves_the_results_byte_identical(finished_table):
    before = snapshot(finished_table)
    completed = run_cli(
        [
            *TINY,
            "--methods=kd",
            "--overwrite",
            "--method_overrides=kd:temprature=2",
            f"--output_dir={finished_table}",
        ]
    )
    assert completed.returncode == 2
    assert "unknown hyperparameter(s) ['temprature']" in completed.stderr
    assert snapshot(finished_table) == before


@pytest.mark.slow
def test_ctrl_c_during_an_overwrite_keeps_the_old_results_and_the_same_command_resumes(finished_table):
    old_records = results(finished_table)
    before = snapshot(finished_table)
    command = [*TINY, "--methods=kd", "--teacher_epochs=300", "--overwrite", f"--output_dir={finished_table}"]
    process = start_cli(command, log_path=os.path.join(os.path.dirname(finished_table), "interrupted.log"))
    pointer = os.path.join(
        finished_table, ".overwrite", "runs", "tau=0.8", "seed=0", "teacher", "backup", "latest.json"
    )
    wait_for(lambda: os.path.exists(pointer), process=process)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    log = open(os.path.join(os.path.dirname(finished_table), "interrupted.log")).read()
    assert "Interrupted; run the same command again to resume." in log
    assert "Traceback" not in log
    assert snapshot(finished_table) == before  # the old results, untouched
    # A rerun without --overwrite is refused and says how to resume.
    refused = run_cli([*TINY, "--methods=kd", "--teacher_epochs=300", f"--output_dir={finished_table}"])
    assert refused.returncode == 2 and "pass --overwrite again to resume it" in refused.stderr
    completed = check_ok(run_cli(command))
    assert "Resuming from epoch" in completed.stdout
    new_records = results(finished_table)
    assert [r["epochs"] for r in new_records] == [300, 2] != [r["epochs"] for r in old_records]
    assert not os.path.exists(os.path.join(finished_table, ".overwrite"))
    assert not os.path.exists(os.path.join(finished_table, ".replaced"))


@pytest.mark.slow
def test_a_second_run_into_a_live_directory_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    output_dir = str(tmp_path / "busy")
    command = [*TINY, "--mode=teacher", "--teacher_epochs=2000", f"--output_dir={output_dir}"]
    first = start_cli(command)
    try:
        wait_for(lambda: os.path.exists(os.path.join(output_dir, "backup", "latest.json")), process=first)
        second = run_cli(command)
        assert second.returncode == 2
        assert (
            f"Error: --output_dir={output_dir} is in use by a run still going (pid {first.pid})"
            in second.stderr
        )
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    # The lock died with its process: the next run takes it over and resumes (cut short by a lower count).
    resumed = check_ok(run_cli([*command[:-2], "--teacher_epochs=1", command[-1]]))
    assert "Resuming from epoch" in resumed.stdout


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("mine")
    completed = run_cli([*TINY, "--mode=teacher", f"--output_dir={path}"])
    assert completed.returncode == 2
    assert f"Error: --output_dir={path} cannot be a directory: {path} is a file." in completed.stderr
    assert path.read_text() == "mine"


@pytest.mark.slow
def test_sigkill_at_random_moments_never_prevents_the_resume_and_the_result_is_unchanged(tmp_path):
    # Long enough that every kill lands in a run still training: a tiny epoch takes milliseconds, and on two
    # cores the 16th kill came at epoch 119 (each kill lands within 0.25 s of a new epoch's save).
    command = [*TINY, "--mode=teacher", "--teacher_epochs=250", "--deterministic"]
    reference_dir, killed_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
    check_ok(run_cli([*command, f"--output_dir={reference_dir}"]))
    pointer = os.path.join(killed_dir, "backup", "latest.json")

    def epochs_done():
        try:
            return json.load(open(pointer))["epoch"]
        except (OSError, ValueError):
            return 0  # none yet, or being replaced this instant

    rng = random.Random(0)
    kills = 0
    while kills < 16:
        done = epochs_done()
        process = start_cli([*command, f"--output_dir={killed_dir}"])
        try:
            wait_for(lambda done=done: epochs_done() > done, timeout=120, process=process)
        except AssertionError:
            break  # the run finished before it could be killed
        time.sleep(rng.uniform(0.0, 0.25))  # a few short epochs: kills land in and between writes
        process.kill()
        process.wait()
        kills += 1
    assert kills >= 10
    completed = check_ok(run_cli([*command, f"--output_dir={killed_dir}"]))
    assert "Resuming from epoch" in completed.stdout
    assert without_times(results(killed_dir)) == without_times(results(reference_dir))
    with (
        np.load(os.path.join(killed_dir, "best.npz")) as got,
        np.load(os.path.join(reference_dir, "best.npz")) as want,
    ):
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])


def _event_tags(directory) -> set:
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            tags.update(value.tag for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value)
    return tags


@pytest.mark.slow
def test_a_table_writes_training_curves_and_paper_labels(tmp_path):
    output_dir = tmp_path / "table"
    check_ok(run_cli([*TINY, "--methods=kd_pt", f"--output_dir={output_dir}"]))
    run_dir = output_dir / "runs" / "tau=0.8" / "seed=0" / "kd_pt"
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {
        "learning_rate",
        "loss",
        "hard_loss",
        "soft_loss",
        "accuracy",
        "val_accuracy",
        "val_top5_accuracy",
    } <= set(rows[0])
    train_tags = _event_tags(run_dir / "logs" / "train")
    assert {
        "epoch_loss",
        "epoch_hard_loss",
        "epoch_soft_loss",
        "epoch_accuracy",
        "epoch_learning_rate",
    } <= train_tags
    assert "epoch_accuracy" in _event_tags(run_dir / "logs" / "validation")
    table = (output_dir / "results.md").read_text()
    assert "| KD-pt |" in table and "| kd_pt |" not in table
    assert "one seed (0)" in table
    assert (output_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
