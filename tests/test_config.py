"""The typed configuration: where each value comes from, `--dry_run` on every flagfile, and who reads flags."""

import ast
import glob
import os
import shutil
import sys

import cli_process
import pytest
from absl import flags
from absl.testing import flagsaver
from cli_process import environment

import run  # noqa: F401 (defines the flags)
from kd_tf.repro import config as run_config
from kd_tf.repro import modes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "configs", "*.flags")))
# `*_recipe.flags` hold a recipe shared by the commands that include them; they are not commands themselves.
COMMANDS = [name for name in FLAGFILES if not name.endswith("_recipe.flags")]


def test_every_recipe_fragment_is_part_of_a_command():
    included = set()
    for name in COMMANDS:
        included.update(
            line.strip().removeprefix("--flagfile=configs/")
            for line in open(os.path.join(ROOT, "configs", name), encoding="utf-8")
            if line.startswith("--flagfile=")
        )
    assert set(FLAGFILES) - set(COMMANDS) <= included


def _config(argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        return run_config.from_flags(flags.FLAGS, ["run.py", *argv])


def test_a_data_option_of_another_dataset_is_named_as_unread(tmp_path):
    from kd_tf.repro import checks

    verdict = checks.check(_config(["--train_per_class=5", f"--output_dir={tmp_path / 'a'}"]))
    assert verdict.unread == (
        "--train_per_class is a data option of --dataset=digits; --dataset=synthetic does not read it.",
    )
    digits = _config(
        ["--dataset=digits", "--train_per_class=5", "--precision=float32", f"--output_dir={tmp_path}"]
    )
    assert checks.check(digits).unread == ()
    assert dict(digits.data_options)["train_per_class"] == 5


def test_each_value_says_where_it_came_from(tmp_path):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("--epochs=3\n--method_overrides=kd_sim:sim_temperature=0.5\n")
    config = _config([f"--flagfile={flagfile}", "--alpha=0.5", "--nodeterministic"])
    assert config.sources["epochs"] == run_config.FLAGFILE
    assert config.sources["alpha"] == run_config.COMMAND_LINE
    assert config.sources["deterministic"] == run_config.COMMAND_LINE  # --noNAME names NAME
    assert config.sources["teacher_epochs"] == run_config.PRESET  # the synthetic preset
    assert config.sources["temperature"] == run_config.DEFAULT
    assert config.teacher.epochs == 10 and config.student.epochs == 3
    # Per method: the user's --alpha beats the preset's, the preset's T stays where the user set none, and an
    # explicit override beats everything.
    assert config.method_values("kd_pt") == {"temperature": 1.0, "alpha": 0.5}
    assert config.method_sources("kd_pt") == {"temperature": "preset", "alpha": "command line"}
    assert config.method_sources("kd_sim")["sim_temperature"] == run_config.OVERRIDE
    assert config.method_values("kd") == {"temperature": 4.0, "alpha": 0.5}


def test_the_configuration_is_frozen_and_built_once():
    config = _config(["--epochs=3"])
    with pytest.raises(AttributeError):
        config.mode = "teacher"
    with pytest.raises(TypeError):
        config.data_options["dim"] = 2
    assert config.was_set("epochs") and not config.was_set("alpha")


def test_a_dataset_supplies_its_own_facts():
    cifar = _config(["--dataset=cifar100"])
    assert (cifar.teacher_model, cifar.student_model) == ("resnet56", "resnet20")
    assert "kd_rel" in cifar.methods  # CIFAR-100 has a hierarchy
    digits = _config(["--dataset=digits"])
    assert "kd_rel" not in digits.methods and "kd_pt_rel" not in digits.methods  # digits has none
    assert dict(digits.data_options) == {"data_dir": None, "augment": True, "train_per_class": None}
    imagenet = _config(["--dataset=imagenet", "--precision=mixed_bfloat16"])
    assert imagenet.data_options["dtype"] == "bfloat16"


@pytest.mark.parametrize("flagfile", COMMANDS)
def test_dry_run_prints_the_plan_of_every_flagfile_and_writes_nothing(
    flagfile, tmp_path, monkeypatch, capsys
):
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("--dry_run started a run")

    monkeypatch.setattr(modes, "_run_mode", refuse)
    monkeypatch.setattr(modes, "_run_as_worker", refuse)
    modes.run(_config([f"--flagfile=configs/{flagfile}", "--dry_run"]))
    printed = capsys.readouterr().out
    assert printed.startswith("Plan (--dry_run")
    assert "runtime:" in printed and "output: " in printed
    assert os.listdir(tmp_path) == ["configs"]  # no run directory, no staging, no lock


def test_dry_run_names_what_is_missing_and_exits_zero_in_a_new_process(tmp_path):
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    os.symlink(os.path.join(ROOT, "run.py"), tmp_path / "run.py")
    completed = cli_process.run(
        [
            sys.executable,
            "run.py",
            "--flagfile=configs/ptb_student.flags",
            "--data_dir=ptb",
            "--train_per_class=30",  # a digits option: named, not refused
            "--dry_run",
        ],
        cwd=tmp_path,
        env=environment(),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "--data_dir=ptb is not a directory" in completed.stdout
    assert "holds no trained teacher" in completed.stdout
    assert (
        "Warning: --train_per_class is a data option of --dataset=digits; --dataset=ptb does not read it."
        in completed.stderr
    )
    assert "KD-topk" not in completed.stdout and "Student (student)" in completed.stdout
    assert sorted(os.listdir(tmp_path)) == ["configs", "run.py"]


def test_a_bad_value_is_still_refused_under_dry_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(modes.UserError, match="`topk` must be <= the number of classes"):
        modes.run(_config(["--dry_run", "--num_classes=8", "--num_superclasses=2", "--topk=9"]))
    assert os.listdir(tmp_path) == []


# Where absl flags may be read: the entry point and the configuration built from them. An experiment's module
# may define its own flags (their values reach it through the `Config`), without keeping their holders.
FLAG_READERS = {"run.py", os.path.join("kd_tf", "repro", "config.py")}
_DEFINING = ("DEFINE_", "register_validator", "validator", "multi_flags_validator")


def _reads_flags(path: str) -> list[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    kept = {  # a flag's holder kept in a name could be read later (`holder.value`)
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "flags":
            if not node.attr.startswith(_DEFINING):
                found.append(f"flags.{node.attr}")
        elif isinstance(node, ast.Call) and id(node) in kept and "flags.DEFINE_" in ast.unparse(node.func):
            found.append(f"a kept {ast.unparse(node.func)} holder")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("absl.flags"):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"import {alias.name}" for alias in node.names if alias.name.startswith("absl.flags")]
        elif isinstance(node, ast.Attribute) and node.attr == "FLAGS":
            found.append(".FLAGS")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "present"
            and isinstance(node.value, ast.Subscript)
        ):
            found.append("flag_values[name].present")
    return found


def test_no_module_but_the_entry_point_and_the_config_reads_flags():
    readers = {}
    for folder in ("kd_tf", "data", "models"):
        for path in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True):
            relative = os.path.relpath(path, ROOT)
            if relative not in FLAG_READERS and _reads_flags(path):
                readers[relative] = _reads_flags(path)
    assert not readers, f"modules reading absl flags: {readers}"
    assert _reads_flags(os.path.join(ROOT, "kd_tf", "repro", "config.py"))  # the check can see a reader


NEW_METHOD = '''"""KD-half: KD's target mixed half and half with the one-hot label (a method in one file)."""

import tensorflow as tf

from kd_tf.losses.base import register
from kd_tf.losses.kd import KD


@register("kd_half", label="KD-half")
class KDHalf(KD):
    def target_distribution(self, labels, payload, num_classes):
        teacher = super().target_distribution(labels, payload, num_classes)
        return 0.5 * teacher + 0.5 * tf.one_hot(labels, num_classes)
'''


@pytest.mark.slow
def test_a_new_method_is_one_new_file_in_the_losses_package(tmp_path):
    for name in ("kd_tf", "data", "models"):
        shutil.copytree(
            os.path.join(ROOT, name), tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(os.path.join(ROOT, "run.py"), tmp_path / "run.py")
    (tmp_path / "kd_tf" / "losses" / "kd_half.py").write_text(NEW_METHOD)
    import tiny

    environment_here = {**environment(), "PYTHONPATH": str(tmp_path)}

    def run_here(*argv):
        completed = cli_process.run(
            [sys.executable, "run.py", *tiny.SYNTHETIC, *argv],
            cwd=tmp_path,
            env=environment_here,
            timeout=600,
        )
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
        return completed.stdout

    run_here("--mode=teacher", "--output_dir=teacher")
    printed = run_here("--mode=student", "--method=kd_half", "--teacher_dir=teacher", "--output_dir=student")
    assert "KD-half" in printed
    import json

    record = json.load(open(tmp_path / "student" / "results.json"))[0]
    assert record["method"] == "kd_half"
    assert record["hyperparameters"] == {"temperature": 4.0, "alpha": 0.9}
