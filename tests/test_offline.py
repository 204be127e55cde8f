"""`--teacher_cache`: students train on their teacher's outputs computed once, on the same batches in the
same order as online distillation, and write the same results."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from cli_process import TINY, check_ok, run_cli, tiny_ptb

import data
import data.digits
import data.ptb
import data.synthetic
from kd_tf import losses, offline

TABLE = [*TINY, "--methods=student,kd,kd_pt,kd_topk,kd_pt_sim", "--topk=3", "--deterministic"]


def results(directory):
    with open(os.path.join(directory, "results.json")) as handle:
        return json.load(handle)


def without(record, *keys):
    return {key: value for key, value in record.items() if key not in keys}


def _batches(dataset, epochs=2):
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset.repeat(epochs)]


@pytest.mark.parametrize(
    "splits",
    [
        lambda: data.synthetic.load(
            num_classes=8, num_superclasses=2, dim=8, train_examples=96, batch_size=16, seed=3
        ),
        lambda: data.digits.load(batch_size=64, seed=3, augment=False),
    ],
    ids=["synthetic", "digits_noaugment"],
)
def test_batches_with_targets_hold_the_same_examples_in_the_same_order(splits):
    splits = splits()
    ordered_inputs = np.concatenate([np.asarray(x) for x, _ in splits.train_ordered])
    ordered_labels = np.concatenate([np.asarray(y) for _, y in splits.train_ordered])
    # Each example's target row names the example: its position in the ordered pass.
    positions = np.arange(len(ordered_labels), dtype=np.float32)[:, None]
    plain = _batches(splits.train)
    carried = _batches(splits.train_with_targets(positions))
    assert len(plain) == len(carried) > 2
    for (inputs, labels), (carried_inputs, rows) in zip(plain, carried, strict=True):
        np.testing.assert_array_equal(inputs, carried_inputs)
        index = rows[:, 0].astype(int)
        np.testing.assert_array_equal(ordered_labels[index], labels)
        np.testing.assert_array_equal(ordered_inputs[index], inputs)
    assert not np.array_equal(plain[0][1], plain[len(plain) // 2][1])  # reshuffled between the two passes


def test_augmented_images_offer_no_cache_and_say_why():
    splits = data.digits.load(batch_size=64, seed=0, augment=True)
    assert splits.train_with_targets is None
    assert "augments" in offline.refusal(splits)
    assert offline.wanted("auto", splits) is False
    with pytest.raises(offline.CacheUnavailable, match="--noaugment"):
        offline.wanted("on", splits)
    assert data.cache_refusal("digits", {"augment": True}) is not None
    assert data.cache_refusal("digits", {"augment": False}) is None
    assert data.cache_refusal("imagenet", {}) is not None
    assert data.cache_refusal("synthetic", {}) is None


def test_one_rule_decides_every_cache_augmentation_first_then_size():
    splits = data.synthetic.load(num_classes=8, num_superclasses=2, dim=8, train_examples=64, batch_size=16)
    megabytes = offline.logits_megabytes(64, 8)
    assert megabytes == 64 * 8 * 4 / 2**20
    assert offline.wanted("auto", splits, max_mb=megabytes) is True
    assert offline.wanted("auto", splits, max_mb=megabytes / 2) is False
    assert offline.wanted("off", splits) is False
    with pytest.raises(
        offline.CacheUnavailable, match=r"logits over the training examples would take 0\.00 MB, "
    ):
        offline.wanted("on", splits, max_mb=megabytes / 2)
    # The language model's payload goes through the same rule; augmentation is named before size.
    assert offline.decide("auto", None, 37.0, 4096.0, "the payload") is True
    with pytest.raises(
        offline.CacheUnavailable, match="the payload would take 50.00 MB, above --teacher_cache_max_mb=40"
    ):
        offline.decide("on", None, 50.0, 40.0, "the payload")
    with pytest.raises(offline.CacheUnavailable, match="augments"):
        offline.decide("on", "it augments", 50.0, 40.0, "the payload")
    with pytest.raises(ValueError, match="must be one of"):
        offline.decide("always", None, 1.0, 2.0, "the payload")


def test_a_classifier_cache_over_the_limit_is_refused_before_any_work_with_on(tmp_path, monkeypatch):
    from runner import TINY_SYNTHETIC, run_in_process

    from kd_tf.repro import modes

    monkeypatch.chdir(tmp_path)
    argv = [*TINY_SYNTHETIC, "--teacher_cache=on", "--teacher_cache_max_mb=0.001", "--output_dir=out"]
    with pytest.raises(modes.UserError, match=r"would take 0\.01 MB, above --teacher_cache_max_mb=0\.001"):
        run_in_process(argv)
    assert os.listdir(tmp_path) == []


def test_cached_targets_are_what_the_online_distiller_computes():
    splits = data.synthetic.load(num_classes=8, num_superclasses=2, dim=8, train_examples=64, batch_size=16)
    labels = np.concatenate([np.asarray(y) for _, y in splits.train_ordered])
    logits = np.random.default_rng(0).normal(size=(len(labels), 8)).astype(np.float32) * 3
    for loss in (losses.get("kd", temperature=2.0), losses.get("kd_topk", topk=3), losses.get("kd_pt")):
        packed = offline._targets(loss, labels, logits)
        expected = loss.teacher_payload(tf.constant(labels), tf.constant(logits)).numpy()
        np.testing.assert_array_equal(packed[:, 0], labels.astype(np.float32))
        np.testing.assert_array_equal(packed[:, 1:], expected)


@pytest.mark.slow
def test_a_cached_table_writes_the_online_table(tmp_path):
    online, cached = str(tmp_path / "online"), str(tmp_path / "cached")
    check_ok(run_cli([*TABLE, "--teacher_cache=off", f"--output_dir={online}"]))
    check_ok(run_cli([*TABLE, "--teacher_cache=on", f"--output_dir={cached}"]))
    for one, other in zip(results(online), results(cached), strict=True):
        assert without(one, "wall_time_s", "teacher_cache") == without(other, "wall_time_s", "teacher_cache")
        needs_teacher = one["method"] in ("kd", "kd_pt", "kd_topk", "kd_pt_sim")
        assert other.get("teacher_cache") is (needs_teacher if one["role"] == "student" else None)
        assert one.get("teacher_cache") in (False, None)
    teacher = os.path.join(cached, "runs", "tau=0.8", "seed=0", "teacher")
    for split in ("train", "validation", "test"):
        assert os.path.exists(os.path.join(teacher, offline.CACHE_DIR, split, "manifest.json"))
    # Students read their teacher's cache: none builds its own.
    assert not os.path.exists(os.path.join(os.path.dirname(teacher), "kd", offline.CACHE_DIR))


@pytest.mark.slow
def test_a_student_command_reads_the_teachers_cache_or_builds_its_own(tmp_path):
    teacher_dir = str(tmp_path / "teacher")
    check_ok(run_cli([*TINY, "--mode=teacher", f"--output_dir={teacher_dir}"]))
    assert os.path.exists(os.path.join(teacher_dir, offline.CACHE_DIR, "train", "manifest.json"))
    student = [*TINY, "--mode=student", "--method=kd", f"--teacher_dir={teacher_dir}"]
    first = str(tmp_path / "first")
    check_ok(run_cli([*student, f"--output_dir={first}"]))
    assert results(first)[0]["teacher_cache"] is True
    assert not os.path.exists(os.path.join(first, offline.CACHE_DIR))
    # A teacher whose cache is gone (or stale): the student builds one in its own directory.
    manifest = os.path.join(teacher_dir, offline.CACHE_DIR, "train", "manifest.json")
    os.remove(manifest)
    second = str(tmp_path / "second")
    check_ok(run_cli([*student, f"--output_dir={second}"]))
    assert os.path.exists(os.path.join(second, offline.CACHE_DIR, "train", "manifest.json"))
    assert without(results(first)[0], "wall_time_s") == without(results(second)[0], "wall_time_s")


@pytest.mark.slow
def test_ptb_kd_topk_student_reads_a_topk_cache_and_matches_the_online_one(tmp_path):
    tiny = [*tiny_ptb(tmp_path / "ptb"), "--deterministic"]
    teacher_dir = str(tmp_path / "teacher")
    check_ok(run_cli(["--flagfile=configs/ptb_teacher.flags", *tiny, f"--output_dir={teacher_dir}"]))
    student = ["--flagfile=configs/ptb_kd_topk.flags", *tiny, f"--teacher_dir={teacher_dir}"]
    runs = {}
    for mode in ("on", "off"):
        runs[mode] = str(tmp_path / mode)
        completed = check_ok(run_cli([*student, f"--teacher_cache={mode}", f"--output_dir={runs[mode]}"]))
        assert ("Caching the teacher's outputs" in completed.stdout) is (mode == "on")
    cached, online = results(runs["on"])[0], results(runs["off"])[0]
    assert cached["teacher_cache"] is True and online["teacher_cache"] is False
    for key in ("validation_perplexity", "test_perplexity"):
        assert cached[key] == pytest.approx(online[key], rel=1e-4)
    # The payload is the one cache format of every dataset, in the student's directory, and a rerun of the
    # student (here: a new run into it) reads it back instead of running the teacher again.
    manifest = json.load(open(os.path.join(runs["on"], "teacher_cache", "manifest.json")))
    assert manifest["method"] == "kd_topk" and manifest["payload_shape"][-1] == 2 * 5
    again = check_ok(run_cli([*student, "--teacher_cache=on", f"--output_dir={runs['on']}", "--overwrite"]))
    assert "Caching the teacher's outputs" not in again.stdout
    assert results(runs["on"])[0]["test_perplexity"] == pytest.approx(cached["test_perplexity"], rel=1e-6)
    # KD's full logits over the vocabulary do not fit a 10 kB budget: refused with `on`, online with `auto`.
    kd = [
        "--flagfile=configs/ptb_kd.flags",
        *tiny,
        f"--teacher_dir={teacher_dir}",
        "--teacher_cache_max_mb=0.01",
    ]
    refused = run_cli([*kd, "--teacher_cache=on", f"--output_dir={tmp_path / 'kd_on'}"])
    assert refused.returncode == 2 and "above --teacher_cache_max_mb=0.01" in refused.stderr
    check_ok(run_cli([*kd, f"--output_dir={tmp_path / 'kd_auto'}"]))
    assert results(str(tmp_path / "kd_auto"))[0]["teacher_cache"] is False


@pytest.mark.slow
def test_a_capped_run_distils_online(tmp_path):
    output_dir = str(tmp_path / "capped")
    check_ok(run_cli([*TINY, "--methods=kd", "--steps_per_epoch=2", f"--output_dir={output_dir}"]))
    student = [record for record in results(output_dir) if record["role"] == "student"]
    assert [record["teacher_cache"] for record in student] == [False]
