"""Offline distillation in the runner: a teacher's logits cached once, every student's targets derived from them.

A table trains many students from one teacher, and a student of a pipeline without random augmentation
sees the same inputs every epoch: its teacher's outputs can be computed once instead of at every step. The
teacher's run directory keeps its logits for the ordered training, validation and test examples
(`kd_tf.teacher_cache`, fingerprinted by teacher weights and data); each student derives what its method
needs (`loss.teacher_payload`) and trains on the same batches, in the same order, with the payload packed
into the targets (`Splits.train_with_targets`), without running the teacher.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

import data as datasets
from kd_tf import losses, teacher_cache
from kd_tf.io import DamagedFileError

CACHE_DIR = "teacher_cache"
MODES = ("auto", "on", "off")
_LOGITS = "kd"  # a method whose payload is the raw logits, whatever its settings
_BATCH = 4096


class CacheUnavailable(ValueError):
    """`--teacher_cache=on` for data whose training pipeline cannot be cached."""


def refusal(splits: datasets.Splits) -> str | None:
    """Why a cache cannot serve `splits` (random augmentation, or no ordered training examples), or `None`."""
    if splits.augmented:
        return "its training pipeline augments the inputs at random (--noaugment turns that off)"
    if splits.train_with_targets is None or splits.train_ordered is None:
        return "its training batches cannot carry cached targets (a --steps_per_epoch cap, or streamed files)"
    return None


def wanted(mode: str, splits: datasets.Splits, max_mb: float = float("inf")) -> bool:
    """Whether students of `splits` distil from a cache of their teacher's logits over the training examples
    under `--teacher_cache=mode` (`decide`)."""
    reason = refusal(splits)
    megabytes = 0.0 if reason else logits_megabytes(splits.train_examples, splits.num_classes)
    return decide(mode, reason, megabytes, max_mb, LOGITS_CACHE)


LOGITS_CACHE = "the teacher's logits over the training examples"


def too_large(megabytes: float, max_mb: float, what: str) -> str | None:
    """Why a cache of `what`, `megabytes` large, is not made under `--teacher_cache_max_mb=max_mb`, or `None`."""
    if megabytes <= max_mb:
        return None
    return f"{what} would take {megabytes:,.2f} MB, above --teacher_cache_max_mb={max_mb:g}"


def logits_megabytes(examples: int, num_classes: int) -> float:
    """What a cache of `examples` rows of `num_classes` float32 logits takes, in MB."""
    return examples * num_classes * 4 / 2**20


def decide(mode: str, reason: str | None, megabytes: float, max_mb: float, what: str) -> bool:
    """The one rule of every teacher cache: students read their teacher's outputs from a cache where the
    data allows one (`reason`, why it does not, is `None`: no random augmentation) and `what` the cache
    holds, `megabytes`, fits `max_mb` (`--teacher_cache_max_mb`). `on` refuses what `auto` distils online."""
    if mode not in MODES:
        raise ValueError(f"`teacher_cache` must be one of {MODES}. Received: {mode!r}")
    if mode == "off":
        return False
    reason = reason or too_large(megabytes, max_mb, what)
    if reason is not None and mode == "on":
        raise CacheUnavailable(f"--teacher_cache=on, but this data cannot be cached: {reason}.")
    return reason is None


def _ordered_splits(splits: datasets.Splits) -> dict[str, tf.data.Dataset]:
    ordered = {"train": splits.train_ordered, "test": splits.test}
    if splits.validation is not None:
        ordered["validation"] = splits.validation
    return ordered


def build(
    teacher: keras.Model, splits: datasets.Splits, directory: str
) -> dict[str, teacher_cache.TeacherCache]:
    """Runs `teacher` once over every ordered split and stores its logits under `directory/<split>`."""
    logits_loss = losses.get(_LOGITS)
    return {
        name: teacher_cache.build_cache(
            teacher, logits_loss, ordered, os.path.join(directory, name), overwrite=True
        )
        for name, ordered in _ordered_splits(splits).items()
    }


def present(directory: str) -> bool:
    """Whether `directory` holds a complete cache of every split (a manifest is written last)."""
    return all(
        os.path.exists(os.path.join(directory, name, teacher_cache.MANIFEST_NAME))
        for name in ("train", "test")
    )


def damaged(error: DamagedFileError, refuse: bool) -> None:
    """Reports a teacher cache file that is not what was written: a warning naming it (the caller then
    rebuilds the cache), or, with `refuse` (`--teacher_cache=on`), a `ValueError` that stops the run."""
    if refuse:
        raise ValueError(
            f"Teacher cache file {error.path} is damaged ({error.problem}). --teacher_cache=on trains only on "
            "a cache that proves itself: rerun with --teacher_cache=auto to rebuild it, or remove "
            f"{os.path.dirname(error.path)}."
        ) from error
    print(
        f"Warning: teacher cache file {error.path} is damaged ({error.problem}); rebuilding it.", flush=True
    )


def load(
    teacher: keras.Model, splits: datasets.Splits, directory: str, refuse_damaged: bool = False
) -> dict | None:
    """The caches under `directory` when every one exists, fits this teacher and data and is whole, else
    `None` (a damaged file is reported by `damaged`)."""
    logits_loss = losses.get(_LOGITS)
    fingerprint = teacher_cache.teacher_fingerprint(teacher)
    caches = {}
    for name, ordered in _ordered_splits(splits).items():
        try:
            caches[name] = teacher_cache.load_cache(
                os.path.join(directory, name), loss=logits_loss, teacher=fingerprint, data=ordered
            )
        except DamagedFileError as error:
            damaged(error, refuse_damaged)
            return None
        except (FileNotFoundError, ValueError):
            return None
    return caches


def load_or_build(
    teacher, splits, directories: list[str], refuse_damaged: bool = False
) -> dict[str, teacher_cache.TeacherCache]:
    """The first of `directories` that holds a fitting cache, else one built in the last of them.

    With `refuse_damaged`, a cache whose files are not what was written stops the run instead."""
    for directory in directories:
        caches = load(teacher, splits, directory, refuse_damaged)
        if caches is not None:
            return caches
    return build(teacher, splits, directories[-1])


def _labels(ordered: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([np.asarray(element[1]) for element in ordered])


def _targets(loss: losses.DistillationLoss, labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """`labels` packed with `loss.teacher_payload(labels, logits)`, as the online Distiller computes it."""
    if teacher_cache.payload_spec(loss, logits.shape[-1])["kind"] == "logits":
        payload = logits
    else:
        payload = np.concatenate(
            [
                loss.teacher_payload(
                    tf.constant(labels[start : start + _BATCH], tf.int32),
                    tf.constant(logits[start : start + _BATCH]),
                ).numpy()
                for start in range(0, len(labels), _BATCH)
            ]
        )
    return np.concatenate([labels.astype(np.float32)[..., None], np.asarray(payload, np.float32)], axis=-1)


def _zip_targets(ordered: tf.data.Dataset, targets: np.ndarray) -> tf.data.Dataset:
    """`ordered`'s batches with their rows of `targets` in place of the labels."""
    batch_size = int(next(iter(ordered))[1].shape[0])
    rows = tf.data.Dataset.from_tensor_slices(targets).batch(batch_size)
    zipped = tf.data.Dataset.zip(ordered, rows).map(
        lambda element, batch_targets: (element[0], batch_targets)
    )
    return zipped.with_options(ordered.options())  # what the data module chose (e.g. no autotuning)


def distillation_splits(
    splits: datasets.Splits, loss: losses.DistillationLoss, caches: dict[str, teacher_cache.TeacherCache]
) -> datasets.Splits:
    """`splits` whose every batch carries `loss`'s teacher payload in its targets (`kd_tf.pack_targets`), for
    a `Distiller` without a teacher: training batches in `splits.train`'s order, evaluation batches in
    theirs."""
    ordered = _ordered_splits(splits)
    targets = {name: _targets(loss, _labels(ordered[name]), caches[name].payload) for name in ordered}
    return dataclasses.replace(
        splits,
        train=splits.train_with_targets(targets["train"]),
        test=_zip_targets(splits.test, targets["test"]),
        validation=None
        if splits.validation is None
        else _zip_targets(splits.validation, targets["validation"]),
        train_pipeline=None,
    )
