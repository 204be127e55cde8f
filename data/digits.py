"""scikit-learn's 8x8 handwritten digits (1,797 real images) as 32x32x3 images: a CIFAR stand-in offline."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from data import Facts, Splits, image_ops

NUM_CLASSES = 10
IMAGE_SIZE = 32
# The scikit-learn images hold 0..16 (counts of set pixels in 4x4 blocks of the original 32x32 bitmaps).
_MAX_INTENSITY = 16


def _load_digits():
    # scikit-learn ships the images; it is an extra (`FACTS.optional_packages`), imported where it is used.
    from sklearn.datasets import load_digits

    return load_digits()


def images_and_labels(image_size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as `[N, image_size, image_size, 3]` uint8 (bilinear upsampling, grey in 3 channels)."""
    digits = _load_digits()
    grey = digits.images.astype(np.float32) / _MAX_INTENSITY
    resized = tf.image.resize(grey[..., None], [image_size, image_size], method="bilinear").numpy()
    images = np.round(np.clip(resized, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(images, 3, axis=-1), digits.target.astype(np.int32)


def split_indices(
    labels: np.ndarray, test_fraction: float = 0.2, split_seed: int = 0, train_per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the training and test digits: a stratified split, then optionally fewer training images.

    The stratified split depends on `split_seed` only. `train_per_class` keeps the first that many images of
    each class in the split's (random) training order, the others dropped: a smaller training set of the same
    classes, a subset of the full one, and the same test set.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction}")
    if train_per_class is not None and train_per_class < 1:
        raise ValueError(
            f"`train_per_class` must be >= 1 or None. Received: train_per_class={train_per_class}"
        )
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    if train_per_class is not None:
        train_labels = labels[train]
        kept = [np.flatnonzero(train_labels == label)[:train_per_class] for label in range(NUM_CLASSES)]
        train = train[np.sort(np.concatenate(kept))]  # the first of each class, in the split's order
    return train, test


def train_examples(options: dict) -> int:
    """The number of training images `load(**options)` gives."""
    split_options = ("test_fraction", "split_seed", "train_per_class")
    return _train_count(**{name: options[name] for name in split_options if name in options})


@functools.cache
def _train_count(**split_options) -> int:
    train, _ = split_indices(_load_digits().target, **split_options)
    return len(train)


def load(
    batch_size: int = 64,
    seed: int = 0,
    augment: bool = True,
    color_augment: bool = False,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    train_per_class: int | None = None,
    **unused,
) -> Splits:
    """Returns the digits as batched `(image, label)` pipelines: a stratified train/test split.

    Images are the 8x8 digits upsampled to 32x32 and repeated over 3 channels, then treated like CIFAR:
    training images are zero-padded by 2 pixels and randomly cropped back to 32x32 (as CIFAR's; a shift of at
    most half an original 8x8 pixel), optionally colour-jittered, and every image is standardised per image. There is
    no random flip: a mirrored digit is a different symbol or none (2, 3, 4, 7, 9).

    The split depends on `split_seed` only, so runs with different `seed`s (shuffle and augmentation) are
    evaluated on the same test images; `train_per_class` trains on fewer images of each class (a subset of
    the full training split, `split_indices`) and tests on the same images.

    Args:
        batch_size: examples per batch.
        seed: seed of the shuffle order and of the augmentation.
        augment: whether training images are augmented.
        color_augment: whether the augmentation includes random brightness/saturation/contrast (saturation
            does nothing on grey images). Off by default.
        test_fraction: share of each class held out for testing (0.2 gives 1,437 train / 360 test).
        split_seed: seed of the stratified train/test split.
        train_per_class: training images kept per class (`None`: all, 1,437 in all at the default split).
        **unused: options meant for other datasets, ignored.
    """
    del unused
    images, labels = images_and_labels()
    train, test = split_indices(labels, test_fraction, split_seed, train_per_class)
    train_images, test_images = images[train], images[test]
    train_labels, test_labels = labels[train], labels[test]
    return image_ops.image_splits(
        tf.data.Dataset.from_tensor_slices((train_images, train_labels)),
        tf.data.Dataset.from_tensor_slices((test_images, test_labels)),
        num_classes=NUM_CLASSES,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        shuffle_buffer=len(train_labels),
        padding=2,
        flip=False,
        color_augment=color_augment,
        class_parents=None,
    )


def teacher_cache_refusal(options: dict) -> str | None:
    """Why cached teacher outputs cannot serve training (`data.cache_refusal`)."""
    return image_ops.augmentation_refusal("digits", options)


FACTS = Facts(
    default_models=("resnet56", "resnet20"),
    # Its own augmentation, not CIFAR's flags: no colour jitter, padding 2.
    option_flags={"data_dir": "data_dir", "augment": "augment", "train_per_class": "train_per_class"},
    num_classes=NUM_CLASSES,
    train_examples=train_examples,
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    optional_packages={"sklearn": ("scikit-learn", "digits")},
)
