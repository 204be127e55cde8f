"""ImageNet (ILSVRC-2012) pipelines with the TF TPU official ResNet preprocessing, from TFRecords or TFDS."""

from __future__ import annotations

import os

import tensorflow as tf

from data import Facts, Splits

NUM_CLASSES = 1000
TRAIN_EXAMPLES = 1_281_167
EVAL_EXAMPLES = 50_000
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The TPU code takes a 224-pixel crop out of a 256-pixel shorter side: 224 / (224 + 32) = 0.875.
CENTER_CROP_FRACTION = 0.875
SOURCES = ("tfrecord", "tfds")
# "tf1_bicubic": the TPU code's TF1 `tf.image.resize_bicubic` (legacy pixel centres, cubic a = -0.75), which
# `tf.compat.v1.image.resize_bicubic` still computes; "bicubic": TF2's `tf.image.resize(..., "bicubic")`
# (half-pixel centres, Keys a = -0.5), a slightly different image.
RESIZE_METHODS = ("tf1_bicubic", "bicubic")
DTYPES = ("float32", "bfloat16")

_TFRECORD_PATTERNS = {"train": "train-*", "eval": "validation-*"}
_TFDS_SPLITS = {"train": "train", "eval": "validation"}
_READ_BUFFER_BYTES = 8 * 1024 * 1024

_PREPARE_HELP = (
    "Prepare ImageNet in one of two ways: (1) TFRecord shards train-00000-of-01024 ... and "
    "validation-00000-of-00128 ... with features image/encoded (JPEG) and image/class/label (1..1000), "
    "as written by the TF TPU official imagenet_to_gcs.py, then pass their directory as "
    "--data_dir with source 'tfrecord'; or (2) put ILSVRC2012_img_train.tar and "
    "ILSVRC2012_img_val.tar in <data_dir>/downloads/manual/, run `tfds build imagenet2012 "
    "--data_dir=<data_dir>`, then pass the same --data_dir with source 'tfds'."
)


def load(
    data_dir: str | None = None,
    source: str = "tfrecord",
    batch_size: int = 1024,
    image_size: int = 224,
    seed: int = 0,
    dtype: str = "float32",
    input_context: tf.distribute.InputContext | None = None,
    cycle_length: int = 64,
    shuffle_buffer: int = 16_384,
    train_examples: int | None = None,
    deterministic: bool = False,
    center_crop_fraction: float = CENTER_CROP_FRACTION,
    drop_eval_remainder: bool = False,
    resize: str = "tf1_bicubic",
    **unused,
) -> Splits:
    """Returns ImageNet's training and validation pipelines (the paper reports on validation).

    Training reads the shards in a shuffled order through `cycle_length` parallel readers, shuffles
    serialized examples in a `shuffle_buffer`, then takes a random crop of the JPEG before decoding it
    (`sample_distorted_bounding_box`: at least 10% of the image, aspect ratio 3/4..4/3, 8%..100% of the
    area, 10 attempts, the centre crop when every attempt fails), resizes it bicubically (TF1's `resize_bicubic`) to `image_size`
    squared and flips it left-right with probability 1/2. Evaluation decodes the centre square of
    `center_crop_fraction` times the shorter side and resizes it bicubically. Both subtract the ImageNet
    channel means and divide by the channel standard deviations (on 0..255 pixels). The random crop and
    flip draw from stateless seeds carried beside each example, so with `deterministic=True` one `seed`
    gives the same batches in every run, while each pass over `train` still differs from the last.

    Args:
        data_dir: for `source="tfrecord"`, the directory (local or `gs://`) of the `train-*` and
            `validation-*` shards; for `source="tfds"`, the TFDS data directory (`None`: TFDS' default).
        source: `"tfrecord"` (TPU official shards, labels 1..1000) or `"tfds"` (`imagenet2012`, labels
            0..999). Both pipelines yield labels 0..999 in the same class order (sorted WordNet ids).
        batch_size: global batch size. With `input_context`, each pipeline batches
            `input_context.get_per_replica_batch_size(batch_size)`, the convention of
            `tf.distribute.Strategy.distribute_datasets_from_function`.
        image_size: side of the square model input (224 in the paper).
        seed: seeds the shard order, the example shuffle and the augmentation.
        dtype: `"float32"`, or `"bfloat16"` to halve the host-to-TPU transfer.
        input_context: with several input pipelines (one per host), pipeline `input_pipeline_id` reads
            every `num_input_pipelines`-th shard.
        cycle_length: shards read in parallel.
        shuffle_buffer: serialized training examples shuffled together.
        train_examples: examples in one training epoch; `None` means ImageNet's 1,281,167. Give the real
            count when the shards hold a subset (or a handful of test examples).
        deterministic: keep the order of parallel reads and maps fixed (slower) instead of taking whichever
            element is ready first.
        center_crop_fraction: evaluation crop as a fraction of the shorter side.
        resize: the bicubic resize, one of `RESIZE_METHODS` (default: the TPU code's TF1 resize).
        drop_eval_remainder: drop the last partial evaluation batch, for accelerators that need every batch
            the same shape (the TPU code evaluated 49,152 of the 50,000 images at batch 1024).
        **unused: options meant for other datasets, ignored.

    Returns:
        `Splits` with `test` the 50,000 validation images, `train_ordered` the training images in file
        order with evaluation preprocessing, `augmented=True` and no class hierarchy.

    Raises:
        FileNotFoundError: when `data_dir` is missing or holds no shards / no prepared TFDS dataset; the
            message says how to prepare the data.
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}. Received: source={source!r}")
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {DTYPES}. Received: dtype={dtype!r}")
    for argument, value in (
        ("batch_size", batch_size),
        ("image_size", image_size),
        ("cycle_length", cycle_length),
        ("shuffle_buffer", shuffle_buffer),
    ):
        _check_positive_int(argument, value)
    if train_examples is not None:
        _check_positive_int("train_examples", train_examples)
    if resize not in RESIZE_METHODS:
        raise ValueError(f"`resize` must be one of {RESIZE_METHODS}. Received: resize={resize!r}")
    if not 0 < center_crop_fraction <= 1:
        raise ValueError(
            "`center_crop_fraction` must be in (0, 1]. "
            f"Received: center_crop_fraction={center_crop_fraction!r}"
        )
    global_batch = batch_size
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    def records(split, training):
        if source == "tfrecord":
            return _tfrecord_examples(
                data_dir, split, training, seed, input_context, cycle_length, deterministic
            )
        return _tfds_examples(data_dir, split, training, seed, input_context, cycle_length, deterministic)

    def evaluation_batches(examples, drop_remainder):
        images = examples.map(
            lambda image_bytes, label: (
                _cast(_eval_image(image_bytes, image_size, center_crop_fraction, resize), dtype),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return images.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

    def training_batches(context):
        examples = _tfrecord_examples if source == "tfrecord" else _tfds_examples
        train = examples(data_dir, "train", True, seed, context, cycle_length, deterministic)
        train = train.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # One fresh stateless seed per example and per pass: reproducible, yet new crops every epoch.
        augmentation_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        train = tf.data.Dataset.zip(train, augmentation_seeds).map(
            lambda example, example_seed: (
                _cast(_train_image(example[0], image_size, example_seed, resize), dtype),
                example[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        per_pipeline = batch_size if context is None else context.get_per_replica_batch_size(global_batch)
        return train.batch(per_pipeline, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return Splits(
        train=training_batches(input_context),
        train_pipeline=training_batches,
        test=evaluation_batches(records("eval", training=False), drop_eval_remainder),
        num_classes=NUM_CLASSES,
        train_examples=TRAIN_EXAMPLES if train_examples is None else train_examples,
        train_ordered=evaluation_batches(records("train", training=False), drop_remainder=False),
        class_parents=None,
        augmented=True,
    )


def _tfrecord_examples(data_dir, split, training, seed, input_context, cycle_length, deterministic):
    """(JPEG bytes, 0-based label) pairs from the TPU official shards of one split."""
    if not data_dir:
        raise FileNotFoundError(
            f"ImageNet needs --data_dir (the directory of the TFRecord shards). {_PREPARE_HELP}"
        )
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(
            f"ImageNet --data_dir={data_dir!r} does not exist or is not a directory. {_PREPARE_HELP}"
        )
    pattern = os.path.join(data_dir, _TFRECORD_PATTERNS[split])
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"ImageNet --data_dir={data_dir!r} has no shards matching {pattern!r}. {_PREPARE_HELP}"
        )
    shards = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(
                f"{len(files)} shards match {pattern!r}, fewer than the "
                f"{input_context.num_input_pipelines} input pipelines that each need at least one."
            )
        shards = shards.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        shards = shards.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    serialized = shards.interleave(
        lambda filename: tf.data.TFRecordDataset(filename, buffer_size=_READ_BUFFER_BYTES),
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or not training,
    )
    return serialized.map(
        _parse_tfrecord,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or not training,
    )


def _parse_tfrecord(serialized):
    features = tf.io.parse_single_example(
        serialized,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        },
    )
    # The TPU shards number classes 1..1000 (0 was kept for "background").
    label = tf.cast(features["image/class/label"], tf.int32) - 1
    return features["image/encoded"], label


def _tfds_examples(data_dir, split, training, seed, input_context, cycle_length, deterministic):
    """(JPEG bytes, 0-based label) pairs from TFDS `imagenet2012`, left undecoded for the crop."""
    import tensorflow_datasets as tfds  # imported here: slow to load, and only this source needs it

    options = tf.data.Options()
    options.deterministic = deterministic or not training
    read_config = tfds.ReadConfig(
        options=options,
        shuffle_seed=seed,
        shuffle_reshuffle_each_iteration=True,
        interleave_cycle_length=cycle_length,
        input_context=input_context,
        skip_prefetch=True,
    )
    # TFDS raises AssertionError for a dataset that was never prepared in `data_dir`.
    try:
        examples = tfds.load(
            "imagenet2012",
            split=_TFDS_SPLITS[split],
            data_dir=data_dir,
            download=False,
            shuffle_files=training,
            read_config=read_config,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
    except (AssertionError, FileNotFoundError) as error:
        raise FileNotFoundError(
            f"TFDS imagenet2012 is not prepared under --data_dir={data_dir!r} ({error}). {_PREPARE_HELP}"
        ) from error
    return examples.map(
        lambda example: (example["image"], tf.cast(example["label"], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _train_image(image_bytes, image_size, example_seed, resize="tf1_bicubic"):
    """Random-area crop of the JPEG, decoded, bicubically resized and randomly flipped; normalised."""
    image_shape = tf.image.extract_jpeg_shape(image_bytes)
    crop_seed = tf.stack([example_seed, 0])
    flip_seed = tf.stack([example_seed, 1])
    crop_begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    sampled_window = tf.stack([crop_begin[0], crop_begin[1], crop_size[0], crop_size[1]])
    # After 10 failed attempts the sampler returns the whole image; the TPU code then takes the
    # evaluation crop instead, detected the same way (crop size equals image size).
    # It compares (height, width, channels) of the JPEG with those of the decoded 3-channel crop and wants
    # all three equal, so a grayscale JPEG (1 channel) never falls back.
    decoded_shape = tf.stack([crop_size[0], crop_size[1], 3])
    sampling_failed = tf.reduce_sum(tf.cast(tf.equal(decoded_shape, image_shape), tf.int32)) >= 3
    window = tf.cond(
        sampling_failed,
        lambda: _center_crop_window(image_shape, CENTER_CROP_FRACTION),
        lambda: sampled_window,
    )
    image = _decode_resize_normalize(image_bytes, window, image_size, resize)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _eval_image(image_bytes, image_size, center_crop_fraction, resize="tf1_bicubic"):
    """Centre square of `center_crop_fraction` of the shorter side, bicubically resized; normalised."""
    image_shape = tf.image.extract_jpeg_shape(image_bytes)
    window = _center_crop_window(image_shape, center_crop_fraction)
    return _decode_resize_normalize(image_bytes, window, image_size, resize)


def _center_crop_window(image_shape, center_crop_fraction):
    """`[offset_y, offset_x, size, size]` of the centred square, rounded as the TPU code rounds it."""
    height, width = image_shape[0], image_shape[1]
    crop_size = tf.cast(center_crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    offset_y = (height - crop_size + 1) // 2
    offset_x = (width - crop_size + 1) // 2
    return tf.stack([offset_y, offset_x, crop_size, crop_size])


def _decode_resize_normalize(image_bytes, window, image_size, resize="tf1_bicubic"):
    # Decoding only the window skips most of the JPEG's pixels.
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = resize_image(image, image_size, resize)
    image = (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def resize_image(image, image_size: int, resize: str = "tf1_bicubic") -> tf.Tensor:
    """Bicubic resize of one image to `image_size` squared, float32 (see `RESIZE_METHODS`)."""
    if resize == "tf1_bicubic":
        return tf.compat.v1.image.resize_bicubic(
            image[tf.newaxis], [image_size, image_size], align_corners=False, half_pixel_centers=False
        )[0]
    return tf.image.resize(image, [image_size, image_size], method="bicubic")


def _cast(image, dtype):
    return tf.cast(image, tf.bfloat16) if dtype == "bfloat16" else image


def _check_positive_int(argument, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{argument}` must be a positive integer. Received: {argument}={value!r}")


def teacher_cache_refusal(options: dict) -> str | None:
    """Why cached teacher outputs cannot serve training (`data.cache_refusal`): every training image is a
    random crop."""
    del options
    return "--dataset=imagenet trains on random crops of its images"


def _dtype(precision: str) -> str:
    return "bfloat16" if precision == "mixed_bfloat16" else "float32"


FACTS = Facts(
    default_models=("resnet152", "resnet50"),
    option_flags={
        "data_dir": "data_dir",
        "source": "imagenet_source",
        "image_size": "image_size",
        "resize": "imagenet_resize",
        "dtype": ("precision", _dtype),
    },
    num_classes=NUM_CLASSES,
    train_examples=TRAIN_EXAMPLES,
    input_shape=lambda options: (options["image_size"], options["image_size"], 3),
    needs_data_dir=True,
    always_augmented=True,
)
