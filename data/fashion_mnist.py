"""Fashion-MNIST (Xiao et al. 2017): 70,000 real 28x28 grey clothing images in 10 classes, from its IDX files or TFDS."""

from __future__ import annotations

import functools
import gzip
import os
import struct

import numpy as np
import tensorflow as tf

from data import Facts, Splits, image_ops

NUM_CLASSES = 10
IMAGE_SIZE = 28
# Where `apt-get install dataset-fashion-mnist` puts the four files; read when `--data_dir` is not given.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# `--data_dir=tfds`: TFDS `fashion_mnist` from TFDS's data directory (~/tensorflow_datasets, $TFDS_DATA_DIR).
TFDS = "tfds"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
HOW_TO_GET = (
    "Install it with `apt-get update && apt-get install dataset-fashion-mnist` (into "
    f"{DEBIAN_DIR}, read by default), or put the four files of "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz) in a directory and pass "
    "--data_dir=DIR (--data_dir=tfds reads a prepared TFDS `fashion_mnist`)."
)

# The label order of the dataset's README (and of TFDS).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# KD-rel's hierarchy (BUILD.md "Fashion-MNIST"): the garments worn on the upper body (a dress among them:
# the pilot teacher's validation errors on dresses went to shirts, coats and T-shirts), the footwear, and
# the rest. 94.5 % of that teacher's validation errors stay inside a super-class (31 % at chance).
SUPERCLASSES = (
    ("upper_body", ("T-shirt/top", "Pullover", "Dress", "Coat", "Shirt")),
    ("footwear", ("Sandal", "Sneaker", "Ankle boot")),
    ("other", ("Trouser", "Bag")),
)
COARSE_LABEL_NAMES = tuple(name for name, _ in SUPERCLASSES)


def _class_parents() -> np.ndarray:
    parent_of = {fine: coarse for coarse, (_, members) in enumerate(SUPERCLASSES) for fine in members}
    return np.array([parent_of[name] for name in CLASS_NAMES], dtype=np.int32)


CLASS_PARENTS = _class_parents()

# The validation split: the last twelfth (5,000 of the 60,000 training images) of one fixed permutation,
# the same for every run whatever its `seed`.
VALIDATION_SHARE = 12
SPLIT_SEED = 0
TRAIN_SIZE = 60_000 - 60_000 // VALIDATION_SHARE  # 55,000


class DataNotFoundError(FileNotFoundError):
    """A Fashion-MNIST file is missing or damaged, or TFDS has no prepared `fashion_mnist`."""


def data_directory(data_dir: str | None) -> str | None:
    """The directory the IDX files are read from: `data_dir`, else the Debian location if it exists."""
    if data_dir:
        return data_dir
    return DEBIAN_DIR if os.path.isdir(DEBIAN_DIR) else None


def read_idx(path: str) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes (magic `0 0 8 ndim`, big-endian sizes) as a uint8 array.

    Raises:
        DataNotFoundError: the file is missing, not gzip, or its header and contents disagree.
    """
    if not os.path.isfile(path):
        raise DataNotFoundError(f"Fashion-MNIST file {path} is missing. {HOW_TO_GET}")
    try:
        with gzip.open(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise DataNotFoundError(f"Fashion-MNIST file {path} is damaged ({error}). {HOW_TO_GET}") from error
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] == 0:
        raise DataNotFoundError(
            f"Fashion-MNIST file {path} is damaged (not an IDX file of unsigned bytes). {HOW_TO_GET}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataNotFoundError(f"Fashion-MNIST file {path} is damaged (its header is cut). {HOW_TO_GET}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise DataNotFoundError(
            f"Fashion-MNIST file {path} is damaged ({len(raw) - header} bytes of data for shape {shape}). "
            f"{HOW_TO_GET}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzipped IDX file (the format `read_idx` reads)."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.tobytes())


def write_files(directory: str, train_images, train_labels, test_images, test_labels) -> str:
    """Writes the four IDX files (`FILES`) of the given arrays (images `[N, 28, 28]` or `[N, 28, 28, 1]`)."""
    os.makedirs(directory, exist_ok=True)
    for name, array in (
        ("train_images", train_images),
        ("train_labels", train_labels),
        ("test_images", test_images),
        ("test_labels", test_labels),
    ):
        array = np.asarray(array)
        write_idx(os.path.join(directory, FILES[name]), array[..., 0] if array.ndim == 4 else array)
    return directory


def write_toy_data(directory: str, train_examples: int = 240, test_examples: int = 60, seed: int = 0) -> str:
    """Writes small Fashion-MNIST-format files (each class a fixed random pattern plus noise, so a model
    can learn them) for tests and smoke runs; returns `directory`."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE))

    def sample(count):
        labels = np.arange(count) % NUM_CLASSES
        rng.shuffle(labels)
        noise = rng.integers(-60, 61, size=(count, IMAGE_SIZE, IMAGE_SIZE))
        return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    return write_files(directory, *sample(train_examples), *sample(test_examples))


def _checked(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str):
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataNotFoundError(
            f"Fashion-MNIST file {images_name} is damaged (images of shape {images.shape[1:]}, not "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}). {HOW_TO_GET}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataNotFoundError(
            f"Fashion-MNIST file {labels_name} is damaged ({labels.shape} labels for {len(images)} images "
            f"in {images_name}). {HOW_TO_GET}"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataNotFoundError(
            f"Fashion-MNIST file {labels_name} is damaged (a label {labels.max()} >= {NUM_CLASSES}). {HOW_TO_GET}"
        )
    return images[..., None], labels.astype(np.int32)


@functools.cache
def _idx_arrays(directory: str, _stamp: tuple) -> tuple[np.ndarray, ...]:
    paths = {name: os.path.join(directory, file) for name, file in FILES.items()}
    for path in paths.values():  # a missing file is named before any file is read
        if not os.path.isfile(path):
            raise DataNotFoundError(f"Fashion-MNIST file {path} is missing. {HOW_TO_GET}")
    arrays = {name: read_idx(path) for name, path in paths.items()}
    return (
        *_checked(
            arrays["train_images"], arrays["train_labels"], paths["train_images"], paths["train_labels"]
        ),
        *_checked(arrays["test_images"], arrays["test_labels"], paths["test_images"], paths["test_labels"]),
    )


def _stamp(directory: str) -> tuple:
    """Sizes and times of the files: a changed file is read again."""
    stats = [
        os.stat(os.path.join(directory, file))
        for file in FILES.values()
        if os.path.isfile(os.path.join(directory, file))
    ]
    return tuple((stat.st_size, stat.st_mtime_ns) for stat in stats)


def _tfds_arrays() -> tuple[np.ndarray, ...]:
    import tensorflow_datasets as tfds  # optional: only this branch needs it

    try:
        train, test = tfds.load("fashion_mnist", split=["train", "test"], as_supervised=True, download=False)
    except AssertionError as error:  # TFDS's "not prepared" when `download=False`
        raise DataNotFoundError(
            "TFDS `fashion_mnist` is not prepared in TFDS's data directory (~/tensorflow_datasets or "
            f"$TFDS_DATA_DIR): run `tfds build fashion_mnist` where there is a network. {HOW_TO_GET}"
        ) from error

    def stacked(split):
        images, labels = zip(*tfds.as_numpy(split), strict=True)
        return np.stack(images), np.array(labels)

    (train_images, train_labels), (test_images, test_labels) = stacked(train), stacked(test)
    return (
        train_images.astype(np.uint8),
        train_labels.astype(np.int32),
        test_images.astype(np.uint8),
        test_labels.astype(np.int32),
    )


def arrays(data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(train_images, train_labels, test_images, test_labels)`: `[N, 28, 28, 1]` uint8 and `[N]` int32, in
    file order; from the IDX files in `data_dir` (the Debian location when `None`), or TFDS when
    `data_dir="tfds"`.

    Raises:
        DataNotFoundError: a file is missing or damaged (the message names it), or TFDS has no data.
    """
    if data_dir == TFDS:
        return _tfds_arrays()
    directory = data_directory(data_dir)
    if directory is None:
        raise DataNotFoundError(
            f"Fashion-MNIST is not in {DEBIAN_DIR} and no --data_dir was given. {HOW_TO_GET}"
        )
    return _idx_arrays(directory, _stamp(directory))


def split_indices(num_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of the training and validation images among the `num_train` training-file images.

    Validation is the last `num_train // 12` of a permutation seeded with `SPLIT_SEED` (5,000 of 60,000):
    fixed, whatever the run's seed.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(num_train)
    held_out = num_train // VALIDATION_SHARE
    return np.sort(order[: num_train - held_out]), np.sort(order[num_train - held_out :])


def data_problem(options: dict) -> str | None:
    """Why `load(**options)` cannot read its data (a file missing or damaged, named), or `None`.

    Reads the files (about 5 s for the real data here; kept for `load` in this process): a damaged file
    is refused before any work.
    """
    data_dir = options.get("data_dir")
    if data_dir == TFDS:
        try:
            import tensorflow_datasets  # noqa: F401
        except ImportError:
            return "--data_dir=tfds needs tensorflow-datasets (`pip install tensorflow-datasets`)."
        return None
    try:
        arrays(data_dir)
    except DataNotFoundError as error:
        return str(error)
    return None


def train_examples(options: dict) -> int:
    """Training images of one epoch: 55,000 for the real data; for other IDX files, from their header."""
    directory = data_directory(options.get("data_dir"))
    path = (
        os.path.join(directory, FILES["train_labels"])
        if directory and options.get("data_dir") != TFDS
        else None
    )
    if path is None or not os.path.isfile(path):
        return TRAIN_SIZE
    try:
        with gzip.open(path, "rb") as file:
            header = file.read(8)
        count = struct.unpack(">I", header[4:8])[0]
    except (OSError, EOFError, struct.error):
        return TRAIN_SIZE
    return count - count // VALIDATION_SHARE


def load(
    data_dir: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    augment: bool = False,
    **unused,
) -> Splits:
    """Returns Fashion-MNIST as batched `(image, label)` pipelines: 55,000 train / 5,000 validation / 10,000 test.

    Images are `[28, 28, 1]`, standardised per image (as CIFAR's). With `augment`, training images are
    zero-padded by 2 pixels and randomly cropped back to 28x28 and flipped left-right (the CIFAR recipe's
    operations; clothing is about mirror-symmetric); off by default, so that students train from the teacher
    cache. Validation (`split_indices`) is held out of the training file and fixed; `seed` only changes the
    shuffle and augmentation.

    Args:
        data_dir: directory of the four IDX files (`FILES`); `None`: the Debian location (`DEBIAN_DIR`);
            `"tfds"`: TFDS `fashion_mnist` from TFDS's data directory.
        batch_size: examples per batch.
        seed: seed of the shuffle order and of the augmentation.
        augment: whether training images are augmented.
        **unused: options meant for other datasets, ignored.

    Raises:
        DataNotFoundError: a file is missing or damaged, or TFDS has no prepared `fashion_mnist`.
    """
    del unused
    train_images, train_labels, test_images, test_labels = arrays(data_dir)
    train, validation = split_indices(len(train_labels))
    return image_ops.image_splits(
        tf.data.Dataset.from_tensor_slices((train_images[train], train_labels[train])),
        tf.data.Dataset.from_tensor_slices((test_images, test_labels)),
        validation_examples=tf.data.Dataset.from_tensor_slices(
            (train_images[validation], train_labels[validation])
        ),
        num_classes=NUM_CLASSES,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        shuffle_buffer=len(train),
        padding=2,
        flip=True,
        color_augment=False,
        class_parents=CLASS_PARENTS.copy(),
    )


def teacher_cache_refusal(options: dict) -> str | None:
    """Why cached teacher outputs cannot serve training (`data.cache_refusal`)."""
    return image_ops.augmentation_refusal("fashion_mnist", options)


FACTS = Facts(
    default_models=("resnet8", "linear"),
    option_flags={"data_dir": "data_dir", "augment": "augment"},
    num_classes=NUM_CLASSES,
    class_parents=CLASS_PARENTS,
    train_examples=train_examples,
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
    data_problem=data_problem,
)
