"""Preemption, damaged files and a full disk, tried as a user meets them: `python run.py` in new processes,
real signals, files altered on disk, a real tmpfs filled up.

A run that stops says why (one line or one paragraph, an exit status), and a run that resumes never trusts a
damaged file: it names it and falls back, rebuilds or retrains.
"""

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cli_process
import numpy as np
import pytest
from cli_process import ROOT, TINY, check_ok, environment, run_cli, start_cli, wait_for

# Epochs of hundreds of steps (a few tenths of a second each), so that a signal lands inside one.
LONG_EPOCHS = [*TINY, "--mode=teacher", "--teacher_epochs=2", "--batch_size=2", "--train_examples=1024"]
PREEMPTED = [*LONG_EPOCHS, "--deterministic"]


def pointer(output_dir) -> dict:
    try:
        return json.load(open(os.path.join(output_dir, "backup", "latest.json")))
    except (OSError, ValueError):
        return {}


def assert_same_weights(got_dir, want_dir, name="best.npz"):
    with np.load(os.path.join(got_dir, name)) as got, np.load(os.path.join(want_dir, name)) as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            np.testing.assert_allclose(got[key], want[key], atol=1e-6, rtol=0)


def without_times(output_dir) -> str:
    records = json.load(open(os.path.join(output_dir, "results.json")))
    return json.dumps([{k: v for k, v in r.items() if k != "wall_time_s"} for r in records], sort_keys=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("faults") / "uninterrupted")
    check_ok(run_cli([*PREEMPTED, f"--output_dir={output_dir}"]))
    return output_dir


def start_and_wait_for_epoch_one(output_dir, log_path):
    process = start_cli([*PREEMPTED, f"--output_dir={output_dir}"], log_path=log_path)
    wait_for(lambda: pointer(output_dir).get("epoch") == 1, process=process)
    return process


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_that_step_and_the_resumed_run_equals_the_uninterrupted_one(
    uninterrupted, tmp_path
):
    output_dir, log_path = str(tmp_path / "preempted"), str(tmp_path / "preempted.log")
    process = start_and_wait_for_epoch_one(output_dir, log_path)
    time.sleep(0.15)  # into epoch 2's 512 steps
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    log = open(log_path).read()
    assert "Traceback" not in log
    saved = pointer(output_dir)
    assert saved["epoch"] == 1 and 0 < saved["step"] < 512, saved  # inside epoch 2, not at its end
    assert (
        f"Terminated (SIGTERM): checkpoint saved at epoch 2, step {saved['step']}; run the same command again "
        "to resume." in log
    )
    resumed = check_ok(run_cli([*PREEMPTED, f"--output_dir={output_dir}"]))
    assert f"Resuming from epoch 1, step {saved['step']} of epoch 2" in resumed.stdout
    assert without_times(output_dir) == without_times(uninterrupted)
    assert_same_weights(output_dir, uninterrupted)
    # The epoch's running means went on from the saved step too: the same history, row for row.
    assert (
        open(os.path.join(output_dir, "history.csv")).read()
        == open(os.path.join(uninterrupted, "history.csv")).read()
    )


@pytest.mark.slow
def test_sigterm_then_sigkill_during_the_save_still_leaves_a_resumable_run(uninterrupted, tmp_path):
    output_dir = str(tmp_path / "killed")
    for delay in (0.0, 0.005, 0.02):  # the scheduler's SIGKILL in, around and after the step's save
        if pointer(output_dir).get("epoch") == 2:
            break
        process = start_cli([*PREEMPTED, f"--output_dir={output_dir}"])
        wait_for(lambda: pointer(output_dir).get("epoch", 0) >= 1, process=process)
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGTERM)  # a second one while it saves changes nothing
        time.sleep(delay)
        process.kill()
        process.wait()
        assert not glob.glob(os.path.join(output_dir, "backup", "epoch-*.weights.npz.*"))
    check_ok(run_cli([*PREEMPTED, f"--output_dir={output_dir}"]))
    assert without_times(output_dir) == without_times(uninterrupted)
    assert_same_weights(output_dir, uninterrupted)


@pytest.fixture(scope="module")
def finished_table(tmp_path_factory):
    """A tiny table of the teacher and its KD student (the teacher's outputs cached beside it)."""
    output_dir = str(tmp_path_factory.mktemp("faults") / "table")
    check_ok(run_cli([*TINY, "--methods=kd", "--deterministic", f"--output_dir={output_dir}"]))
    return output_dir


@pytest.mark.slow
def test_a_damaged_record_is_an_unfinished_cell_retrained_with_a_warning_naming_it(finished_table, tmp_path):
    output_dir = str(tmp_path / "table")
    shutil.copytree(finished_table, output_dir)
    for name in glob.glob(os.path.join(output_dir, "results.*")):
        os.remove(name)  # a table stopped after its cells finished, before it wrote its results
    record = os.path.join(output_dir, "runs", "tau=0.8", "seed=0", "kd", "record.json")
    with open(
        record, "r+"
    ) as handle:  # cut in the middle of a string, as a full disk or a bad copy leaves it
        handle.truncate(15)
    completed = check_ok(run_cli([*TINY, "--methods=kd", "--deterministic", f"--output_dir={output_dir}"]))
    assert completed.stderr.count(f"Warning: {record} is damaged: not valid JSON") == 1
    assert "its cell is trained again" in completed.stderr
    json.load(open(record))  # whole again
    assert without_times(output_dir) == without_times(finished_table)


@pytest.mark.slow
def test_an_altered_cache_payload_is_named_then_rebuilt_or_refused(finished_table, tmp_path):
    teacher_dir = str(tmp_path / "teacher")
    shutil.copytree(os.path.join(finished_table, "runs", "tau=0.8", "seed=0", "teacher"), teacher_dir)
    payload = os.path.join(teacher_dir, "teacher_cache", "train", "payload.npy")
    values = np.load(payload)
    np.save(payload, values[::-1])  # same shape and header, other values: the fingerprints cannot tell
    student = [*TINY, "--mode=student", "--method=kd", "--deterministic", f"--teacher_dir={teacher_dir}"]
    refused = run_cli([*student, "--teacher_cache=on", f"--output_dir={tmp_path / 'refused'}"])
    assert refused.returncode == 2, refused.stderr
    assert f"Error: Teacher cache file {payload} is damaged (its bytes have SHA-256" in refused.stderr
    assert "Traceback" not in refused.stderr
    output_dir = str(tmp_path / "student")
    completed = check_ok(run_cli([*student, f"--output_dir={output_dir}"]))
    assert f"Warning: teacher cache file {payload} is damaged" in completed.stdout
    assert "rebuilding it" in completed.stdout
    rebuilt = os.path.join(output_dir, "teacher_cache", "train", "payload.npy")
    np.testing.assert_array_equal(np.load(rebuilt), values)  # the teacher's own outputs again
    record = json.load(open(os.path.join(output_dir, "results.json")))[0]
    want = json.load(open(os.path.join(finished_table, "results.json")))
    want = next(r for r in want if r["method"] == "kd")
    assert record["teacher_cache"] and record["test_accuracy"] == want["test_accuracy"]


@contextlib.contextmanager
def small_disk(path, size="2m"):
    """A tmpfs of `size` at `path` (the test runs as root, as CI does), or `None` where it cannot mount."""
    os.makedirs(path)
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", path], check=False)


def fill(directory) -> str:
    """Writes a file into `directory` until its filesystem is full; returns its path."""
    path = os.path.join(directory, "filler")
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(descriptor, b"\0" * 4096):
                pass
        finally:
            os.close(descriptor)
    return path


# `python run.py` whose checkpoint writes after the first raise ENOSPC while argv[1] exists (as the kernel's
# own error from a write through a handle: no file name).
FULL_AFTER_ONE_CHECKPOINT = """
import errno, os, runpy, sys
import numpy as np
flag, saves, savez = sys.argv.pop(1), [], np.savez
def full(*args, **kwargs):
    saves.append(1)
    if len(saves) > 2 and os.path.exists(flag):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return savez(*args, **kwargs)
np.savez = full
sys.argv[0] = os.path.join(os.getcwd(), "run.py")
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_full_disk_is_one_paragraph_and_the_same_command_resumes_once_there_is_room(tmp_path):
    disk = str(tmp_path / "disk")
    with small_disk(disk) as mounted:
        output_dir = os.path.join(disk, "run")
        command = [*LONG_EPOCHS, f"--output_dir={output_dir}"]
        if mounted:
            process = start_cli(command, log_path=str(tmp_path / "full.log"))
            wait_for(lambda: pointer(output_dir).get("epoch") == 1, process=process)
            filler = fill(disk)
            assert process.wait(timeout=60) == 2
            stderr = open(tmp_path / "full.log").read()
        else:  # no mount (not root): the writer of the second epoch's checkpoint meets a full disk
            filler = os.path.join(disk, "FULL")
            open(filler, "w").close()
            completed = cli_process.run(
                [sys.executable, "-c", FULL_AFTER_ONE_CHECKPOINT, filler, *command],
                cwd=ROOT,
                env=environment(),
                timeout=300,
            )
            assert completed.returncode == 2, completed.stderr
            stderr = completed.stderr
        assert "Traceback" not in stderr
        error = stderr[stderr.index("Error: ") :]
        assert f"Error: {output_dir}" in error and "no space left on device (ENOSPC)" in error
        assert "free on that filesystem" in error and "run the same command again" in error
        assert "the whole run about" in error  # the estimate of `kd_tf.repro.disk`
        assert not glob.glob(os.path.join(output_dir, "**", ".tmp-*"), recursive=True)  # nothing half-written
        os.remove(filler)
        resumed = check_ok(run_cli(command))
        assert "Resuming from epoch 1" in resumed.stdout
        assert json.load(open(os.path.join(output_dir, "results.json")))[0]["epochs"] == 2
