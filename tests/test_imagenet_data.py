"""ImageNet pipelines on small JPEG shards written in the TPU official format, and on TFDS mock data."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from imagenet_shards import write_shards

from data import imagenet

IMAGE_HEIGHT, IMAGE_WIDTH = 40, 50
MEAN_RGB = np.array([0.485, 0.456, 0.406]) * 255
STDDEV_RGB = np.array([0.229, 0.224, 0.225]) * 255


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """6 training images (labels 1..6 over 3 shards) and 4 validation images (labels 7..10, 2 shards)."""
    directory = str(tmp_path_factory.mktemp("imagenet"))
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (6, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    eval_images = rng.integers(0, 256, (4, IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    write_shards(directory, "train", train_images, [1, 2, 3, 4, 5, 6], num_shards=3)
    write_shards(directory, "validation", eval_images, [7, 8, 9, 10], num_shards=2)
    return directory


def _arrays(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(images), np.concatenate(labels)


def _load(data_dir, **options):
    defaults = dict(batch_size=2, image_size=32, train_examples=6, deterministic=True)
    return imagenet.load(data_dir=data_dir, **{**defaults, **options})


def test_tfrecord_labels_are_zero_based_and_shapes_fixed(shard_dir):
    splits = _load(shard_dir)
    train_images, train_labels = _arrays(splits.train)
    test_images, test_labels = _arrays(splits.test)
    assert train_images.shape == (6, 32, 32, 3) and train_images.dtype == np.float32
    assert sorted(train_labels.tolist()) == [0, 1, 2, 3, 4, 5]
    assert train_labels.dtype == np.int32
    # Shard 0 holds examples 0 and 2, shard 1 examples 1 and 3; evaluation reads them in turn.
    assert test_labels.tolist() == [6, 7, 8, 9]
    assert test_images.shape == (4, 32, 32, 3)
    assert splits.num_classes == 1000 and splits.train_examples == 6
    assert splits.augmented and splits.class_parents is None and splits.validation is None
    assert sorted(_arrays(splits.train_ordered)[1].tolist()) == [0, 1, 2, 3, 4, 5]
    assert imagenet.load(data_dir=shard_dir).train_examples == 1_281_167


def test_training_crops_are_random_across_passes_and_reproducible_across_runs(shard_dir):
    splits = _load(shard_dir, batch_size=6)
    first_images, first_labels = _arrays(splits.train)
    second_images, second_labels = _arrays(splits.train)
    order = np.argsort(first_labels), np.argsort(second_labels)
    mean_change = np.abs(first_images[order[0]] - second_images[order[1]]).mean()
    # Independent crops of white noise differ by about one normalised unit per pixel.
    assert mean_change > 0.3
    rerun_images, rerun_labels = _arrays(_load(shard_dir, batch_size=6).train)
    np.testing.assert_array_equal(rerun_labels, first_labels)
    np.testing.assert_array_equal(rerun_images, first_images)


def test_training_at_full_resolution(shard_dir):
    images, _ = next(iter(_load(shard_dir, image_size=224).train))
    assert images.shape == (2, 224, 224, 3)
    assert np.isfinite(images.numpy()).all()


def test_evaluation_is_the_padded_center_crop_and_deterministic(shard_dir):
    splits = _load(shard_dir, deterministic=False)
    first_images, first_labels = _arrays(splits.test)
    second_images, second_labels = _arrays(splits.test)
    np.testing.assert_array_equal(first_images, second_images)
    np.testing.assert_array_equal(first_labels, second_labels)
    # The first validation record, by hand: crop 35 = int(0.875 * 40) pixels at offsets
    # ((40 - 35 + 1) // 2, (50 - 35 + 1) // 2) = (3, 8), bicubic resize, then normalise.
    record = next(iter(tf.data.TFRecordDataset(os.path.join(shard_dir, "validation-00000-of-00002"))))
    encoded = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})[
        "image/encoded"
    ]
    decoded = tf.io.decode_jpeg(encoded, channels=3)[3:38, 8:43]
    # The TPU code's TF1 resize (legacy pixel centres, a = -0.75), still computed by tf.compat.v1.
    tf1 = tf.compat.v1.image.resize_bicubic(decoded[tf.newaxis], [32, 32])[0].numpy()
    np.testing.assert_allclose(first_images[0], (tf1 - MEAN_RGB) / STDDEV_RGB, atol=1e-4)
    # TF2's bicubic resize stays reachable, and is a different image.
    tf2 = tf.image.resize(decoded, [32, 32], method="bicubic").numpy()
    tf2_images, _ = _arrays(_load(shard_dir, resize="bicubic").test)
    np.testing.assert_allclose(tf2_images[0], (tf2 - MEAN_RGB) / STDDEV_RGB, atol=1e-4)
    assert np.abs(tf1 - tf2).max() > 1.0


def test_normalisation_centres_the_imagenet_mean_colour(tmp_path):
    # A JPEG of the mean colour decodes to within a level or two of it (1/57 per level after scaling).
    mean_colour = np.broadcast_to(np.round(MEAN_RGB).astype(np.uint8), (2, 40, 50, 3))
    write_shards(str(tmp_path), "train", mean_colour, [1, 2], num_shards=1)
    write_shards(str(tmp_path), "validation", mean_colour, [1, 2], num_shards=1)
    splits = _load(str(tmp_path), train_examples=2)
    train_images, _ = _arrays(splits.train)
    test_images, _ = _arrays(splits.test)
    assert np.abs(train_images).max() < 0.05
    assert np.abs(test_images).max() < 0.05


def test_normalised_noise_has_the_expected_channel_means(shard_dir):
    # Uniform pixels have mean 127.5, so channel c should average (127.5 - mean_c) / std_c, which is
    # (0.07, 0.20, 0.42). Over 4 x 32 x 32 resized pixels of noise the standard error is about
    # 74 / 57 / sqrt(4096 / 4) = 0.04 (resizing roughly halves the independent pixels each way);
    # 0.15 allows for that and for JPEG's loss on noise.
    test_images, _ = _arrays(_load(shard_dir).test)
    expected = (127.5 - MEAN_RGB) / STDDEV_RGB
    np.testing.assert_allclose(test_images.mean(axis=(0, 1, 2)), expected, atol=0.15)
    assert np.abs(test_images.mean()) < 0.5


def test_bfloat16_images(shard_dir):
    float_images, _ = _arrays(_load(shard_dir).test)
    splits = _load(shard_dir, dtype="bfloat16")
    assert splits.train.element_spec[0].dtype == tf.bfloat16
    bfloat_images = np.concatenate([x.numpy().astype(np.float32) for x, _ in splits.test])
    # bfloat16 keeps 8 significant bits: relative error at most 2^-8.
    np.testing.assert_allclose(bfloat_images, float_images, rtol=2**-8, atol=1e-6)


def test_input_context_shards_files_and_splits_the_batch(shard_dir):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    splits = _load(shard_dir, batch_size=4, input_context=context)
    test_images, test_labels = _arrays(splits.test)
    # Pipeline 1 of 2 reads only the second validation shard, in batches of 4 / 2 replicas.
    assert test_labels.tolist() == [7, 9]
    assert splits.test.element_spec[0].shape.as_list() == [None, 32, 32, 3]
    assert next(iter(splits.train))[0].shape == (2, 32, 32, 3)
    # Training shards 1 of [0, 1, 2]: examples 1 and 4 (labels 2 and 5, 0-based 1 and 4).
    assert sorted(_arrays(splits.train)[1].tolist()) == [1, 4]


def test_tfds_source_under_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        splits = imagenet.load(
            source="tfds", batch_size=3, image_size=32, train_examples=6, deterministic=True
        )
        raw_labels = [
            int(example["label"])
            for example in tfds.load(
                "imagenet2012", split="validation", decoders={"image": tfds.decode.SkipDecoding()}
            )
        ]
        train_images, train_labels = _arrays(splits.train)
        test_images, test_labels = _arrays(splits.test)
    assert train_images.shape == (6, 32, 32, 3) and test_images.shape == (6, 32, 32, 3)
    assert train_labels.dtype == np.int32
    # TFDS labels are already 0-based: they pass through unchanged.
    assert test_labels.tolist() == raw_labels
    assert sorted(train_labels.tolist()) == sorted(raw_labels)
    assert np.isfinite(train_images).all() and splits.num_classes == 1000


@pytest.mark.parametrize("missing", ["absent", "empty", "none"])
def test_missing_data_explains_how_to_prepare_it(tmp_path, missing):
    data_dir = {"absent": str(tmp_path / "absent"), "empty": str(tmp_path), "none": None}[missing]
    with pytest.raises(FileNotFoundError) as raised:
        imagenet.load(data_dir=data_dir)
    message = str(raised.value)
    assert "--data_dir" in message
    assert "imagenet_to_gcs.py" in message and "tfds build imagenet2012" in message


def test_missing_tfds_data_explains_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012"):
        imagenet.load(data_dir=str(tmp_path), source="tfds")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"source": "jpeg"}, "`source` must be one of"),
        ({"dtype": "float16"}, "`dtype` must be one of"),
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"image_size": 0}, "Received: image_size=0"),
        ({"train_examples": -1}, "Received: train_examples=-1"),
        ({"center_crop_fraction": 1.5}, "Received: center_crop_fraction=1.5"),
    ],
)
def test_bad_options_are_refused(shard_dir, options, message):
    with pytest.raises(ValueError, match=message):
        imagenet.load(data_dir=shard_dir, **options)


def test_failed_crop_sampling_falls_back_to_the_center_crop(tmp_path):
    # A 4 x 200 strip has no crop of >= 8% area with aspect ratio in [3/4, 4/3] (it would need a side
    # of 16 pixels), so every attempt fails and training takes the evaluation crop, maybe flipped.
    strip = np.random.default_rng(1).integers(0, 256, (1, 4, 200, 3), dtype=np.uint8)
    write_shards(str(tmp_path), "train", strip, [1], num_shards=1)
    write_shards(str(tmp_path), "validation", strip, [1], num_shards=1)
    splits = _load(str(tmp_path), batch_size=1, train_examples=1)
    center_crop = _arrays(splits.test)[0][0]
    for _ in range(4):
        train_image = _arrays(splits.train)[0][0]
        assert (
            min(np.abs(train_image - center_crop).max(), np.abs(train_image - center_crop[:, ::-1]).max())
            < 1e-5
        )


def test_a_grayscale_jpeg_never_falls_back_to_the_center_crop(tmp_path):
    # The TPU code compares (height, width, channels) of the JPEG and of the 3-channel crop: for a 1-channel
    # JPEG the channels differ, so a failed sampling keeps the whole image instead of the centre crop.
    strip = np.random.default_rng(1).integers(0, 256, (1, 4, 200, 1), dtype=np.uint8)
    write_shards(str(tmp_path), "train", strip, [1], num_shards=1)
    write_shards(str(tmp_path), "validation", strip, [1], num_shards=1)
    splits = _load(str(tmp_path), batch_size=1, train_examples=1)
    whole = tf.io.decode_jpeg(tf.io.encode_jpeg(strip[0]), channels=3)
    resized = (imagenet.resize_image(whole, 32).numpy() - MEAN_RGB) / STDDEV_RGB
    for _ in range(4):
        train_image = _arrays(splits.train)[0][0]
        assert min(np.abs(train_image - resized).max(), np.abs(train_image - resized[:, ::-1]).max()) < 1e-4
