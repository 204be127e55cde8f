"""Tests for kd_tf.analysis on constructed teachers, kernels and students with known answers."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_tf import analysis

# 12 classes in 4 super-classes of 3; parents interleaved so that sorting by super-class matters.
NUM_CLASSES = 12
PARENTS = np.array([0, 1, 2, 3] * 3)


def _teacher_logits(structured: bool, examples_per_class: int = 40, seed: int = 0):
    """Logits peaked on the true class; `structured` adds a bump on the true class's siblings."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), examples_per_class)
    logits = 6.0 * np.eye(NUM_CLASSES)[labels] + 0.3 * rng.standard_normal((labels.size, NUM_CLASSES))
    if structured:
        siblings = (PARENTS[labels][:, None] == PARENTS[None, :]).astype(np.float64)
        logits += 3.0 * siblings
    return logits, labels


def _kd_gradient(labels, teacher_logits, student_logits, alpha, temperature, target):
    """`(1 - λ)(p - y) + λ T (p^T - q̃)`, the logit gradient of PAPER.md (eq. 2 with T²)."""
    one_hot = np.eye(student_logits.shape[1])[labels]
    probs = analysis.softmax(student_logits)
    soft_probs = analysis.softmax(student_logits, temperature)
    return (1 - alpha) * (probs - one_hot) + alpha * temperature * (soft_probs - target)


# Basic numbers.


def test_softmax_and_pearson_hand_values():
    np.testing.assert_allclose(
        analysis.softmax([[0.0, np.log(3.0)]], temperature=1.0), [[0.25, 0.75]], rtol=1e-12
    )
    np.testing.assert_allclose(analysis.softmax([[0.0, 2 * np.log(3.0)]], 2.0), [[0.25, 0.75]])
    assert analysis.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert analysis.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert analysis.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert analysis.pearson([1, 1, 1], [1, 2, 3]) is None


def test_pearson_matrix_matches_numpy_and_marks_constant_rows():
    rows = np.random.default_rng(1).random((5, 7))
    np.testing.assert_allclose(analysis.pearson_matrix(rows), np.corrcoef(rows), atol=1e-12)
    rows[2] = 0.5
    matrix = analysis.pearson_matrix(rows)
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[:, 2]).all()
    assert np.isfinite(np.delete(np.delete(matrix, 2, 0), 2, 1)).all()


def test_cosine_matrix_of_orthogonal_class_vectors_is_identity():
    # Orthogonal columns with different lengths: cosines ignore the lengths.
    basis, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((8, 5)))
    kernel = basis * np.array([0.5, 1.0, 2.0, 3.0, 7.0])
    np.testing.assert_allclose(analysis.cosine_similarity_matrix(kernel), np.eye(5), atol=1e-12)


def test_cosine_matrix_uses_kernel_columns():
    kernel = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, -2.0]])  # (h=2, M=3)
    expected = np.array(
        [[1.0, 1 / np.sqrt(2), 0.0], [1 / np.sqrt(2), 1.0, -1 / np.sqrt(2)], [0.0, -1 / np.sqrt(2), 1.0]]
    )
    np.testing.assert_allclose(analysis.cosine_similarity_matrix(kernel), expected, atol=1e-12)
    with pytest.raises(ValueError, match="all-zero class vectors"):
        analysis.cosine_similarity_matrix(np.array([[1.0, 0.0], [1.0, 0.0]]))


# Super-class structure.


def test_superclass_order_puts_same_parent_classes_adjacent():
    parents = np.array([2, 0, 1, 0, 2, 1])
    order = analysis.superclass_order(parents)
    np.testing.assert_array_equal(order, [1, 3, 2, 5, 0, 4])
    assert analysis.superclass_boundaries(parents) == [2, 4]
    order = analysis.superclass_order(PARENTS)
    sorted_parents = PARENTS[order]
    assert (np.diff(sorted_parents) >= 0).all()
    assert sorted(order.tolist()) == list(range(NUM_CLASSES))
    matrix = np.arange(36).reshape(6, 6)
    reordered = analysis.reorder(matrix, [1, 0, 2, 3, 4, 5])
    assert reordered[0, 0] == matrix[1, 1] and reordered[0, 1] == matrix[1, 0]


def test_block_contrast_hand_values():
    matrix = np.array(
        [
            [1.0, 0.8, 0.1, 0.3],
            [0.8, 1.0, 0.2, 0.0],
            [0.1, 0.2, 1.0, 0.6],
            [0.3, 0.0, 0.6, 1.0],
        ]
    )
    contrast = analysis.block_contrast(matrix, [0, 0, 1, 1])
    assert contrast["within"] == pytest.approx(0.7)
    assert contrast["across"] == pytest.approx(0.15)
    assert contrast["difference"] == pytest.approx(0.55)
    assert contrast["ratio"] == pytest.approx(0.7 / 0.15)
    zero_across = matrix.copy()
    zero_across[[0, 0, 1, 1, 2, 2, 3, 3], [2, 3, 2, 3, 0, 1, 0, 1]] = 0.0
    assert analysis.block_contrast(zero_across, [0, 0, 1, 1])["ratio"] is None
    assert analysis.block_contrast(-matrix, [0, 0, 1, 1])["ratio"] is None
    assert analysis.block_contrast(-matrix, [0, 0, 1, 1])["difference"] == pytest.approx(-0.55)
    with pytest.raises(ValueError, match="class_parents"):
        analysis.block_contrast(matrix, [0, 1, 2, 3])


# Class-correlation matrices (Figure 1).


def test_class_means_and_correlations_match_a_direct_loop():
    logits, labels = _teacher_logits(structured=True, examples_per_class=5)
    probs = analysis.softmax(logits, 4.0)
    means = analysis.class_mean_distributions(probs, labels)
    for label in range(NUM_CLASSES):
        np.testing.assert_allclose(means[label], probs[labels == label].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(
        analysis.class_correlation_matrix(probs, labels), np.corrcoef(means), atol=1e-12
    )


def test_class_without_examples_gives_nan_row_and_is_left_out():
    logits, labels = _teacher_logits(structured=True, examples_per_class=5)
    keep = labels != 3
    matrix = analysis.class_correlation_matrix(analysis.softmax(logits[keep], 4.0), labels[keep])
    assert np.isnan(matrix[3]).all()
    assert np.isfinite(analysis.block_contrast(matrix, PARENTS)["difference"])


def test_block_structured_teacher_shows_superclass_blocks_and_plain_one_does_not():
    structured_logits, labels = _teacher_logits(structured=True)
    plain_logits, _ = _teacher_logits(structured=False)
    structured = analysis.block_contrast(
        analysis.class_correlation_matrix(analysis.softmax(structured_logits, 4.0), labels), PARENTS
    )
    plain = analysis.block_contrast(
        analysis.class_correlation_matrix(analysis.softmax(plain_logits, 4.0), labels), PARENTS
    )
    assert structured["within"] > structured["across"] + 0.2
    assert abs(plain["difference"]) < 0.02
    # A peaked teacher at T=1 hides the blocks (Figure 1(a)); a higher temperature shows them (1(b)).
    cold = analysis.block_contrast(
        analysis.class_correlation_matrix(analysis.softmax(structured_logits, 1.0), labels), PARENTS
    )
    assert structured["difference"] > cold["difference"] + 0.1


# KD-topk's distribution.


def test_topk_distribution_hand_example():
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    logits = np.log(probs)
    target = analysis.topk_distribution([0, 3], logits, topk=2)
    expected = np.array([[0.5, 0.3, 0.1, 0.1], [0.15, 0.15, 0.3, 0.4]])
    np.testing.assert_allclose(target, expected, atol=1e-6)
    full = analysis.topk_distribution([0, 3], logits, topk=4)
    np.testing.assert_allclose(full, probs, atol=1e-6)
    with pytest.raises(ValueError, match="topk"):
        analysis.topk_distribution([0, 3], logits, topk=5)


def test_topk_distribution_keeps_the_k_largest_and_spreads_the_rest():
    logits, labels = _teacher_logits(structured=True, examples_per_class=3)
    probabilities = analysis.softmax(logits, 4.0)
    for topk in (1, 3, NUM_CLASSES):
        target = analysis.topk_distribution(labels, logits, topk, 4.0)
        kept = np.argsort(-probabilities, axis=1)[:, :topk]
        mask = np.zeros_like(probabilities, dtype=bool)
        np.put_along_axis(mask, kept, True, axis=1)
        rest = (1.0 - np.where(mask, probabilities, 0).sum(axis=1, keepdims=True)) / max(
            NUM_CLASSES - topk, 1
        )
        np.testing.assert_allclose(target, np.where(mask, probabilities, rest), atol=1e-6)
        np.testing.assert_allclose(target.sum(axis=1), 1.0, atol=1e-5)


# Gradient rescaling (Figure 2).


class _ReferenceKD:
    """Hinton's KD written out in TF, so the tape mechanics are tested without the loss library."""

    def __init__(self, alpha, temperature):
        self.alpha, self.temperature = alpha, temperature

    def per_example(self, labels, teacher_logits, student_logits):
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)
        target = tf.nn.softmax(teacher_logits / self.temperature)
        log_student = tf.nn.log_softmax(student_logits / self.temperature)
        soft = -tf.reduce_sum(target * log_student, axis=-1) * self.temperature**2
        return (1 - self.alpha) * hard + self.alpha * soft


def _student_and_teacher(num_examples=32, num_classes=6, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples)
    teacher = 2.0 * rng.standard_normal((num_examples, num_classes)) + 3.0 * np.eye(num_classes)[labels]
    student = rng.standard_normal((num_examples, num_classes))
    return labels, teacher, student


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_rescaling_factor_with_reference_kd_matches_direct_formula(temperature):
    labels, teacher, student = _student_and_teacher()
    alpha = 0.7
    factors = analysis.rescaling_factors(
        _ReferenceKD(alpha, temperature), labels, teacher, student, batch_size=10
    )
    target = analysis.softmax(teacher, temperature)
    gradient = _kd_gradient(labels, teacher, student, alpha, temperature, target)
    true_probs = analysis.softmax(student)[np.arange(labels.size), labels]
    # ℓ1 of the CE gradient p - y is 2 (1 - p_t).
    expected = np.abs(gradient).sum(axis=1) / (2 * (1 - true_probs))
    np.testing.assert_allclose(factors, expected, rtol=1e-4)


@pytest.mark.parametrize("method", ["kd", "kd_pt"])
def test_rescaling_factor_at_unit_temperature_equals_closed_form(method):
    losses = pytest.importorskip("kd_tf.losses")
    labels, teacher, student = _student_and_teacher()
    alpha = 0.6
    loss = losses.get(method, temperature=1.0, alpha=alpha)
    factors = analysis.rescaling_factors(loss, labels, teacher, student)
    teacher_probs = analysis.softmax(teacher)
    rows = np.arange(labels.size)
    if method == "kd":
        target = teacher_probs
    else:
        true_probs = teacher_probs[rows, labels]
        target = np.repeat(((1 - true_probs) / (teacher.shape[1] - 1))[:, None], teacher.shape[1], 1)
        target[rows, labels] = true_probs
    one_hot = np.eye(teacher.shape[1])[labels]
    student_probs = analysis.softmax(student)
    gradient = (1 - alpha) * (student_probs - one_hot) + alpha * (student_probs - target)
    expected = np.abs(gradient).sum(axis=1) / (2 * (1 - student_probs[rows, labels]))
    np.testing.assert_allclose(factors, expected, rtol=1e-4)
    # Plain cross-entropy (alpha = 0) is not rescaled at all.
    plain = analysis.rescaling_factors(
        losses.get(method, temperature=1.0, alpha=0.0), labels, teacher, student
    )
    np.testing.assert_allclose(plain, 1.0, rtol=1e-5)


def test_rescaling_factor_equals_proposition_2_when_only_true_gradient_is_negative():
    losses = pytest.importorskip("kd_tf.losses")
    # An unsure student: every wrong-class gradient p_i - λ q̃_i is positive, so both ℓ1 norms are
    # twice the true-class entry and w is Proposition 2's w_t.
    num_classes, alpha = 5, 0.5
    labels = np.array([0, 1, 2, 3])
    teacher_confidence = np.array([8.0, 4.0, 2.0, 1.0])
    teacher = teacher_confidence[:, None] * np.eye(num_classes)[labels]
    student = np.random.default_rng(4).normal(0, 0.1, (4, num_classes))
    loss = losses.get("kd_pt", temperature=1.0, alpha=alpha)
    factors = analysis.rescaling_factors(loss, labels, teacher, student)
    target = np.asarray(loss.teacher_distribution(labels, teacher.astype(np.float32)))
    proposition = analysis.ground_truth_rescaling(labels, student, target, alpha)
    np.testing.assert_allclose(factors, proposition, rtol=1e-4)
    # The more confident the teacher, the larger the student's gradient (Proposition 2).
    assert (np.diff(factors) < 0).all()
    assert factors[0] == pytest.approx(0.999, abs=1e-3) and factors[-1] < 0.85


def test_rescaling_analysis_correlates_w_with_teacher_confidence():
    losses = pytest.importorskip("kd_tf.losses")
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 200)
    confidence = rng.uniform(0.0, 6.0, 200)
    teacher = confidence[:, None] * np.eye(6)[labels]
    student = np.zeros((200, 6))
    result = analysis.rescaling_analysis(
        losses.get("kd_pt", temperature=1.0, alpha=0.9), labels, teacher, student
    )
    assert result["w"].shape == (200,) and result["teacher_probs"].shape == (200,)
    # Proposition 2 with a uniform student: w_t = (1 - λ) + λ (q_t - 1/M)/(1 - 1/M), linear in q_t.
    assert result["pearson"] == pytest.approx(1.0, abs=1e-4)


# KD-topk's uplift (Figure 3).


def test_topk_uplift_series_averages_runs_per_k():
    records = [
        {"topk": 5, "accuracy": 76.0},
        {"topk": 1, "accuracy": 75.0},
        {"topk": 5, "accuracy": 76.4},
        (20, 75.8),
    ]
    series = analysis.topk_uplift_series(records, kd_accuracy=[75.9, 76.1])
    assert series["ks"] == [1, 5, 20]
    np.testing.assert_allclose(series["uplift"], [-1.0, 0.2, -0.2], atol=1e-9)
    np.testing.assert_allclose(series["uplift_std"], [0.0, 0.2, 0.0], atol=1e-9)
    assert series["runs"] == [1, 2, 1]
    perplexity = analysis.topk_uplift_series(
        [{"k": 10, "test_perplexity": 60.85}],
        kd_accuracy=61.33,
        metric="test_perplexity",
        higher_is_better=False,
    )
    assert perplexity["uplift"][0] == pytest.approx(0.48)
    with pytest.raises(ValueError, match="accuracy"):
        analysis.topk_uplift_series([{"topk": 3}], kd_accuracy=70.0)


# Logit-layer geometry (Proposition 1).


def test_logit_geometry_distances_and_negative_correlation():
    num_classes = 4
    kernel, _ = np.linalg.qr(np.random.default_rng(6).standard_normal((6, num_classes)))
    teacher = np.array([[3.0, 1.0, 0.0, -1.0], [-2.0, 2.5, 0.5, 0.0]])
    labels = np.array([0, 1])
    # h leans towards each class as much as the teacher's logit for it: likelier classes lie closer.
    penultimate = teacher @ kernel.T
    result = analysis.logit_geometry(penultimate, kernel, teacher, labels)
    # Orthonormal class vectors: ‖h - w_i‖² = ‖h‖² - 2 v_i + 1.
    expected = np.sqrt((teacher**2).sum(axis=1, keepdims=True) - 2 * teacher + 1)
    np.testing.assert_allclose(result["distances"], expected, atol=1e-10)
    assert result["wrong_class"].sum() == 2 * (num_classes - 1)
    assert not result["wrong_class"][[0, 1], [0, 1]].any()
    assert result["pearson"] < -0.8
    assert result["pearson_log_gap"] < -0.99  # the squared-distance gap is linear in log q_i here
    normalized = analysis.logit_geometry(penultimate, 5 * kernel, teacher, labels, normalize=True)
    assert np.all(normalized["distances"] <= 2.0 + 1e-12)


def test_penultimate_model_returns_logit_layer_input():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(4, name="logits")(hidden)
    model = keras.Model(inputs, outputs)
    batch = np.random.default_rng(7).standard_normal((6, 3)).astype(np.float32)
    penultimate = analysis.penultimate_model(model).predict(batch, verbose=0)
    assert penultimate.shape == (6, 5)
    kernel = analysis.logit_kernel(model)
    bias = np.asarray(model.get_layer("logits").bias)
    np.testing.assert_allclose(penultimate @ kernel + bias, model.predict(batch, verbose=0), atol=1e-5)
    teacher = np.random.default_rng(8).standard_normal((6, 4))
    geometry = analysis.model_logit_geometry(model, batch, teacher, np.arange(6) % 4)
    assert not geometry["normalized"] and geometry["distances"].shape == (6, 4)
    with pytest.raises(ValueError, match="no layer named 'head'"):
        analysis.penultimate_model(model, layer_name="head")


def test_cosine_logit_student_satisfies_the_distance_identity_exactly():
    from models.mlp import mlp

    scale = 8.0
    model = mlp(num_classes=5, input_shape=(4,), width=6, logit_scale=scale)
    inputs = np.random.default_rng(9).standard_normal((16, 4)).astype(np.float32)
    student_logits = model.predict(inputs, verbose=0)
    teacher_logits = np.random.default_rng(10).standard_normal((16, 5))
    labels = np.arange(16) % 5
    result = analysis.model_logit_geometry(model, inputs, teacher_logits, labels)
    assert result["normalized"]
    # Cosine logits: z_i = scale · cos = scale · (1 - ½‖ĥ - ŵ_i‖²), Proposition 1's form exactly.
    np.testing.assert_allclose(scale * (1 - 0.5 * result["distances"] ** 2), student_logits, atol=1e-4)


# One call for run.py.


def test_analyze_teacher_returns_json_summary_and_sorted_matrices():
    pytest.importorskip("kd_tf.losses")
    logits, labels = _teacher_logits(structured=True, examples_per_class=10)
    kernel = np.random.default_rng(8).standard_normal((7, NUM_CLASSES))
    result = analysis.analyze_teacher(logits, labels, PARENTS, kernel, temperatures=(1, 4), topk=3)
    json.dumps(result["summary"], allow_nan=False)
    assert list(result["matrices"]) == [
        "teacher T=1",
        "teacher T=4",
        "top-3 T=4",
        "logit-weight cosine",
    ]
    order = result["class_order"]
    assert (np.diff(PARENTS[order]) >= 0).all()
    assert result["boundaries"] == [3, 6, 9]
    unsorted = analysis.class_correlation_matrix(analysis.softmax(logits, 4.0), labels)
    np.testing.assert_allclose(result["matrices"]["teacher T=4"], analysis.reorder(unsorted, order))
    contrast = result["summary"]["block_contrast"]
    assert contrast["teacher T=4"]["difference"] > contrast["teacher T=1"]["difference"]
    assert contrast["top-3 T=4"]["difference"] > 0.2  # top-3 keeps the 3-class blocks
    assert result["summary"]["teacher_accuracy"] == pytest.approx(1.0)
    probs = result["ground_truth_probs"]["teacher T=1"]
    assert probs.shape == (labels.size,) and (probs > 0.5).all()
    plain = analysis.analyze_teacher(logits, labels, temperatures=(2,), topk=None)
    assert list(plain["matrices"]) == ["teacher T=2"] and "block_contrast" not in plain["summary"]
    json.dumps(plain["summary"], allow_nan=False)


def test_compare_teachers_separates_structured_from_smoothed_teacher():
    structured, labels = _teacher_logits(structured=True, examples_per_class=10)
    plain, _ = _teacher_logits(structured=False, examples_per_class=10)
    result = analysis.compare_teachers({"w/o LS": structured, "with LS": plain}, labels, PARENTS, 4.0)
    assert set(result["matrices"]) == {"w/o LS", "with LS"}
    summary = result["summary"]
    json.dumps(summary, allow_nan=False)
    assert summary["w/o LS"]["block_contrast"]["difference"] > 0.2
    assert abs(summary["with LS"]["block_contrast"]["difference"]) < 0.05


def test_arguments_are_validated_with_their_names():
    logits, labels = _teacher_logits(structured=False, examples_per_class=2)
    with pytest.raises(ValueError, match="temperature"):
        analysis.analyze_teacher(logits, labels, temperatures=(0,))
    with pytest.raises(ValueError, match="labels"):
        analysis.analyze_teacher(logits, labels[:-1])
    with pytest.raises(ValueError, match="class_parents"):
        analysis.analyze_teacher(logits, labels, class_parents=[0, 1])
    with pytest.raises(ValueError, match="kernel"):
        analysis.analyze_teacher(logits, labels, kernel=np.ones((3, 5)), topk=None)
    with pytest.raises(ValueError, match="teacher_logits"):
        analysis.teacher_probabilities(np.ones(4))
