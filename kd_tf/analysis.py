"""The paper's diagnostics: class correlations, weight cosines, gradient rescaling, logit geometry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Below this spread a vector is treated as constant: its Pearson correlation is undefined.
_CONSTANT_TOLERANCE = 1e-12


# Small numeric building blocks.


def _check_logits(name, logits):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"`{name}` must have shape [N, M] with M >= 2. Received: {name}.shape={logits.shape}"
        )
    return logits


def _check_labels(labels, num_examples, num_classes):
    labels = np.asarray(labels)
    if labels.shape != (num_examples,):
        raise ValueError(
            f"`labels` must have shape [{num_examples}] to match the logits. "
            f"Received: labels.shape={labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(f"`labels` must be integers. Received: labels.dtype={labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`labels` must be in [0, {num_classes}). Received: labels in [{labels.min()}, {labels.max()}]"
        )
    return labels


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
    return float(temperature)


def softmax(logits, temperature: float = 1.0):
    """`softmax(logits / temperature)` over the last axis, in float64."""
    temperature = _check_temperature(temperature)
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def pearson(first, second) -> float | None:
    """Pearson correlation of two equally long vectors; `None` when either is constant."""
    first = np.asarray(first, dtype=np.float64).ravel()
    second = np.asarray(second, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(
            f"`first` and `second` must have the same size. Received: {first.size} and {second.size}"
        )
    first = first - first.mean()
    second = second - second.mean()
    norm = np.sqrt((first**2).sum() * (second**2).sum())
    if norm <= _CONSTANT_TOLERANCE:
        return None
    return float((first * second).sum() / norm)


def spearman(first, second) -> float | None:
    """Spearman's rank correlation (Pearson's r of the ranks, ties sharing their mean rank), or `None`."""
    if len(first) < 2:
        return None
    return pearson(_ranks(first), _ranks(second))


def _ranks(values) -> np.ndarray:
    # Tied values share their average rank, so a constant series has no rank correlation at all.
    _, inverse, counts = np.unique(
        np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True
    )
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def pearson_matrix(rows) -> np.ndarray:
    """`[R, R]` Pearson correlations between the rows of `rows` `[R, C]`.

    Rows that are constant or contain NaN (a class with no examples) give NaN rows and columns.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"`rows` must be a 2-D array. Received: rows.shape={rows.shape}")
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    undefined = ~(norms > _CONSTANT_TOLERANCE)
    centred = centred / np.where(undefined, 1.0, norms)[:, None]
    matrix = np.clip(centred @ centred.T, -1.0, 1.0)
    matrix[undefined, :] = np.nan
    matrix[:, undefined] = np.nan
    return matrix


def cosine_similarity_matrix(kernel) -> np.ndarray:
    """`[M, M]` cosine similarities of the class vectors of a logit layer.

    `kernel` has the Keras `Dense` layout `(h, M)`: class `i`'s weight vector is column `i`.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"`kernel` must have shape (h, M). Received: kernel.shape={kernel.shape}")
    norms = np.linalg.norm(kernel, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"`kernel` has all-zero class vectors: columns {np.flatnonzero(norms == 0)}")
    from kd_tf.losses.kd_sim import cosine_similarities  # KD-sim's own (imported here: TensorFlow)

    return cosine_similarities(kernel)


# Class structure.


def _check_parents(class_parents, num_classes):
    class_parents = np.asarray(class_parents)
    if class_parents.shape != (num_classes,):
        raise ValueError(
            f"`class_parents` must have shape [{num_classes}]. Received: class_parents.shape="
            f"{class_parents.shape}"
        )
    return class_parents


def superclass_order(class_parents) -> np.ndarray:
    """A class permutation that puts classes of one super-class next to each other.

    Super-classes appear in increasing parent id; inside one, classes keep their original order.
    """
    class_parents = np.asarray(class_parents)
    if class_parents.ndim != 1:
        raise ValueError(
            f"`class_parents` must be a 1-D array. Received: class_parents.shape={class_parents.shape}"
        )
    return np.argsort(class_parents, kind="stable")


def superclass_boundaries(class_parents) -> list[int]:
    """Positions in super-class order where a new super-class starts (0 excluded): grid lines."""
    sorted_parents = np.asarray(class_parents)[superclass_order(class_parents)]
    return [int(i) for i in np.flatnonzero(sorted_parents[1:] != sorted_parents[:-1]) + 1]


def reorder(matrix, order) -> np.ndarray:
    """`matrix[order][:, order]`: rows and columns permuted alike."""
    matrix = np.asarray(matrix)
    order = np.asarray(order)
    return matrix[np.ix_(order, order)]


def block_contrast(matrix, class_parents) -> dict:
    """How much stronger an `[M, M]` class-similarity matrix is inside super-classes than across.

    `within` is the mean of the off-diagonal entries `(i, j)`, `i != j`, whose classes share a
    parent; `across` the mean of the entries whose parents differ. Both are reported, with
    `difference` (`within - across`, the main summary) and `ratio` (`within / across`, only
    when `across > 1e-12`, else `None`: Pearson correlations of class means centre near
    `-1/(M - 1)`, and a ratio over a value near or below 0 says nothing).
    NaN entries (classes without examples) are left out. The matrix must be in the original class
    order (not reordered).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"`matrix` must be square. Received: matrix.shape={matrix.shape}")
    class_parents = _check_parents(class_parents, matrix.shape[0])
    same_parent = class_parents[:, None] == class_parents[None, :]
    off_diagonal = ~np.eye(matrix.shape[0], dtype=bool)
    within_entries = matrix[same_parent & off_diagonal]
    across_entries = matrix[~same_parent]
    within_entries = within_entries[~np.isnan(within_entries)]
    across_entries = across_entries[~np.isnan(across_entries)]
    if within_entries.size == 0 or across_entries.size == 0:
        raise ValueError(
            "`class_parents` must give at least one super-class with two classes and at least two "
            f"super-classes. Received: class_parents={class_parents.tolist()}"
        )
    within = float(within_entries.mean())
    across = float(across_entries.mean())
    ratio = within / across if across > 1e-12 else None
    return {"within": within, "across": across, "difference": within - across, "ratio": ratio}


# Teacher distributions and the class-correlation matrices of Figures 1 and 4.


def teacher_probabilities(teacher_logits, temperature: float = 1.0) -> np.ndarray:
    """The teacher's `q^T = softmax(v / T)`, `[N, M]`."""
    return softmax(_check_logits("teacher_logits", teacher_logits), temperature)


def ground_truth_probabilities(teacher_logits, labels, temperature: float = 1.0) -> np.ndarray:
    """The teacher's probability of the true class, `q^T_t`, `[N]` (x-axis of Figures 2 and 5)."""
    probabilities = teacher_probabilities(teacher_logits, temperature)
    labels = _check_labels(labels, *probabilities.shape)
    return probabilities[np.arange(labels.size), labels]


def topk_distribution(
    labels,
    teacher_logits,
    topk: int,
    temperature: float = 1.0,
) -> np.ndarray:
    """KD-topk's target `q̃` `[N, M]`: the `topk` largest `q^T_i` kept, the rest spread evenly, as the
    loss builds it (`kd_tf.losses.KDTopK.teacher_distribution`).

    Args:
        labels: integer labels `[N]` (the loss library's signature; top-k itself ignores them).
        teacher_logits: `[N, M]`.
        topk: number of classes kept, in [1, M].
        temperature: temperature of `q^T`.
    """
    teacher_logits = _check_logits("teacher_logits", teacher_logits)
    num_examples, num_classes = teacher_logits.shape
    labels = _check_labels(labels, num_examples, num_classes)
    temperature = _check_temperature(temperature)
    if not isinstance(topk, (int, np.integer)) or not 1 <= topk <= num_classes:
        raise ValueError(f"`topk` must be an integer in [1, {num_classes}]. Received: topk={topk}")
    from kd_tf import losses  # imported here: TensorFlow

    loss = losses.get("kd_topk", topk=int(topk), temperature=temperature)
    # In chunks, so that an ImageNet split's [N, M] float32 temporaries stay small.
    chunk = 4096
    return np.concatenate(
        [
            np.asarray(
                loss.teacher_distribution(
                    labels[start : start + chunk],
                    teacher_logits[start : start + chunk].astype(np.float32),
                ),
                np.float64,
            )
            for start in range(0, num_examples, chunk)
        ]
        or [np.zeros((0, num_classes))]
    )


def class_mean_distributions(distributions, labels) -> np.ndarray:
    """`[M, M]`: row `i` is the mean of `distributions` `[N, M]` over the examples of class `i`.

    A class without examples gets a NaN row.
    """
    distributions = np.asarray(distributions, dtype=np.float64)
    if distributions.ndim != 2:
        raise ValueError(
            f"`distributions` must have shape [N, M]. Received: distributions.shape={distributions.shape}"
        )
    num_examples, num_classes = distributions.shape
    labels = _check_labels(labels, num_examples, num_classes)
    sums = np.zeros((num_classes, num_classes))
    np.add.at(sums, labels, distributions)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def class_correlation_matrix(distributions, labels) -> np.ndarray:
    """Figure 1's matrix: Pearson correlation between the mean distributions of pairs of classes.

    **(our reading)** Entry `(i, j)` is the Pearson correlation, over the `M` output classes,
    between the mean of `distributions` over the examples of class `i` and that over the examples
    of class `j`. The result is in the original class order; sort it by super-class with
    `reorder(matrix, superclass_order(class_parents))`.
    """
    return pearson_matrix(class_mean_distributions(distributions, labels))


# Gradient rescaling (section 3.3, Figure 2).


def rescaling_factors(loss, labels, teacher_logits, student_logits, batch_size: int = 4096) -> np.ndarray:
    """Per-example `w = Σ_i |∂L/∂z_i| / Σ_i |∂L_CE/∂z_i|`, `[N]`.

    The ℓ1 norm of the distillation loss's gradient with respect to the student logits, over that
    of plain cross-entropy. Per-example losses are independent across rows, so the gradient of
    their sum with respect to `student_logits` holds each row's own gradient.

    Args:
        loss: a `kd_tf.losses` object with `per_example(labels, teacher_logits, student_logits)`.
        labels: integer labels `[N]`.
        teacher_logits: `[N, M]`.
        student_logits: `[N, M]`.
        batch_size: rows differentiated at a time (bounds memory only).
    """
    import tensorflow as tf

    from kd_tf.losses.base import sparse_cross_entropy

    teacher_logits = _check_logits("teacher_logits", teacher_logits)
    student_logits = _check_logits("student_logits", student_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "`student_logits` must have the shape of `teacher_logits`. Received: "
            f"{student_logits.shape} and {teacher_logits.shape}"
        )
    labels = _check_labels(labels, *teacher_logits.shape)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    factors = []
    for start in range(0, labels.size, batch_size):
        rows = slice(start, start + batch_size)
        batch_labels = tf.constant(labels[rows], tf.int32)
        batch_teacher = tf.constant(teacher_logits[rows], tf.float32)
        batch_student = tf.constant(student_logits[rows], tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(batch_student)
            distillation = tf.reduce_sum(loss.per_example(batch_labels, batch_teacher, batch_student))
            # The losses' own cross-entropy, so that plain cross-entropy gives w = 1 to the last bit.
            cross_entropy = tf.reduce_sum(sparse_cross_entropy(batch_labels, batch_student))
        distillation_norm = tf.reduce_sum(tf.abs(tape.gradient(distillation, batch_student)), axis=-1)
        cross_entropy_norm = tf.reduce_sum(tf.abs(tape.gradient(cross_entropy, batch_student)), axis=-1)
        del tape
        factors.append((distillation_norm / cross_entropy_norm).numpy().astype(np.float64))
    return np.concatenate(factors) if factors else np.zeros((0,))


def ground_truth_rescaling(labels, student_logits, target_distribution, alpha: float) -> np.ndarray:
    """Proposition 2's true-class factor at `T = 1`: `(1 - λ) + λ (q̃_t - p_t)/(1 - p_t)`.

    It equals the ℓ1 ratio of `rescaling_factors` whenever the true class is the only logit with a
    negative gradient (both gradients sum to 0, so each ℓ1 norm is twice the true-class entry).
    """
    student_logits = _check_logits("student_logits", student_logits)
    labels = _check_labels(labels, *student_logits.shape)
    target_distribution = np.asarray(target_distribution, dtype=np.float64)
    if target_distribution.shape != student_logits.shape:
        raise ValueError(
            "`target_distribution` must have the shape of `student_logits`. Received: "
            f"{target_distribution.shape} and {student_logits.shape}"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    rows = np.arange(labels.size)
    student_true = softmax(student_logits)[rows, labels]
    target_true = target_distribution[rows, labels]
    return (1.0 - alpha) + alpha * (target_true - student_true) / (1.0 - student_true)


def rescaling_analysis(
    loss, labels, teacher_logits, student_logits, temperature: float | None = None
) -> dict:
    """Figure 2's data: `w` per example against the teacher's `q^T_t`, and their correlation.

    `temperature` of `q^T_t` defaults to the loss's own (`loss.temperature`, or 1 if it has none).
    Returns `{"teacher_probs": [N], "w": [N], "pearson": float | None}`.
    """
    if temperature is None:
        temperature = getattr(loss, "temperature", 1.0)
    teacher_probs = ground_truth_probabilities(teacher_logits, labels, temperature)
    factors = rescaling_factors(loss, labels, teacher_logits, student_logits)
    return {
        "teacher_probs": teacher_probs,
        "w": factors,
        "pearson": pearson(teacher_probs, factors),
    }


# KD-topk's uplift against k (Figure 3).


def topk_uplift_series(records, kd_accuracy, metric: str = "accuracy", higher_is_better: bool = True):
    """Figure 3's series: KD-topk's gain over KD for each `k`, averaged over runs with the same `k`.

    Args:
        records: iterable of `(k, value)` pairs, or of mappings with the key `"topk"` (or `"k"`)
            and the key `metric`; several records with one `k` (seeds) are averaged.
        kd_accuracy: KD's value of the metric: a number, or a sequence of runs (averaged).
        metric: mapping key holding the value (e.g. `"accuracy"`, `"test_perplexity"`).
        higher_is_better: `False` for perplexity: the uplift is then `KD - KD-topk`.

    Returns:
        `{"ks": [...], "uplift": [...], "uplift_std": [...], "runs": [...]}`, sorted by `k`;
        `uplift_std` is the standard deviation of the KD-topk runs at that `k` (0 for one run).
    """
    grouped: dict[int, list[float]] = {}
    for record in records:
        if isinstance(record, Mapping):
            if "topk" in record:
                k = record["topk"]
            elif "k" in record:
                k = record["k"]
            else:
                raise ValueError(f"Each record needs a `topk` or `k` key. Received: {dict(record)}")
            if metric not in record:
                raise ValueError(f"Each record needs the key `{metric}`. Received: {dict(record)}")
            value = record[metric]
        else:
            k, value = record
        if int(k) != k or k < 1:
            raise ValueError(f"`k` must be a positive integer. Received: k={k}")
        grouped.setdefault(int(k), []).append(float(value))
    if not grouped:
        raise ValueError("`records` must hold at least one (k, value) result. Received: none")
    kd_value = float(np.mean(np.asarray(kd_accuracy, dtype=np.float64)))
    sign = 1.0 if higher_is_better else -1.0
    ks = sorted(grouped)
    return {
        "ks": ks,
        "uplift": [sign * (float(np.mean(grouped[k])) - kd_value) for k in ks],
        "uplift_std": [float(np.std(grouped[k])) for k in ks],
        "runs": [len(grouped[k]) for k in ks],
    }


# Logit-layer geometry (Proposition 1).


def penultimate_model(model, layer_name: str = "logits"):
    """A `keras.Model` on `model`'s inputs returning the input of its layer `layer_name` (`h`)."""
    import keras

    try:
        layer = model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(
            f"`model` has no layer named {layer_name!r}. Received layers: "
            f"{[layer.name for layer in model.layers]}"
        ) from error
    try:
        penultimate = layer.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The input of layer {layer_name!r} is not defined: `model` must be a functional model "
            "that calls it once."
        ) from error
    return keras.Model(inputs=model.inputs, outputs=penultimate, name=f"{model.name}_penultimate")


def logit_kernel(model, layer_name: str = "logits") -> np.ndarray:
    """The `(h, M)` kernel of `model`'s logit layer: class `i`'s weight vector is column `i`."""
    layer = model.get_layer(layer_name)
    if not hasattr(layer, "kernel"):
        raise ValueError(f"Layer {layer_name!r} has no `kernel`. Received: {type(layer).__name__}")
    import keras

    return keras.ops.convert_to_numpy(layer.kernel)


def logit_geometry(
    penultimate,
    kernel,
    teacher_logits,
    labels,
    temperature: float = 1.0,
    normalize: bool = False,
) -> dict:
    """Proposition 1: distance from each `h` to each class vector against the teacher's `q^T_i`.

    With logits `z_i = -½‖h - w_i‖² + const`, a class the teacher finds more likely ends closer
    to `h`. For models with cosine logits (ℓ2-normalised `h` and class vectors, as in the synthetic
    MLP) pass `normalize=True`: `‖ĥ - ŵ_i‖² = 2 - 2 cos(h, w_i)`, so the relation is exact. With a
    plain `Dense` layer (`z_i = h·w_i + b_i`) it holds only up to the per-class terms
    `½‖w_i‖² + b_i`.

    Args:
        penultimate: `h`, `[N, d]` (see `penultimate_model`).
        kernel: logit-layer kernel `(d, M)`.
        teacher_logits: `[N, M]`.
        labels: integer labels `[N]`.
        temperature: temperature of `q^T` (Proposition 1 is stated at `T = 1`).
        normalize: ℓ2-normalise `h` and the class vectors first.

    Returns:
        `distances` `[N, M]` (`‖h - w_i‖`), `teacher_probs` `[N, M]`, `wrong_class` mask `[N, M]`,
        `pearson` (distance against `q^T_i` over all wrong classes of all examples) and
        `pearson_log_gap` (`‖h - w_i‖² - ‖h - w_t‖²` against `log q^T_i`, the linear form of
        Proposition 1). The paper predicts both correlations negative.
    """
    penultimate = np.asarray(penultimate, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    teacher_logits = _check_logits("teacher_logits", teacher_logits)
    if penultimate.ndim != 2 or kernel.ndim != 2 or penultimate.shape[1] != kernel.shape[0]:
        raise ValueError(
            "`penultimate` [N, d] and `kernel` (d, M) must agree on d. Received: "
            f"penultimate.shape={penultimate.shape}, kernel.shape={kernel.shape}"
        )
    if (penultimate.shape[0], kernel.shape[1]) != teacher_logits.shape:
        raise ValueError(
            f"`teacher_logits` must have shape {(penultimate.shape[0], kernel.shape[1])}. "
            f"Received: teacher_logits.shape={teacher_logits.shape}"
        )
    labels = _check_labels(labels, *teacher_logits.shape)
    if normalize:
        penultimate = penultimate / np.maximum(np.linalg.norm(penultimate, axis=1, keepdims=True), 1e-12)
        kernel = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    squared = (
        (penultimate**2).sum(axis=1, keepdims=True)
        - 2.0 * penultimate @ kernel
        + (kernel**2).sum(axis=0, keepdims=True)
    )
    squared = np.maximum(squared, 0.0)
    distances = np.sqrt(squared)
    teacher_probs = softmax(teacher_logits, temperature)
    rows = np.arange(labels.size)
    wrong_class = np.ones_like(teacher_probs, dtype=bool)
    wrong_class[rows, labels] = False
    squared_gap = squared - squared[rows, labels][:, None]
    log_probs = np.log(np.maximum(teacher_probs, np.finfo(np.float64).tiny))
    return {
        "distances": distances,
        "teacher_probs": teacher_probs,
        "wrong_class": wrong_class,
        "pearson": pearson(distances[wrong_class], teacher_probs[wrong_class]),
        "pearson_log_gap": pearson(squared_gap[wrong_class], log_probs[wrong_class]),
    }


def model_logit_geometry(
    model,
    inputs,
    teacher_logits,
    labels,
    temperature: float = 1.0,
    normalize: bool | None = None,
    layer_name: str = "logits",
    batch_size: int = 512,
) -> dict:
    """`logit_geometry` for a trained student: runs `penultimate_model(model)` on `inputs`.

    `normalize=None` decides from the logit layer: a plain `keras.layers.Dense` is used as is, any
    other layer (in this project `models.mlp.CosineLogits`, which ℓ2-normalises `h` and the class
    vectors) is measured on normalised vectors.
    """
    import keras

    layer = model.get_layer(layer_name)
    if normalize is None:
        normalize = not isinstance(layer, keras.layers.Dense)
    penultimate = penultimate_model(model, layer_name).predict(inputs, batch_size=batch_size, verbose=0)
    kernel = logit_kernel(model, layer_name)
    return {
        **logit_geometry(penultimate, kernel, teacher_logits, labels, temperature, normalize),
        "normalized": bool(normalize),
    }


# Everything about one teacher, for `run.py --mode=analyze`.


def analyze_teacher(
    teacher_logits,
    labels,
    class_parents=None,
    kernel=None,
    temperatures: Sequence[float] = (1, 4),
    topk: int = 5,
) -> dict:
    """Figure 1's matrices and their summary numbers for one teacher.

    Args:
        teacher_logits: `[N, M]` teacher logits on an evaluation set.
        labels: integer labels `[N]`.
        class_parents: optional super-class of each class `[M]`; matrices are then sorted by
            super-class and `block_contrast` is reported for each.
        kernel: optional teacher logit-layer kernel `(h, M)` for the cosine matrix (Figure 1(d)).
        temperatures: temperatures of the teacher-distribution matrices (Figures 1(a), 1(b)).
        topk: `k` of the KD-topk matrix (Figure 1(c)), built at the highest temperature; 0 or `None`
            skips it.

    Returns:
        `{"summary": ..., "matrices": {title: [M, M]}, "ground_truth_probs": {title: [N]},
        "class_order": [M], "boundaries": [...]}`. `summary` holds only JSON-serialisable
        numbers: the teacher's accuracy, per temperature the mean and median of `q^T_t`, and per
        matrix its `block_contrast` (with `class_parents`).
    """
    teacher_logits = _check_logits("teacher_logits", teacher_logits)
    num_examples, num_classes = teacher_logits.shape
    labels = _check_labels(labels, num_examples, num_classes)
    temperatures = [_check_temperature(temperature) for temperature in temperatures]
    if not temperatures:
        raise ValueError("`temperatures` must hold at least one temperature. Received: ()")
    if class_parents is not None:
        class_parents = _check_parents(class_parents, num_classes)
        order = superclass_order(class_parents)
        boundaries = superclass_boundaries(class_parents)
    else:
        order = np.arange(num_classes)
        boundaries = []

    matrices: dict[str, np.ndarray] = {}
    ground_truth: dict[str, np.ndarray] = {}
    probability_summary: dict[str, dict] = {}
    for temperature in temperatures:
        title = f"teacher T={temperature:g}"
        probabilities = softmax(teacher_logits, temperature)
        matrices[title] = class_correlation_matrix(probabilities, labels)
        true_probs = probabilities[np.arange(num_examples), labels]
        ground_truth[title] = true_probs
        probability_summary[title] = {
            "mean_true_class_prob": float(true_probs.mean()),
            "median_true_class_prob": float(np.median(true_probs)),
        }
    if topk:
        temperature = max(temperatures)
        distribution = topk_distribution(labels, teacher_logits, topk, temperature)
        matrices[f"top-{topk} T={temperature:g}"] = class_correlation_matrix(distribution, labels)
    if kernel is not None:
        kernel = np.asarray(kernel)
        if kernel.ndim != 2 or kernel.shape[1] != num_classes:
            raise ValueError(
                f"`kernel` must have shape (h, {num_classes}). Received: kernel.shape={kernel.shape}"
            )
        matrices["logit-weight cosine"] = cosine_similarity_matrix(kernel)

    summary: dict = {
        "num_examples": int(num_examples),
        "num_classes": int(num_classes),
        "teacher_accuracy": float(np.mean(teacher_logits.argmax(axis=1) == labels)),
        "temperatures": temperatures,
        "topk": int(topk) if topk else None,
        "true_class_probability": probability_summary,
    }
    if class_parents is not None:
        summary["block_contrast"] = {
            title: block_contrast(matrix, class_parents) for title, matrix in matrices.items()
        }
    return {
        "summary": summary,
        "matrices": {title: reorder(matrix, order) for title, matrix in matrices.items()},
        "ground_truth_probs": ground_truth,
        "class_order": [int(i) for i in order],
        "boundaries": boundaries,
    }


def compare_teachers(
    teachers: Mapping[str, np.ndarray],
    labels,
    class_parents=None,
    temperature: float = 4.0,
) -> dict:
    """Figures 4 and 5: several teachers (e.g. trained without and with LS) on the same examples.

    Returns `{"matrices": {name: [M, M]}, "ground_truth_probs": {name: [N]},
    "summary": {name: {...}}}`: matrices at `temperature`, sorted by super-class when
    `class_parents` is given; `ground_truth_probs` is `q^T_t` at `temperature`.
    """
    if not teachers:
        raise ValueError("`teachers` must name at least one teacher's logits. Received: {}")
    matrices, ground_truth, summary = {}, {}, {}
    for name, teacher_logits in teachers.items():
        result = analyze_teacher(
            teacher_logits, labels, class_parents, temperatures=(temperature,), topk=None
        )
        (title,) = result["matrices"]
        matrices[name] = result["matrices"][title]
        ground_truth[name] = result["ground_truth_probs"][title]
        entry = {
            "teacher_accuracy": result["summary"]["teacher_accuracy"],
            **result["summary"]["true_class_probability"][title],
        }
        if class_parents is not None:
            entry["block_contrast"] = result["summary"]["block_contrast"][title]
        summary[name] = entry
    return {"matrices": matrices, "ground_truth_probs": ground_truth, "summary": summary}
