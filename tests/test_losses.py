"""The losses against the closed forms of PAPER.md: values, target distributions and logit gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_tf import losses

NUM_CLASSES = 6
PARENTS = np.array([0, 0, 0, 1, 1, 1])
CLASS_VECTORS = np.random.default_rng(3).normal(size=(4, NUM_CLASSES)).astype(np.float32)


def make_loss(name, **overrides):
    method = losses.registered()[name]
    extra = {}
    if "class_vectors" in method.needs:
        extra["class_vectors"] = CLASS_VECTORS
    if "class_parents" in method.needs:
        extra.update(class_parents=PARENTS, rel_target=0.6, rel_sibling=0.1)
    if "topk" in method.hyperparameters:
        extra["topk"] = 2
    if "temperature" in method.hyperparameters:
        extra.update(temperature=3.0, alpha=0.7)
    return losses.get(name, **{**extra, **overrides})


def batch(seed=0, size=5, num_classes=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=size).astype(np.int32)
    teacher_logits = rng.normal(scale=2.0, size=(size, num_classes)).astype(np.float32)
    student_logits = rng.normal(scale=2.0, size=(size, num_classes)).astype(np.float32)
    return labels, teacher_logits, student_logits


def softmax(logits, temperature=1.0):
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def logit_gradient(loss, labels, teacher_logits, student_logits):
    student_logits = tf.constant(student_logits)
    with tf.GradientTape() as tape:
        tape.watch(student_logits)
        total = tf.reduce_sum(loss.per_example(labels, teacher_logits, student_logits))
    return tape.gradient(total, student_logits).numpy()


def test_names_cover_every_registered_method_in_paper_order():
    assert set(losses.NAMES) == set(losses.registered())
    assert losses.NAMES[:3] == ("student", "ls", "kd")


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="Known methods: .*kd_topk"):
        losses.get("kd_bogus")


@pytest.mark.parametrize("name", losses.NAMES)
def test_target_distribution_is_a_distribution(name):
    labels, teacher_logits, _ = batch()
    target = make_loss(name).teacher_distribution(labels, teacher_logits).numpy()
    assert target.shape == (5, NUM_CLASSES)
    assert np.all(target >= 0)
    np.testing.assert_allclose(target.sum(axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", losses.NAMES)
def test_logit_gradient_matches_closed_form(name):
    """∂L/∂z = (1-λ)(p - y) + λ·T·(p^T - q̃) (eq. 2 with the T² factor)."""
    labels, teacher_logits, student_logits = batch(seed=1)
    loss = make_loss(name)
    target = loss.teacher_distribution(labels, teacher_logits).numpy()
    one_hot = np.eye(NUM_CLASSES)[labels]
    temperature, alpha = loss.temperature, loss.alpha
    expected = (1 - alpha) * (softmax(student_logits) - one_hot) + alpha * temperature * (
        softmax(student_logits, temperature) - target
    )
    gradient = logit_gradient(loss, labels, teacher_logits, student_logits)
    np.testing.assert_allclose(gradient, expected, atol=1e-5)


def test_kd_value_matches_hand_computation_on_two_examples():
    labels = np.array([0, 2])
    teacher_logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 1.0]], np.float32)
    student_logits = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0]], np.float32)
    loss = losses.get("kd", temperature=2.0, alpha=0.25)
    q = softmax(teacher_logits, 2.0)
    log_p_t = np.log(softmax(student_logits, 2.0))
    kl = (q * (np.log(q) - log_p_t)).sum(-1)
    hard = -np.log(softmax(student_logits)[[0, 1], labels])
    expected = 0.75 * hard + 0.25 * 4.0 * kl
    np.testing.assert_allclose(loss.per_example(labels, teacher_logits, student_logits), expected, rtol=1e-6)
    # Keras reduction: mean over the batch.
    packed = losses.pack_targets(labels, teacher_logits)
    np.testing.assert_allclose(float(loss(packed, student_logits)), expected.mean(), rtol=1e-6)


def test_ls_equals_kd_with_a_uniform_teacher_at_unit_temperature():
    labels, _, student_logits = batch(seed=2)
    uniform_teacher = np.zeros_like(student_logits)
    smoothing = losses.get("ls", label_smoothing=0.2)
    kd = losses.get("kd", temperature=1.0, alpha=0.2)
    np.testing.assert_allclose(
        smoothing.per_example(labels, None, student_logits),
        kd.per_example(labels, uniform_teacher, student_logits),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        logit_gradient(smoothing, labels, None, student_logits),
        logit_gradient(kd, labels, uniform_teacher, student_logits),
        atol=1e-6,
    )


def test_ls_has_the_gradient_of_cross_entropy_against_smoothed_labels():
    labels, _, student_logits = batch(seed=3)
    epsilon = 0.3
    smoothed = (1 - epsilon) * np.eye(NUM_CLASSES)[labels] + epsilon / NUM_CLASSES
    expected = softmax(student_logits) - smoothed
    gradient = logit_gradient(losses.get("ls", label_smoothing=epsilon), labels, None, student_logits)
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


def test_topk_with_k_equal_to_classes_is_kd():
    labels, teacher_logits, student_logits = batch(seed=4)
    topk = losses.get("kd_topk", topk=NUM_CLASSES, temperature=2.0, alpha=0.6)
    kd = losses.get("kd", temperature=2.0, alpha=0.6)
    np.testing.assert_allclose(
        topk.teacher_distribution(labels, teacher_logits),
        kd.teacher_distribution(labels, teacher_logits),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        topk.per_example(labels, teacher_logits, student_logits),
        kd.per_example(labels, teacher_logits, student_logits),
        rtol=1e-5,
    )


def test_topk_keeps_the_largest_probabilities_and_spreads_the_rest():
    teacher_logits = np.log(np.array([[0.5, 0.05, 0.3, 0.15]], np.float32))
    target = losses.get("kd_topk", topk=2, temperature=1.0).teacher_distribution([1], teacher_logits)
    np.testing.assert_allclose(target, [[0.5, 0.1, 0.3, 0.1]], atol=1e-6)


def test_kd_pt_keeps_the_teacher_target_probability():
    labels, teacher_logits, _ = batch(seed=5)
    target = make_loss("kd_pt").teacher_distribution(labels, teacher_logits).numpy()
    teacher_probs = softmax(teacher_logits, 3.0)
    rows = np.arange(len(labels))
    np.testing.assert_allclose(target[rows, labels], teacher_probs[rows, labels], rtol=1e-5)
    others = np.delete(target[0], labels[0])
    np.testing.assert_allclose(others, (1 - teacher_probs[0, labels[0]]) / (NUM_CLASSES - 1), rtol=1e-5)


def test_kd_sim_rows_follow_the_cosine_of_class_vectors():
    vectors = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], np.float32)  # columns: classes
    loss = losses.get("kd_sim", class_vectors=vectors, sim_temperature=0.5)
    cosine = np.array([1.0, np.sqrt(0.5), 0.0])  # class 0 against classes 0, 1, 2
    np.testing.assert_allclose(
        loss.teacher_distribution([0], np.zeros((1, 3))), [softmax(cosine, 0.5)], atol=1e-6
    )


def test_kd_rel_gives_target_sibling_and_rest_shares():
    target = make_loss("kd_rel").teacher_distribution([1], np.zeros((1, NUM_CLASSES))).numpy()[0]
    c = (1 - 0.6 - 2 * 0.1) / 3
    np.testing.assert_allclose(target, [0.1, 0.6, 0.1, c, c, c], atol=1e-6)


def test_kd_rel_with_no_share_left_for_other_classes_stays_finite():
    """a = 0.8 and b = 0.05 over a group of five leave c = 1 - 0.8 - 4·0.05, -5.6e-17 in floats: it is 0."""
    parents = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])  # the Fashion-MNIST grouping's sizes
    table = losses.kd_rel.hierarchy_targets(parents, 0.8, 0.05)
    assert table.min() == 0.0 and table[0, 5] == 0.0
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-6)
    loss = losses.get("kd_rel", class_parents=parents, rel_target=0.8, rel_sibling=0.05, alpha=0.9)
    student_logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    values = loss.per_example(np.array([0, 2, 6, 9]), np.zeros((4, 10), np.float32), student_logits)
    assert np.all(np.isfinite(values))


@pytest.mark.parametrize("name,other", [("kd_pt_sim", "kd_sim"), ("kd_pt_rel", "kd_rel")])
def test_mixes_are_the_weighted_average_of_their_parts(name, other):
    labels, teacher_logits, _ = batch(seed=6)
    mixed = make_loss(name, mix=0.3).teacher_distribution(labels, teacher_logits)
    expected = 0.3 * make_loss("kd_pt").teacher_distribution(labels, teacher_logits) + 0.7 * make_loss(
        other
    ).teacher_distribution(labels, teacher_logits)
    np.testing.assert_allclose(mixed, expected, atol=1e-6)


def test_zero_gradient_when_the_student_equals_the_teacher_at_alpha_one():
    labels, teacher_logits, _ = batch(seed=7)
    loss = losses.get("kd", temperature=4.0, alpha=1.0)
    gradient = logit_gradient(loss, labels, teacher_logits, teacher_logits.copy())
    np.testing.assert_allclose(gradient, 0.0, atol=1e-6)
    np.testing.assert_allclose(loss.per_example(labels, teacher_logits, teacher_logits), 0.0, atol=1e-5)


@pytest.mark.parametrize("name", ["kd", "kd_pt", "kd_topk"])
def test_ground_truth_gradient_rescaling_at_unit_temperature(name):
    """∂L/∂z_t / ∂L_CE/∂z_t = (1-λ) + λ(q̃_t - p_t)/(1 - p_t) (eq. 3)."""
    labels, teacher_logits, student_logits = batch(seed=8)
    alpha = 0.6
    loss = make_loss(name, temperature=1.0, alpha=alpha)
    rows = np.arange(len(labels))
    target_t = loss.teacher_distribution(labels, teacher_logits).numpy()[rows, labels]
    p_t = softmax(student_logits)[rows, labels]
    gradient_t = logit_gradient(loss, labels, teacher_logits, student_logits)[rows, labels]
    expected = (1 - alpha) + alpha * (target_t - p_t) / (1 - p_t)
    np.testing.assert_allclose(gradient_t / (p_t - 1), expected, rtol=1e-4)


@pytest.mark.parametrize("name", losses.NAMES)
def test_sequence_shaped_inputs_equal_the_flattened_ones(name):
    labels, teacher_logits, student_logits = batch(seed=9, size=6)
    loss = make_loss(name)
    flat = loss.per_example(labels, teacher_logits, student_logits).numpy()
    shaped = loss.per_example(
        labels.reshape(2, 3), teacher_logits.reshape(2, 3, -1), student_logits.reshape(2, 3, -1)
    ).numpy()
    np.testing.assert_allclose(shaped.reshape(-1), flat, rtol=1e-6)


@pytest.mark.parametrize("name", losses.NAMES)
def test_packed_targets_give_the_online_loss(name):
    labels, teacher_logits, student_logits = batch(seed=10)
    loss = make_loss(name)
    size = loss.payload_size(NUM_CLASSES)
    payload = loss.teacher_payload(tf.constant(labels), teacher_logits) if size else None
    packed = losses.pack_targets(labels, payload)
    assert packed.shape == (5, 1 + size)
    expected = loss.per_example(labels, teacher_logits, student_logits).numpy().mean()
    np.testing.assert_allclose(float(loss(packed, student_logits)), expected, rtol=1e-6)


def test_payload_sizes_are_what_each_method_needs():
    sizes = {name: make_loss(name).payload_size(1000) for name in losses.NAMES}
    assert sizes == {
        "student": 0,
        "ls": 0,
        "kd": 1000,
        "kd_pt": 1,
        "kd_sim": 0,
        "kd_pt_sim": 1,
        "kd_topk": 4,
        "kd_rel": 0,
        "kd_pt_rel": 1,
    }


def test_missing_teacher_payload_is_explained():
    labels, _, student_logits = batch()
    with pytest.raises(ValueError, match="carries labels only"):
        make_loss("kd")(labels, student_logits)


@pytest.mark.parametrize("name", losses.NAMES)
def test_config_round_trip(name):
    loss = make_loss(name)
    config = loss.get_config()
    rebuilt = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(rebuilt) is type(loss)
    assert rebuilt.get_config() == config
    labels, teacher_logits, student_logits = batch(seed=11)
    np.testing.assert_allclose(
        rebuilt.per_example(labels, teacher_logits, student_logits),
        loss.per_example(labels, teacher_logits, student_logits),
        rtol=1e-6,
    )


def test_float16_logits_give_a_finite_float32_loss():
    labels = np.array([0, 1])
    student_logits = tf.constant([[60000.0, -60000.0, 0.0], [-100.0, 100.0, 0.0]], tf.float16)
    teacher_logits = tf.constant([[-30.0, 30.0, 0.0], [0.0, 0.0, 50.0]], tf.float16)
    values = losses.get("kd", temperature=4.0, alpha=0.5).per_example(labels, teacher_logits, student_logits)
    assert values.dtype == tf.float32
    assert np.all(np.isfinite(values.numpy()))


@pytest.mark.parametrize(
    "name,arguments,argument",
    [
        ("kd", {"temperature": 0.0}, "temperature"),
        ("kd", {"temperature": -1.0}, "temperature"),
        ("kd", {"alpha": -0.1}, "alpha"),
        ("kd", {"alpha": 1.5}, "alpha"),
        ("ls", {"label_smoothing": 1.2}, "label_smoothing"),
        ("kd_topk", {"topk": 0}, "topk"),
        ("kd_topk", {"topk": 2.5}, "topk"),
        ("kd_sim", {"class_vectors": CLASS_VECTORS, "sim_power": 0.5}, "sim_power"),
        ("kd_sim", {"class_vectors": CLASS_VECTORS, "sim_temperature": 0.0}, "sim_temperature"),
        ("kd_sim", {"class_vectors": np.ones(6)}, "class_vectors"),
        ("kd_pt_sim", {"class_vectors": CLASS_VECTORS, "mix": 1.5}, "mix"),
        ("kd_rel", {"class_parents": PARENTS, "rel_target": 0.1, "rel_sibling": 0.2}, "rel_sibling"),
        ("kd_rel", {"class_parents": PARENTS, "rel_target": 0.9, "rel_sibling": 0.09}, "c = "),
        ("kd_rel", {"class_parents": PARENTS, "rel_target": 0.3, "rel_sibling": 0.01}, "c = "),
        ("kd_rel", {"class_parents": np.zeros(6), "rel_target": 0.5, "rel_sibling": 0.1}, "one parent"),
        ("kd_pt_rel", {"class_parents": PARENTS, "mix": -0.5}, "mix"),
    ],
)
def test_bad_hyperparameters_name_the_argument(name, arguments, argument):
    with pytest.raises(ValueError, match=argument):
        losses.get(name, **arguments)


def test_topk_larger_than_the_classes_is_refused():
    labels, teacher_logits, student_logits = batch()
    with pytest.raises(ValueError, match="topk"):
        losses.get("kd_topk", topk=NUM_CLASSES + 1).per_example(labels, teacher_logits, student_logits)


def test_hard_term_equals_tensorflow_sparse_cross_entropy_in_value_and_gradient():
    labels, _, student_logits = batch(seed=7, size=12)
    student_logits = tf.constant(np.concatenate([student_logits, 30.0 * student_logits]))
    labels = np.concatenate([labels, labels])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(student_logits)
        ours = losses.base.sparse_cross_entropy(tf.constant(labels), student_logits)
        reference = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, student_logits)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        tape.gradient(ours, student_logits), tape.gradient(reference, student_logits), atol=1e-6
    )
    # Compiled with XLA: the same values.
    compiled = tf.function(losses.base.sparse_cross_entropy, jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(labels), student_logits), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["kd", "kd_topk", "kd_pt", "ls"])
def test_soft_term_is_the_kl_divergence_and_its_gradient(name):
    """`T²·Σ q̃ (log q̃ - log p^T)` and `T·(p^T - q̃)`, on a 3-D batch with zero target probabilities."""
    rng = np.random.default_rng(8)
    labels = tf.constant(rng.integers(0, NUM_CLASSES, size=(3, 4)).astype(np.int32))
    teacher_logits = rng.normal(scale=300.0, size=(3, 4, NUM_CLASSES)).astype(np.float32)
    student_logits = tf.constant(rng.normal(scale=2.0, size=(3, 4, NUM_CLASSES)).astype(np.float32))
    loss = make_loss(name, alpha=1.0) if name != "ls" else losses.get("ls", label_smoothing=1.0)
    target = loss.teacher_distribution(labels, teacher_logits).numpy().astype(np.float64)
    payload = loss.teacher_payload(labels, teacher_logits) if loss.payload_size(NUM_CLASSES) else None
    with tf.GradientTape() as tape:
        tape.watch(student_logits)
        _, soft = loss.terms(labels, payload, student_logits)
        total = tf.reduce_sum(soft)
    temperature = loss.temperature
    log_p = np.log(softmax(student_logits.numpy().astype(np.float64), temperature))
    entropy_part = np.where(target > 0, target * np.log(np.where(target > 0, target, 1.0)), 0.0)
    expected = temperature**2 * (entropy_part - target * log_p).sum(-1)
    np.testing.assert_allclose(soft, expected, rtol=1e-5, atol=1e-6)
    expected_gradient = temperature * (np.exp(log_p) - target)
    np.testing.assert_allclose(tape.gradient(total, student_logits), expected_gradient, atol=1e-5)


def test_a_small_kl_over_many_classes_keeps_its_precision():
    """KL ≈ 1e-5 against an entropy of ≈ 8 nats: summing q̃ (log q̃ - log p) keeps it to a few percent,
    where Σ q̃ log q̃ - Σ q̃ log p (each sum near 8 in float32) would be off by about 10 %."""
    rng = np.random.default_rng(9)
    teacher_logits = rng.normal(size=(8, 3000)).astype(np.float32)
    student_logits = (teacher_logits + rng.normal(scale=0.005, size=teacher_logits.shape)).astype(np.float32)
    labels = tf.constant(rng.integers(0, 3000, size=8).astype(np.int32))
    loss = losses.get("kd", temperature=1.0, alpha=1.0)
    _, soft = loss.terms(labels, loss.teacher_payload(labels, teacher_logits), student_logits)
    target = loss.teacher_distribution(labels, teacher_logits).numpy().astype(np.float64)
    log_p = np.log(softmax(student_logits.astype(np.float64)))
    expected = (target * (np.log(target) - log_p)).sum(-1)
    assert expected.max() < 2e-5
    np.testing.assert_allclose(soft, expected, rtol=0.05)
