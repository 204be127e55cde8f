"""Input pipelines: each dataset module returns a `Splits` of batched `tf.data` pipelines."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Splits:
    """The batched pipelines of one dataset and the facts the runner needs about them.

    Every pipeline yields `(inputs, labels)` with integer labels of shape `[batch]` (for a language model,
    `[batch, time]`).

    Attributes:
        train: one epoch of shuffled, possibly augmented training batches (`drop_remainder=True`).
        test: evaluation batches, deterministic, no augmentation.
        num_classes: number of classes `M` (the vocabulary size for a language model).
        train_examples: examples in one training epoch.
        train_ordered: the training examples in a fixed order without augmentation, batched; what a teacher
            cache or an analysis runs over. `None` where the dataset cannot offer it.
        class_parents: `[num_classes]` super-class id of each class (KD-rel's hierarchy, heatmap order),
            or `None`.
        augmented: whether `train` applies random augmentation (a teacher cache is then inexact).
        validation: held-out batches used for model selection, or `None` (then `test` is used, as the
            paper did).
        train_pipeline: for training across workers, one input pipeline's training batches given its
            `tf.distribute.InputContext` (its share of the files, batched per replica), or `None` where
            every worker reads `train` whole and keeps its part of each batch.
        train_with_targets: `targets -> dataset`: the batches of `train`, in the same order, with
            `targets[i]` in place of the label of example `i` of `train_ordered` (what offline distillation
            trains on: labels packed with a cached teacher payload); `None` where the dataset cannot offer
            it (random augmentation: the cached outputs would belong to other inputs).
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    train_examples: int
    train_ordered: tf.data.Dataset | None = None
    class_parents: np.ndarray | None = None
    augmented: bool = False
    validation: tf.data.Dataset | None = None
    train_pipeline: Callable[[tf.distribute.InputContext], tf.data.Dataset] | None = None
    train_with_targets: Callable[[np.ndarray], tf.data.Dataset] | None = None


# Flag name -> module under `data/`; each module defines `load(**options) -> Splits`.
_MODULES = {
    "synthetic": "data.synthetic",
    "cifar100": "data.cifar100",
    "digits": "data.digits",
    "imagenet": "data.imagenet",
    "ptb": "data.ptb",
}

NAMES = tuple(_MODULES)


def module(name: str):
    """Returns the pipeline module registered under `name`."""
    if name not in _MODULES:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(NAMES)}.")
    return importlib.import_module(_MODULES[name])


def cache_refusal(name: str, options: dict) -> str | None:
    """Why students of dataset `name` with data `options` cannot train on cached teacher outputs (its
    training inputs change at random from epoch to epoch), or `None` when they can; known without loading
    the data. A module says so with `teacher_cache_refusal(options)`; one without it can always be cached."""
    refusal = getattr(module(name), "teacher_cache_refusal", None)
    return None if refusal is None else refusal(options)
