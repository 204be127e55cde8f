"""A process that has imported the third-party libraries (NumPy, TensorFlow, Keras, absl) and nothing of the
project, and forks a child per command the tests run: `python SCRIPT ARGS`, `python -m MODULE ARGS` or
`python -c CODE ARGS`. TensorFlow's import is most of a command's start-up (about 5 s here); the project's own
modules, flags and Keras registrations are imported fresh in each child, as in a new interpreter.

Protocol (one JSON object a line): the parent writes `{"id", "argv", "cwd", "env", "stdout", "stderr"}` to
stdin, the server answers `{"pid": N}` on stdout, and once the child has ended writes its exit status (Popen's
convention: the code, or minus the signal) to `STATUS_DIR/ID`. The status is named by the request's id, never
by the pid: pids are reused (TensorFlow's threads take them from the same range), and an earlier child's
status under the same pid would end the wait for a child that has not yet started. The child runs in the
server's place: its uncaught exception prints a traceback and exits 1, `sys.exit(code)` exits `code`, atexit
handlers and non-daemon threads are finished by the interpreter's own shutdown.
"""

import gc
import json
import os
import select
import sys

STATUS_DIR = sys.argv[1]
del sys.path[0]  # this file's directory (tests/) is not on a user's path

import keras  # noqa: E402,F401
import numpy  # noqa: E402,F401
import tensorflow  # noqa: E402,F401
from absl import app, flags, logging  # noqa: E402,F401

# The preloaded libraries' objects (about 400,000) live as long as any child: frozen, the garbage collector
# leaves them out of every collection, the child's last ones at its exit among them (`benchmarks/gc_freeze.py`
# measures what that saves); the child's own objects are collected and finalised as before.
gc.freeze()

_CHILDREN = {}  # pid -> request id, for the children not yet reaped


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        name = _CHILDREN.pop(pid)
        partial = os.path.join(STATUS_DIR, f".{name}")
        with open(partial, "w") as handle:
            handle.write(str(code))
        os.replace(partial, os.path.join(STATUS_DIR, name))


def _serve() -> dict:
    """Answers requests until one forks; returns that request in the child (the server never returns)."""
    requests = sys.stdin.buffer
    while True:
        readable, _, _ = select.select([requests], [], [], 0.02)
        _reap()
        if not readable:
            continue
        line = requests.readline()
        if not line:  # the tests' process has gone
            os._exit(0)
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        _CHILDREN[pid] = str(request["id"])
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


def _become(request: dict) -> None:
    """Turns this child into `python ARGV...` run in `cwd` with `env`, its output to the given files."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.close(stdin)
    python_path = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[0:0] = [os.path.abspath(entry) for entry in python_path]  # after the script's directory
    argv = request["argv"]
    if argv[0] == "-m":
        import runpy

        sys.argv = [argv[1], *argv[2:]]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path.insert(0, "")
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    else:
        import runpy

        script = os.path.abspath(argv[0])
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.realpath(script)))  # as Python does, through a link
        runpy.run_path(script, run_name="__main__")


_become(_serve())
