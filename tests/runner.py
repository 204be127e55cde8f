"""Runs `run.py`'s code path in the test process: parse a command line, then `kd_tf.cli.run`."""

from absl import flags
from absl.testing import flagsaver

import run  # noqa: F401 (defines the flags)
from kd_tf import cli

# A synthetic preset small enough for a test: 8 classes in 2 super-classes, a few hundred examples, 2 epochs.
TINY_SYNTHETIC = [
    "--num_classes=8",
    "--num_superclasses=2",
    "--dim=16",
    "--difficulty=1",
    "--train_examples=256",
    "--validation_examples=128",
    "--test_examples=128",
    "--batch_size=64",
    "--epochs=2",
    "--teacher_width=16",
    "--student_width=4",
    "--progress=none",
    "--jit_compile=false",
]


def run_in_process(argv):
    """Parses `argv` as `run.py`'s flags (restored afterwards) and runs the command."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        cli.run(flags.FLAGS)
