"""The pool's end: every worker goes, even one that loses its first SIGTERM (`kd_tf.parallel._stop`)."""

import os
import signal
import time

import pytest

from kd_tf import parallel


def fail_or_train_deaf_to_one_sigterm(item):
    """Fails after the other cell has started (`"fail"`), or trains a long cell in a worker that ignores its
    first SIGTERM."""
    if item == "fail":
        time.sleep(3)
        raise ValueError("a failed cell")
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        if len(seen) > 1:
            os._exit(143)

    signal.signal(signal.SIGTERM, handler)
    time.sleep(600)


@pytest.mark.slow
def test_a_worker_that_loses_its_sigterm_does_not_keep_a_stopping_run_waiting():
    start = time.monotonic()
    with pytest.raises(ValueError, match="a failed cell"):
        for _ in parallel.run_unordered(
            fail_or_train_deaf_to_one_sigterm,
            ["train", "fail"],
            jobs=2,
            deterministic=False,
            precision="float32",
        ):
            pass
    assert time.monotonic() - start < 120  # `Pool.terminate` alone waited for the deaf worker forever
