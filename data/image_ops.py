"""CIFAR-style image augmentation, standardisation and the batched pipelines built from them."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data import Splits

# Colour jitter of the TF legacy CIFAR input code (`research/resnet/cifar_input.py`: written there, commented
# out; the paper turned it on), with its constants. That code casts the uint8 image to float32 on the 0..255
# scale and applies the jitter there, without clipping, right before `per_image_standardization`; so does
# `train_transform`. On that scale the standardisation cancels the brightness shift exactly (a constant) and
# the contrast change almost (it is per channel): in effect only saturation changes the standardised image.
BRIGHTNESS_MAX_DELTA = 63 / 255
SATURATION_RANGE = (0.5, 1.5)
CONTRAST_RANGE = (0.2, 1.8)


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 on the same 0..255 scale (the legacy code's `tf.cast`)."""
    return tf.cast(image, tf.float32)


def standardize(image: tf.Tensor) -> tf.Tensor:
    """Per-image standardisation: zero mean and unit variance over all pixels and channels of one image."""
    return tf.image.per_image_standardization(image)


def pad_and_random_crop(image: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pads `padding` pixels on every side, then crops back to the original size at a random offset."""
    height, width, channels = image.shape
    padded = tf.image.resize_with_crop_or_pad(image, height + 2 * padding, width + 2 * padding)
    return tf.image.stateless_random_crop(padded, [height, width, channels], seed=seed)


def random_color(image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Random brightness, saturation, contrast, in the legacy code's order, on a 0..255 float image, unclipped.

    `seeds` is a `[3, 2]` tensor, one stateless seed per operation. Each operation draws one factor per
    image: a shift `δ ~ U(-63/255, 63/255)` added to every value, a saturation factor `U(0.5, 1.5)` applied
    in HSV (saturation clipped to [0, 1] there, as `tf.image.adjust_saturation` does), a contrast factor
    `U(0.2, 1.8)` scaling each channel's deviation from its mean.
    """
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS_MAX_DELTA, seed=seeds[0])
    image = tf.image.stateless_random_saturation(image, *SATURATION_RANGE, seed=seeds[1])
    return tf.image.stateless_random_contrast(image, *CONTRAST_RANGE, seed=seeds[2])


def train_transform(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    padding: int = 2,
    flip: bool = True,
    color_augment: bool = True,
) -> tf.Tensor:
    """Augments one uint8 image and standardises it: pad-and-crop, flip, colour jitter, standardisation.

    The order and scale of the legacy CIFAR input code: float32 on 0..255, zero padding (black), crop, flip,
    jitter without clipping, `per_image_standardization`.

    Args:
        image: `[height, width, 3]` uint8.
        seed: `[2]` int64 stateless seed; the same seed gives the same augmentation.
        padding: pixels of zero padding before the random crop (2 for 32 -> 36 -> 32, the legacy code).
        flip: whether to flip left-right with probability 1/2.
        color_augment: whether to apply random brightness, saturation and contrast.
    """
    crop_seed, flip_seed, *color_seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=5))
    image = to_float(image)
    if padding:
        image = pad_and_random_crop(image, padding, crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if color_augment:
        image = random_color(image, tf.stack(color_seeds))
    return standardize(image)


def eval_transform(image: tf.Tensor) -> tf.Tensor:
    """Standardises one uint8 image, no augmentation."""
    return standardize(to_float(image))


def _augmented_batches(
    examples: tf.data.Dataset,
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    transform_options: dict,
) -> tf.data.Dataset:
    # Each element gets its own stateless seed; `rerandomize_each_iteration` draws new ones every epoch
    # while keeping the whole sequence fixed by `seed`.
    element_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment(element, element_seed):
        image, *labels = element
        return (train_transform(image, element_seed, **transform_options), *labels)

    return (
        tf.data.Dataset.zip(
            examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True),
            element_seeds,
        )
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _eval_batches(examples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    def prepare(image, *labels):
        return (eval_transform(image), *labels)

    return (
        examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def image_splits(
    train_examples: tf.data.Dataset,
    test_examples: tf.data.Dataset,
    *,
    num_classes: int,
    batch_size: int,
    seed: int,
    augment: bool,
    shuffle_buffer: int,
    padding: int = 2,
    flip: bool = True,
    color_augment: bool = True,
    class_parents: np.ndarray | None = None,
    validation_examples: tf.data.Dataset | None = None,
) -> Splits:
    """Builds the `Splits` of an image classification dataset from unbatched `(uint8 image, label, ...)`.

    Order: cache -> shuffle -> map(AUTOTUNE) -> batch -> prefetch. Training batches drop the remainder so
    every step has the same shape; test and `train_ordered` batches keep every example.

    Args:
        train_examples: unbatched training elements `(image, label[, more labels])` with uint8 images.
        test_examples: the same for evaluation.
        num_classes: number of classes.
        batch_size: examples per batch.
        seed: seed of the shuffle order and of the augmentation.
        augment: whether training images are augmented; if not, they are only standardised.
        shuffle_buffer: size of the shuffle buffer (the split size gives a uniform shuffle).
        padding, flip, color_augment: as in `train_transform`.
        class_parents: `[num_classes]` super-class ids, or `None`.
        validation_examples: unbatched held-out elements for model selection (prepared as `test_examples`),
            or `None` (then the runner selects on `test`).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    if shuffle_buffer < 1:
        raise ValueError(f"`shuffle_buffer` must be >= 1. Received: shuffle_buffer={shuffle_buffer}")
    num_train = int(train_examples.cardinality())
    if num_train < 0:
        num_train = int(train_examples.reduce(0, lambda count, _: count + 1))
    if num_train < batch_size:
        raise ValueError(
            f"`batch_size` must be at most the {num_train} training examples. "
            f"Received: batch_size={batch_size}"
        )
    train_examples = train_examples.cache()
    test_examples = test_examples.cache()
    validation = (
        None if validation_examples is None else _eval_batches(validation_examples.cache(), batch_size)
    )
    if augment:
        train = _augmented_batches(
            train_examples,
            batch_size,
            seed,
            shuffle_buffer,
            dict(padding=padding, flip=flip, color_augment=color_augment),
        )
        train_with_targets = None  # the cached outputs would belong to the unaugmented images
    else:

        def unaugmented_batches(examples):
            return (
                examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
                .map(lambda image, *labels: (eval_transform(image), *labels), tf.data.AUTOTUNE)
                .batch(batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE)
            )

        def train_with_targets(targets):
            # The shuffle's order depends on the seed and the example count only: the same images, in the
            # same batches, as `train`, each with its own row of `targets`.
            rows = tf.data.Dataset.from_tensor_slices(targets)
            return unaugmented_batches(
                tf.data.Dataset.zip(train_examples, rows).map(lambda element, row: (element[0], row))
            )

        train = unaugmented_batches(train_examples)
    return Splits(
        train=train,
        test=_eval_batches(test_examples, batch_size),
        num_classes=num_classes,
        train_examples=num_train,
        train_ordered=_eval_batches(train_examples, batch_size),
        class_parents=class_parents,
        augmented=augment,
        train_with_targets=train_with_targets,
        validation=validation,
    )


def augmentation_refusal(dataset: str, options: dict) -> str | None:
    """Why a teacher cache cannot serve `dataset`'s training with `options`: random augmentation, or `None`."""
    if options.get("augment", True):
        return f"--dataset={dataset} augments its training images at random (--noaugment turns that off)"
    return None
