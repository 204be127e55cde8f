"""Tests for kd_tf.repro.figures: Figures 1-5 and their numbers from a tiny table run trained here."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import run  # noqa: F401 (defines the flags)
from kd_tf import analysis, training
from kd_tf.repro import config as run_config
from kd_tf.repro import experiments, figure_cells, figure_measures, figures, modes, topk_sweep, trainers
from kd_tf.repro.experiments import table

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_BYTES = 200 * 1024
_DATA = {
    "num_classes": 8,
    "num_superclasses": 2,
    "dim": 16,
    "difficulty": 0,
    "train_examples": 512,
    "validation_examples": 128,
    "test_examples": 256,
}
_BATCH = 64


def _study(methods, taus, teacher_label_smoothing=0.0):
    train = training.TrainConfig(
        epochs=2, batch_size=_BATCH, learning_rate=1e-2, jit_compile=False, verbose=0
    )
    return trainers.StudyConfig(
        dataset="synthetic",
        methods=methods,
        seeds=[0],
        settings=[{"tau": tau} for tau in taus],
        column_key="tau",
        data_options=_DATA,
        teacher_model="mlp",
        student_model="mlp",
        teacher_model_options={"width": 32, "name": "teacher"},
        student_model_options={"width": 8, "name": "student"},
        teacher_train=train,
        student_train=train,
        hyperparameters={"temperature": 4.0, "alpha": 0.9, "label_smoothing": 0.1, "topk": 3},
        method_overrides={},
        teacher_label_smoothing=teacher_label_smoothing,
        load_splits=lambda options, seed: trainers.load_splits("synthetic", options, _BATCH, seed),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A two-column table (τ = 0: teacher only; τ = 0.9: teacher, student, KD), a label-smoothed teacher
    at τ = 0.9, a k-sweep, and the analysis of all of it."""
    root = tmp_path_factory.mktemp("figures")
    plain, smoothed = str(root / "plain"), str(root / "smoothed")
    quiet = lambda message: None
    # Two studies into one directory: the runner keeps each column in its own runs/tau=<τ>/ folder.
    table.run_study(_study([], [0.0]), plain, log=quiet)
    table.run_study(_study(["student", "kd"], [0.9]), plain, log=quiet)
    table.run_study(_study([], [0.9], teacher_label_smoothing=0.1), smoothed, log=quiet)
    sweep = topk_sweep.run(
        plain,
        [2, 8],
        columns=[0.9],
        train_config=training.TrainConfig(
            batch_size=_BATCH, learning_rate=1e-2, jit_compile=False, verbose=0
        ),
        log=quiet,
    )
    request = figures.AnalysisRequest(plain, ls_run_dir=smoothed, temperatures=(1, 4), topk=3)
    summary = figures.analyze_run(request, log=quiet)
    return {"plain": plain, "smoothed": smoothed, "sweep": sweep, "summary": summary}


def _check_png(path):
    with open(path, "rb") as handle:
        content = handle.read()
    assert content.startswith(_PNG_SIGNATURE)
    assert 1000 < len(content) <= _MAX_BYTES, (path, len(content))


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(path, encoding="utf-8") as handle:
        return json.load(handle, parse_constant=refuse)


def test_every_figure_is_written_small_and_listed(runs):
    figures_dir = os.path.join(runs["plain"], "figures")
    expected = {"figure1_high_temperature_seed=0.png", "figure3_tau=0.9.png", "figure1_tau=0.0_seed=0.png"}
    cell = "tau=0.9_seed=0"
    expected |= {f"figure1_{cell}.png", f"figure2_{cell}.png", f"figure2_start_{cell}.png"}
    expected |= {f"geometry_{cell}.png", f"figure4_{cell}.png", f"figure5_{cell}.png"}
    written = {name for name in os.listdir(figures_dir) if name.endswith(".png")}
    assert written == expected
    assert set(runs["summary"]["figures"]) == expected
    for name in expected:
        _check_png(os.path.join(figures_dir, name))


def test_summary_json_matches_the_runs_records(runs):
    summary = _strict_json(os.path.join(runs["plain"], "figures", figures.SUMMARY_JSON))
    assert sorted(summary["cells"]) == ["tau=0.0_seed=0", "tau=0.9_seed=0"]
    for name, cell in summary["cells"].items():
        # The regenerated data and the reloaded models reproduce the accuracies measured in training.
        teacher = cell["teacher"]
        assert teacher["teacher_accuracy"] == pytest.approx(teacher["recorded_test_accuracy"], abs=1e-6)
        assert teacher["data_check"] == "match"
        assert teacher["num_examples"] == _DATA["test_examples"]
        assert set(teacher["block_contrast"]) == {
            "teacher T=1",
            "teacher T=4",
            "top-3 T=4",
            "logit-weight cosine",
        }
        assert set(cell["students"]) == ({"student", "kd"} if name == "tau=0.9_seed=0" else set())
        for method, student in cell["students"].items():
            assert student["test_accuracy"] == pytest.approx(student["recorded_test_accuracy"], abs=1e-6), (
                name,
                method,
            )
    students = summary["cells"]["tau=0.9_seed=0"]["students"]
    # Plain cross-entropy is its own reference: w = 1 for every example, no correlation to report.
    assert students["student"]["rescaling_end"]["w_mean"] == pytest.approx(1.0, abs=1e-5)
    assert students["student"]["rescaling_end"]["pearson"] is None
    assert students["student"]["rescaling_end"]["spearman"] is None
    binned = students["kd"]["rescaling_end"]["binned"]
    assert sum(row["count"] for row in binned) == _DATA["train_examples"]
    assert [row["x_mean"] for row in binned] == sorted(row["x_mean"] for row in binned)
    assert students["kd"]["rescaling_start"]["non_finite"] == 0
    assert students["kd"]["geometry"]["normalized"] is True
    comparison = summary["label_smoothing"]["tau=0.9_seed=0"]
    assert comparison["teachers"] == ["teacher w/o LS", "teacher with LS (ε=0.1)"]
    assert comparison["heatmap_temperature"] == 4.0 and comparison["histogram_temperature"] == 1.0
    assert set(comparison["test_accuracy"]["teacher w/o LS"]) == {"teacher", "student", "kd"}
    assert set(comparison["test_accuracy"]["teacher with LS (ε=0.1)"]) == {"teacher"}


def test_figure2_numbers_are_those_of_the_saved_kd_student(runs):
    # Recompute the KD student's w on the training split from the saved files, independently of the run.
    cell_dir = os.path.join(runs["plain"], "runs", "tau=0.9", "seed=0")
    teacher, _, splits = figure_cells.load_teacher_data(os.path.join(cell_dir, "teacher"))
    student, record = figure_cells.load_student(os.path.join(cell_dir, "kd"))
    inputs = np.concatenate([x for x, _ in splits.train_ordered.as_numpy_iterator()])
    labels = np.concatenate([y for _, y in splits.train_ordered.as_numpy_iterator()])
    loss = trainers.method_loss("kd", record["hyperparameters"], teacher, splits)
    teacher_logits = teacher.predict(inputs, verbose=0)
    w = analysis.rescaling_factors(loss, labels, teacher_logits, student.predict(inputs, verbose=0))
    teacher_probs = analysis.ground_truth_probabilities(teacher_logits, labels, 4.0)
    reported = runs["summary"]["cells"]["tau=0.9_seed=0"]["students"]["kd"]["rescaling_end"]
    assert reported["pearson"] == pytest.approx(analysis.pearson(teacher_probs, w), abs=1e-6)
    assert reported["w_mean"] == pytest.approx(float(np.mean(w)), rel=1e-6)


def test_csv_files_hold_one_row_per_cell_and_matrix(runs):
    figures_dir = os.path.join(runs["plain"], "figures")
    contrast = _read_csv(os.path.join(figures_dir, figures.BLOCK_CONTRAST_CSV))
    # Four matrices per cell, plus the two teachers of the label-smoothing comparison.
    assert len(contrast) == 2 * 4 + 2
    summary_cell = runs["summary"]["cells"]["tau=0.9_seed=0"]["teacher"]["block_contrast"]
    row = next(
        r
        for r in contrast
        if r["tau"] == "0.9" and r["teacher"] == "teacher" and r["matrix"] == "teacher T=4"
    )
    assert float(row["difference"]) == pytest.approx(summary_cell["teacher T=4"]["difference"], rel=1e-9)
    assert float(row["within"]) - float(row["across"]) == pytest.approx(float(row["difference"]), abs=1e-12)
    students = _read_csv(os.path.join(figures_dir, figures.STUDENTS_CSV))
    assert sorted((r["tau"], r["method"]) for r in students) == [("0.9", "kd"), ("0.9", "student")]
    uplift = _read_csv(os.path.join(figures_dir, figures.UPLIFT_CSV))
    assert [int(r["k"]) for r in uplift] == [2, 8]


def test_topk_sweep_rows_and_k_equal_to_m_matches_kd(runs):
    rows = runs["sweep"]
    assert [(r["method"], r["topk"]) for r in rows] == [("kd", ""), ("kd_topk", 2), ("kd_topk", 8)]
    assert all(r["epochs"] == 2 and r["temperature"] == 4.0 and r["alpha"] == 0.9 for r in rows)
    on_disk = _read_csv(os.path.join(runs["plain"], "figures", figures.SWEEP_CSV))
    assert [float(r["test_accuracy"]) for r in on_disk] == pytest.approx([r["test_accuracy"] for r in rows])
    # k = M keeps the whole distribution: the same target, initialisation and data order as KD.
    kd, all_classes = rows[0]["test_accuracy"], rows[2]["test_accuracy"]
    assert all_classes == pytest.approx(kd, abs=2 / _DATA["test_examples"])
    series = runs["summary"]["topk_uplift"]["tau=0.9"]
    assert series["ks"] == [2, 8]
    assert series["uplift"][0] == pytest.approx(100 * (rows[1]["test_accuracy"] - kd), abs=1e-9)


def test_a_label_smoothed_run_on_other_data_is_refused(runs, tmp_path):
    other = str(tmp_path / "other")
    shutil.copytree(runs["smoothed"], other)
    info_path = os.path.join(other, "runs", "tau=0.9", "seed=0", "teacher", trainers.TEACHER_INFO)
    with open(info_path, encoding="utf-8") as handle:
        info = json.load(handle)
    info["data_options"]["test_examples"] = 128
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    with pytest.raises(ValueError, match="other data"):
        figures.analyze_run(
            figures.AnalysisRequest(
                runs["plain"], ls_run_dir=other, figures_dir=str(tmp_path / "f"), columns=[0.9]
            ),
            log=lambda m: None,
        )


def test_bad_arguments_are_refused(runs, tmp_path):
    with pytest.raises(ValueError, match="run_dir"):
        figure_cells.find_cells(str(tmp_path))
    with pytest.raises(ValueError, match="columns"):
        figure_cells.find_cells(runs["plain"], columns=[0.5])
    with pytest.raises(ValueError, match="temperatures"):
        figures.analyze_run(figures.AnalysisRequest(runs["plain"], temperatures=(0.0, 4.0)))
    with pytest.raises(ValueError, match="ks"):
        topk_sweep.run(runs["plain"], [0, 2])
    with pytest.raises(ValueError, match="split"):
        figures.analyze_run(
            figures.AnalysisRequest(runs["plain"], split="dev", figures_dir=str(tmp_path / "f")),
            log=lambda m: None,
        )


def test_binned_means_and_tied_ranks_on_hand_numbers():
    rows = figure_measures.binned_means([0.4, 0.1, 0.3, 0.2], [4.0, 1.0, 3.0, 2.0], bins=2)
    assert [(r["x_low"], r["x_high"], r["y_mean"], r["count"]) for r in rows] == [
        (0.1, 0.2, 1.5, 2),
        (0.3, 0.4, 3.5, 2),
    ]
    np.testing.assert_allclose(analysis._ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    assert analysis.spearman(np.ones(5), np.arange(5.0)) is None
    assert analysis.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


def test_run_reads_the_analyze_values_of_the_configuration(runs, tmp_path):
    figures_dir = str(tmp_path / "from_flags")
    argv = [
        "run.py",
        "--mode=analyze",
        f"--output_dir={runs['plain']}",
        "--taus=0.0",
        "--temperature=2",
        "--topk=2",
        f"--figures_dir={figures_dir}",
    ]
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        options = modes.Run(run_config.from_flags(flags.FLAGS, argv))
    experiments.get("analyze").run(options)
    summary = _strict_json(os.path.join(figures_dir, figures.SUMMARY_JSON))
    assert list(summary["cells"]) == ["tau=0.0_seed=0"]
    assert summary["temperatures"] == [1.0, 2.0] and summary["topk"] == 2
    assert set(summary["cells"]["tau=0.0_seed=0"]["teacher"]["block_contrast"]) == {
        "teacher T=1",
        "teacher T=2",
        "top-2 T=2",
        "logit-weight cosine",
    }
    assert summary["figures"] == ["figure1_tau=0.0_seed=0.png"]
