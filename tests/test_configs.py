"""Every flagfile parses, and the CIFAR-100 and ImageNet rows run a few steps on tiny data via run.py."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver
from runner import run_in_process

import models
from kd_tf.repro import trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", f"--flagfile={os.path.relpath(path, ROOT)}"])
        assert (
            (flags.FLAGS.output_dir or "").startswith("runs/")
            or "recipe" in path
            or path.endswith(("_tpu.flags", "_gpu.flags"))
        )


@pytest.mark.slow
def test_cifar100_teacher_and_kd_topk_student_two_steps_on_mock_data(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    tiny = ["--batch_size=8", "--steps_per_epoch=2", "--epochs=1", "--progress=none", "--jit_compile=false"]
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    with tfds.testing.mock_data(num_examples=24):
        run_in_process(
            ["--flagfile=configs/cifar100_resnet56_teacher.flags", *tiny, f"--output_dir={teacher_dir}"]
        )
        run_in_process(
            [
                "--flagfile=configs/cifar100_resnet20_kd_topk.flags",
                *tiny,
                f"--teacher_dir={teacher_dir}",
                f"--output_dir={student_dir}",
            ]
        )
    info = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    assert info["dataset"] == "cifar100" and info["model"] == "resnet56" and info["num_classes"] == 100
    (record,) = json.load(open(os.path.join(student_dir, "results.json")))
    assert record["method"] == "kd_topk" and record["model"] == "resnet20"
    assert np.isfinite(record["test_cross_entropy"])


def write_imagenet_shards(directory, prefix, count, seed):
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(os.path.join(directory, f"{prefix}-00000-of-00001")) as writer:
        for index in range(count):
            image = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(image).numpy()])
                ),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 5 + 1])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.mark.slow
def test_imagenet_resnet50_kd_topk_student_step_from_a_resnet152_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    data_dir = tmp_path / "imagenet"
    data_dir.mkdir()
    write_imagenet_shards(str(data_dir), "train", 4, seed=0)
    write_imagenet_shards(str(data_dir), "validation", 2, seed=1)
    teacher_dir, student_dir = str(tmp_path / "teacher"), str(tmp_path / "student")
    teacher = models.builder("resnet152")(num_classes=1000, input_shape=(32, 32, 3))
    trainers.save_teacher(
        teacher,
        teacher_dir,
        {"dataset": "imagenet", "num_classes": 1000, "data_options": {}, "model": "resnet152"},
    )
    run_in_process(
        [
            "--flagfile=configs/imagenet_resnet50_kd_topk_gpu.flags",
            "--strategy=default",
            "--precision=float32",
            f"--data_dir={data_dir}",
            "--image_size=32",
            "--batch_size=2",
            "--steps_per_epoch=1",
            "--epochs=1",
            "--progress=none",
            "--jit_compile=false",
            f"--teacher_dir={teacher_dir}",
            f"--output_dir={student_dir}",
        ]
    )
    (record,) = json.load(open(os.path.join(student_dir, "results.json")))
    assert record["method"] == "kd_topk" and record["model"] == "resnet50"
    assert np.isfinite(record["test_cross_entropy"])
