"""`run.py` end to end on tiny presets, and its refusals of bad input before any work."""

import csv
import json
import os
import shlex
import sys

import cli_process
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from runner import TINY_SYNTHETIC, assert_wrote_its_plan, run_in_process

from kd_tf.repro import checks, modes
from kd_tf.repro import config as run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [*TINY_SYNTHETIC, "--taus=0.8", "--topk=3", "--rel_target=0.5", "--rel_sibling=0.1"]


@pytest.mark.slow
def test_tiny_table_writes_well_formed_results(tmp_path):
    # README's first command as users run it (a new process, the default `--jobs`), at the tiny size.
    output_dir = str(tmp_path / "table")
    words = shlex.split(cli_process.README_RUN)
    tiny = [flag for flag in TINY if not flag.startswith("--jobs")]
    argv = [sys.executable, *words[1:], *tiny, f"--output_dir={output_dir}"]
    completed = cli_process.check_ok(cli_process.run(argv))
    assert "Traceback" not in completed.stderr
    records = json.load(open(os.path.join(output_dir, "results.json")))
    methods = [
        "teacher",
        "student",
        "ls",
        "kd",
        "kd_pt",
        "kd_sim",
        "kd_pt_sim",
        "kd_topk",
        "kd_rel",
        "kd_pt_rel",
    ]
    assert [r["method"] for r in records] == methods
    assert {r["tau"] for r in records} == {0.8}
    for record in records:
        assert 0.0 <= record["test_accuracy"] <= 1.0
        assert record["wall_time_s"] > 0
    rows = list(csv.DictReader(open(os.path.join(output_dir, "results.csv"))))
    assert len(rows) == len(records)
    assert {"tau", "seed", "method", "test_accuracy", "hyperparameters.temperature"} <= set(rows[0])
    table = open(os.path.join(output_dir, "results.md")).read()
    assert "| method | tau = 0.8 |" in table
    ours = table.split("The paper's Table 1")[0]
    assert ours.count("\n| ") == 1 + len(methods) + 2  # header, a row per method, the gap and KD's share
    assert "| KD's share of the gap |" in table
    assert "The paper's Table 1" in table
    # A finished table is never overwritten silently.
    again = cli_process.run(argv)
    assert again.returncode == 2 and "already holds results" in again.stderr


def test_teacher_then_student_from_the_saved_teacher(tmp_path):
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    teacher_argv = [*TINY, "--mode=teacher", f"--output_dir={teacher_dir}"]
    run_in_process(teacher_argv)
    assert_wrote_its_plan(teacher_dir, teacher_argv)
    info = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    assert info["dataset"] == "synthetic" and info["num_classes"] == 8
    student_argv = [
        *TINY,
        "--mode=student",
        "--method=kd_topk",
        "--topk=2",
        f"--teacher_dir={teacher_dir}",
        f"--output_dir={student_dir}",
    ]
    run_in_process(student_argv)
    assert_wrote_its_plan(student_dir, student_argv)
    (record,) = json.load(open(os.path.join(student_dir, "results.json")))
    assert record["method"] == "kd_topk" and record["hyperparameters"]["topk"] == 2
    # A teacher for other classes does not fit.
    with pytest.raises(modes.UserError, match="trained with num_classes=8, but --num_classes asks for 12"):
        run_in_process(
            [
                *TINY,
                "--mode=student",
                "--num_classes=12",
                "--num_superclasses=2",
                f"--teacher_dir={teacher_dir}",
                f"--output_dir={tmp_path / 'other'}",
            ]
        )


BAD_FLAGS = [
    (["--method=kd_bogus"], "kd_bogus"),
    (["--methods=kd,nope"], "--methods must be names from"),
    (["--taus=1.0"], "--taus must be numbers in"),
    (["--taus=-0.1"], "--taus must be numbers in"),
    (["--num_classes=10", "--num_superclasses=4"], "multiple of --num_superclasses"),
    (["--temperature=0"], "temperature"),
    (["--alpha=1.5"], "alpha"),
    (["--topk=0"], "topk"),
    (["--seeds=a,b"], "--seeds must be a list of integers"),
    (["--strategy=tpu"], "--strategy=tpu needs --tpu"),
    (["--lr_boundary_epochs=10,20", "--lr_multipliers=1,0.1"], "one more entry"),
    (["--precision=float8"], "precision"),
    (["--dataset=mnist"], "dataset"),
]


@pytest.mark.parametrize("argv,message", BAD_FLAGS)
def test_bad_flags_are_refused_when_parsed(argv, message):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        with pytest.raises(flags.Error, match=message):
            flags.FLAGS(["run.py", *argv])


BAD_RUNS = [
    (["--dataset=digits", "--methods=kd_rel"], "needs a class hierarchy"),
    (["--dataset=imagenet"], "needs --data_dir"),
    (["--dataset=cifar100", "--data_dir=/nonexistent/cifar"], "is not a directory"),
    (["--mode=student"], "--mode=student needs --teacher_dir"),
    (["--mode=student", "--teacher_dir=/nonexistent/teacher"], "holds no trained teacher"),
    (["--methods=kd_rel", "--rel_target=0.9", "--rel_sibling=0.05"], "rel_target"),
    (["--method_overrides=kd:temperature=-1"], "temperature"),
    (["--methods=kd_topk", "--topk=9"], "`topk` must be <= the number of classes"),
    (["--method_overrides=kd_wrong:temperature=2"], "unknown method"),
    (["--method_overrides=kd:temprature=2"], "unknown hyperparameter"),
    (["--mode=analyze", "--strategy=multi_worker_mirrored"], "runs --mode=table/teacher/student"),
    (["--jobs=2", "--strategy=mirrored"], "which --strategy=mirrored cannot span"),
    (["--dataset=digits", "--teacher_cache=on"], "augments its training images at random"),
    (["--teacher_cache=on", "--strategy=multi_worker_mirrored"], "multi_worker_mirrored distils online"),
    (["--teacher_cache=on", "--steps_per_epoch=2"], "--steps_per_epoch caps the epochs"),
    (["--mode=sweet_spot", "--teacher_cache=on"], "--mode=sweet_spot distils its students from their teach"),
    (["--mode=data_efficiency", "--teacher_cache=auto"], "leave --teacher_cache unset, or off"),
    (["--dataset=ptb", "--data_dir=/"], "--dataset=ptb runs with --mode=teacher or --mode=student, not"),
    (
        ["--dataset=ptb", "--mode=teacher", "--data_dir=/", "--strategy=multi_worker_mirrored"],
        "does not run --dataset=ptb",
    ),
]


@pytest.mark.parametrize("argv,message", BAD_RUNS)
def test_bad_runs_are_refused_before_any_work(tmp_path, argv, message):
    output_dir = tmp_path / "out"
    with pytest.raises(modes.UserError, match=message):
        run_in_process([*TINY, *argv, f"--output_dir={output_dir}"])
    assert not output_dir.exists()


def test_command_line_error_exit_code_and_one_line_message(tmp_path):
    completed = cli_process.run(
        [sys.executable, "run.py", "--dataset=imagenet", f"--output_dir={tmp_path}"],
        cwd=ROOT,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "Error: --dataset=imagenet needs --data_dir" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_teacher_from_another_dataset_is_refused_before_any_work(tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    (teacher_dir / "teacher.json").write_text(json.dumps({"dataset": "cifar100", "num_classes": 100}))
    output_dir = tmp_path / "student"
    with pytest.raises(modes.UserError, match="trained on --dataset=cifar100, not --dataset=synthetic"):
        run_in_process(
            [*TINY, "--mode=student", f"--teacher_dir={teacher_dir}", f"--output_dir={output_dir}"]
        )
    assert not output_dir.exists()


def _resolved(argv, method):
    """The values `method` trains with under `argv`, as the runner resolves them."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        options = modes.Run(run_config.from_flags(flags.FLAGS))
        return {**options.hyperparameters(), **options.method_overrides.get(method, {})}


PRECEDENCE = [
    # (command line, method, expected temperature, expected alpha)
    ([], "kd_pt", 1.0, 0.3),  # the synthetic preset
    ([], "kd", 4.0, 0.9),  # the flags' defaults
    (["--temperature=4", "--alpha=0.9"], "kd_pt", 4.0, 0.9),  # flags set explicitly beat the preset
    (["--alpha=0.5"], "kd_rel", 1.0, 0.5),  # the preset fills only what was not set
    (["--alpha=0.9", "--method_overrides=kd_pt:alpha=0.5"], "kd_pt", 1.0, 0.5),  # an override beats a flag
    (["--alpha=0.9", "--method_overrides=kd_pt:alpha=0.5"], "kd_sim", 1.0, 0.9),  # ... for its method only
    (["--dataset=digits"], "kd_pt", 4.0, 0.9),  # the preset is the synthetic dataset's alone
]


@pytest.mark.parametrize("argv,method,temperature,alpha", PRECEDENCE)
def test_one_precedence_rule_for_hyperparameters(argv, method, temperature, alpha):
    values = _resolved(argv, method)
    assert (values["temperature"], values["alpha"]) == (temperature, alpha)


def test_a_flagfile_value_counts_as_set_by_the_user(tmp_path):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("--temperature=3\n")
    assert _resolved([f"--flagfile={flagfile}"], "kd_pt")["temperature"] == 3.0


def test_a_teacher_run_does_not_check_methods_it_does_not_train(tmp_path):
    # KD-rel's a, b do not fit 4 classes per super-class; a teacher run trains no KD-rel student.
    run_in_process(
        [
            *TINY_SYNTHETIC,
            "--rel_target=0.9",
            "--rel_sibling=0.05",
            "--mode=teacher",
            f"--output_dir={tmp_path / 'teacher'}",
        ]
    )
    assert (tmp_path / "teacher" / "teacher.keras").exists()


def test_a_table_with_the_papers_numbers_adds_them_and_their_gap():
    from kd_tf.repro import paper, tables

    records = [
        {"dataset": "cifar100", "role": role, "method": method, "test_accuracy": accuracy}
        for role, method, accuracy in [
            ("teacher", "teacher", 0.70),
            ("student", "student", 0.60),
            ("student", "kd", 0.68),
        ]
    ]
    table = tables.format_table(records, "dataset", paper=paper.accuracy_column("cifar100"))
    assert "| Teacher | 70.00 | 75.68 ± 0.42 |" in table
    assert "| KD | 68.00 | 75.94 ± 0.26 |" in table
    # Ours: gap 10 points, KD recovers 80 %; the paper's: 75.68 - 72.51 = 3.17, (75.94 - 72.51) / 3.17 = 108 %.
    assert "| Teacher − Student (points) | +10.00 | +3.17 |" in table
    assert "| KD's share of the gap | 80 % | 108 % |" in table


def test_an_explicit_multi_step_call_over_several_replicas_is_refused(strategies):
    _, mirrored = strategies  # two replicas, as `--strategy=mirrored --cpu_devices=2` makes
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *TINY, "--strategy=mirrored", "--steps_per_execution=4"])
        with pytest.raises(
            modes.UserError, match="--steps_per_execution must be 1 with --strategy=mirrored over 2"
        ):
            checks.one_step_per_call(run_config.from_flags(flags.FLAGS), mirrored)
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *TINY, "--strategy=mirrored"])
        config = run_config.from_flags(flags.FLAGS)
        options = modes.Run(config)
        # The default 8 becomes one step per call, recorded in the config.
        options.one_step_per_call = checks.one_step_per_call(config, mirrored)
        assert options.train_config("student", verbose=0).steps_per_execution == 1


@pytest.mark.slow
def test_a_table_over_several_tasks_averages_each_column_over_tasks_and_seeds(tmp_path):
    output_dir = tmp_path / "tasks"
    run_in_process([*TINY, "--methods=student", "--task_seeds=0,3", f"--output_dir={output_dir}"])
    records = json.load(open(output_dir / "results.json"))
    assert sorted((r["data_options"]["task_seed"], r["role"]) for r in records) == [
        (0, "student"),
        (0, "teacher"),
        (3, "student"),
        (3, "teacher"),
    ]
    assert sorted(os.listdir(output_dir / "runs")) == ["tau=0.8,task_seed=0", "tau=0.8,task_seed=3"]
    text = open(output_dir / "results.md").read()
    assert "mean ± std over task seeds 0, 3 × seeds 0" in text
    student = [100 * r["test_accuracy"] for r in records if r["role"] == "student"]
    mean, std = np.mean(student), np.std(student, ddof=1)  # the sample std, as every table
    assert f"| Student | {mean:.2f} ± {std:.2f} |" in text
    assert "tau=0.8 task_seed=3 seed=0: labels off the linear argmax" in text
    with pytest.raises(modes.UserError, match="--task_seeds is for --mode=table"):
        run_in_process([*TINY, "--mode=teacher", "--task_seeds=0,3", f"--output_dir={tmp_path / 'teacher'}"])
