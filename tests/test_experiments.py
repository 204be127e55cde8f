"""The experiment registry: every mode is one registered experiment, and a new study is one new module."""

import json
import os
import shutil
import sys
import textwrap

import cli_process
import pytest
from cli_process import ROOT, environment

from kd_tf.repro import experiments

# A throw-away study, written into a copy of the project as one new module of `kd_tf/repro/experiments/`:
# its own flag, its own preset and `--quick` value, one teacher trained through the library.
STUDY = textwrap.dedent(
    '''
    """`--mode=note_teacher`: one teacher, its accuracy written beside a note."""

    import os

    from absl import flags

    from kd_tf.repro import tables, trainers
    from kd_tf.repro.experiments import Experiment, register, table

    flags.DEFINE_string("study_note", "none", "note_teacher: a note written beside the result.")


    @register
    class NoteTeacher(Experiment):
        name = "note_teacher"
        help = "one teacher and a note"
        flags = ("study_note",)
        presets = {"teacher_epochs": 1}
        quick = {"train_examples": 128}

        def roles(self, config):
            return ["teacher"]

        def model_counts(self, config):
            return {"teacher": 1}

        def run(self, options):
            study = table.study_of(options)
            data_options = {**study.data_options, "tau": options.config.taus[0]}
            splits = study.load_splits(data_options, options.seeds[0])
            record, _ = trainers.train_teacher(
                study.teacher, splits, data_options, options.seeds[0], os.path.join(options.output_dir, "teacher")
            )
            note = options.config.value("study_note")
            text = f"note={note} examples={record['data_options']['train_examples']}\\n"
            tables.write_results(options.output_dir, [record], text)
    '''
)
TINY = [
    "--num_classes=8",
    "--num_superclasses=2",
    "--dim=16",
    "--validation_examples=64",
    "--test_examples=64",
    "--batch_size=64",
    "--teacher_width=16",
    "--progress=none",
    "--jit_compile=false",
]


def test_every_mode_is_a_registered_experiment_with_its_own_output_and_real_flags():
    from absl import flags

    import run  # noqa: F401 (defines the flags)

    names = experiments.names()
    assert names[:4] == ["table", "teacher", "student", "analyze"]
    assert {"data_efficiency", "sweet_spot", "regime_map"} <= set(names)
    assert run.MODES == tuple(names)
    outputs = {experiments.get(name).output_dir("synthetic", "kd") for name in names if name != "analyze"}
    assert len(outputs) == len(names) - 1  # no two modes write into one default directory
    for name in names:
        mode = experiments.get(name)
        assert mode.help and mode.kinds, name
        unknown = (set(mode.presets) | set(mode.quick) | set(mode.flags)) - set(flags.FLAGS)
        assert not unknown, (name, unknown)


@pytest.mark.slow
def test_a_new_study_is_one_new_module(tmp_path):
    """Copies the project, adds the study as one module, and runs it through `run.py` in a fresh process:
    its mode, flag, preset and `--quick` value reach the plan, `config.json` and the run."""
    project = tmp_path / "project"
    for name in ("kd_tf", "data", "models"):
        shutil.copytree(
            os.path.join(ROOT, name), project / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(os.path.join(ROOT, "run.py"), project / "run.py")
    (project / "kd_tf" / "repro" / "experiments" / "note_teacher.py").write_text(STUDY)
    output = tmp_path / "out"
    argv = ["--mode=note_teacher", *TINY, "--quick", "--study_note=hello", f"--output_dir={output}"]
    env = {**environment(), "PYTHONPATH": str(project)}

    def run(*extra):
        return cli_process.run(
            [sys.executable, "run.py", *argv, *extra],
            cwd=project,
            env=env,
            timeout=300,
        )

    planned = run("--dry_run")
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "note_teacher:\n  study_note = 'hello' [command line]" in planned.stdout
    assert "  epochs = 1 [preset]" in planned.stdout
    assert "  train_examples = 128 [--quick]" in planned.stdout
    assert not output.exists()

    finished = run()
    assert finished.returncode == 0, finished.stderr[-3000:]
    with open(output / "results.md", encoding="utf-8") as handle:
        assert handle.read() == "note=hello examples=128\n"
    with open(output / "config.json", encoding="utf-8") as handle:
        written = json.load(handle)
    assert written["note_teacher"] == {"study_note": {"value": "hello", "source": "command line"}}
    assert written["teacher"]["epochs"] == {"value": 1, "source": "preset"}
    assert "student" not in written
    with open(output / "teacher" / "record.json", encoding="utf-8") as handle:
        assert json.load(handle)["epochs"] == 1


def test_a_refusal_lists_the_modes_the_registry_says_run_across_workers(tmp_path):
    from absl import flags
    from absl.testing import flagsaver

    import run  # noqa: F401 (defines the flags)
    from kd_tf.repro import checks
    from kd_tf.repro import config as run_config

    argv = ["run.py", "--mode=analyze", "--strategy=multi_worker_mirrored", f"--output_dir={tmp_path}"]
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        config = run_config.from_flags(flags.FLAGS, argv)
    with pytest.raises(run_config.UserError) as refused:
        checks.check(config)
    across = [name for name in experiments.names() if experiments.get(name).multi_worker]
    assert across == ["table", "teacher", "student"]
    assert f"runs --mode={'/'.join(across)}; --mode=analyze runs in one process" in str(refused.value)
