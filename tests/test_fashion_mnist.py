"""Tests of the Fashion-MNIST loader (IDX files the tests write, TFDS mock data) and of its runs."""

import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from cli_process import check_ok, run_cli

from data import fashion_mnist

TRAIN, TEST = 240, 60  # 240 // 12 = 20 validation images, 220 training images


@pytest.fixture
def idx_dir(tmp_path):
    return fashion_mnist.write_toy_data(str(tmp_path / "fashion"), train_examples=TRAIN, test_examples=TEST)


def _elements(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    return np.concatenate(images), np.concatenate(labels)


def test_idx_files_round_trip_with_shapes_and_dtypes(idx_dir):
    train_images, train_labels, test_images, test_labels = fashion_mnist.arrays(idx_dir)
    assert train_images.shape == (TRAIN, 28, 28, 1) and train_images.dtype == np.uint8
    assert test_images.shape == (TEST, 28, 28, 1)
    assert train_labels.dtype == np.int32 and set(train_labels) == set(range(10))
    # The header is the IDX format's: 0 0 8 ndim, then the sizes big-endian.
    with gzip.open(os.path.join(idx_dir, fashion_mnist.FILES["train_images"]), "rb") as file:
        assert file.read(16) == bytes([0, 0, 8, 3, 0, 0, 0, TRAIN, 0, 0, 0, 28, 0, 0, 0, 28])


def test_idx_files_and_tfds_give_the_same_arrays_and_batches(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=36):
        from_tfds = fashion_mnist.arrays("tfds")
        tfds_splits = fashion_mnist.load(data_dir="tfds", batch_size=8, seed=3)
        tfds_batches = {
            name: _elements(getattr(tfds_splits, name)) for name in ("validation", "test", "train_ordered")
        }
    assert from_tfds[0].shape == (36, 28, 28, 1) and from_tfds[0].max() > 0
    directory = fashion_mnist.write_files(str(tmp_path / "from_tfds"), *from_tfds)
    from_idx = fashion_mnist.arrays(directory)
    for tfds_array, idx_array in zip(from_tfds, from_idx, strict=True):
        np.testing.assert_array_equal(tfds_array, idx_array)
        assert tfds_array.dtype == idx_array.dtype
    idx_splits = fashion_mnist.load(data_dir=directory, batch_size=8, seed=3)
    for name, (images, labels) in tfds_batches.items():
        idx_images, idx_labels = _elements(getattr(idx_splits, name))
        np.testing.assert_array_equal(labels, idx_labels)
        np.testing.assert_allclose(images, idx_images)
    assert idx_splits.train_examples == tfds_splits.train_examples == 36 - 3


def test_validation_is_fixed_disjoint_from_training_and_a_twelfth():
    train, validation = fashion_mnist.split_indices(60_000)
    assert len(validation) == 5_000 and len(train) == 55_000 == fashion_mnist.TRAIN_SIZE
    assert not set(train) & set(validation)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(60_000))
    again_train, again_validation = fashion_mnist.split_indices(60_000)
    np.testing.assert_array_equal(validation, again_validation)
    np.testing.assert_array_equal(train, again_train)


def test_splits_hold_out_validation_whatever_the_seed(idx_dir):
    first = fashion_mnist.load(data_dir=idx_dir, batch_size=16, seed=0)
    second = fashion_mnist.load(data_dir=idx_dir, batch_size=16, seed=7)
    assert first.train_examples == TRAIN - TRAIN // 12
    validation, validation_labels = _elements(first.validation)
    assert len(validation) == TRAIN // 12
    np.testing.assert_array_equal(validation, _elements(second.validation)[0])
    np.testing.assert_array_equal(validation_labels, _elements(second.validation)[1])
    ordered = _elements(first.train_ordered)[0]
    assert len(ordered) == TRAIN - TRAIN // 12
    # No validation image is a training image (the toy images are distinct: noise on 784 pixels).
    train_rows = {image.tobytes() for image in ordered}
    assert not any(image.tobytes() in train_rows for image in validation)
    # The seed moves the shuffle only.
    assert not np.array_equal(_elements(first.train)[1], _elements(second.train)[1])


def test_images_are_standardised_and_augmentation_is_optional(idx_dir):
    plain = fashion_mnist.load(data_dir=idx_dir, batch_size=16)
    assert not plain.augmented and plain.train_with_targets is not None
    assert plain.train.element_spec[0] == tf.TensorSpec((16, 28, 28, 1), tf.float32)
    images, _ = _elements(plain.test)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-3)
    augmented = fashion_mnist.load(data_dir=idx_dir, batch_size=16, augment=True)
    assert augmented.augmented and augmented.train_with_targets is None
    assert fashion_mnist.teacher_cache_refusal({"augment": True})
    assert fashion_mnist.teacher_cache_refusal({"augment": False}) is None


def test_hierarchy_groups_upper_body_garments_footwear_and_the_rest():
    names = fashion_mnist.CLASS_NAMES
    groups = {
        fashion_mnist.COARSE_LABEL_NAMES[parent]: {
            names[i] for i in np.flatnonzero(fashion_mnist.CLASS_PARENTS == parent)
        }
        for parent in range(3)
    }
    assert groups == {
        "upper_body": {"T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"},
        "footwear": {"Sandal", "Sneaker", "Ankle boot"},
        "other": {"Trouser", "Bag"},
    }
    np.testing.assert_array_equal(fashion_mnist.CLASS_PARENTS, [0, 2, 0, 0, 0, 1, 0, 1, 2, 1])
    assert fashion_mnist.FACTS.hierarchy({}) is fashion_mnist.CLASS_PARENTS


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: os.remove(path), "is missing"),
        (lambda path: open(path, "wb").write(b"not gzip"), "is damaged"),
        (lambda path: open(path, "wb").write(gzip.compress(b"\x00\x00\x08\x03" + bytes(12))), "is damaged"),
        (lambda path: open(path, "wb").write(open(path, "rb").read()[:-50]), "is damaged"),
    ],
    ids=["missing", "not_gzip", "sizes_disagree", "truncated"],
)
def test_a_missing_or_damaged_file_is_refused_by_name(idx_dir, damage, message):
    path = os.path.join(idx_dir, fashion_mnist.FILES["train_images"])
    damage(path)
    problem = fashion_mnist.data_problem({"data_dir": idx_dir})
    assert problem and path in problem and message in problem
    assert "apt-get install dataset-fashion-mnist" in problem
    with pytest.raises(fashion_mnist.DataNotFoundError, match=message):
        fashion_mnist.load(data_dir=idx_dir)


def test_labels_that_do_not_fit_the_images_are_refused(idx_dir):
    fashion_mnist.write_idx(os.path.join(idx_dir, fashion_mnist.FILES["test_labels"]), np.zeros(TEST - 1))
    problem = fashion_mnist.data_problem({"data_dir": idx_dir})
    assert fashion_mnist.FILES["test_labels"] in problem and "is damaged" in problem


def test_run_refuses_an_empty_data_dir_before_any_work_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "out"
    completed = run_cli(
        ["--dataset=fashion_mnist", f"--data_dir={empty}", "--mode=teacher", f"--output_dir={output}"]
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: Fashion-MNIST file {empty}/train-images-idx3")
    assert "is missing" in errors[0] and "apt-get install dataset-fashion-mnist" in errors[0]
    assert "Traceback" not in completed.stderr and not output.exists()


def test_dry_run_lists_a_missing_file_under_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dry = check_ok(run_cli(["--dataset=fashion_mnist", f"--data_dir={empty}", "--mode=teacher", "--dry_run"]))
    missing = dry.stdout.split("Missing", 1)[1]
    assert "train-images-idx3-ubyte.gz is missing" in missing


@pytest.mark.slow
def test_a_tiny_table_runs_through_run_py(idx_dir, tmp_path):
    output = tmp_path / "table"
    completed = check_ok(
        run_cli(
            [
                "--flagfile=configs/fashion_mnist_table.flags",
                f"--data_dir={idx_dir}",
                "--teacher_model=linear",  # the flagfile's ResNet-8 runs in test_documented_commands.py
                "--methods=student,kd,kd_pt_rel",
                "--seeds=0",
                "--epochs=2",
                "--lr_boundary_epochs=1,1.5",
                "--batch_size=32",
                "--jobs=1",
                "--progress=none",
                f"--output_dir={output}",
            ]
        )
    )
    records = json.loads((output / "results.json").read_text())
    assert [(record["role"], record["method"]) for record in records] == [
        ("teacher", "teacher"),
        ("student", "student"),
        ("student", "kd"),
        ("student", "kd_pt_rel"),
    ]
    for record in records:
        assert record["selected_on"] == "validation"
        assert 0 <= record["last_epoch_test_accuracy"] <= 1 and 1 <= record["best_epoch"] <= 2
        assert record["dataset"] == "fashion_mnist"
    assert records[2]["teacher_cache"] is True  # students read the teacher's cached logits
    table = (output / "results.md").read_text()
    assert "| KD-pt+rel |" in table and "at the last epoch" in table
    assert "Traceback" not in completed.stderr
