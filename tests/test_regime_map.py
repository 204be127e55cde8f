"""`--mode=regime_map`: the per-cell selection and the claims against hand-computed values, and the quick map
run the way a user runs it."""

import csv
import json
import os
import shlex

import numpy as np
import pytest
from cli_process import REGIME_MAP, ROOT, run_cli
from runner import assert_wrote_its_plan
from test_documented_commands import ONE_JOB, QUICK_AS_FLAGS

from kd_tf.repro import regime_map_summary


def record(n, tau, seed, method, test, validation, teacher, temperature=None, alpha=None, width=8):
    return {
        "train_examples": n,
        "difficulty": 2,
        "tau": tau,
        "seed": seed,
        "width": width,
        "method": method,
        "temperature": temperature,
        "alpha": alpha,
        "test_accuracy": test,
        "best_validation_accuracy": validation,
        "teacher_test_accuracy": teacher,
        "data_measures": {"differs_from_linear_argmax": 0.3},
    }


def test_each_method_stands_by_its_best_validation_grid_point():
    records = [
        record(100, 0.0, 0, "kd", test=0.50, validation=0.40, teacher=0.6, temperature=1, alpha=0.3),
        record(100, 0.0, 0, "kd", test=0.45, validation=0.55, teacher=0.6, temperature=4, alpha=0.3),
        record(100, 0.0, 0, "kd", test=0.70, validation=0.55, teacher=0.6, temperature=4, alpha=0.9),  # a tie
    ]
    (chosen,) = regime_map_summary.select(records)
    assert (chosen["temperature"], chosen["alpha"], chosen["test_accuracy"]) == (4, 0.3, 0.45)


def test_the_claims_are_the_papers_differences_over_seeds():
    # Two seeds at τ = 0 and τ = 0.9; accuracies chosen so each claim has a known value.
    table = {
        # (tau, seed): teacher, student, kd, kd_pt, kd_sim
        (0.0, 0): (0.60, 0.40, 0.50, 0.52, 0.41),
        (0.0, 1): (0.62, 0.42, 0.56, 0.54, 0.42),
        (0.9, 0): (0.70, 0.50, 0.66, 0.60, 0.55),
        (0.9, 1): (0.70, 0.50, 0.64, 0.60, 0.53),
    }
    records = []
    for (tau, seed), (teacher, *accuracies) in table.items():
        for method, test in zip(("student", "kd", "kd_pt", "kd_sim"), accuracies, strict=True):
            records.append(record(100, tau, seed, method, test, validation=0.5, teacher=teacher))
    (row,) = regime_map_summary.summarize(records)
    # KD-pt − KD at τ = 0: +2 and −2 points.
    assert row["kd_pt_minus_kd_at_low_tau"] == pytest.approx(0.0)
    assert row["kd_pt_minus_kd_at_low_tau_std"] == pytest.approx(2.0)
    # KD-sim − Student: τ = 0.9 gives 5 and 3 points, τ = 0 gives 1 and 0: a rise of 4 and 3.
    assert row["kd_sim_gain_rise"] == pytest.approx(3.5)
    # KD's share: τ = 0 gains 10 and 14 points of gaps 20 and 20; τ = 0.9 gains 16, 14 of 20, 20.
    assert row["kd_share_of_gap@tau=0"] == pytest.approx(12 / 20)
    assert row["kd_share_of_gap@tau=0.9"] == pytest.approx(15 / 20)
    found = regime_map_summary.holds([row], [0.0, 0.9])
    assert found["kd_pt_minus_kd_at_low_tau"] == []  # 0 ± 2: not clear of the seed spread
    assert len(found["kd_sim_gain_rise"]) == 1  # 3.5 ± 0.5
    assert regime_map_summary.holds([{**row, "kd_pt_minus_kd_at_low_tau_std": 0.0}], [0.0, 0.9])[
        "kd_pt_minus_kd_at_low_tau"
    ]  # exactly 0 with no spread: KD-pt ≥ KD holds
    assert [r["tau"] for r in found["kd_share_of_gap"]] == [0.0, 0.9]


def test_kds_share_is_undefined_without_a_gap():
    records = [
        record(100, 0.0, 0, "student", 0.500, 0.5, teacher=0.505),
        record(100, 0.0, 0, "kd", 0.600, 0.5, teacher=0.505),
    ]
    (row,) = regime_map_summary.summarize(records)
    assert np.isnan(row["kd_share_of_gap@tau=0"])
    assert regime_map_summary.holds([row], [0.0])["kd_share_of_gap"] == []


@pytest.mark.slow
def test_the_quick_map_runs_as_a_user_runs_it(tmp_path, monkeypatch):
    # The documented command at `--quick`'s size: `--quick`'s values as flags, which beat the flagfile's.
    monkeypatch.chdir(ROOT)  # the flagfile's path is relative, as the docs print it
    output_dir = tmp_path / "map"
    argv = [
        *shlex.split(REGIME_MAP)[2:],
        *QUICK_AS_FLAGS["regime_map"],
        *ONE_JOB,
        f"--output_dir={output_dir}",
    ]
    done = run_cli(argv, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_wrote_its_plan(output_dir, argv)  # what --dry_run prints, written before it trained
    assert "labels off the linear argmax" in done.stdout  # every teacher's task, measured
    rows = list(csv.DictReader(open(output_dir / "regime_map.csv")))
    assert all(0 < float(row["differs_from_linear_argmax"]) < 1 for row in rows)  # the measures as columns
    # 2 sizes × 2 τ × 1 seed groups; 1 width × (Student + 3 methods × 2 temperatures) students each.
    assert len(rows) == 4 * 7
    assert {row["method"] for row in rows} == {"student", "kd", "kd_pt", "kd_sim"}
    results = json.load(open(output_dir / "results.json"))
    distilled = [r for r in results["records"] if r["method"] in ("kd", "kd_pt")]
    assert distilled and all(r["teacher_cache"] for r in distilled)  # students read the teacher's cache
    # The map's default task kind: one sine term per class already moves labels off the linear rule.
    assert all(r["data_measures"]["differs_from_linear_argmax"] > 0.05 for r in results["records"])
    assert len(results["summary"]) == 2  # (difficulty, size) × width cells of the map
    claims = list(csv.DictReader(open(output_dir / "regime_map_claims.csv")))
    assert {"kd_pt_minus_kd_at_low_tau", "kd_sim_gain_rise", "kd_share_of_gap@tau=0"} <= set(claims[0])
    text = open(output_dir / "results.md").read()
    assert "## Where each claim holds" in text and text.count("holds in") == 3
    assert os.path.getsize(output_dir / "regime_map.png") > 1000
    # A rerun is refused rather than replacing the map.
    again = run_cli(argv)
    assert again.returncode != 0 and "already holds results" in again.stderr


@pytest.mark.slow
def test_the_map_distils_online_where_the_user_turns_the_teacher_cache_off(tmp_path):
    output_dir = tmp_path / "online"
    small = ["--train_sizes=128", "--taus=0.8", "--methods=kd", "--grid_temperatures=4"]
    argv = [
        "--mode=regime_map",
        "--quick",
        *small,
        "--teacher_cache=off",
        "--jobs=1",
        f"--output_dir={output_dir}",
    ]
    done = run_cli(argv, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.load(open(output_dir / "results.json"))["records"]
    assert [r["method"] for r in records] == ["student", "kd"]
    assert not any(r["teacher_cache"] for r in records)  # the teacher ran at every step of every student
    assert not any("teacher_cache" in dirs for _, dirs, _ in os.walk(output_dir))  # and nothing was cached


def test_the_maps_grid_is_a_preset_that_a_users_value_replaces():
    plan = run_cli(["--mode=regime_map", "--dry_run", "--seeds=4,5,6"])
    assert plan.returncode == 0, plan.stderr
    assert "task_kind = 'per_class_sine' [preset]" in plan.stdout
    assert "train_sizes = (5000, 50000) [preset]" in plan.stdout
    assert "seeds: 4, 5, 6 [command line]" in plan.stdout
