"""ImageNet TFRecord shards in the TPU official format, written by tests."""

import os

import tensorflow as tf


def write_shards(directory, prefix, images, labels, num_shards):
    """Writes `images` (uint8) round-robin into `{prefix}-0000i-of-0000n` with 1-based labels."""
    writers = [
        tf.io.TFRecordWriter(os.path.join(directory, f"{prefix}-{i:05d}-of-{num_shards:05d}"))
        for i in range(num_shards)
    ]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        features = {
            "image/encoded": tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(image).numpy()])
            ),
            "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=features))
        writers[index % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
