"""Runs `python run.py` (and any other `python ...` command) the way a user does: a new process per command,
output captured.

Each command is a child forked from a server that has imported NumPy, TensorFlow, Keras and absl and nothing of
the project (tests/forkserver.py): the project's modules, flags and registrations load fresh in each child, as
in a new interpreter, without TensorFlow's 5 s import each time. `KD_TF_TESTS_SPAWN=1` starts a new
interpreter per command instead; so does a command whose interpreter options or start-up variables differ.
"""

import atexit
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "run.py")

# The tiny synthetic preset (tests/tiny.py), one column, two teacher epochs. Its 8 classes in 2 super-classes
# do not fit KD-rel's default a and b: a mode that checked methods it does not train would refuse it.
TINY = [*tiny.SYNTHETIC, "--teacher_epochs=2", "--taus=0.8"]


# Documented commands that another test runs at a tiny size, as a user runs them, for checks of its own
# (tests/test_documented_commands.py counts them as run). BUILD.md's two-worker table: tests/test_multi_worker.py's
# `tables` fixture, which checks it against one process's table.
LAUNCH_TABLE = (
    "python -m kd_tf.launch --workers=2 -- python run.py --strategy=multi_worker_mirrored --mode=table"
)
# BUILD.md's throughput breakdown, run with every variant by tests/test_benchmarks.py, which checks what it wrote,
# and its quick form, run with XLA on and off there.
THROUGHPUT_BREAKDOWN = "python benchmarks/throughput.py --breakdown --output runs/throughput.md"
THROUGHPUT_QUICK = "python benchmarks/throughput.py --quick"
# README's first command, run at a tiny size with the default `--jobs` by tests/test_run.py, which checks its table.
README_RUN = "python run.py"
# README's sweet-spot command, run with `--quick` at one and two jobs by tests/test_parallel.py, which compares them.
SWEET_SPOT = "python run.py --mode=sweet_spot"
# README's and BUILD.md's regime-map command, run at the quick size by tests/test_regime_map.py, which checks the map.
REGIME_MAP = "python run.py --flagfile=configs/regime_map.flags"


def environment() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TF_CONFIG", None)
    return env


def run_cli(argv, cwd=ROOT, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`python run.py argv...` in `cwd` (with `env`, by default `environment()`); returns the finished
    process (stdout and stderr as text)."""
    return run([sys.executable, RUN, *argv], cwd=cwd, env=env or environment(), timeout=timeout)


def start_cli(argv, cwd=ROOT, log_path=None):
    """Starts `python run.py argv...` without waiting; its output goes to `log_path` (or is dropped)."""
    output = open(log_path, "w") if log_path else subprocess.DEVNULL
    return popen(
        [sys.executable, RUN, *argv], cwd=cwd, env=environment(), stdout=output, stderr=subprocess.STDOUT
    )


def run(argv, cwd=ROOT, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, capture_output=True, text=True)` for a `python ...` command, through the fork
    server where it can serve it."""
    env = environment() if env is None else env
    if not _forkable(argv, env):
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="kd_tf_cli_") as scratch:
        paths = [os.path.join(scratch, name) for name in ("stdout", "stderr")]
        process = _SERVER.start(argv[1:], str(cwd), env, *paths)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stdout, stderr = (open(path, encoding="utf-8", errors="replace").read() for path in paths)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def popen(argv, cwd=ROOT, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
    """`subprocess.Popen(argv, ...)` for a `python ...` command whose output goes to a file (an open file, or
    `DEVNULL`; `stderr` may be `STDOUT`), through the fork server where it can serve it: the returned process
    has Popen's `pid`, `returncode`, `poll`, `wait`, `send_signal`, `terminate` and `kill`."""
    env = environment() if env is None else env
    if not _forkable(argv, env):
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)
    out = os.devnull if stdout == subprocess.DEVNULL else stdout.name
    err = out if stderr == subprocess.STDOUT else os.devnull if stderr == subprocess.DEVNULL else stderr.name
    return _SERVER.start(argv[1:], str(cwd), env, out, err)


# Variables read while the interpreter or TensorFlow starts: a command that sets them otherwise than the
# server had them needs a new interpreter.
_START_UP = (
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_ENABLE_ONEDNN_OPTS",
    "PYTHONHASHSEED",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
)


def _forkable(argv, env) -> bool:
    if os.environ.get("KD_TF_TESTS_SPAWN") == "1" or argv[0] != sys.executable or len(argv) < 2:
        return False
    if argv[1].startswith("-") and argv[1] not in ("-m", "-c"):
        return False
    server_env = _server_environment()
    if any(env.get(name) != server_env.get(name) for name in _START_UP):
        return False
    # A `sitecustomize` or `usercustomize` on the command's PYTHONPATH runs at an interpreter's start only.
    return not any(
        os.path.exists(os.path.join(entry, f"{hook}.py"))
        for entry in env.get("PYTHONPATH", "").split(os.pathsep)
        if entry
        for hook in ("sitecustomize", "usercustomize")
    )


def _server_environment() -> dict:
    env = environment()
    env.pop("PYTHONPATH", None)
    return env


class _Forked:
    """A command forked by the server: Popen's interface over its pid and the exit status the server writes."""

    def __init__(self, argv, pid, status_path):
        self.args, self.pid, self.returncode, self._status = argv, pid, None, status_path

    def poll(self):
        if self.returncode is None and os.path.exists(self._status):
            with open(self._status) as handle:
                self.returncode = int(handle.read())
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            # As Popen: a command that ended a moment ago (the server reaped it and has not yet written its
            # status) is not an error.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class _Server:
    """One fork server per test process, started at its first command and stopped with the process."""

    def __init__(self):
        self._process, self._status_dir, self._lock = None, None, threading.Lock()
        self._requests = itertools.count()

    def start(self, argv, cwd, env, stdout, stderr) -> _Forked:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._status_dir = tempfile.mkdtemp(prefix="kd_tf_forkserver_")
                self._process = subprocess.Popen(
                    [sys.executable, "-u", os.path.join(ROOT, "tests", "forkserver.py"), self._status_dir],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=_server_environment(),
                    cwd=ROOT,
                )
                atexit.register(self._process.stdin.close)
            request_id = next(self._requests)
            request = {
                "id": request_id,
                "argv": argv,
                "cwd": cwd,
                "env": env,
                "stdout": stdout,
                "stderr": stderr,
            }
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            pid = json.loads(self._process.stdout.readline())["pid"]
        return _Forked([sys.executable, *argv], pid, os.path.join(self._status_dir, str(request_id)))


_SERVER = _Server()


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
