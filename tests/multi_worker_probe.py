"""Two checks of training across workers, run in one process or as one worker of several (TF_CONFIG set):

1. the ImageNet training stream `training.training_stream` builds: the labels this worker's replicas
   receive in two global batches of 4 go to `<output>/shards-<worker>.json`;
2. a KD student distilled offline from a teacher cache through `training.train`: its weights go to
   `<output>/student-<worker>.npz` and what `train` returned to `<output>/result-<worker>.json`.

Usage: python multi_worker_probe.py IMAGENET_DIR TEACHER_DIR OUTPUT_DIR
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from data import imagenet, synthetic  # noqa: E402
from kd_tf import losses, runtime, teacher_cache, training  # noqa: E402
from kd_tf.repro import trainers

BATCH = 64


def main(imagenet_dir: str, teacher_dir: str, output_dir: str) -> None:
    tf.config.experimental.enable_op_determinism()
    name = "multi_worker_mirrored" if os.environ.get("TF_CONFIG") else "default"
    strategy = runtime.make_strategy(name, collective_timeout=60)
    worker = runtime.worker_of(strategy)
    read_shards(strategy, worker, imagenet_dir, output_dir)
    distil_from_cache(strategy, worker, teacher_dir, output_dir)


def read_shards(strategy, worker, imagenet_dir: str, output_dir: str) -> None:
    splits = imagenet.load(data_dir=imagenet_dir, batch_size=4, image_size=16, deterministic=True)
    with strategy.scope():
        batches = iter(training.training_stream(strategy, splits, skip=0))
        labels = []
        for _ in range(2):
            _, batch_labels = next(batches)
            for part in strategy.experimental_local_results(batch_labels):
                labels.extend(int(label) for label in part.numpy())
    with open(os.path.join(output_dir, f"shards-{worker.index}.json"), "w") as handle:
        json.dump({"worker": worker.index, "labels": labels}, handle)


def distil_from_cache(strategy, worker, teacher_dir: str, output_dir: str) -> None:
    with open(os.path.join(teacher_dir, trainers.TEACHER_INFO)) as handle:
        options = json.load(handle)["data_options"]
    data = synthetic.arrays(**options, seed=0)
    splits = synthetic.splits(data, BATCH, seed=0)
    teacher = training.load_model(os.path.join(teacher_dir, trainers.TEACHER_FILE))
    loss = losses.get("kd", temperature=4.0, alpha=0.9)

    def cached(inputs, labels, part, shuffle_seed=None, drop_remainder=False):
        ordered = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(256)
        directory = os.path.join(output_dir, f"cache-{worker.index}", part)
        cache = teacher_cache.build_cache(teacher, loss, ordered, directory)
        return teacher_cache.cached_dataset(
            inputs, labels, cache, BATCH, shuffle_seed=shuffle_seed, drop_remainder=drop_remainder
        )

    offline = dataclasses.replace(
        splits,
        train=cached(data.x_train, data.y_train, "train", shuffle_seed=0, drop_remainder=True),
        validation=cached(data.x_validation, data.y_validation, "validation"),
        test=cached(data.x_test, data.y_test, "test"),
    )
    config = training.TrainConfig(
        epochs=2, batch_size=BATCH, verbose=0, tensorboard=False, steps_per_execution=1, jit_compile=False
    )
    with strategy.scope():
        keras.utils.set_random_seed(1)
        student = models.builder("mlp")(
            num_classes=splits.num_classes,
            input_shape=(data.x_train.shape[1],),
            width=4,
            sync_batch_norm=True,
        )
        result = training.train(
            student=student,
            teacher=None,
            loss=loss,
            splits=offline,
            config=config,
            run_dir=os.path.join(output_dir, f"run-{worker.index}"),
        )
    np.savez(os.path.join(output_dir, f"student-{worker.index}.npz"), *student.get_weights())
    with open(os.path.join(output_dir, f"result-{worker.index}.json"), "w") as handle:
        json.dump({key: value for key, value in result.items() if key != "wall_time_s"}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
