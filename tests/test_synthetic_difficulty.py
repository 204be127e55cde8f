"""Tests of the synthetic task's kinds ("shared_sine", "per_class_sine") and of `label_nonlinearity`."""

import hashlib
import json

import numpy as np
import pytest

from data import synthetic

_LEVELS = (0, 1, 2, 4, 8)
_TINY_SPLITS = dict(train_examples=1, validation_examples=1, test_examples=1)
_SMALL = dict(num_classes=12, num_superclasses=3, dim=20, tau=0.5, train_examples=100, batch_size=10)


def _task(task_seed, difficulty, **options):
    """The task that `--task_seed=task_seed` builds (default geometry unless `options` say otherwise)."""
    return synthetic.arrays(task_seed=task_seed, difficulty=difficulty, **_TINY_SPLITS, **options).task


def _labels_digest(data):
    labels = np.concatenate([data.y_train, data.y_validation, data.y_test]).astype("<i4")
    return hashlib.sha256(labels.tobytes()).hexdigest()


# Computed with the code before `task_kind` existed: the default must keep giving these tasks.
_PINNED = [
    (
        dict(task_seed=0, seed=0),
        "65774e3a6020543979b5f0470370eda523057c4550f4dc13bbe1a7d89a17e3ec",
        [-1.292736362596926, -1.010108312447567],
        [-2.0016325545753366, -0.42633636515044787],
    ),
    (
        dict(task_seed=2, seed=5, difficulty=4),
        "4b22aff88d9122283f6c4c5b8f1456e906ec80c38de5cdb12e5d52262c2e5717",
        [-1.1604348881285669, -1.80392309694552, 0.5396549131825817, -1.7382996293762625],
        [0.3141698024387571, -0.8608473285552596, -1.339789270130006, 1.8442151903127637],
    ),
]


@pytest.mark.parametrize("options, digest, alphas, betas", _PINNED)
def test_the_default_kind_is_the_original_task(options, digest, alphas, betas):
    sizes = dict(train_examples=2000, validation_examples=500, test_examples=500)
    default = synthetic.arrays(**sizes, **options)
    explicit = synthetic.arrays(**sizes, **options, task_kind="shared_sine")
    assert _labels_digest(default) == digest
    np.testing.assert_array_equal(default.task.alphas, alphas)
    np.testing.assert_array_equal(default.task.betas, betas)
    assert default.task.task_kind == "shared_sine" and default.task.amplitude == 1.0
    for name in ("x_train", "y_train", "x_validation", "y_validation", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(default, name), getattr(explicit, name))
    np.testing.assert_array_equal(default.task.class_vectors, explicit.task.class_vectors)


def test_kinds_share_the_geometry_and_per_class_terms_nest():
    rng_state = np.random.SeedSequence(3)
    shared = synthetic.make_task(40, 4, 64, 0.5, 2, np.random.default_rng(rng_state))
    easy = synthetic.make_task(
        40, 4, 64, 0.5, 3, np.random.default_rng(rng_state), task_kind="per_class_sine"
    )
    hard = synthetic.make_task(
        40, 4, 64, 0.5, 8, np.random.default_rng(rng_state), task_kind="per_class_sine"
    )
    for name in ("superclass_bases", "class_vectors", "class_parents"):
        np.testing.assert_array_equal(getattr(easy, name), getattr(shared, name))
        np.testing.assert_array_equal(getattr(hard, name), getattr(shared, name))
    assert hard.alphas.shape == hard.betas.shape == (8, 40)
    # An easier task's terms are the first terms of a harder one.
    np.testing.assert_array_equal(hard.alphas[:3], easy.alphas)
    np.testing.assert_array_equal(hard.betas[:3], easy.betas)
    low, high = synthetic.PER_CLASS_FREQUENCIES
    assert np.all((hard.alphas >= low) & (hard.alphas < high))
    assert np.all((hard.betas >= 0) & (hard.betas < 2 * np.pi))


def test_per_class_labels_follow_the_formula():
    task = _task(1, 3, task_kind="per_class_sine")
    inputs, labels = task.sample(1000, np.random.default_rng(2))
    projections = inputs.astype(np.float64) @ task.class_vectors.T
    scores = projections + sum(
        synthetic.PER_CLASS_AMPLITUDE * np.sin(task.alphas[i][None, :] * projections + task.betas[i][None, :])
        for i in range(3)
    )
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=1))


@pytest.mark.parametrize("tau, dim", [(0.0, 64), (0.5, 64), (0.9, 64), (0.5, 16)])
def test_per_class_difficulty_zero_is_exactly_linear(tau, dim):
    task = _task(4, 0, tau=tau, dim=dim, task_kind="per_class_sine")
    assert task.alphas.shape == (0, 40)
    inputs = np.random.default_rng(0).standard_normal((5000, dim))
    np.testing.assert_array_equal(task.labels(inputs), np.argmax(inputs @ task.class_vectors.T, axis=1))
    assert synthetic.label_nonlinearity(task, num_inputs=4000)["differs_from_linear_argmax"] == 0.0


@pytest.mark.parametrize("task_kind", synthetic.TASK_KINDS)
def test_the_measure_finds_linear_tasks_linear(task_kind):
    measured = synthetic.label_nonlinearity(_task(0, 0, task_kind=task_kind))
    assert measured["differs_from_linear_argmax"] == 0.0
    # Measured 0.990 (task seed 0) to 0.994 (task seed 4) at the default geometry.
    assert measured["linear_accuracy"] >= 0.97
    assert measured["largest_class_share"] < 1.5 / 40 and measured["smallest_class_share"] > 0.5 / 40


@pytest.mark.parametrize("task_seed", range(5))
def test_per_class_difficulty_raises_the_nonlinearity_for_every_seed(task_seed):
    measured = [
        synthetic.label_nonlinearity(_task(task_seed, level, task_kind="per_class_sine")) for level in _LEVELS
    ]
    differs = [m["differs_from_linear_argmax"] for m in measured]
    accuracy = [m["linear_accuracy"] for m in measured]
    # Consecutive levels differ by 0.03 or more in both measures for seeds 0-9; the sampling noise of
    # 20,000 inputs is about 0.005.
    assert all(easier < harder for easier, harder in zip(differs, differs[1:], strict=False)), differs
    assert all(easier > harder for easier, harder in zip(accuracy, accuracy[1:], strict=False)), accuracy
    assert differs[0] == 0.0 and differs[1] > 0.1 and differs[-1] > 0.4, differs
    # Balance: no class labels more than 3 times, or less than a third of, its uniform share.
    assert max(m["largest_class_share"] for m in measured) < 3 / 40, measured
    assert min(m["smallest_class_share"] for m in measured) > 1 / (3 * 40), measured


def test_shared_sine_difficulty_depends_on_the_seed():
    """Why "per_class_sine" exists: at `m_d = 2` the original task is linear for one seed, not another."""
    linear = synthetic.label_nonlinearity(_task(0, 2), num_inputs=4000)
    curved = synthetic.label_nonlinearity(_task(1, 2), num_inputs=4000)
    assert linear["differs_from_linear_argmax"] < 0.01 < 0.5 < curved["differs_from_linear_argmax"]


def test_the_measure_is_deterministic_per_seed():
    task = _task(2, 2, task_kind="per_class_sine")
    first = synthetic.label_nonlinearity(task, num_inputs=3000, seed=1)
    assert first == synthetic.label_nonlinearity(task, num_inputs=3000, seed=1)
    assert first != synthetic.label_nonlinearity(task, num_inputs=3000, seed=2)
    assert set(first) >= {"differs_from_linear_argmax", "linear_accuracy", "largest_class_share"}
    assert all(isinstance(value, float) and 0.0 <= value <= 1.0 for value in first.values())


def test_load_builds_the_kind_it_is_given():
    options = dict(_SMALL, difficulty=2, validation_examples=30, test_examples=40, seed=1)
    splits = synthetic.load(**options, task_kind="per_class_sine")
    data = synthetic.arrays(**options, task_kind="per_class_sine")
    assert data.task.task_kind == "per_class_sine"
    test_labels = np.concatenate([labels.numpy() for _, labels in splits.test])
    np.testing.assert_array_equal(test_labels, data.y_test)
    assert not np.array_equal(data.y_test, synthetic.arrays(**options).y_test)


@pytest.mark.parametrize("task_kind", ["per_class", "", None, "SHARED_SINE"])
def test_an_unknown_kind_is_refused_by_name(task_kind):
    pattern = "`task_kind`.*Received: .*task_kind="
    with pytest.raises(ValueError, match=pattern):
        synthetic.load(**_SMALL, task_kind=task_kind)
    with pytest.raises(ValueError, match=pattern):
        synthetic.arrays(task_kind=task_kind)
    with pytest.raises(ValueError, match=pattern):
        synthetic.make_task(8, 2, 10, 0.5, 1, np.random.default_rng(0), task_kind=task_kind)


@pytest.mark.parametrize("num_inputs", [0, 1, 2.5, True])
def test_the_measure_refuses_too_few_inputs(num_inputs):
    with pytest.raises(ValueError, match="`num_inputs`.*Received: num_inputs="):
        synthetic.label_nonlinearity(_task(0, 0), num_inputs=num_inputs)


@pytest.mark.slow
def test_every_synthetic_run_records_and_prints_its_label_nonlinearity(tmp_path):
    """`run.py --task_kind=...` as a user runs it: the teacher's progress line, the table's notes and every
    record say how far the task's labels are from linear, the numbers `synthetic.measures` gives."""
    from cli_process import TINY, run_cli

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    common = [*TINY, "--task_kind=per_class_sine", "--difficulty=4"]
    teacher = run_cli([*common, "--mode=teacher", f"--output_dir={teacher_dir}"])
    assert teacher.returncode == 0, teacher.stderr
    (record,) = json.load(open(teacher_dir / "results.json"))
    options = record["data_options"]
    assert options["task_kind"] == "per_class_sine" and options["difficulty"] == 4
    expected = synthetic.measures(options, record["seed"])
    assert record["data_measures"] == pytest.approx(expected)
    assert expected["differs_from_linear_argmax"] > 0.1  # 4 per-class terms move many labels
    line = f"labels off the linear argmax: {100 * expected['differs_from_linear_argmax']:.1f}% of inputs"
    assert line in teacher.stdout and line in open(teacher_dir / "results.md").read()
    # The student distils on the teacher's task (its kind comes from the teacher) and records it too.
    student = run_cli(
        [
            *TINY,
            "--difficulty=4",
            "--mode=student",
            f"--teacher_dir={teacher_dir}",
            f"--output_dir={student_dir}",
        ]
    )
    assert student.returncode == 0, student.stderr
    (record,) = json.load(open(student_dir / "results.json"))
    assert record["data_options"]["task_kind"] == "per_class_sine"
    assert record["data_measures"] == pytest.approx(expected)
    # Asking for another kind than the teacher's task is refused.
    other = run_cli(
        [
            *common,
            "--task_kind=shared_sine",
            "--mode=student",
            f"--teacher_dir={teacher_dir}",
            "--output_dir=x",
        ]
    )
    assert other.returncode != 0 and "task_kind='per_class_sine'" in other.stderr + other.stdout
