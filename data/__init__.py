"""Input pipelines: each dataset module returns a `Splits` of batched `tf.data` pipelines."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
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


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a run needs to know of a dataset before loading it; each module under `data/` declares its own
    as `FACTS`.

    Attributes:
        default_models: the (teacher, student) architectures of the paper's experiment on it.
        option_flags: the options of its `load` a run sets from flags: option name -> flag name, or
            (flag name, function of the flag's value) where the option is derived from a flag.
        num_classes: the number of classes `M`, or a function of the options, or `None` when only the data
            says (a vocabulary).
        class_parents: `[M]` super-class of each class (its hierarchy), a function of the options giving
            it, or `None` (no hierarchy).
        train_examples: examples in one training epoch, a function of the options, or `None` when only the
            data says.
        needs_data_dir: whether `load` needs `data_dir` (the data is nowhere else).
        kind: "classification" (one label per example) or "language_model" (a token stream, trained by
            its own loop).
        measures: `(options, seed) -> dict` of numbers a run records about its data (the synthetic task's
            label non-linearity), or `None`.
        describe_measures: `measures -> str`, those numbers in one line for a person, or `None`.
        optional_packages: what `load` imports beyond the base install: import name -> (the package's name
            on PyPI, the extra of `setup.py` that installs it). Facts that need one of them are unknown
            (`examples` gives `None`) where it is missing, and a run of the dataset is refused.
        data_problem: `options -> str | None`: why `load(**options)` cannot read its data (a file missing
            or damaged, named, and how to get it), checked before any work; `None` where the only check is
            that a given `data_dir` is a directory.
        input_shape: the shape of one model input (no batch axis), a function of the options giving it, or
            `None` when only the data says (a language model's windows); what sizes a model before the data
            is read (`--dry_run`'s estimate of the disk a run needs).
        always_augmented: whether the training pipeline augments at random whatever the options (ImageNet's
            crops); otherwise its `augment` option says. A teacher's outputs are cached only where it does not.
        preset: what a run on it takes for the flags the user did not set, globally ("flags": flag -> value)
            and per method ("methods": method -> {hyperparameter -> value}); below a mode's preset.
    """

    default_models: tuple[str, str]
    option_flags: dict
    num_classes: int | Callable[[dict], int] | None = None
    class_parents: np.ndarray | Callable[[dict], np.ndarray] | None = None
    train_examples: int | Callable[[dict], int] | None = None
    needs_data_dir: bool = False
    kind: str = "classification"
    measures: Callable[[dict, int], dict] | None = None
    describe_measures: Callable[[dict], str] | None = None
    optional_packages: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def missing_packages(self) -> list[str]:
        """One line per optional package `load` needs and this environment lacks, with its install command."""
        return [
            f'{name}, which is not installed (install it with: pip install -e ".[{extra}]")'
            for module_name, (name, extra) in self.optional_packages.items()
            if not _importable(module_name)
        ]

    data_problem: Callable[[dict], str | None] | None = None
    input_shape: tuple[int, ...] | Callable[[dict], tuple[int, ...]] | None = None

    always_augmented: bool = False
    preset: dict = dataclasses.field(default_factory=dict)

    def augmented(self, options: dict) -> bool:
        return self.always_augmented or bool(options.get("augment", False))

    def shape(self, options: dict) -> tuple[int, ...] | None:
        return self.input_shape(options) if callable(self.input_shape) else self.input_shape

    def classes(self, options: dict) -> int | None:
        return self.num_classes(options) if callable(self.num_classes) else self.num_classes

    def hierarchy(self, options: dict) -> np.ndarray | None:
        return self.class_parents(options) if callable(self.class_parents) else self.class_parents

    def examples(self, options: dict) -> int | None:
        if not callable(self.train_examples):
            return self.train_examples
        return None if self.missing_packages() else self.train_examples(options)

    def measure(self, options: dict, seed: int) -> dict:
        """What a run records about the data `load(**options, seed=seed)` gives (`{}` for most datasets)."""
        return self.measures(options, seed) if self.measures else {}

    def describe(self, measures: dict) -> str:
        """`measures` in one line, or "" when there are none."""
        return self.describe_measures(measures) if measures and self.describe_measures else ""

    def flag_of(self, option: str) -> str:
        """The flag that sets `option` of `load` (the flag a derived option is computed from)."""
        source = self.option_flags[option]
        return source[0] if isinstance(source, tuple) else source

    def verbatim_flags(self) -> set:
        """The flags whose values `load` receives as they are: the dataset's own (a derived option reads a
        flag of the whole run, such as `--precision`)."""
        return {source for source in self.option_flags.values() if isinstance(source, str)}

    def options(self, flag_value: Callable[[str], object]) -> dict:
        """The `load` options, given `flag_value(name)`, the value of the flag `name`."""
        options = {}
        for option, source in self.option_flags.items():
            flag, derive = source if isinstance(source, tuple) else (source, None)
            value = flag_value(flag)
            options[option] = derive(value) if derive else value
        return options


def _importable(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ImportError:  # an import hook that refuses the name
        return False


# Flag name -> module under `data/`; each module defines `load(**options) -> Splits` and its `FACTS`.
_MODULES = {
    "synthetic": "data.synthetic",
    "cifar100": "data.cifar100",
    "digits": "data.digits",
    "fashion_mnist": "data.fashion_mnist",
    "imagenet": "data.imagenet",
    "ptb": "data.ptb",
}

NAMES = tuple(_MODULES)


def module(name: str):
    """Returns the pipeline module registered under `name`."""
    if name not in _MODULES:
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {', '.join(NAMES)}.")
    return importlib.import_module(_MODULES[name])


def facts(name: str) -> Facts:
    """The `Facts` of the dataset registered under `name`."""
    return module(name).FACTS


def cache_refusal(name: str, options: dict) -> str | None:
    """Why students of dataset `name` with data `options` cannot train on cached teacher outputs (its
    training inputs change at random from epoch to epoch), or `None` when they can; known without loading
    the data. A module says so with `teacher_cache_refusal(options)`; one without it can always be cached."""
    refusal = getattr(module(name), "teacher_cache_refusal", None)
    return None if refusal is None else refusal(options)
