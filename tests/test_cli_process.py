"""The tests' way of starting `python ...` (tests/cli_process.py): a command forked from the server behaves as
the same command in a new interpreter, in everything the tests read from it."""

import os
import signal
import subprocess
import sys

import cli_process
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("KD_TF_TESTS_SPAWN") == "1",
    reason="compares the fork server, which this setting turns off",
)

# What a process can tell of its own start: its argv, path head, modules, environment, exit and shutdown.
PROBE = r"""
import atexit, os, sys, threading, time
print("argv", sys.argv[1:])
print("path0", sys.path[0])
print("project loaded", sorted(m for m in ("kd_tf", "data", "models", "run") if m in sys.modules))
print("marker", os.environ.get("KD_TF_PROBE"), os.getcwd())
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined", flush=True))).start()
if sys.argv[1] == "raise":
    raise ValueError("probe")
sys.exit(int(sys.argv[1]))
"""


def both(argv, cwd, env):
    """The command forked, then in a new interpreter."""
    forked = cli_process.run(argv, cwd=cwd, env=env)
    spawned = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return forked, spawned


@pytest.mark.slow  # four new interpreters beside the forked commands
def test_a_forked_command_starts_ends_and_fails_as_in_a_new_interpreter(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "probe.py").write_text(PROBE)
    os.symlink(real / "probe.py", tmp_path / "probe.py")  # run through a link, as the documented commands are
    env = {**cli_process.environment(), "KD_TF_PROBE": "set"}
    assert cli_process._forkable([sys.executable, "probe.py"], env)
    for code in ("0", "3", "raise"):
        forked, spawned = both([sys.executable, "probe.py", code], tmp_path, env)
        assert forked.returncode == spawned.returncode == (1 if code == "raise" else int(code))
        assert forked.stdout == spawned.stdout
        assert f"path0 {real}" in forked.stdout and "project loaded []" in forked.stdout
        assert "thread joined\natexit ran" in forked.stdout
        if code == "raise":
            assert forked.stderr.splitlines()[-1] == spawned.stderr.splitlines()[-1] == "ValueError: probe"
    forked, spawned = both(
        [sys.executable, "-c", "import sys; print(sys.argv, sys.path[0])", "a"], tmp_path, env
    )
    assert forked.stdout == spawned.stdout == "['-c', 'a'] \n"


def test_a_forked_command_takes_signals_and_a_start_up_hook_gets_a_new_interpreter(tmp_path):
    process = cli_process.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert isinstance(process, cli_process._Forked) and process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
    (tmp_path / "sitecustomize.py").write_text("")
    hooked = {**cli_process.environment(), "PYTHONPATH": str(tmp_path)}
    assert not cli_process._forkable([sys.executable, "-c", "pass"], hooked)
    assert not cli_process._forkable([sys.executable, "-X", "dev", "-c", "pass"], cli_process.environment())


def test_a_status_left_under_a_reused_pid_does_not_end_the_wait_for_a_new_command():
    """Pids are reused within a run (TensorFlow's threads take them from the same range): an exit status the
    server wrote for an earlier child with the same pid must not be taken for the new child's."""
    process = cli_process.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = os.path.join(cli_process._SERVER._status_dir, str(process.pid))
    with open(stale, "w") as handle:  # what an earlier child with this pid would have left
        handle.write("0")
    try:
        assert process.poll() is None
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        os.remove(stale)
