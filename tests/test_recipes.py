"""Every paper row's flagfile resolves to BUILD.md's recipe conformance tables, value by value.

The tables ("Recipe conformance" in BUILD.md) give, for each recipe, every value a run uses with its source
(a paper section or an original file and function), and for each row its mode, model, method and the
hyperparameters the method trains with. This test resolves each flagfile the way `run.py` does (absl parses
it, `kd_tf.repro.config` applies the precedence rule) and compares, so a flagfile cannot drift from its recipe.
"""

import fnmatch
import glob
import os
import re

import pytest
from absl import flags
from absl.testing import flagsaver

import data.cifar100
import data.imagenet
import run  # noqa: F401 (defines the flags)
from kd_tf import losses, training
from kd_tf.repro import config as run_config
from kd_tf.repro import modes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_EXAMPLES = {"cifar100": data.cifar100.TRAIN_SIZE, "imagenet": data.imagenet.TRAIN_EXAMPLES}
ROW_FILES = sorted(
    path
    for pattern in ("cifar100_*.flags", "imagenet_resnet*.flags", "ptb_*.flags")
    for path in glob.glob(os.path.join(ROOT, "configs", pattern))
    if not path.endswith("_recipe.flags") and "/ptb_toy_" not in path
)


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_format(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "(empty)" if value in ("", None) else str(value)


def resolve(flagfile: str) -> dict:
    """Every value a run of `flagfile` uses, as BUILD.md's tables name them, formatted as they print it."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", f"--flagfile={os.path.relpath(flagfile, ROOT)}"])
        options = modes.Run(run_config.from_flags(flags.FLAGS))
        values = {f"--{name}": _format(flags.FLAGS[name].value) for name in flags.FLAGS}
        mode, dataset = flags.FLAGS.mode, flags.FLAGS.dataset
        role = "teacher" if mode == "teacher" else "student"
        values["model"] = options.teacher_model if role == "teacher" else options.student_model
        if dataset in TRAIN_EXAMPLES:
            config = options.train_config(role, verbose=0)
            steps = TRAIN_EXAMPLES[dataset] // config.batch_size
            schedule = training.learning_rate_of(config, steps).get_config()
            values["nesterov"] = _format(config.nesterov)
            values["steps per epoch"] = str(steps)
            values["lr boundaries (steps)"] = _format(schedule["boundaries"])
            values["warm-up (steps)"] = str(schedule["warmup_steps"])
            values["total steps"] = str(config.epochs * steps)
            values["learning rate of this run"] = _format(config.learning_rate)  # teacher or student
            values["Keras L2 factor"] = _format(config.weight_decay / 2)
        if mode == "teacher":
            smoothing = flags.FLAGS.teacher_label_smoothing
            values["trains with"] = f"label_smoothing={smoothing:g}" if smoothing else "cross-entropy"
            values["method"] = "teacher"
        else:
            method = flags.FLAGS.method if mode == "student" else "every method"
            values["method"] = method
            if mode == "student":
                resolved = {**options.hyperparameters(), **options.method_overrides.get(method, {})}
                chosen = losses.hyperparameters_of(method, resolved)
                values["trains with"] = (
                    ", ".join(f"{k}={_format(v)}" for k, v in chosen.items()) or "cross-entropy"
                )
            else:
                values["trains with"] = "each method with the recipe's values"
        return values


def conformance_tables() -> tuple[list, list]:
    """(recipe blocks: [(file patterns, {value name: ours})], row table: [(flagfile, {column: value})])."""
    text = open(os.path.join(ROOT, "BUILD.md"), encoding="utf-8").read()
    section = text.split("## Recipe conformance", 1)[1].split("\n## ", 1)[0]
    blocks, rows = [], []
    for block in section.split("\n#### ")[1:]:
        heading, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if line.startswith("| `")]
        if heading.startswith("Rows"):
            for line in lines:
                cells = [cell.strip() for cell in line.strip("|").split("|")]
                rows.append(
                    (
                        cells[0].strip("`"),
                        dict(zip(("--mode", "model", "method", "trains with"), cells[1:5], strict=True)),
                    )
                )
            continue
        patterns = re.findall(r"`(configs/[^`]+)`", heading)
        values = {}
        for line in lines:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            values[cells[0].strip("`")] = cells[1].strip("`")
        blocks.append((patterns, values))
    return blocks, rows


def _same(ours: str, resolved: str) -> bool:
    try:
        return [float(x) for x in ours.split(",")] == [float(x) for x in resolved.split(",")]
    except ValueError:
        return ours == resolved


def test_build_md_has_a_conformance_block_for_every_row_flagfile():
    blocks, rows = conformance_tables()
    assert len(blocks) >= 6 and rows
    for path in ROW_FILES:
        name = os.path.relpath(path, ROOT)
        assert any(any(fnmatch.fnmatch(name, p) for p in patterns) for patterns, _ in blocks), name
        assert name in [row for row, _ in rows], f"{name} has no line in the Rows table"
    assert sorted(row for row, _ in rows) == sorted(os.path.relpath(p, ROOT) for p in ROW_FILES)


@pytest.mark.parametrize("path", ROW_FILES, ids=lambda path: os.path.basename(path))
def test_the_flagfile_resolves_to_its_recipe_and_row(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    name = os.path.relpath(path, ROOT)
    resolved = resolve(path)
    blocks, rows = conformance_tables()
    checked = 0
    for patterns, values in blocks:
        if not any(fnmatch.fnmatch(name, p) for p in patterns):
            continue
        for key, ours in values.items():
            assert key in resolved, f"BUILD.md names {key!r}, which {name} does not resolve"
            assert _same(ours, resolved[key]), f"{name}: {key} is {resolved[key]}, BUILD.md says {ours}"
            checked += 1
    for key, ours in dict(rows)[name].items():
        assert _same(ours.strip("`"), resolved[key]), (
            f"{name}: {key} is {resolved[key]}, BUILD.md says {ours}"
        )
    assert checked >= 10
