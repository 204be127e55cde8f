"""CIFAR-100 from TensorFlow Datasets with the TF official CIFAR augmentation and the 20 super-classes."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data import Facts, Splits, image_ops

NUM_CLASSES = 100
NUM_SUPERCLASSES = 20
TRAIN_SIZE = 50_000

# TFDS `cifar100` label order: the fine and coarse names of the original `meta` file, both alphabetical.
FINE_LABEL_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle "
    "bowl boy bridge bus butterfly camel can castle caterpillar cattle "
    "chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard "
    "lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain "
    "mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket "
    "rose sea seal shark shrew skunk skyscraper snail snake spider "
    "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor "
    "train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

# The super-classes as published with the dataset (Krizhevsky 2009), in coarse-label order.
SUPERCLASSES = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)

COARSE_LABEL_NAMES = tuple(name for name, _ in SUPERCLASSES)


def _class_parents() -> np.ndarray:
    parent_of = {fine: coarse for coarse, (_, members) in enumerate(SUPERCLASSES) for fine in members}
    return np.array([parent_of[name] for name in FINE_LABEL_NAMES], dtype=np.int32)


# Fine label -> coarse label: the fixed map every CIFAR-100 example satisfies (KD-rel's hierarchy).
CLASS_PARENTS = _class_parents()


class DataNotFoundError(FileNotFoundError):
    """The prepared TFDS `cifar100` dataset is not in the data directory."""


def _missing_data_message(data_dir: str | None) -> str:
    where = data_dir or "the default TFDS directory (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    return (
        f"CIFAR-100 is not prepared in {where}. On a machine with network access run "
        '`tfds build cifar100 --data_dir=DIR` (or `python -c "import tensorflow_datasets as tfds; '
        "tfds.builder('cifar100', data_dir='DIR').download_and_prepare()\"`), or copy an already prepared "
        "TFDS directory (it holds `cifar100/3.0.2/`), then pass `--data_dir=DIR`."
    )


def load_examples(
    data_dir: str | None = None, download: bool = False, with_coarse_labels: bool = False
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Returns the unbatched TFDS train and test splits as `(uint8 image, label[, coarse_label])`.

    Raises:
        DataNotFoundError: the data is not prepared under `data_dir` and `download` is False.
    """
    try:
        train, test = tfds.load("cifar100", split=["train", "test"], data_dir=data_dir, download=download)
    except AssertionError as error:
        # TFDS signals "not prepared" with an AssertionError when `download=False`.
        raise DataNotFoundError(_missing_data_message(data_dir)) from error

    def to_tuple(example):
        label = tf.cast(example["label"], tf.int32)
        if with_coarse_labels:
            return example["image"], label, tf.cast(example["coarse_label"], tf.int32)
        return example["image"], label

    return (
        train.map(to_tuple, num_parallel_calls=tf.data.AUTOTUNE),
        test.map(to_tuple, num_parallel_calls=tf.data.AUTOTUNE),
    )


def load(
    data_dir: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = True,
    color_augment: bool = True,
    shuffle_buffer: int = TRAIN_SIZE,
    crop_padding: int = 2,
    download: bool = False,
    with_coarse_labels: bool = False,
    **unused,
) -> Splits:
    """Returns CIFAR-100 (TFDS `train` 50,000 / `test` 10,000) as batched `(image, label)` pipelines.

    Training images get the TF official CIFAR augmentation: zero-pad to 36x36, random 32x32 crop, random
    left-right flip; with `color_augment`, also random brightness (63/255), saturation (0.5-1.5) and
    contrast (0.2-1.8), as the paper did. Every image is then standardised per image (float32, mean 0,
    variance 1). Test and `train_ordered` images are only standardised.

    The data is never downloaded unless `download=True`: prepare it once with `tfds build cifar100
    --data_dir=DIR` on a machine with network access (or copy a prepared TFDS directory) and pass `data_dir`.

    Args:
        data_dir: TFDS data directory; `None` uses TFDS's default (`~/tensorflow_datasets`).
        batch_size: examples per batch.
        seed: seed of the shuffle order and of the augmentation.
        augment: whether training images are augmented.
        color_augment: whether the augmentation includes the colour jitter (only with `augment`).
        shuffle_buffer: shuffle buffer size; the default shuffles the whole training split uniformly.
        crop_padding: zero padding on each side before the random 32x32 crop: 2 (pad to 36, the legacy
            code the paper cites) or 4 (pad to 40, TF2's Keras CIFAR code).
        download: let TFDS download and prepare the data if it is missing (needs network access).
        with_coarse_labels: yield `(image, label, coarse_label)`. Keras `fit` reads a third element as
            sample weights, so this is for analysis pipelines, not for training.
        **unused: options meant for other datasets, ignored.

    Raises:
        DataNotFoundError: the data is not prepared and `download` is False.
    """
    del unused
    if crop_padding < 0:
        raise ValueError(f"`crop_padding` must be >= 0. Received: crop_padding={crop_padding}")
    train_examples, test_examples = load_examples(data_dir, download, with_coarse_labels)
    return image_ops.image_splits(
        train_examples,
        test_examples,
        num_classes=NUM_CLASSES,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        shuffle_buffer=shuffle_buffer,
        padding=crop_padding,
        flip=True,
        color_augment=color_augment,
        class_parents=CLASS_PARENTS.copy(),
    )


def teacher_cache_refusal(options: dict) -> str | None:
    """Why cached teacher outputs cannot serve training (`data.cache_refusal`)."""
    return image_ops.augmentation_refusal("cifar100", options)


FACTS = Facts(
    default_models=("resnet56", "resnet20"),
    option_flags={
        "data_dir": "data_dir",
        "augment": "augment",
        "color_augment": "color_augment",
        "crop_padding": "crop_padding",
    },
    num_classes=NUM_CLASSES,
    class_parents=CLASS_PARENTS,
    train_examples=TRAIN_SIZE,
    input_shape=(32, 32, 3),
)
