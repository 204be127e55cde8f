"""The companion-paper sweeps: their measures on hand numbers, and the bookkeeping of their quick runs."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from runner import assert_wrote_its_plan, run_in_process

import models
from data import synthetic
from kd_tf import losses, training
from kd_tf.repro import (
    checks,
    data_efficiency_summary,
    experiments,
    modes,
    sweet_spot,
    sweet_spot_summary,
    trainers,
)
from kd_tf.repro import config as run_config


def _csv_rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


# Measures.


def test_learning_curve_exponent_recovers_a_power_law():
    sizes = np.array([1_000, 2_000, 5_000, 10_000])
    assert data_efficiency_summary.learning_curve_exponent(sizes, 3.0 * sizes**-0.5) == pytest.approx(0.5)
    # A zero error has no logarithm: the point is left out, the rest still give the slope.
    errors = 3.0 * sizes**-0.25
    errors[-1] = 0.0
    assert data_efficiency_summary.learning_curve_exponent(sizes, errors) == pytest.approx(0.25)
    assert data_efficiency_summary.learning_curve_exponent([1_000, 2_000], [0.1, 0.0]) is None
    with pytest.raises(ValueError, match="must match"):
        data_efficiency_summary.learning_curve_exponent([1, 2, 3], [0.1, 0.2])


def test_monotonicity_drops_counts_falls_beyond_the_tolerance():
    assert data_efficiency_summary.monotonicity_drops([0.5, 0.6, 0.7]) == 0
    assert data_efficiency_summary.monotonicity_drops([0.5, 0.6, 0.59, 0.7, 0.6]) == 2
    assert data_efficiency_summary.monotonicity_drops([0.5, 0.6, 0.59, 0.7, 0.6], tolerance=0.05) == 1


def test_nontarget_entropy_on_hand_numbers():
    # Non-target mass spread evenly: entropy log(M - 1), normalised to 1.
    even = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    assert sweet_spot.nontarget_entropy(even, np.array([0, 3])) == pytest.approx(1.0)
    # All of it on one class: 0. Half on each of two of three: log 2 / log 3.
    assert sweet_spot.nontarget_entropy(np.array([[0.5, 0.5, 0.0, 0.0]]), np.array([0])) == pytest.approx(0.0)
    half = np.array([[0.4, 0.3, 0.3, 0.0]])
    assert sweet_spot.nontarget_entropy(half, np.array([0])) == pytest.approx(np.log(2) / np.log(3))
    # The label's own probability does not enter: a wrong prediction is measured the same way.
    assert sweet_spot.nontarget_entropy(np.array([[0.1, 0.6, 0.3, 0.0]]), np.array([3])) == pytest.approx(
        -(0.1 * np.log(0.1) + 0.6 * np.log(0.6) + 0.3 * np.log(0.3)) / np.log(3)
    )
    with pytest.raises(ValueError, match="M >= 3"):
        sweet_spot.nontarget_entropy(np.array([[0.5, 0.5]]), np.array([0]))


def test_teacher_information_sees_superclass_structure():
    rng = np.random.default_rng(0)
    class_parents = np.repeat(np.arange(2), 3)
    labels = np.tile(np.arange(6), 20)
    # A teacher that puts its non-target mass on the label's siblings, and one that spreads it evenly.
    siblings = np.where(class_parents[labels][:, None] == class_parents[None, :], 2.0, 0.0)
    structured = siblings + 1.0 * np.eye(6)[labels] + 0.01 * rng.standard_normal((120, 6))
    flat = 1.0 * np.eye(6)[labels] + 0.01 * rng.standard_normal((120, 6))
    with_structure = sweet_spot.teacher_information(structured, labels, class_parents)
    without = sweet_spot.teacher_information(flat, labels, class_parents)
    assert with_structure["teacher_test_accuracy"] == without["teacher_test_accuracy"] == 1.0
    assert with_structure["similarity_contrast"] > 0.5
    assert abs(without["similarity_contrast"]) < 0.05
    assert with_structure["nontarget_entropy"] < without["nontarget_entropy"]
    assert without["nontarget_entropy"] == pytest.approx(1.0, abs=1e-3)


def test_grid_means_and_correlations():
    records = [
        {"teacher_batch_size": b, "teacher_epochs": e, "seed": s, "x": b * e + s, "student_test_accuracy": v}
        for b, e, s, v in [(1, 1, 0, 0.1), (1, 1, 1, 0.3), (1, 2, 0, 0.4), (2, 1, 0, 0.5), (2, 2, 0, 0.9)]
    ]
    batch_sizes, epochs, means = sweet_spot_summary.grid_means(records, "student_test_accuracy")
    assert (batch_sizes, epochs) == ([1, 2], [1, 2])
    np.testing.assert_allclose(means, [[0.2, 0.4], [0.5, 0.9]])
    for record in records:
        for name in sweet_spot_summary.SWEET_SPOT_PREDICTORS:
            record[name] = record["student_test_accuracy"] * (-1 if name == "nontarget_entropy" else 2)
    correlations = sweet_spot_summary.sweet_spot_correlations(records)["student_test_accuracy"]
    assert correlations["similarity_contrast"]["pearson"] == pytest.approx(1.0)
    assert correlations["nontarget_entropy"]["spearman"] == pytest.approx(-1.0)
    assert correlations["teacher_test_accuracy"]["cells"] == 4
    # Student minus teacher accuracy is student - 2 student = -student here: every sign flips.
    over_teacher = sweet_spot_summary.sweet_spot_correlations(records)["student_over_teacher"]
    assert over_teacher["similarity_contrast"]["pearson"] == pytest.approx(-1.0)
    assert over_teacher["nontarget_entropy"]["spearman"] == pytest.approx(1.0)
    _, _, missing = sweet_spot_summary.grid_means(records[:4], "student_test_accuracy")
    assert missing[1, 0] == pytest.approx(0.5) and np.isnan(missing[1, 1])


def test_linear_and_deep_linear_students():
    linear = models.builder("linear")(num_classes=5, input_shape=(7,))
    deep = models.builder("deep_linear")(num_classes=5, input_shape=(7,), width=4, depth=3)
    assert linear.count_params() == 7 * 5 + 5
    assert deep.count_params() == 7 * 4 + 4 * 4 + 4 * 5 + 5
    inputs = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    # A product of matrices is still a linear map: f(2x) - f(0) = 2 (f(x) - f(0)).
    zero = deep(np.zeros((1, 7), np.float32))
    np.testing.assert_allclose(deep(2 * inputs) - zero, 2 * (deep(inputs) - zero), rtol=1e-5, atol=1e-5)
    assert deep.get_layer("logits").kernel.shape == (4, 5)
    with pytest.raises(ValueError, match="depth"):
        models.builder("deep_linear")(num_classes=5, input_shape=(7,), depth=0)


def test_a_linear_student_of_images_reads_every_pixel():
    """On images the linear classifier flattens its input: `W · vec(x) + b` over all H·W·C values."""
    model = models.builder("linear")(num_classes=10, input_shape=(4, 4, 3))
    assert model.count_params() == 4 * 4 * 3 * 10 + 10
    images = np.random.default_rng(1).standard_normal((2, 4, 4, 3)).astype(np.float32)
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(model(images), images.reshape(2, -1) @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_a_snapshot_equals_a_separate_shorter_run(tmp_path):
    """The sweet-spot grid reads epoch counts off one run: epoch 1 of 2 is a 1-epoch run's teacher."""
    config = training.TrainConfig(epochs=2, batch_size=16, jit_compile=False, verbose=0)
    weights = {}
    for epochs in (1, 2):
        # A new pipeline per run under the same global seed, as the sweep builds it.
        keras.utils.set_random_seed(3)
        splits = synthetic.load(
            num_classes=4, num_superclasses=2, dim=8, train_examples=64, validation_examples=32,
            test_examples=32, batch_size=16, seed=3,
        )  # fmt: skip
        keras.utils.set_random_seed(3)
        model = models.builder("mlp")(num_classes=4, input_shape=(8,), width=8)
        snapshot_dir = str(tmp_path / f"run{epochs}" / "snap")
        snapshots = sweet_spot._Snapshots(
            model, {1: snapshot_dir}, {"dataset": "synthetic", "num_classes": 4}
        )
        training.train(
            student=model,
            teacher=None,
            loss=losses.get("student"),
            splits=splits,
            config=training.TrainConfig(**{**vars(config), "epochs": epochs}),
            callbacks=[snapshots],
        )
        teacher, info = trainers.load_teacher(snapshot_dir, "synthetic", 4)
        assert info["epochs"] == 1
        weights[epochs] = teacher.get_weights()
    for first, second in zip(weights[1], weights[2], strict=True):
        np.testing.assert_array_equal(first, second)


# The quick runs through run.py's code path.

QUICK = ["--quick", "--progress=none"]


@pytest.mark.slow
def test_quick_data_efficiency_grid_is_complete_and_resumes(tmp_path):
    output_dir = str(tmp_path / "efficiency")
    run_in_process(["--mode=data_efficiency", *QUICK, f"--output_dir={output_dir}"])
    fields, rows = _csv_rows(os.path.join(output_dir, data_efficiency_summary.DATA_EFFICIENCY_CSV))
    assert tuple(fields) == data_efficiency_summary.DATA_EFFICIENCY_FIELDS
    grid = experiments.get("data_efficiency").quick
    keys = [(row["student_model"], row["method"], int(row["train_examples"])) for row in rows]
    expected = [
        (model, method, int(size))
        for model in grid["student_models"]
        for method in grid["methods"]
        for size in grid["train_sizes"]
    ]
    assert sorted(keys) == sorted(expected) and len(set(keys)) == len(keys)
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0 and 0.0 <= float(row["test_agreement"]) <= 1.0
        assert int(row["steps"]) == grid["student_steps"]
        assert float(row["tau"]) == 0.5
    for name in ("results.md", "results.json", "data_efficiency.png"):
        assert os.path.getsize(os.path.join(output_dir, name)) > 0
    summary = json.load(open(os.path.join(output_dir, "results.json")))["summary"]
    assert {(row["student_model"], row["method"]) for row in summary} == {k[:2] for k in expected}
    assert all(row["sizes"] == [int(size) for size in grid["train_sizes"]] for row in summary)
    assert "Command:" in open(os.path.join(output_dir, "results.md")).read()
    assert_wrote_its_plan(output_dir, ["--mode=data_efficiency", *QUICK, f"--output_dir={output_dir}"])

    # A finished sweep is not overwritten by accident.
    with pytest.raises(modes.UserError, match="already holds results"):
        run_in_process(["--mode=data_efficiency", *QUICK, f"--output_dir={output_dir}"])

    # Interrupted: one cell and the summary are missing. The rerun trains that cell only.
    runs = os.path.join(output_dir, "runs")
    records = sorted(
        os.path.join(root, "record.json")
        for root, _, files in os.walk(runs)
        if "record.json" in files and os.sep + "n=" in root
    )
    assert len(records) == len(expected)
    lost = records[0]
    kept = {path: os.path.getmtime(path) for path in records[1:]}
    os.remove(lost)
    os.remove(os.path.join(output_dir, "results.json"))
    run_in_process(["--mode=data_efficiency", *QUICK, f"--output_dir={output_dir}"])
    assert os.path.exists(lost)
    assert {path: os.path.getmtime(path) for path in kept} == kept
    _, rows_again = _csv_rows(os.path.join(output_dir, data_efficiency_summary.DATA_EFFICIENCY_CSV))
    assert len(rows_again) == len(expected)
    # Finished cells keep their record and training curve, no checkpoint.
    assert sorted(os.listdir(os.path.dirname(lost))) == ["history.csv", "record.json"]


@pytest.mark.slow
def test_quick_sweet_spot_grid_is_complete_and_resumes(tmp_path):
    output_dir = str(tmp_path / "sweet")
    run_in_process(["--mode=sweet_spot", *QUICK, f"--output_dir={output_dir}"])
    assert_wrote_its_plan(output_dir, ["--mode=sweet_spot", *QUICK, f"--output_dir={output_dir}"])
    fields, rows = _csv_rows(os.path.join(output_dir, sweet_spot_summary.SWEET_SPOT_CSV))
    assert tuple(fields) == sweet_spot_summary.SWEET_SPOT_FIELDS
    grid = experiments.get("sweet_spot").quick
    cells = [(int(row["teacher_batch_size"]), int(row["teacher_epochs"])) for row in rows]
    expected = [(int(b), int(e)) for b in grid["teacher_batch_sizes"] for e in grid["teacher_epoch_grid"]]
    assert cells == expected
    train_examples = grid["train_examples"]
    for row in rows:
        assert int(row["teacher_steps"]) == train_examples // int(row["teacher_batch_size"]) * int(
            row["teacher_epochs"]
        )
        assert float(row["kd_gain"]) == pytest.approx(
            float(row["student_test_accuracy"]) - float(row["baseline_test_accuracy"])
        )
        assert 0.0 <= float(row["nontarget_entropy"]) <= 1.0
        assert float(row["student_over_teacher"]) == pytest.approx(
            float(row["student_test_accuracy"]) - float(row["teacher_test_accuracy"])
        )
    # One baseline student per seed, shared by every cell.
    assert len({row["baseline_test_accuracy"] for row in rows}) == 1
    for quantity in (
        "teacher_test_accuracy",
        "similarity_contrast",
        "nontarget_entropy",
        "student_test_accuracy",
    ):
        assert os.path.getsize(os.path.join(output_dir, f"sweet_spot_{quantity}.png")) > 0
    for name in ("sweet_spot_scatter", "sweet_spot_scatter_over_teacher", "sweet_spot_student_over_teacher"):
        assert os.path.getsize(os.path.join(output_dir, f"{name}.png")) > 0
    correlations = json.load(open(os.path.join(output_dir, "results.json")))["correlations"]
    assert set(correlations) == set(sweet_spot_summary.SWEET_SPOT_OUTCOMES)
    assert all(
        set(values) == set(sweet_spot_summary.SWEET_SPOT_PREDICTORS) for values in correlations.values()
    )

    # Interrupted after the teachers: a cell's record is gone; it is rebuilt from its saved teacher.
    lost = os.path.join(output_dir, "runs", "seed=0", "batch=32", "epochs=2", "record.json")
    before = json.load(open(lost))
    os.remove(lost)
    os.remove(os.path.join(output_dir, "results.json"))
    run_in_process(["--mode=sweet_spot", *QUICK, f"--output_dir={output_dir}"])
    after = json.load(open(lost))
    for name in (
        "teacher_test_accuracy",
        "similarity_contrast",
        "nontarget_entropy",
        "baseline_test_accuracy",
    ):
        assert after[name] == before[name]
    assert len(_csv_rows(os.path.join(output_dir, sweet_spot_summary.SWEET_SPOT_CSV))[1]) == len(expected)


def test_sweet_spot_teacher_stopped_between_checkpoint_and_snapshot_is_retrained(tmp_path):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", "--mode=sweet_spot", *QUICK, f"--output_dir={tmp_path}"])
        config = run_config.from_flags(flags.FLAGS)
        checks.check(config)
        options = modes.Run(config)
        config = experiments.get("sweet_spot").grid_config(options)
    seed_dir = str(tmp_path / "runs" / "seed=0")
    # A checkpoint says two epochs are done, but no snapshot was written.
    backup = os.path.join(seed_dir, "batch=32", "training", "backup")
    os.makedirs(backup)
    with open(os.path.join(backup, "latest.json"), "w") as handle:
        json.dump({"epoch": 2, "weights": "epoch-00002.weights.h5"}, handle)
    sweet_spot._train_sweet_spot_teachers(config, 0, 32, seed_dir, log=lambda line: None)
    for epochs in config.epoch_grid:
        info = json.load(
            open(os.path.join(seed_dir, "batch=32", f"epochs={epochs}", "teacher", "teacher.json"))
        )
        assert info["epochs"] == epochs and info["batch_size"] == 32
    assert not os.path.exists(os.path.join(seed_dir, "batch=32", "training"))


BAD_SWEEPS = [
    (["--mode=sweet_spot", "--taus=0.1,0.5"], "give one --taus value"),
    (["--mode=data_efficiency", "--dataset=digits"], "runs on --dataset=synthetic only"),
    (["--mode=data_efficiency", "--train_sizes=100,1000", "--batch_size=128"], "exceeds the smallest"),
    (["--mode=sweet_spot", "--teacher_batch_sizes=64,8192"], "more than --train_examples"),
    (
        ["--mode=data_efficiency", "--student_steps=5", "--evaluations=10"],
        "--student_steps=5 must be at least --evaluations=10",
    ),
    (
        ["--mode=sweet_spot", "--lr_schedule=piecewise", "--lr_boundary_epochs=1", "--lr_multipliers=1,0.1"],
        "--lr_schedule=constant",
    ),
]


@pytest.mark.parametrize("argv,message", BAD_SWEEPS)
def test_bad_sweeps_are_refused_before_any_work(tmp_path, argv, message):
    output_dir = tmp_path / "out"
    with pytest.raises(modes.UserError, match=message):
        run_in_process([*argv, "--progress=none", f"--output_dir={output_dir}"])
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--train_sizes=1000,abc"], "positive integers"),
        (["--teacher_epoch_grid=0,3"], "positive integers"),
        (["--student_models=mlp,transformer"], "student_models"),
        (["--difficulties=-1"], "non-negative"),
    ],
)
def test_bad_sweep_flags_are_refused_when_parsed(argv, message):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        with pytest.raises(flags.Error, match=message):
            flags.FLAGS(["run.py", *argv])


def _config(mode, argv, tmp_path):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", f"--mode={mode}", *argv, f"--output_dir={tmp_path}"])
        config = run_config.from_flags(flags.FLAGS)
        checks.check(config)
        options = modes.Run(config)
        return experiments.get(mode).grid_config(options)


@pytest.mark.parametrize("mode", ["data_efficiency", "sweet_spot"])
def test_the_flagfiles_spell_out_the_defaults(tmp_path, mode):
    flagfile = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", f"{mode}.flags")
    assert _config(mode, [f"--flagfile={flagfile}"], tmp_path) == _config(mode, [], tmp_path)
    config = _config(mode, [], tmp_path)
    if mode == "data_efficiency":
        assert len(config.cells()) == 2 * 3 * 4 * 7 and config.teacher_model == "linear"
    else:
        assert len(config.cells()) == 3 * 5 * 6 and list(config.seeds) == [0, 1, 2]
