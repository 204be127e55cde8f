"""Synthetic classification with controlled class similarity and difficulty (paper §5.1, Suppl. 7.2)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from data import Facts, Splits

EVAL_BATCH_SIZE = 1024

# How the sine terms bend the labels (`task_kind`). "shared_sine" is the original task: one `f` for every
# class. "per_class_sine" gives each class its own sine terms, so that their number controls how far the
# labels are from linear (see `SyntheticTask`).
SHARED_SINE = "shared_sine"
PER_CLASS_SINE = "per_class_sine"
TASK_KINDS = (SHARED_SINE, PER_CLASS_SINE)
# "per_class_sine": every term has amplitude `a`, a frequency `ω ~ U[5, 10)` and a phase `β ~ U[0, 2π)`.
# The amplitude sets how many labels a term moves; the frequency how balanced the classes stay (a slow term
# acts like a class offset over the projections where the class wins, a fast one averages out there).
PER_CLASS_AMPLITUDE = 0.25
PER_CLASS_FREQUENCIES = (5.0, 10.0)
# L2 penalty of the classifier `label_nonlinearity` fits (per example; small enough to be near the
# max-margin direction on separable labels, large enough to keep Newton's method finite there).
_LINEAR_FIT_L2 = 1e-6


def _in_memory(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` without tf.data's autotuning: slicing arrays in memory gains nothing from it, and the
    teardown of an autotuned iterator waits for its tuning thread, about a second at the end of many `fit`
    calls (a third of a default-run student's training time)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """A fixed labelling rule over `x ~ N(0, I_dim)`, after Ma et al. 2018 (MMoE).

    Class `m` scores an input by `f_m(û_mᵀx)`; the label is the class with the highest score. The number
    of sine terms in `f_m` is the task difficulty `m_d` (0 gives the linearly separable `f_m(s) = s`).

    - "shared_sine" (the original task): `f_m(s) = f(s) = s + Σ_i sin(α_i s + β_i)`, one `f` for every
      class, `α_i, β_i ~ N(0, 1)`. No class is favoured, but wherever `f` increases over the range the
      largest projections fall in, the label is still `argmax_m û_mᵀx`: how far the labels are from linear
      depends on the draw of `α, β` (the task seed) more than on `m_d`.
    - "per_class_sine": `f_m(s) = s + a Σ_i sin(ω_{m,i} s + β_{m,i})` with `a = PER_CLASS_AMPLITUDE`,
      `ω_{m,i} ~ U[5, 10)`, `β_{m,i} ~ U[0, 2π)` drawn for each class. Each term changes the scores of the
      classes independently, so more terms move more labels away from the linear rule whatever the seed;
      the frequencies are high enough that a term averages out over the projections where a class wins,
      which keeps the classes close to balanced (`label_nonlinearity` measures both).

    Attributes:
        superclass_bases: `[num_superclasses, dim]` orthonormal rows `b_k`.
        class_vectors: `[num_classes, dim]` unit rows `û_m = τ b_k + sqrt(1 - τ²) e_m`, `e_m ⟂ b_k`.
        class_parents: `[num_classes]` super-class `k` of each class; class `m` belongs to `m // (M / K)`.
        alphas: frequencies of the sine terms, `[difficulty]` (`α_i`, "shared_sine") or
            `[difficulty, num_classes]` (`ω_{m,i}`, "per_class_sine").
        betas: phases of the sine terms, shaped like `alphas`.
        task_kind: one of `TASK_KINDS`.
        amplitude: the amplitude of every sine term (1 for "shared_sine").
    """

    superclass_bases: np.ndarray
    class_vectors: np.ndarray
    class_parents: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    task_kind: str = SHARED_SINE
    amplitude: float = 1.0

    @property
    def num_classes(self) -> int:
        return self.class_vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.class_vectors.shape[1]

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Returns the `[n, num_classes]` class scores `f_m(û_mᵀx)` of `inputs` `[n, dim]`."""
        projections = inputs @ self.class_vectors.T
        scores = projections.copy()
        # One sine term at a time: a scalar `alpha, beta` ("shared_sine") or one per class, broadcast over
        # the inputs. Multiplying by an amplitude of 1.0 changes no bit of the original task's scores.
        for alpha, beta in zip(self.alphas, self.betas, strict=True):
            scores += self.amplitude * np.sin(alpha * projections + beta)
        return scores

    def labels(self, inputs: np.ndarray) -> np.ndarray:
        """Returns the int32 label `argmax_m f_m(û_mᵀx)` of each row of `inputs`."""
        return np.argmax(self.scores(inputs), axis=-1).astype(np.int32)

    def sample(self, num_examples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draws `num_examples` inputs `x ~ N(0, I)` (float32) and their labels (int32)."""
        inputs = rng.standard_normal((num_examples, self.dim))
        return inputs.astype(np.float32), self.labels(inputs)


def make_task(
    num_classes: int,
    num_superclasses: int,
    dim: int,
    tau: float,
    difficulty: int,
    rng: np.random.Generator,
    task_kind: str = SHARED_SINE,
) -> SyntheticTask:
    """Samples the class geometry and the sine constants of one task of kind `task_kind` (`TASK_KINDS`).

    When `dim >= num_superclasses + num_classes`, the `e_m` are drawn orthonormal to each other and to every
    basis, so the geometry is exact: `cos(u_m, b_k) = τ`, two classes of one super-class have cosine `τ²`,
    classes of different super-classes cosine 0. With a smaller `dim` each `e_m` is only orthogonal to its
    own basis and the cosines hold in expectation.

    The geometry takes the same draws from `rng` whatever `task_kind`. Then "shared_sine" draws
    `α_i, β_i ~ N(0, 1)`, the choice of the MMoE synthetic-data code (in the draws the original code made,
    so that a seed gives the task it always gave); "per_class_sine" draws `ω_{m,i}, β_{m,i}` term by term,
    so the first `m_d` terms of a harder task from the same `rng` state are those of the easier one.
    """
    _validate_task(num_classes, num_superclasses, dim, tau, difficulty, task_kind)
    classes_per_superclass = num_classes // num_superclasses
    class_parents = np.repeat(np.arange(num_superclasses), classes_per_superclass).astype(np.int32)
    exact = dim >= num_superclasses + num_classes
    num_directions = num_superclasses + num_classes if exact else num_superclasses
    # QR of a Gaussian matrix gives orthonormal columns in a uniformly random orientation.
    directions, _ = np.linalg.qr(rng.standard_normal((dim, num_directions)))
    directions = directions.T
    superclass_bases = directions[:num_superclasses]
    parent_bases = superclass_bases[class_parents]
    if exact:
        offsets = directions[num_superclasses:]
    else:
        offsets = rng.standard_normal((num_classes, dim))
        offsets -= np.sum(offsets * parent_bases, axis=1, keepdims=True) * parent_bases
        offsets /= np.linalg.norm(offsets, axis=1, keepdims=True)
    class_vectors = tau * parent_bases + np.sqrt(1.0 - tau**2) * offsets
    # Already unit length up to rounding; normalise so that û_m is exactly what the labels use.
    class_vectors /= np.linalg.norm(class_vectors, axis=1, keepdims=True)
    if task_kind == SHARED_SINE:
        return SyntheticTask(
            superclass_bases=superclass_bases,
            class_vectors=class_vectors,
            class_parents=class_parents,
            alphas=rng.standard_normal(difficulty),
            betas=rng.standard_normal(difficulty),
        )
    # Term i's frequencies and phases for every class come before term i + 1's.
    uniforms = rng.random((difficulty, 2, num_classes))
    low, high = PER_CLASS_FREQUENCIES
    return SyntheticTask(
        superclass_bases=superclass_bases,
        class_vectors=class_vectors,
        class_parents=class_parents,
        alphas=low + (high - low) * uniforms[:, 0],
        betas=2.0 * np.pi * uniforms[:, 1],
        task_kind=PER_CLASS_SINE,
        amplitude=PER_CLASS_AMPLITUDE,
    )


def label_nonlinearity(task: SyntheticTask, num_inputs: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Measures how far the labels of `task` are from linear, on `num_inputs` draws of `x` from `seed`.

    Returns:
        `differs_from_linear_argmax`: the fraction of inputs whose label is not `argmax_m û_mᵀx` (0 at
            `m_d = 0`; alone it does not say whether some other linear rule fits the labels).
        `linear_accuracy`: the accuracy, on the second half of the inputs, of the linear classifier
            `argmax_m (c_m û_mᵀx + b_m)` fitted to the first half by multinomial logistic regression
            (a small L2 penalty, Newton's method). Its class `m` weighs `x` along `û_m` only: the labels are
            a function of the projections, and tying the weights to them leaves `2 M` parameters, which the
            fit learns from a few thousand inputs. At the default geometry it reaches 0.99 on the linear
            task from 10,000; free weights (`M × M` on the projections) fitted to those 10,000 reach about
            0.93, and pass 0.97 only from about 40,000 and seconds of fitting. On the tasks of both kinds
            the two agree within a few hundredths once the free fit has those 40,000.
        `largest_class_share`, `smallest_class_share`: the largest and smallest fraction of the inputs
            that one class labels (`1 / num_classes` each when balanced).

    Numpy only and deterministic given `seed`; about 0.2 s at the default geometry.
    """
    _check_positive_int("num_inputs", num_inputs)
    if num_inputs < 2:
        raise ValueError(
            f"`num_inputs` must be at least 2 (fit and score halves). Received: num_inputs={num_inputs}"
        )
    inputs = np.random.default_rng(seed).standard_normal((num_inputs, task.dim))
    labels = task.labels(inputs)
    projections = inputs @ task.class_vectors.T
    half = num_inputs // 2
    slopes, biases = _fit_aligned_linear(projections[:half], labels[:half])
    predictions = np.argmax(projections[half:] * slopes + biases, axis=1)
    shares = np.bincount(labels, minlength=task.num_classes) / num_inputs
    return {
        "differs_from_linear_argmax": float(np.mean(labels != np.argmax(projections, axis=1))),
        "linear_accuracy": float(np.mean(predictions == labels[half:])),
        "largest_class_share": float(shares.max()),
        "smallest_class_share": float(shares.min()),
    }


def _fit_aligned_linear(
    projections: np.ndarray, labels: np.ndarray, max_steps: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Fits `logits_m = c_m s_m + b_m` to `labels` from `projections` `s` `[n, M]` by penalised
    multinomial logistic regression: Newton steps with a backtracking line search. Returns `(c, b)`."""
    n, num_classes = projections.shape
    rows = np.arange(n)

    def loss(slopes, biases):
        logits = projections * slopes + biases
        top = logits.max(axis=1)
        log_normalisers = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        penalty = 0.5 * _LINEAR_FIT_L2 * (slopes @ slopes + biases @ biases)
        return np.mean(log_normalisers - logits[rows, labels]) + penalty

    slopes, biases = np.zeros(num_classes), np.zeros(num_classes)
    current = loss(slopes, biases)
    for _ in range(max_steps):
        logits = projections * slopes + biases
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        residuals = probabilities.copy()
        residuals[rows, labels] -= 1.0
        gradient = np.concatenate(
            [
                (residuals * projections).mean(axis=0) + _LINEAR_FIT_L2 * slopes,
                residuals.mean(axis=0) + _LINEAR_FIT_L2 * biases,
            ]
        )
        weighted = probabilities * projections
        hessian = np.block(
            [
                [
                    np.diag((weighted * projections).mean(axis=0)) - weighted.T @ weighted / n,
                    np.diag(weighted.mean(axis=0)) - weighted.T @ probabilities / n,
                ],
                [
                    np.diag(weighted.mean(axis=0)) - probabilities.T @ weighted / n,
                    np.diag(probabilities.mean(axis=0)) - probabilities.T @ probabilities / n,
                ],
            ]
        ) + _LINEAR_FIT_L2 * np.eye(2 * num_classes)
        step = -np.linalg.solve(hessian, gradient)
        decrement = -gradient @ step
        if decrement < 1e-10:
            break
        size = 1.0
        while True:
            new_slopes, new_biases = slopes + size * step[:num_classes], biases + size * step[num_classes:]
            new = loss(new_slopes, new_biases)
            if new <= current - 0.25 * size * decrement or size < 1e-8:
                break
            size /= 2
        slopes, biases, current = new_slopes, new_biases, new
    return slopes, biases


@dataclasses.dataclass(frozen=True)
class SyntheticArrays:
    """The task and its three splits as numpy arrays (inputs float32 `[n, dim]`, labels int32 `[n]`)."""

    task: SyntheticTask
    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def class_parents(self) -> np.ndarray:
        return self.task.class_parents


def arrays(
    num_classes: int = 40,
    num_superclasses: int = 4,
    dim: int = 64,
    tau: float = 0.5,
    difficulty: int = 2,
    train_examples: int = 5_000,
    validation_examples: int = 5_000,
    test_examples: int = 5_000,
    seed: int = 0,
    task_seed: int | None = None,
    task_kind: str = SHARED_SINE,
    **unused,
) -> SyntheticArrays:
    """Returns the task and its train/validation/test arrays, all determined by `seed`.

    With `task_seed`, the task (class vectors and sine constants) comes from `task_seed` instead, so that
    several seeds draw new data and models for one fixed task: with `difficulty > 0` the sine constants
    change how hard a task is, and a table over seeds should not mix tasks of different difficulty.
    `task_kind` chooses the rule (`TASK_KINDS`, see `SyntheticTask`); the default is the original task.

    The three splits are independent draws from the same task; the train split is in a fixed order (what a
    teacher cache indexes).
    """
    for name, value in (
        ("train_examples", train_examples),
        ("validation_examples", validation_examples),
        ("test_examples", test_examples),
    ):
        _check_positive_int(name, value)
    _, train_seed, validation_seed, test_seed = np.random.SeedSequence(seed).spawn(4)
    task = task_of(num_classes, num_superclasses, dim, tau, difficulty, seed, task_seed, task_kind)
    x_train, y_train = task.sample(train_examples, np.random.default_rng(train_seed))
    x_validation, y_validation = task.sample(validation_examples, np.random.default_rng(validation_seed))
    x_test, y_test = task.sample(test_examples, np.random.default_rng(test_seed))
    return SyntheticArrays(task, x_train, y_train, x_validation, y_validation, x_test, y_test)


def task_of(
    num_classes: int = 40,
    num_superclasses: int = 4,
    dim: int = 64,
    tau: float = 0.5,
    difficulty: int = 2,
    seed: int = 0,
    task_seed: int | None = None,
    task_kind: str = SHARED_SINE,
    **unused,
) -> SyntheticTask:
    """The task `arrays` (and `load`) build for these options, without sampling any data."""
    own_task_seed = np.random.SeedSequence(seed).spawn(4)[0]
    if task_seed is not None:
        if isinstance(task_seed, bool) or not isinstance(task_seed, int | np.integer) or task_seed < 0:
            raise ValueError(
                f"`task_seed` must be None or a non-negative integer. Received: task_seed={task_seed!r}"
            )
        own_task_seed = np.random.SeedSequence(task_seed).spawn(4)[0]
    return make_task(
        num_classes,
        num_superclasses,
        dim,
        tau,
        difficulty,
        np.random.default_rng(own_task_seed),
        task_kind=task_kind,
    )


def measures(options: dict, seed: int) -> dict[str, float]:
    """`label_nonlinearity` of the task `load(**options, seed=seed)` trains on: what every synthetic run
    records and prints (`FACTS.measures`). Remembered per task, so the cells of a table measure it once."""
    task_options = {name: options[name] for name in _TASK_OPTIONS if name in options}
    return dict(_measures(tuple(sorted(task_options.items())), seed))


_TASK_OPTIONS = ("num_classes", "num_superclasses", "dim", "tau", "difficulty", "task_seed", "task_kind")


@functools.lru_cache(maxsize=256)
def _measures(task_options: tuple, seed: int) -> tuple:
    options = dict(task_options)
    if options.get("task_seed") is not None:
        seed = 0  # the task does not depend on the data seed
    return tuple(label_nonlinearity(task_of(**options, seed=seed)).items())


def describe_measures(measures: dict) -> str:
    """The label non-linearity in one line."""
    return (
        f"labels off the linear argmax: {100 * measures['differs_from_linear_argmax']:.1f}% of inputs; "
        f"a linear classifier fits {100 * measures['linear_accuracy']:.1f}%"
    )


def load(
    num_classes: int = 40,
    num_superclasses: int = 4,
    dim: int = 64,
    tau: float = 0.5,
    difficulty: int = 2,
    train_examples: int = 5_000,
    validation_examples: int = 5_000,
    test_examples: int = 5_000,
    batch_size: int = 128,
    seed: int = 0,
    task_seed: int | None = None,
    task_kind: str = SHARED_SINE,
    **unused,
) -> Splits:
    """Builds the synthetic task of `seed` and returns its batched pipelines.

    Args:
        num_classes: `M`, a multiple of `num_superclasses`.
        num_superclasses: `K`.
        dim: input dimension `d`, at least `num_superclasses` (and 2).
        tau: class similarity inside a super-class, in [0, 1).
        difficulty: number of sine terms `m_d` (0: linearly separable).
        task_kind: the labelling rule, "shared_sine" (the original task, default) or "per_class_sine"
            (each class its own sine terms, so that `difficulty` controls how far the labels are from
            linear); see `SyntheticTask`.
        train_examples, validation_examples, test_examples: split sizes.
        batch_size: examples per batch; `train` drops the last partial batch.
        seed: determines the task, the three splits and the shuffling order.
        task_seed: when given, determines the task instead of `seed` (see `arrays`).
        **unused: options meant for other datasets, ignored.

    Returns:
        `Splits` whose `validation` selects the model and whose `test` reports it, with the class
        hierarchy in `class_parents`.
    """
    _check_positive_int("batch_size", batch_size)
    data = arrays(
        num_classes=num_classes,
        num_superclasses=num_superclasses,
        dim=dim,
        tau=tau,
        difficulty=difficulty,
        train_examples=train_examples,
        validation_examples=validation_examples,
        test_examples=test_examples,
        seed=seed,
        task_seed=task_seed,
        task_kind=task_kind,
    )
    return splits(data, batch_size, seed)


def splits(
    data: SyntheticArrays,
    batch_size: int,
    seed: int,
    train_count: int | None = None,
    train_offset: int = 0,
    examples_per_epoch: int | None = None,
) -> Splits:
    """The batched pipelines of `data`, training on `train_count` examples from `train_offset` (default all).

    With `examples_per_epoch`, training is one endless shuffled stream and an "epoch" is that many
    examples (a fixed step budget whatever the training-set size); otherwise an epoch is one pass.
    """
    train_count = len(data.x_train) - train_offset if train_count is None else train_count
    inputs = data.x_train[train_offset : train_offset + train_count]
    labels = data.y_train[train_offset : train_offset + train_count]
    if batch_size > len(inputs):
        raise ValueError(
            "`batch_size` must not exceed `train_examples` (the last partial batch is dropped). "
            f"Received: batch_size={batch_size}, train_examples={len(inputs)}"
        )

    def train_batches(targets):
        examples = tf.data.Dataset.from_tensor_slices((inputs, targets))
        # The shuffle's order depends on the seed and the example count only, so batches that carry other
        # targets (`train_with_targets`) hold the same examples in the same order.
        examples = examples.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        if examples_per_epoch is not None:
            examples = examples.repeat()
        return _in_memory(examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    return Splits(
        train=train_batches(labels),
        test=_ordered(data.x_test, data.y_test, batch_size),
        num_classes=data.task.num_classes,
        train_examples=examples_per_epoch or len(inputs),
        train_ordered=_ordered(inputs, labels, batch_size),
        class_parents=data.class_parents,
        augmented=False,
        validation=_ordered(data.x_validation, data.y_validation, batch_size),
        train_with_targets=train_batches,
    )


def _ordered(inputs: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    # Evaluation runs in larger batches than training: a step's fixed cost dominates for these small models.
    batch_size = max(batch_size, EVAL_BATCH_SIZE)
    return _in_memory(
        tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _validate_task(
    num_classes: int, num_superclasses: int, dim: int, tau: float, difficulty: int, task_kind: str
) -> None:
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("num_superclasses", num_superclasses)
    _check_positive_int("dim", dim)
    if num_classes % num_superclasses:
        raise ValueError(
            "`num_classes` must be a multiple of `num_superclasses`. "
            f"Received: num_classes={num_classes}, num_superclasses={num_superclasses}"
        )
    if dim < max(num_superclasses, 2):
        raise ValueError(
            "`dim` must be at least `num_superclasses` (orthonormal bases) and at least 2. "
            f"Received: dim={dim}, num_superclasses={num_superclasses}"
        )
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"`tau` must be in [0, 1). Received: tau={tau!r}")
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | np.integer) or difficulty < 0:
        raise ValueError(f"`difficulty` must be a non-negative integer. Received: difficulty={difficulty!r}")
    if task_kind not in TASK_KINDS:
        raise ValueError(f"`task_kind` must be one of {TASK_KINDS}. Received: task_kind={task_kind!r}")


def _class_parents(options: dict) -> np.ndarray:
    per_parent = options["num_classes"] // options["num_superclasses"]
    return np.repeat(np.arange(options["num_superclasses"]), per_parent).astype(np.int32)


FACTS = Facts(
    default_models=("mlp", "mlp"),
    option_flags={
        name: name
        for name in (
            "num_classes",
            "num_superclasses",
            "dim",
            "difficulty",
            "task_seed",
            "task_kind",
            "train_examples",
            "validation_examples",
            "test_examples",
        )
    },
    num_classes=lambda options: options["num_classes"],
    class_parents=_class_parents,
    train_examples=lambda options: options["train_examples"],
    input_shape=lambda options: (options["dim"],),
    measures=measures,
    describe_measures=describe_measures,
    # From the search in BUILD.md ("Training", "Method hyperparameters"); the other datasets' recipes live in
    # their flagfiles (configs/).
    preset={
        "flags": {"teacher_epochs": 10, "teacher_learning_rate": 1e-3},
        "methods": {
            "kd_pt": {"temperature": 1.0, "alpha": 0.3},
            "kd_sim": {"temperature": 1.0, "alpha": 0.3},
            "kd_pt_sim": {"temperature": 1.0, "alpha": 0.3},
            "kd_rel": {"temperature": 1.0, "alpha": 0.1},
            "kd_pt_rel": {"temperature": 1.0, "alpha": 0.3},
        },
    },
)
