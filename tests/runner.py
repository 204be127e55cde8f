"""Runs `run.py`'s code path in the test process: parse a command line, then `kd_tf.repro.modes.run`."""

import tiny
from absl import flags
from absl.testing import flagsaver

import run  # noqa: F401 (defines the flags)
from kd_tf.repro import config, modes

# A synthetic preset small enough for a test (tests/tiny.py).
TINY_SYNTHETIC = tiny.SYNTHETIC


def run_in_process(argv):
    """Parses `argv` as `run.py`'s flags (restored afterwards) and runs the command."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        modes.run(config.from_flags(flags.FLAGS, ["run.py", *argv]))
