"""The disk a run needs (`kd_tf.repro.disk`): the estimate against what a run wrote, `--dry_run`'s warning,
and a full disk's error."""

import errno
import os

import pytest
import tiny
from absl import flags
from absl.testing import flagsaver
from runner import run_in_process

import run  # noqa: F401 (defines the flags)
from kd_tf.repro import config as run_config
from kd_tf.repro import disk, modes, outputs, plan

# Models wide enough that their weights, not the files' headers, fill their directories.
WIDE = [*tiny.SYNTHETIC, "--teacher_width=256", "--student_width=128", "--seeds=0", "--taus=0.8"]


def _config(argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        return run_config.from_flags(flags.FLAGS, ["run.py", *argv])


def _bytes_under(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(directory)
        for name in names
    )


@pytest.mark.slow
def test_the_estimate_is_what_a_finished_table_wrote_within_a_fifth(tmp_path):
    argv = [*WIDE, "--methods=kd,student", f"--output_dir={tmp_path / 'table'}"]
    estimate = disk.estimate(_config(argv))
    assert estimate.models == {"teacher": 1, "student": 2}
    run_in_process(argv)
    cells = tmp_path / "table" / "runs" / "tau=0.8" / "seed=0"
    for role, directory in (("teacher", "teacher"), ("student", "kd"), ("student", "student")):
        written = _bytes_under(str(cells / directory))
        assert 0.8 < estimate.per_model[role] / written < 1.2, (role, estimate.per_model[role], written)
    assert 0.8 < estimate.total / _bytes_under(str(tmp_path / "table")) < 1.2


def test_the_estimate_counts_optimizer_slots_and_a_cache_only_where_students_read_one(tmp_path):
    base = [*WIDE, f"--output_dir={tmp_path}", "--mode=teacher"]
    adam = disk.estimate(_config([*base, "--optimizer=adam"])).per_model["teacher"]
    momentum = disk.estimate(_config([*base, "--optimizer=sgd", "--momentum=0.9"])).per_model["teacher"]
    plain = disk.estimate(_config([*base, "--optimizer=sgd", "--momentum=0"])).per_model["teacher"]
    uncached = disk.estimate(_config([*base, "--optimizer=sgd", "--momentum=0", "--teacher_cache=off"]))
    weights = (momentum - plain) / 2  # two checkpoints, each one slot more
    assert adam - momentum == momentum - plain == 2 * weights  # Adam: two slots a weight
    assert plain - uncached.per_model["teacher"] == 4 * 256 * 8  # the logits: 256 examples × 8 classes
    assert uncached.per_model["teacher"] == 4 * weights  # two checkpoints, best weights, the saved model


def test_dry_run_warns_when_the_output_filesystem_has_less_free_than_the_run_writes(tmp_path, monkeypatch):
    config = _config([*WIDE, f"--output_dir={tmp_path / 'run'}", "--dry_run"])
    needs = disk.estimate(config).total
    monkeypatch.setattr(outputs, "free_bytes", lambda path: needs - 1)
    printed = plan.text(config, missing=[], replaces_results=False)
    assert f"Warning: {tmp_path / 'run'} is on a filesystem with" in printed
    assert f"less than the about {disk.size_text(needs)} this run writes" in printed
    monkeypatch.setattr(outputs, "free_bytes", lambda path: needs)
    assert "Warning:" not in plan.text(config, missing=[], replaces_results=False)


def test_a_full_disk_names_what_is_free_what_the_write_and_the_whole_run_need(tmp_path):
    config = _config([*WIDE, f"--output_dir={tmp_path}"])
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))
    error.needed_bytes = 3 * 2**20
    message = modes._os_error_message(error, modes.Run(config))
    total = disk.estimate(config).total
    assert (
        f"this write needed about 3.0 MB more, the whole run about {outputs.megabytes(total)} in all"
        in message
    )
    assert message.startswith(f"{tmp_path / 'x'}: no space left on device (ENOSPC).")
