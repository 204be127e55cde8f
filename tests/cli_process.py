"""Runs `python run.py` the way a user does: a fresh interpreter per command, output captured."""

import os
import subprocess
import sys
import time

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "run.py")

# The tiny synthetic preset (tests/tiny.py), one column, two teacher epochs. Its 8 classes in 2 super-classes
# do not fit KD-rel's default a and b: a mode that checked methods it does not train would refuse it.
TINY = [*tiny.SYNTHETIC, "--teacher_epochs=2", "--taus=0.8"]


def environment() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TF_CONFIG", None)
    return env


def run_cli(argv, cwd=ROOT, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`python run.py argv...` in `cwd` (with `env`, by default `environment()`); returns the finished
    process (stdout and stderr as text)."""
    return subprocess.run(
        [sys.executable, RUN, *argv],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(argv, cwd=ROOT, log_path=None) -> subprocess.Popen:
    """Starts `python run.py argv...` without waiting; its output goes to `log_path` (or is dropped)."""
    output = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, RUN, *argv],
        cwd=cwd,
        env=environment(),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout=120.0, process=None) -> None:
    """Polls `predicate` until it holds; fails on timeout or when `process` ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before the awaited state")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def check_ok(completed: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n--- stdout\n{completed.stdout[-3000:]}\n"
        f"--- stderr\n{completed.stderr[-5000:]}"
    )
    return completed


def tiny_ptb(directory) -> list:
    """Writes a small PTB-format corpus under `directory` and returns the flags of a seconds-long PTB run."""
    import data.ptb

    corpus_dir = data.ptb.write_toy_corpus(str(directory), train_lines=200, valid_lines=30, test_lines=30)
    return [
        "--embedding_size=16",
        "--hidden_size=24",
        "--epochs=1",
        "--max_windows_per_epoch=4",
        "--bptt=12",
        "--progress=none",
        f"--data_dir={corpus_dir}",
    ]
