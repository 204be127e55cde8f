"""Training across worker processes on loopback, and over two logical CPUs, against one process.

Workers are started the way a user starts them: `python -m kd_tf.launch` (or one `python run.py` per worker
with its own TF_CONFIG), each a new process. With `--sync_batch_norm` and `--deterministic`, two workers
splitting each global batch must train the very model one process trains.
"""

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import cli_process
import keras
import numpy as np
import pytest
from cli_process import LAUNCH_TABLE, ROOT, RUN, TINY, check_ok, environment, run_cli, wait_for
from imagenet_shards import write_shards

import kd_tf  # noqa: F401 (registers the saved models' layers)
from kd_tf import launch

# Every test here starts several TensorFlow processes (20–120 s each on two cores).
pytestmark = pytest.mark.slow

# Exact data-parallel arithmetic: batch statistics over the global batch, fixed op order.
SAME_STEPS = [*TINY, "--sync_batch_norm", "--deterministic", "--collective_timeout=60"]


def records(directory):
    with open(os.path.join(directory, "results.json")) as handle:
        return json.load(handle)


def online_across_workers(records_of_workers):
    """Across workers, students run their teacher at every step (the cache is one process's)."""
    assert all(record.get("teacher_cache") in (None, False) for record in records_of_workers)


def assert_same_records(expected, actual):
    """Equal records, wall times aside; floats to the last few bits (summation order across workers).

    One process distils from its teacher's cached outputs (`--teacher_cache=auto`), workers online
    (`online_across_workers`): the same training."""
    assert len(expected) == len(actual)
    for one, other in zip(expected, actual, strict=True):
        assert one.keys() == other.keys()
        for key, value in one.items():
            if key in ("wall_time_s", "teacher_cache"):
                continue
            if isinstance(value, float):
                assert math.isclose(value, other[key], rel_tol=1e-5, abs_tol=1e-7), (key, value, other[key])
            else:
                assert value == other[key], (key, value, other[key])


def assert_same_weights(expected_path, actual_path):
    expected = keras.saving.load_model(expected_path, compile=False).get_weights()
    actual = keras.saving.load_model(actual_path, compile=False).get_weights()
    assert len(expected) == len(actual)
    for one, other in zip(expected, actual, strict=True):
        np.testing.assert_allclose(other, one, rtol=1e-5, atol=1e-5)


TABLE = [
    *SAME_STEPS,
    "--train_examples=512",
    "--mode=table",
    "--methods=kd",
    "--epochs=1",
    "--teacher_epochs=1",
]
CELL = os.path.join("runs", "tau=0.8", "seed=0")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The same table in one process and as two workers, the latter by BUILD.md's command
    (`cli_process.LAUNCH_TABLE`): (one-process dir, two-worker dir, launcher output)."""
    directory = tmp_path_factory.mktemp("tables")
    single, double = str(directory / "single"), str(directory / "double")
    check_ok(run_cli([*TABLE, f"--output_dir={single}"]))
    # BUILD.md's command word for word, from a directory holding `run.py` (as the documented commands run).
    os.symlink(RUN, directory / "run.py")
    launch_table = shlex.split(LAUNCH_TABLE)
    completed = check_ok(
        cli_process.run(
            [sys.executable, *launch_table[1:], *TABLE, f"--output_dir={double}"], cwd=str(directory)
        )
    )
    assert "Traceback" not in completed.stderr
    return single, double, completed.stdout


@pytest.fixture(scope="module")
def teacher_dir(tables):
    return os.path.join(tables[0], CELL, "teacher")


def test_two_workers_train_the_table_one_process_trains(tables):
    single, double, output = tables
    assert "[worker 1] Worker 1 of 2: finished" in output
    assert_same_records(records(single), records(double))
    online_across_workers(records(double))
    for model in (os.path.join("teacher", "teacher.keras"), os.path.join("kd", "student.keras")):
        assert_same_weights(os.path.join(single, CELL, model), os.path.join(double, CELL, model))
    # Only the chief wrote results; the other worker's files are gone.
    assert sorted(name for name in os.listdir(double) if not name.startswith(".")) == sorted(
        name for name in os.listdir(single) if not name.startswith(".")
    )


def student_argv(teacher_dir):
    return [
        *SAME_STEPS,
        "--train_examples=512",
        "--epochs=3",
        "--mode=student",
        "--method=kd",
        f"--teacher_dir={teacher_dir}",
    ]


@pytest.fixture(scope="module")
def single_student(tmp_path_factory, teacher_dir):
    """The student run in one process on one device: what every distributed run must reproduce."""
    directory = str(tmp_path_factory.mktemp("single") / "student")
    check_ok(run_cli([*student_argv(teacher_dir), f"--output_dir={directory}"]))
    return directory


def start_workers(command, cwd, env, logs, name):
    """Starts two workers of `command` (`python ...`), each with its own TF_CONFIG (as on two hosts), forked by
    the tests' command server; their output goes to `logs/<name>-<index>.log`."""
    ports = launch.free_ports(2)
    workers = []
    for index in range(2):
        with open(logs / f"{name}-{index}.log", "w") as log:
            workers.append(
                cli_process.popen(
                    command,
                    cwd=str(cwd),
                    env={**env, "TF_CONFIG": launch.tf_config(ports, index)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return workers


def start_two_workers(argv, output_dir, tmp_path, name):
    """Two workers of `run.py argv` (`start_workers`) in `tmp_path`."""
    command = [sys.executable, RUN, *argv, "--strategy=multi_worker_mirrored", f"--output_dir={output_dir}"]
    return start_workers(command, tmp_path, environment(), tmp_path, name)


def finish_workers(workers, logs, name) -> list[str]:
    """Waits for the workers `start_workers` started (each must exit with 0); returns their outputs."""
    try:
        codes = [worker.wait(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    outputs = [(logs / f"{name}-{index}.log").read_text() for index in range(len(workers))]
    assert codes == [0] * len(workers), [output[-3000:] for output in outputs]
    return outputs


def run_two_workers(argv, output_dir, tmp_path):
    """Two workers of `run.py argv` to their end: returns their outputs."""
    return finish_workers(start_two_workers(argv, output_dir, tmp_path, "rerun"), tmp_path, "rerun")


def signal_a_worker(argv, output_dir, tmp_path, signum):
    """Starts two workers of `run.py argv`, sends `signum` to worker 1 once both have saved an epoch, and waits
    for both: returns their exit codes, the seconds from the signal to worker 0's exit, and each worker's
    output."""
    workers = start_two_workers(argv, output_dir, tmp_path, "worker")
    try:
        # Both workers' pointers: each worker writes its own after an epoch, then both agree on whether a
        # signal has come. A signal sent once only worker 1 had written could still join that agreement and
        # stop both at the epoch's end, not inside the next.
        pointers = [
            os.path.join(output_dir, "backup", "latest.json"),
            os.path.join(output_dir, "workertemp_1", "backup", "latest.json"),
        ]

        def an_epoch_saved():
            try:
                return all(json.load(open(pointer))["epoch"] >= 1 for pointer in pointers)
            except (OSError, ValueError):
                return False

        wait_for(an_epoch_saved, timeout=180, process=workers[1])
        workers[1].send_signal(signum)
        signalled = time.monotonic()
        codes = [workers[0].wait(timeout=120)]
        stopped_after = time.monotonic() - signalled
        codes.append(workers[1].wait(timeout=120))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return codes, stopped_after, [(tmp_path / f"worker-{index}.log").read_text() for index in range(2)]


def test_a_lost_worker_stops_the_other_and_a_rerun_resumes_to_the_uninterrupted_result(
    tmp_path, teacher_dir, single_student
):
    argv = student_argv(teacher_dir)
    double = str(tmp_path / "double")
    codes, stopped_after, (chief_output, _) = signal_a_worker(argv, double, tmp_path, signal.SIGKILL)
    assert codes[0] == 2, chief_output[-3000:]
    assert stopped_after < 90
    assert "Error: Lost contact with worker 1 (127.0.0.1:" in chief_output
    assert not os.path.exists(os.path.join(double, "results.json"))

    # The rerun as on two hosts, each worker started by hand (the launcher: the `tables` fixture).
    assert all("Resuming from epoch" in output for output in run_two_workers(argv, double, tmp_path))
    assert_same_records(records(single_student), records(double))
    online_across_workers(records(double))
    assert_same_weights(os.path.join(single_student, "student.keras"), os.path.join(double, "student.keras"))
    assert not os.path.exists(os.path.join(double, "workertemp_1"))


def test_sigterm_to_one_worker_stops_both_with_a_checkpoint_and_a_rerun_resumes_to_the_same_result(
    tmp_path, teacher_dir
):
    # 64 steps an epoch: the SIGTERM, sent once an epoch is saved, lands inside the second.
    argv = [*student_argv(teacher_dir), "--batch_size=8", "--epochs=2"]
    double = str(tmp_path / "double")
    codes, _, outputs = signal_a_worker(argv, double, tmp_path, signal.SIGTERM)
    assert codes == [143, 143], [output[-3000:] for output in outputs]
    for output in outputs:
        assert "Terminated (SIGTERM): checkpoint saved at epoch 2, step " in output, output[-3000:]
    assert not os.path.exists(os.path.join(double, "results.json"))

    # The rerun as on two hosts, each worker started by hand (the launcher: the `tables` fixture).
    assert all("Resuming from epoch 1, step " in output for output in run_two_workers(argv, double, tmp_path))
    uninterrupted = str(tmp_path / "uninterrupted")
    check_ok(run_cli([*argv, f"--output_dir={uninterrupted}"]))
    assert_same_records(records(uninterrupted), records(double))
    assert_same_weights(os.path.join(uninterrupted, "student.keras"), os.path.join(double, "student.keras"))


@pytest.fixture(scope="module")
def probes(tmp_path_factory, teacher_dir):
    """`tests/multi_worker_probe.py` once in one process and once as two workers (one run for both of its
    checks): the ImageNet shards each worker reads, and a student distilled from the teacher cache."""
    directory = tmp_path_factory.mktemp("probes")
    data_dir = directory / "imagenet"
    data_dir.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (8, 20, 24, 3), dtype=np.uint8)
    # Shard s holds examples s and s + 4: labels s + 1 and s + 5 (0-based s and s + 4).
    write_shards(str(data_dir), "train", images, list(range(1, 9)), num_shards=4)
    write_shards(str(data_dir), "validation", images[:2], [1, 2], num_shards=1)
    probe = [sys.executable, os.path.join(ROOT, "tests", "multi_worker_probe.py"), str(data_dir), teacher_dir]
    env = {**environment(), "PYTHONPATH": ROOT}
    for name in ("single", "double"):
        (directory / name).mkdir()
    check_ok(cli_process.run([*probe, str(directory / "single")], cwd=str(directory), env=env, timeout=240))
    # Two workers started by hand, as on two hosts (the launcher: the `tables` fixture, BUILD.md's command).
    finish_workers(
        start_workers([*probe, str(directory / "double")], directory, env, directory, "double"),
        directory,
        "double",
    )
    return directory / "single", directory / "double"


def test_two_workers_distil_from_the_teacher_cache_as_one_process(probes):
    single, double = probes
    assert json.loads((double / "result-0.json").read_text()) == pytest.approx(
        json.loads((single / "result-0.json").read_text()), rel=1e-5
    )
    with np.load(single / "student-0.npz") as expected, np.load(double / "student-0.npz") as actual:
        assert len(expected.files) == len(actual.files) > 0
        for name in expected.files:
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-5)


def test_two_workers_read_disjoint_halves_of_the_tfrecord_shards(probes):
    _, double = probes
    # Each worker's two shards hold 4 examples: 2 steps of a global batch of 4 (2 per replica).
    seen = [json.loads((double / f"shards-{index}.json").read_text())["labels"] for index in range(2)]
    shards_read = [sorted({label % 4 for label in labels}) for labels in seen]
    assert shards_read == [[0, 2], [1, 3]]  # every other shard, by input pipeline id
    assert [sorted(labels) for labels in seen] == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_mirrored_over_two_logical_cpus_trains_the_one_device_student(tmp_path, teacher_dir, single_student):
    mirrored = str(tmp_path / "mirrored")
    argv = [*student_argv(teacher_dir), "--strategy=mirrored", "--cpu_devices=2", f"--output_dir={mirrored}"]
    check_ok(run_cli(argv))
    assert_same_records(records(single_student), records(mirrored))
    assert records(mirrored)[0]["teacher_cache"] is True  # one process: the cache serves every replica
    assert_same_weights(
        os.path.join(single_student, "student.keras"), os.path.join(mirrored, "student.keras")
    )
