"""The pool's server and end: its preloaded modules leave TensorFlow's runtime unstarted (a worker forked from
it sets its own threads), and every worker goes, even one that loses its first SIGTERM
(`kd_tf.parallel._stop`)."""

import os
import signal
import sys
import time

import cli_process
import pytest

from kd_tf import parallel


def fail_or_train_deaf_to_one_sigterm(item):
    """Fails once the other cell is deaf to its first SIGTERM (`("fail", flag)`), or trains a long cell in a
    worker that ignores its first SIGTERM (`("train", flag)`, which creates the file `flag` once it does)."""
    kind, flag = item
    if kind == "fail":
        deadline = time.monotonic() + 60
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                raise TimeoutError("the other cell never became deaf to its first SIGTERM")
            time.sleep(0.05)
        raise ValueError("a failed cell")
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        if len(seen) > 1:
            os._exit(143)

    signal.signal(signal.SIGTERM, handler)
    open(flag, "w").close()
    time.sleep(600)


@pytest.mark.slow
def test_a_worker_that_loses_its_sigterm_does_not_keep_a_stopping_run_waiting(tmp_path):
    flag = str(tmp_path / "deaf")
    start = time.monotonic()
    with pytest.raises(ValueError, match="a failed cell"):
        for _ in parallel.run_unordered(
            fail_or_train_deaf_to_one_sigterm,
            [("train", flag), ("fail", flag)],
            jobs=2,
            deterministic=False,
            precision="float32",
        ):
            pass
    assert time.monotonic() - start < 120  # `Pool.terminate` alone waited for the deaf worker forever


@pytest.mark.slow  # about 5 s: the imports of the pool server, then a TensorFlow runtime
def test_the_pool_server_preloads_nothing_that_starts_tensorflows_runtime():
    """Forking is safe only before TensorFlow's runtime starts (its thread pools, CUDA): after the server's
    imports, a process can still size its thread pools, which TensorFlow refuses once the runtime is up."""
    code = (
        "import importlib, sys; from kd_tf import parallel\n"
        "for name in parallel.PRELOAD: importlib.import_module(name)\n"
        "import tensorflow as tf\n"
        "tf.config.threading.set_intra_op_parallelism_threads(1)\n"
        "tf.config.threading.set_inter_op_parallelism_threads(1)\n"
        "tf.constant(1.0)  # the runtime starts here, after the threads were sized\n"
        "try:\n"
        "    tf.config.threading.set_inter_op_parallelism_threads(2)\n"
        "except RuntimeError:\n"
        "    print('refused once started')\n"
    )
    completed = cli_process.check_ok(cli_process.run([sys.executable, "-c", code]))
    assert completed.stdout.strip() == "refused once started"
