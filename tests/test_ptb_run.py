"""`run.py --dataset=ptb`: an AWD-LSTM teacher, then a KD-topk student, on a toy PTB-format corpus."""

import json
import os

import numpy as np
from runner import run_in_process

import data.ptb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--embedding_size=16",
    "--hidden_size=24",
    "--epochs=1",
    "--max_windows_per_epoch=4",
    "--bptt=12",
    "--progress=none",
]


def test_teacher_then_kd_topk_student_on_a_toy_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    corpus_dir = data.ptb.write_toy_corpus(
        str(tmp_path / "ptb"), train_lines=200, valid_lines=30, test_lines=30
    )
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    run_in_process(
        [
            "--flagfile=configs/ptb_teacher.flags",
            *TINY,
            f"--data_dir={corpus_dir}",
            f"--output_dir={teacher_dir}",
        ]
    )
    run_in_process(
        [
            "--flagfile=configs/ptb_kd_topk.flags",
            *TINY,
            "--learning_rate=20",
            f"--data_dir={corpus_dir}",
            f"--teacher_dir={teacher_dir}",
            f"--output_dir={student_dir}",
        ]
    )
    info = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    assert info["dataset"] == "ptb" and info["model"] == "awd_lstm"
    (record,) = json.load(open(os.path.join(student_dir, "results.json")))
    assert record["method"] == "kd_topk" and record["hyperparameters"]["topk"] == 5
    assert np.isfinite(record["validation_perplexity"]) and record["validation_perplexity"] > 1
    assert "| student | kd_topk |" in open(os.path.join(student_dir, "results.md")).read()
