"""Tests of the CIFAR-100 (mocked TFDS) and digits pipelines and the shared image operations."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data import cifar100, digits, image_ops

NUM_MOCK_EXAMPLES = 20

# The widely used fine -> coarse table of CIFAR-100, written out independently of the name lists.
KNOWN_CLASS_PARENTS = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


def _images(dataset):
    return np.concatenate([images.numpy() for images, *_ in dataset])


def _labels(dataset):
    return np.concatenate([labels.numpy() for _, labels, *_ in dataset])


@pytest.fixture
def mock_cifar():
    with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES):
        yield


def _load_mock(**options):
    return cifar100.load(data_dir="/nonexistent", batch_size=8, **options)


def test_cifar100_shapes_dtypes_and_sizes(mock_cifar):
    splits = _load_mock()
    assert splits.num_classes == 100
    assert splits.train_examples == NUM_MOCK_EXAMPLES
    assert splits.augmented
    assert splits.train.element_spec == (
        tf.TensorSpec((8, 32, 32, 3), tf.float32),
        tf.TensorSpec((8,), tf.int32),
    )
    # Training drops the remainder (20 = 2 * 8 + 4); test and ordered-train keep every example.
    assert [len(labels) for _, labels in splits.train] == [8, 8]
    assert [len(labels) for _, labels in splits.test] == [8, 8, 4]
    assert [len(labels) for _, labels in splits.train_ordered] == [8, 8, 4]
    labels = _labels(splits.test)
    assert labels.min() >= 0 and labels.max() < 100


@pytest.mark.parametrize("split", ["train", "test", "train_ordered"])
def test_cifar100_images_are_standardised(mock_cifar, split):
    images = _images(getattr(_load_mock(), split))
    per_image = images.reshape(len(images), -1)
    np.testing.assert_allclose(per_image.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_image.std(axis=1), 1.0, atol=1e-4)


def test_cifar100_augmentation_changes_train_not_eval(mock_cifar):
    # shuffle_buffer=1 keeps the file order, so two passes can be compared example by example.
    splits = _load_mock(shuffle_buffer=1)
    first_pass, second_pass = _images(splits.train), _images(splits.train)
    assert np.array_equal(_labels(splits.train), _labels(splits.train_ordered)[:16])
    # Same examples in the same order, new random crops/flips/colours in the second epoch.
    assert np.abs(first_pass - second_pass).max() > 0.5
    ordered = _images(splits.train_ordered)[:16]
    assert np.abs(first_pass - ordered).max() > 0.5
    np.testing.assert_array_equal(_images(splits.test), _images(splits.test))
    np.testing.assert_array_equal(_images(splits.train_ordered), _images(splits.train_ordered))
    # Mock data yields the same examples for every split, so test == ordered train here.
    np.testing.assert_array_equal(_images(splits.test), _images(splits.train_ordered))


def test_cifar100_without_augmentation_is_standardisation_only(mock_cifar):
    splits = _load_mock(shuffle_buffer=1, augment=False)
    assert not splits.augmented
    np.testing.assert_allclose(_images(splits.train), _images(splits.train_ordered)[:16], rtol=0, atol=0)


def test_cifar100_seed_fixes_order_and_augmentation(mock_cifar):
    first = _images(_load_mock(seed=3).train)
    again = _images(_load_mock(seed=3).train)
    other = _images(_load_mock(seed=4).train)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.5


def test_cifar100_with_coarse_labels(mock_cifar):
    images, labels, coarse_labels = next(iter(_load_mock(with_coarse_labels=True).test))
    assert images.shape == (8, 32, 32, 3)
    assert labels.dtype == tf.int32 and coarse_labels.dtype == tf.int32
    assert coarse_labels.numpy().min() >= 0 and coarse_labels.numpy().max() < 20


def test_cifar100_class_parents():
    parents = cifar100.CLASS_PARENTS
    assert parents.shape == (100,) and parents.dtype == np.int32
    np.testing.assert_array_equal(parents, KNOWN_CLASS_PARENTS)
    # 20 super-classes of exactly 5 classes each.
    np.testing.assert_array_equal(np.bincount(parents), np.full(20, 5))
    name = cifar100.FINE_LABEL_NAMES.index
    assert parents[name("apple")] == parents[name("orange")] == 4  # fruit_and_vegetables
    assert parents[name("beaver")] == parents[name("whale")] == 0  # aquatic_mammals
    assert cifar100.COARSE_LABEL_NAMES[parents[name("tractor")]] == "vehicles_2"
    assert sorted(cifar100.FINE_LABEL_NAMES) == list(cifar100.FINE_LABEL_NAMES)
    assert len(set(cifar100.FINE_LABEL_NAMES)) == 100


def test_cifar100_splits_carry_a_copy_of_class_parents(mock_cifar):
    splits = _load_mock()
    np.testing.assert_array_equal(splits.class_parents, KNOWN_CLASS_PARENTS)
    assert splits.class_parents is not cifar100.CLASS_PARENTS


def test_cifar100_missing_data_names_the_fix(tmp_path):
    with pytest.raises(cifar100.DataNotFoundError, match="tfds build cifar100") as caught:
        cifar100.load(data_dir=str(tmp_path))
    assert str(tmp_path) in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)


def test_pad_and_random_crop_is_a_window_of_the_padded_image():
    image = tf.random.stateless_uniform((32, 32, 3), seed=[1, 2])
    padded = np.pad(image.numpy(), [(2, 2), (2, 2), (0, 0)])
    windows = {
        (row, column): padded[row : row + 32, column : column + 32] for row in range(5) for column in range(5)
    }
    offsets = set()
    for seed in range(40):
        cropped = image_ops.pad_and_random_crop(image, 2, tf.constant([seed, 0])).numpy()
        matches = [offset for offset, window in windows.items() if np.array_equal(cropped, window)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # many of the 25 possible offsets occur


def test_train_transform_is_a_function_of_its_seed():
    image = tf.cast(tf.random.stateless_uniform((32, 32, 3), seed=[3, 4], maxval=256), tf.uint8)
    first = image_ops.train_transform(image, tf.constant([5, 6], tf.int64)).numpy()
    again = image_ops.train_transform(image, tf.constant([5, 6], tf.int64)).numpy()
    other = image_ops.train_transform(image, tf.constant([7, 8], tf.int64)).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.5
    # Without any augmentation the transform is the evaluation transform.
    plain = image_ops.train_transform(
        image, tf.constant([5, 6], tf.int64), padding=0, flip=False, color_augment=False
    )
    np.testing.assert_allclose(plain.numpy(), image_ops.eval_transform(image).numpy(), atol=1e-6)


def test_random_color_stays_within_its_ranges():
    # A mid-grey image on 0..255: brightness shifts it by at most 63/255 (of one grey level, as in the legacy
    # code); saturation and contrast keep grey uniform.
    grey = tf.fill((4, 4, 3), 128.0)
    seeds = tf.constant([[1, 1], [2, 2], [3, 3]], tf.int64)
    jittered = image_ops.random_color(grey, seeds).numpy()
    assert np.ptp(jittered) < 1e-4
    assert abs(jittered.flat[0] - 128.0) <= 63 / 255 + 1e-4


def _legacy_jitter(image, delta, saturation, contrast, brightness=True):
    """The legacy `cifar_input.py` order in NumPy: float 0..255, brightness, saturation, contrast, no clip,
    then `per_image_standardization`."""
    x = image.astype(np.float64)
    if brightness:
        x = x + delta
    flat = x.reshape(-1, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in flat])
    hsv[:, 1] = np.clip(hsv[:, 1] * saturation, 0.0, 1.0)
    x = np.array([colorsys.hsv_to_rgb(*pixel) for pixel in hsv]).reshape(x.shape)
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = (x - mean) * contrast + mean
    return (x - x.mean()) / max(x.std(), 1.0 / np.sqrt(x.size))


def test_colour_jitter_follows_the_legacy_order_and_scale():
    image = tf.cast(tf.random.stateless_uniform((32, 32, 3), seed=[3, 4], maxval=256), tf.uint8)
    seed = tf.constant([5, 6], tf.int64)
    got = image_ops.train_transform(image, seed, padding=0, flip=False).numpy()
    # The factors each stateless op draws from its seed (the third to fifth of the transform's split).
    color_seeds = tf.random.experimental.stateless_split(seed, num=5)[2:]
    delta, saturation, contrast = (
        float(tf.random.stateless_uniform([], seed=s, minval=low, maxval=high))
        for s, (low, high) in zip(
            color_seeds,
            [(-63 / 255, 63 / 255), image_ops.SATURATION_RANGE, image_ops.CONTRAST_RANGE],
            strict=True,
        )
    )
    want = _legacy_jitter(image.numpy(), delta, saturation, contrast)
    np.testing.assert_allclose(got, want, atol=2e-4)
    # On this scale the standardisation cancels the brightness shift: without it the result is the same.
    np.testing.assert_allclose(got, _legacy_jitter(image.numpy(), 0, saturation, contrast, False), atol=2e-4)
    # A [0, 1]-scale jitter with a clip (an exposure change no original has) would differ visibly.
    assert np.abs(got - image_ops.eval_transform(image).numpy()).max() > 0.05


def test_digits_split_and_shapes():
    splits = digits.load(batch_size=64)
    assert splits.num_classes == 10
    assert splits.train_examples == 1437
    assert splits.class_parents is None
    assert splits.augmented
    assert splits.train.element_spec == (
        tf.TensorSpec((64, 32, 32, 3), tf.float32),
        tf.TensorSpec((64,), tf.int32),
    )
    test_labels = _labels(splits.test)
    assert len(test_labels) == 360
    # Stratified: every class has 35 to 37 of the 360 test images (the classes hold 174 to 183 images).
    counts = np.bincount(test_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    images = _images(splits.test)
    assert images.shape == (360, 32, 32, 3)
    np.testing.assert_allclose(images.reshape(360, -1).mean(axis=1), 0.0, atol=1e-5)
    # Grey images: the three channels are equal.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_digits_split_does_not_depend_on_training_seed():
    first = digits.load(batch_size=64, seed=0)
    second = digits.load(batch_size=64, seed=1)
    np.testing.assert_array_equal(_images(first.test), _images(second.test))
    assert np.abs(_images(first.train)[:64] - _images(second.train)[:64]).max() > 0.5


def test_digits_fewer_training_images_per_class_keep_the_test_images():
    full = digits.load(batch_size=10, augment=False)
    fewer = digits.load(batch_size=10, augment=False, train_per_class=20)
    assert fewer.train_examples == 200 == digits.train_examples({"train_per_class": 20})
    assert digits.FACTS.examples({"train_per_class": None}) == 1437 == full.train_examples
    np.testing.assert_array_equal(_images(fewer.test), _images(full.test))
    labels = _labels(fewer.train)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 20))
    # A subset of the full training set, the same test set.
    _, all_labels = digits.images_and_labels()
    full_train, full_test = digits.split_indices(all_labels)
    few_train, few_test = digits.split_indices(all_labels, train_per_class=20)
    assert set(few_train) < set(full_train)
    np.testing.assert_array_equal(few_test, full_test)
    # More images per class than a class has in the training split keeps all of them.
    assert digits.train_examples({"train_per_class": 1000}) == 1437


def test_digits_images_are_upsampled_digits():
    images, labels = digits.images_and_labels()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (1797,) and set(labels) == set(range(10))
    assert images.max() == 255 and images.min() == 0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(batch_size=0), "Received: batch_size=0"),
        (dict(batch_size=5000), "Received: batch_size=5000"),
        (dict(test_fraction=1.0), "Received: test_fraction=1.0"),
        (dict(train_per_class=0), "Received: train_per_class=0"),
    ],
)
def test_digits_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        digits.load(**options)


def test_cifar100_invalid_crop_padding():
    with pytest.raises(ValueError, match="Received: crop_padding=-1"):
        cifar100.load(crop_padding=-1)


def test_cifar100_crop_padding_four(mock_cifar):
    images = _images(_load_mock(crop_padding=4, color_augment=False).train)
    assert images.shape == (16, 32, 32, 3)
