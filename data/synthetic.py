"""Synthetic classification with controlled class similarity and difficulty (paper §5.1, Suppl. 7.2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from data import Facts, Splits

EVAL_BATCH_SIZE = 1024


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

    Class `m` scores an input by `f(û_mᵀx)` with `f(s) = s + Σ_i sin(α_i s + β_i)`; the label is the class
    with the highest score. `f` is shared by every class, so no class is favoured; its sine terms bend the
    decision boundaries, and their number is the task difficulty (0 gives a linearly separable task).

    Attributes:
        superclass_bases: `[num_superclasses, dim]` orthonormal rows `b_k`.
        class_vectors: `[num_classes, dim]` unit rows `û_m = τ b_k + sqrt(1 - τ²) e_m`, `e_m ⟂ b_k`.
        class_parents: `[num_classes]` super-class `k` of each class; class `m` belongs to `m // (M / K)`.
        alphas: `[difficulty]` frequencies `α_i` of the sine terms.
        betas: `[difficulty]` phases `β_i` of the sine terms.
    """

    superclass_bases: np.ndarray
    class_vectors: np.ndarray
    class_parents: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.class_vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.class_vectors.shape[1]

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Returns the `[n, num_classes]` class scores `f(û_mᵀx)` of `inputs` `[n, dim]`."""
        projections = inputs @ self.class_vectors.T
        scores = projections.copy()
        for alpha, beta in zip(self.alphas, self.betas, strict=True):
            scores += np.sin(alpha * projections + beta)
        return scores

    def labels(self, inputs: np.ndarray) -> np.ndarray:
        """Returns the int32 label `argmax_m f(û_mᵀx)` of each row of `inputs`."""
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
) -> SyntheticTask:
    """Samples the class geometry and the sine constants of one task.

    When `dim >= num_superclasses + num_classes`, the `e_m` are drawn orthonormal to each other and to every
    basis, so the geometry is exact: `cos(u_m, b_k) = τ`, two classes of one super-class have cosine `τ²`,
    classes of different super-classes cosine 0. With a smaller `dim` each `e_m` is only orthogonal to its
    own basis and the cosines hold in expectation. The sine constants are `α_i, β_i ~ N(0, 1)`, the choice
    of the MMoE synthetic-data code.
    """
    _validate_task(num_classes, num_superclasses, dim, tau, difficulty)
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
    return SyntheticTask(
        superclass_bases=superclass_bases,
        class_vectors=class_vectors,
        class_parents=class_parents,
        alphas=rng.standard_normal(difficulty),
        betas=rng.standard_normal(difficulty),
    )


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
    **unused,
) -> SyntheticArrays:
    """Returns the task and its train/validation/test arrays, all determined by `seed`.

    With `task_seed`, the task (class vectors and sine constants) comes from `task_seed` instead, so that
    several seeds draw new data and models for one fixed task: with `difficulty > 0` the sine constants
    change how hard a task is, and a table over seeds should not mix tasks of different difficulty.

    The three splits are independent draws from the same task; the train split is in a fixed order (what a
    teacher cache indexes).
    """
    for name, value in (
        ("train_examples", train_examples),
        ("validation_examples", validation_examples),
        ("test_examples", test_examples),
    ):
        _check_positive_int(name, value)
    own_task_seed, train_seed, validation_seed, test_seed = np.random.SeedSequence(seed).spawn(4)
    if task_seed is not None:
        if isinstance(task_seed, bool) or not isinstance(task_seed, int | np.integer) or task_seed < 0:
            raise ValueError(
                f"`task_seed` must be None or a non-negative integer. Received: task_seed={task_seed!r}"
            )
        own_task_seed = np.random.SeedSequence(task_seed).spawn(4)[0]
    task = make_task(
        num_classes, num_superclasses, dim, tau, difficulty, np.random.default_rng(own_task_seed)
    )
    x_train, y_train = task.sample(train_examples, np.random.default_rng(train_seed))
    x_validation, y_validation = task.sample(validation_examples, np.random.default_rng(validation_seed))
    x_test, y_test = task.sample(test_examples, np.random.default_rng(test_seed))
    return SyntheticArrays(task, x_train, y_train, x_validation, y_validation, x_test, y_test)


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
    **unused,
) -> Splits:
    """Builds the synthetic task of `seed` and returns its batched pipelines.

    Args:
        num_classes: `M`, a multiple of `num_superclasses`.
        num_superclasses: `K`.
        dim: input dimension `d`, at least `num_superclasses` (and 2).
        tau: class similarity inside a super-class, in [0, 1).
        difficulty: number of sine terms `m_d` (0: linearly separable).
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


def _validate_task(num_classes: int, num_superclasses: int, dim: int, tau: float, difficulty: int) -> None:
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
            "train_examples",
            "validation_examples",
            "test_examples",
        )
    },
    num_classes=lambda options: options["num_classes"],
    class_parents=_class_parents,
    train_examples=lambda options: options["train_examples"],
)
