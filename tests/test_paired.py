"""Paired differences between rows of finished tables (`kd_tf.repro.paired`)."""

import json

import pytest

from kd_tf.repro import paired


def _record(method, seed, accuracy, role="student"):
    return {"role": role, "method": method, "seed": seed, "dataset": "d", "test_accuracy": accuracy}


RECORDS = [
    _record("teacher", 0, 0.90, role="teacher"),
    _record("teacher", 1, 0.92, role="teacher"),
    _record("student", 0, 0.80),
    _record("student", 1, 0.84),
    _record("kd", 0, 0.81),
    _record("kd", 1, 0.87),
    _record("kd", 2, 0.99),  # no Student of seed 2: left out of the pairs
]


def test_rows_are_paired_seed_by_seed():
    matched = paired.differences(
        paired.scores(RECORDS, "kd", "dataset", "test_accuracy"),
        paired.scores(RECORDS, "student", "dataset", "test_accuracy"),
    )
    assert [key for key, _ in matched] == [("d", 0), ("d", 1)]
    assert [value for _, value in matched] == pytest.approx([1.0, 3.0])
    # mean 2, sample std sqrt(2): the spread of the differences, not of either row
    assert paired.describe("KD − Student", matched) == (
        "KD − Student: +2.00 ± 1.41 points (2 paired; per seed +1.00, +3.00)"
    )


def test_a_table_lists_every_row_against_the_student_only_with_several_seeds():
    lines = paired.markdown_against(RECORDS, "student", "dataset", "test_accuracy").splitlines()
    assert lines == [
        "- Teacher − Student: +9.00 ± 1.41 points (2 paired; per seed +10.00, +8.00)",
        "- KD − Student: +2.00 ± 1.41 points (2 paired; per seed +1.00, +3.00)",
    ]
    one_seed = [record for record in RECORDS if record["seed"] == 0]
    assert paired.markdown_against(one_seed, "student", "dataset", "test_accuracy") == ""


def test_the_command_pairs_rows_of_one_run_or_of_two(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(RECORDS))
    second.write_text(json.dumps([_record("kd", 0, 0.85), _record("kd", 1, 0.85)]))
    assert paired.main([str(first), "kd-student", "teacher-kd"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "KD − Student: +2.00 ± 1.41 points (2 paired; per seed +1.00, +3.00)",
        "Teacher − KD: +7.00 ± 2.83 points (2 paired; per seed +9.00, +5.00)",
    ]
    assert paired.main([str(first), "kd-kd", f"--against={second}"]) == 0
    assert capsys.readouterr().out.startswith("KD − KD (B from --against): -1.00 ± 4.24 points")
    assert paired.main([str(first), "kd-lss"]) == 2
    assert "'kd-lss' is not A-B" in capsys.readouterr().err
