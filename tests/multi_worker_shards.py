"""One worker of a two-worker run: reads `steps` global batches of the ImageNet training stream exactly as
`experiment.train` builds it, and writes the labels its replicas received to `<output>/worker-<i>.json`.

Usage (with TF_CONFIG set): python multi_worker_shards.py DATA_DIR OUTPUT_DIR STEPS GLOBAL_BATCH
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import imagenet  # noqa: E402
from kd_tf import experiment, runtime  # noqa: E402


def main(data_dir: str, output_dir: str, steps: int, global_batch: int) -> None:
    strategy = runtime.make_strategy("multi_worker_mirrored", collective_timeout=60)
    worker = runtime.worker_of(strategy)
    splits = imagenet.load(data_dir=data_dir, batch_size=global_batch, image_size=16, deterministic=True)
    with strategy.scope():
        batches = iter(experiment.training_stream(strategy, splits, skip=0))
        labels = []
        for _ in range(steps):
            _, batch_labels = next(batches)
            for part in strategy.experimental_local_results(batch_labels):
                labels.extend(int(label) for label in part.numpy())
    with open(os.path.join(output_dir, f"worker-{worker.index}.json"), "w") as handle:
        json.dump({"worker": worker.index, "workers": worker.count, "labels": labels}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
