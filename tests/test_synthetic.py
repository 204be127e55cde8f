"""Tests of the synthetic task: geometry, labels, determinism, balance, pipelines and validation."""

import numpy as np
import pytest

from data import synthetic

_SMALL = dict(num_classes=12, num_superclasses=3, dim=20, difficulty=2, seed=3)


def _task(tau, **overrides):
    options = dict(_SMALL, tau=tau) | overrides
    seed = options.pop("seed")
    return synthetic.make_task(rng=np.random.default_rng(seed), **options)


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9])
def test_exact_geometry_when_dim_allows(tau):
    task = _task(tau)
    vectors, bases, parents = task.class_vectors, task.superclass_bases, task.class_parents
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(bases @ bases.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.sum(vectors * bases[parents], axis=1), tau, atol=1e-12)
    cosines = vectors @ vectors.T
    same_parent = parents[:, None] == parents[None, :]
    off_diagonal = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(cosines[same_parent & off_diagonal], tau**2, atol=1e-12)
    np.testing.assert_allclose(cosines[~same_parent], 0.0, atol=1e-12)


def test_class_parents_group_consecutive_classes():
    np.testing.assert_array_equal(_task(0.5).class_parents, np.repeat([0, 1, 2], 4))


def test_small_dim_keeps_cosine_with_own_basis():
    # dim < K + M: the offsets cannot all be orthogonal, but each is orthogonal to its own basis.
    task = _task(0.7, dim=8)
    np.testing.assert_allclose(
        np.sum(task.class_vectors * task.superclass_bases[task.class_parents], axis=1), 0.7, atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.norm(task.class_vectors, axis=1), 1.0, atol=1e-12)


def test_difficulty_zero_labels_are_the_linear_argmax():
    task = _task(0.5, difficulty=0)
    inputs, labels = task.sample(2000, np.random.default_rng(0))
    np.testing.assert_array_equal(labels, np.argmax(inputs @ task.class_vectors.T, axis=1))
    assert task.alphas.shape == (0,) and task.betas.shape == (0,)


def test_labels_follow_the_sine_formula():
    task = _task(0.5, difficulty=3)
    inputs, labels = task.sample(500, np.random.default_rng(1))
    projections = inputs.astype(np.float64) @ task.class_vectors.T
    scores = projections + sum(
        np.sin(alpha * projections + beta) for alpha, beta in zip(task.alphas, task.betas, strict=True)
    )
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=1))
    # The sine terms must change some labels, or the difficulty would mean nothing here.
    assert np.mean(labels != np.argmax(projections, axis=1)) > 0.01


def test_arrays_are_deterministic_per_seed_and_differ_across_seeds():
    options = dict(_SMALL, tau=0.5, train_examples=300, validation_examples=50, test_examples=50)
    first, again = synthetic.arrays(**options), synthetic.arrays(**options)
    for name in ("x_train", "y_train", "x_validation", "y_validation", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.task.class_vectors, again.task.class_vectors)
    other = synthetic.arrays(**(options | {"seed": 4}))
    assert not np.allclose(first.x_train, other.x_train)
    assert not np.allclose(first.task.class_vectors, other.task.class_vectors)
    assert first.x_train.dtype == np.float32 and first.y_train.dtype == np.int32
    assert first.x_train.shape == (300, 20) and first.y_test.shape == (50,)
    # The three splits are independent draws.
    assert not np.allclose(first.x_validation, first.x_test)


def test_task_seed_fixes_the_task_while_seed_draws_new_data():
    options = dict(_SMALL, tau=0.5, train_examples=200, validation_examples=20, test_examples=20)
    reference = synthetic.arrays(**options)  # seed 3 draws its own task when no task_seed is given
    moved = synthetic.arrays(**(options | {"seed": 7, "task_seed": 3}))
    np.testing.assert_array_equal(moved.task.class_vectors, reference.task.class_vectors)
    np.testing.assert_array_equal(moved.task.alphas, reference.task.alphas)
    assert not np.allclose(moved.x_train, reference.x_train)
    other_task = synthetic.arrays(**(options | {"task_seed": 4}))
    assert not np.allclose(other_task.task.class_vectors, reference.task.class_vectors)
    np.testing.assert_array_equal(other_task.x_train, reference.x_train)


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.9])
def test_default_preset_has_every_class_and_is_balanced(tau):
    data = synthetic.arrays(tau=tau)
    counts = np.bincount(data.y_train, minlength=data.task.num_classes)
    expected = len(data.y_train) / data.task.num_classes
    # Exact geometry makes every class equally likely; only sampling noise remains.
    assert counts.min() > 0.6 * expected, counts
    assert counts.max() < 1.4 * expected, counts


def test_load_returns_batched_splits():
    splits = synthetic.load(
        **_SMALL,
        tau=0.5,
        train_examples=100,
        validation_examples=30,
        test_examples=40,
        batch_size=32,
    )
    data = synthetic.arrays(**_SMALL, tau=0.5, train_examples=100, validation_examples=30, test_examples=40)
    assert splits.num_classes == 12 and splits.train_examples == 100 and not splits.augmented
    np.testing.assert_array_equal(splits.class_parents, np.repeat([0, 1, 2], 4))
    train_batches = [labels.numpy() for _, labels in splits.train]
    assert [len(labels) for labels in train_batches] == [32, 32, 32]
    first_epoch = np.concatenate(train_batches)
    second_epoch = np.concatenate([labels.numpy() for _, labels in splits.train])
    assert not np.array_equal(first_epoch, second_epoch), "train must reshuffle every epoch"
    ordered_inputs = np.concatenate([inputs.numpy() for inputs, _ in splits.train_ordered])
    np.testing.assert_array_equal(ordered_inputs, data.x_train)
    validation_labels = np.concatenate([labels.numpy() for _, labels in splits.validation])
    test_labels = np.concatenate([labels.numpy() for _, labels in splits.test])
    np.testing.assert_array_equal(validation_labels, data.y_validation)
    np.testing.assert_array_equal(test_labels, data.y_test)


@pytest.mark.parametrize(
    "overrides, argument",
    [
        ({"tau": 1.0}, "tau"),
        ({"tau": -0.1}, "tau"),
        ({"num_classes": 10}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_superclasses": 0}, "num_superclasses"),
        ({"dim": 2}, "dim"),
        ({"difficulty": -1}, "difficulty"),
        ({"train_examples": 0}, "train_examples"),
        ({"validation_examples": -5}, "validation_examples"),
        ({"test_examples": 2.5}, "test_examples"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 500}, "batch_size"),
        ({"task_seed": -1}, "task_seed"),
    ],
)
def test_load_refuses_bad_arguments_by_name(overrides, argument):
    options = dict(_SMALL, tau=0.5, train_examples=100, batch_size=10) | overrides
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: .*{argument}="):
        synthetic.load(**options)


def _label_agreement_with_the_linear_rule(difficulty: int, tau: float) -> float:
    linear, curved = (
        synthetic.arrays(difficulty=d, tau=tau, task_seed=0, seed=0, validation_examples=1, test_examples=1)
        for d in (0, difficulty)
    )
    return float(np.mean(linear.y_train == curved.y_train))


def test_the_default_task_is_linear_at_difficulty_two_and_curved_at_four():
    """What BUILD.md and RESULTS.md report about `--task_seed=0` (5,000 training examples each)."""
    assert _label_agreement_with_the_linear_rule(2, 0.0) == 1.0
    assert _label_agreement_with_the_linear_rule(2, 0.5) == pytest.approx(0.9994)
    assert _label_agreement_with_the_linear_rule(2, 0.9) == pytest.approx(0.9442)
    assert _label_agreement_with_the_linear_rule(3, 0.0) == pytest.approx(0.5832)
    assert _label_agreement_with_the_linear_rule(4, 0.0) == pytest.approx(0.4406)


def test_splits_take_a_slice_and_an_endless_stream():
    data = synthetic.arrays(**_SMALL, tau=0.5, train_examples=100)
    splits = synthetic.splits(data, 10, seed=1, train_count=30, train_offset=50, examples_per_epoch=70)
    assert splits.train_examples == 70
    ordered = np.concatenate([inputs for inputs, _ in splits.train_ordered.as_numpy_iterator()])
    np.testing.assert_array_equal(ordered, data.x_train[50:80])
    # Endless: more batches than the slice holds, each drawn from it.
    batches = list(splits.train.take(10).as_numpy_iterator())
    seen = {tuple(row) for inputs, _ in batches for row in inputs}
    assert len(batches) == 10 and seen <= {tuple(row) for row in data.x_train[50:80]}
    with pytest.raises(ValueError, match="`batch_size` must not exceed `train_examples`"):
        synthetic.splits(data, 40, seed=1, train_count=30)
