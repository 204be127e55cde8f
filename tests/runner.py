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


def assert_wrote_its_plan(output_dir, argv):
    """The run of `argv` wrote, as `output_dir/config.json`, the plan `--dry_run` prints for `argv`
    (`plan.resolved` of the same flags; the command aside, whose program path differs between processes)."""
    import json
    import os

    from kd_tf.repro import plan

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        planned = json.loads(json.dumps(plan.resolved(config.from_flags(flags.FLAGS, ["run.py", *argv]))))
    with open(os.path.join(output_dir, plan.CONFIG_FILE), encoding="utf-8") as handle:
        written = json.load(handle)
    assert {**written, "command": None} == {**planned, "command": None}
