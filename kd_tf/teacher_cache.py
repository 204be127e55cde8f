"""Teacher cache: the teacher's outputs computed once, keeping only what a distillation loss needs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kd_tf.distiller import num_classes_of
from kd_tf.io import DamagedFileError, naming, read_json, sha256_of_file, verify_sha256
from kd_tf.losses.base import DistillationLoss

FORMAT_VERSION = 2  # 2: the manifest holds the payload file's SHA-256
MANIFEST_NAME = "manifest.json"
PAYLOAD_NAME = "payload.npy"
PAYLOAD_DTYPES = ("float32", "float16")

# Hyperparameters that weight or name the loss but never change what it takes from the teacher.
_NOT_IN_PAYLOAD = ("alpha", "name", "reduction")
# Labels ride in float32 targets (`pack_targets`), and KD-topk's payload carries class indices in float32:
# both are exact integers only below 2**24.
_MAX_EXACT_CLASSES = 2**24


def _sha256_of_json(value) -> str:
    text = json.dumps(value, sort_keys=True, default=_to_json)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _to_json(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return repr(value)


def _scalar_settings(config: dict) -> dict:
    return {key: value for key, value in config.items() if isinstance(value, bool | int | float | str)}


def payload_spec(loss: DistillationLoss, num_classes: int) -> dict:
    """What `loss` takes from the teacher per example; two losses with equal specs can share a cache.

    `kind` is `"none"` (LS, Student, KD-sim, KD-rel: nothing), `"logits"` (the base class's payload, the
    raw logits, which no hyperparameter changes: KD at any temperature) or `"method"` (a method's own
    payload, which depends on its settings, e.g. KD-pt's `q^T_t` on the temperature, KD-topk's on the
    temperature and `k`). `alpha` never changes the payload.
    """
    if not isinstance(loss, DistillationLoss):
        raise ValueError(f"`loss` must be a kd_tf.losses.DistillationLoss. Received: loss={loss!r}")
    size = loss.payload_size(num_classes)
    if not size:
        return {"kind": "none", "size": 0}
    if type(loss).teacher_payload is DistillationLoss.teacher_payload:
        return {"kind": "logits", "size": size}
    config = {key: value for key, value in loss.get_config().items() if key not in _NOT_IN_PAYLOAD}
    return {
        "kind": "method",
        "size": size,
        "method": loss.method_name,
        "settings": _scalar_settings(config),
        "config_sha256": _sha256_of_json(config),
    }


def payload_bytes_per_position(loss: DistillationLoss, num_classes: int, payload_dtype="float32") -> int:
    """Bytes a cache stores per example (per token for a language model) for `loss`.

    For a 10,000-word vocabulary in float32: KD's full logits take 40,000 bytes per token, KD-topk's `k`
    probabilities and `k` indices `8k` bytes, a ratio of `2k / M` (0.001 at `k = 5`).
    """
    _check_payload_dtype(payload_dtype)
    return loss.payload_size(num_classes) * np.dtype(payload_dtype).itemsize


def _check_payload_dtype(payload_dtype):
    if payload_dtype not in PAYLOAD_DTYPES:
        raise ValueError(
            f"`payload_dtype` must be one of {PAYLOAD_DTYPES}. Received: payload_dtype={payload_dtype!r}"
        )


def _check_not_augmented(augmented: bool, allow_augmented: bool):
    if augmented and not allow_augmented:
        raise ValueError(
            "The training pipeline augments its inputs (augmented=True), but a teacher cache holds the "
            "teacher's outputs for the unaugmented inputs only: offline distillation would then pair each "
            "augmented input with the outputs of a different one. Distil online (`kd_tf.Distiller` with "
            "the teacher), turn augmentation off, or pass allow_augmented=True to accept the mismatch."
        )


def _architecture(layer) -> list:
    """Class names and settings of `layer` and every layer inside it.

    Names (numbered by creation order within a process) and `trainable` (which freezing a teacher flips)
    are left out: neither changes what the layer computes.
    """
    sublayers = getattr(layer, "layers", None)
    if sublayers is not None:
        # A model's own config names its layers to wire the graph; its layers' configs say what they do.
        entries = [type(layer).__name__]
        for sublayer in sublayers:
            entries.append(_architecture(sublayer))
        return entries
    try:
        config = {key: value for key, value in layer.get_config().items() if key not in ("name", "trainable")}
    except (NotImplementedError, TypeError):
        config = None
    return [type(layer).__name__, config]


def teacher_fingerprint(teacher: keras.Model) -> str:
    """SHA-256 of the teacher's architecture (layer classes and settings) and of every weight's bytes.

    Covers non-trainable weights (batch-norm statistics) too: anything that changes the teacher's outputs
    in inference changes the fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(_sha256_of_json(_architecture(teacher)).encode("ascii"))
    for weight in teacher.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype.str}{value.shape}".encode("ascii"))
        digest.update(value.tobytes())
    return digest.hexdigest()


class _DataHasher:
    """Streams inputs and labels, batch after batch, into one fingerprint of the data and its order."""

    def __init__(self):
        self.inputs = hashlib.sha256()
        self.labels = hashlib.sha256()
        self.examples = 0
        self.input_dtypes = None

    def update(self, inputs, labels):
        arrays = [np.ascontiguousarray(np.asarray(value)) for value in tf.nest.flatten(inputs)]
        dtypes = [array.dtype.name for array in arrays]
        if self.input_dtypes is None:
            self.input_dtypes = dtypes
        for array in arrays:
            self.inputs.update(array.tobytes())
        labels = np.asarray(labels)
        # Labels arrive as int32 from one pipeline and int64 from another: hash one canonical type.
        self.labels.update(np.ascontiguousarray(labels.astype(np.int64)).tobytes())
        self.examples += labels.shape[0] if labels.ndim else 1

    def fingerprint(self) -> dict:
        return {
            "examples": self.examples,
            "inputs_sha256": self.inputs.hexdigest(),
            "labels_sha256": self.labels.hexdigest(),
            "input_dtypes": self.input_dtypes,
        }


def _split_element(element):
    if not isinstance(element, tuple | list) or len(element) < 2:
        raise ValueError(
            "The ordered dataset must yield `(inputs, labels)` (optionally with more items after them). "
            f"Received an element of type {type(element).__name__}."
        )
    return element[0], element[1]


def dataset_fingerprint(dataset: tf.data.Dataset) -> dict:
    """The data fingerprint `build_cache` records, from one pass over the same ordered dataset."""
    hasher = _DataHasher()
    for element in dataset:
        hasher.update(*_split_element(element))
    return hasher.fingerprint()


def data_fingerprint(inputs, labels, input_dtypes=None) -> dict:
    """The data fingerprint of in-memory arrays; equals `dataset_fingerprint` of their batched dataset.

    Args:
        inputs: array (or nest of arrays) whose first axis indexes examples.
        labels: integer array `[examples]` (`[examples, time]` for sequences).
        input_dtypes: dtype names to cast the flattened `inputs` to before hashing, e.g. the
            `input_dtypes` a cache recorded (so float64 arrays of float32 data match).
    """
    flat = tf.nest.flatten(inputs)
    if input_dtypes is not None:
        flat = [np.asarray(value, dtype=dtype) for value, dtype in zip(flat, input_dtypes, strict=True)]
    hasher = _DataHasher()
    hasher.update(tf.nest.pack_sequence_as(inputs, flat), labels)
    return hasher.fingerprint()


@dataclasses.dataclass(frozen=True)
class TeacherCache:
    """A loaded teacher cache: the manifest and the payload array (`None` when the loss needs none).

    Attributes:
        directory: where the cache lives.
        manifest: the JSON manifest (loss, payload shape and dtype, teacher and data fingerprints).
        payload: `[examples, payload_size]` (`[examples, time, payload_size]` for sequences), or `None`.
    """

    directory: str
    manifest: dict
    payload: np.ndarray | None

    @property
    def examples(self) -> int:
        return self.manifest["data"]["examples"]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    def check_data(self, inputs, labels):
        """Raises `ValueError` unless `inputs` and `labels` are the cached examples, in the cached order."""
        labels = np.asarray(labels)
        if labels.shape[:1] != (self.examples,):
            raise ValueError(
                f"The cache at {self.directory} holds {self.examples} examples; received labels of shape "
                f"{labels.shape}."
            )
        recorded = self.manifest["data"]
        received = data_fingerprint(inputs, labels, recorded["input_dtypes"])
        for key, what in (("labels_sha256", "labels"), ("inputs_sha256", "inputs")):
            if received[key] != recorded[key]:
                raise ValueError(
                    f"The {what} differ from those the teacher cache at {self.directory} was built on "
                    "(other examples, or the same ones in another order): the cached teacher outputs would "
                    "not belong to their examples. Pass the arrays in the cache's order, or rebuild it."
                )

    def packed_targets(self, labels) -> np.ndarray:
        """Labels and payload packed as `kd_tf.pack_targets` does: float32 `[..., 1 + payload_size]`."""
        labels = np.asarray(labels)
        packed_labels = labels.astype(np.float32)[..., None]
        if self.payload is None:
            return packed_labels
        if labels.shape != self.payload.shape[:-1]:
            raise ValueError(
                f"`labels` must have the payload's leading shape {self.payload.shape[:-1]}. "
                f"Received: labels.shape={labels.shape}"
            )
        return np.concatenate([packed_labels, np.asarray(self.payload, np.float32)], axis=-1)

    def with_targets(self, inputs, labels):
        """`(inputs, packed_targets)` for a `Distiller(teacher=None)` or `student.compile(loss=...)` fit,
        after checking that the arrays are the cached examples in the cached order."""
        self.check_data(inputs, labels)
        return inputs, self.packed_targets(labels)


def _write_manifest(path: str, manifest: dict):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def build_cache(
    teacher: keras.Model,
    loss: DistillationLoss,
    ordered_dataset: tf.data.Dataset,
    directory: str,
    *,
    overwrite: bool = False,
    payload_dtype: str = "float32",
    augmented: bool = False,
    allow_augmented: bool = False,
) -> TeacherCache:
    """Runs the teacher once over `ordered_dataset` and stores `loss.teacher_payload` for every example.

    The dataset must yield `(inputs, labels[, ...])` batches of unaugmented examples in a fixed order
    (`Splits.train_ordered`); the payload rows follow that order. What is stored is only what `loss` needs:
    all logits for KD, `q^T_t` for KD-pt, `k` probabilities and `k` indices for KD-topk, and nothing (no
    payload file, only the manifest) for LS, Student, KD-sim and KD-rel. For sequences (labels
    `[batch, time]`) the payload is `[examples, time, payload_size]`; every batch must then have one length.

    The cache is written into a temporary directory next to `directory` and renamed into place when
    complete, so an interrupted build never leaves a cache that loads.

    Args:
        teacher: the frozen teacher; called as `teacher(inputs, training=False)`.
        loss: the `DistillationLoss` the cache serves.
        ordered_dataset: batched `(inputs, labels)` in a fixed order, without augmentation.
        directory: where to write the cache.
        overwrite: replace an existing cache at `directory` (otherwise refused).
        payload_dtype: `"float32"` (default, exact) or `"float16"` (full logits only: other payloads may
            hold class indices, which float16 represents exactly only up to 2048).
        augmented: whether the training pipeline that will use the cache augments its inputs.
        allow_augmented: accept an augmented training pipeline (the cache is then exact only for the
            unaugmented inputs).

    Returns:
        The `TeacherCache`, as `load_cache` would return it.
    """
    _check_not_augmented(augmented, allow_augmented)
    _check_payload_dtype(payload_dtype)
    if not isinstance(ordered_dataset, tf.data.Dataset):
        raise ValueError(
            f"`ordered_dataset` must be a batched tf.data.Dataset. Received: {type(ordered_dataset).__name__}"
        )
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not overwrite:
        raise ValueError(f"A teacher cache already exists at {directory}. Pass overwrite=True to replace it.")
    iterator = iter(ordered_dataset)
    first = next(iterator, None)
    if first is None:
        raise ValueError("`ordered_dataset` is empty: there is nothing to cache.")
    inputs, labels = _split_element(first)

    @tf.function
    def teacher_logits(batch_inputs):
        return tf.cast(teacher(batch_inputs, training=False), tf.float32)

    @tf.function
    def teacher_payload(batch_inputs, batch_labels):
        logits = teacher_logits(batch_inputs)
        return loss.teacher_payload(tf.cast(batch_labels, tf.int32), logits)

    num_classes = num_classes_of(teacher)
    if num_classes is None:
        num_classes = int(teacher_logits(inputs).shape[-1])
    if num_classes > _MAX_EXACT_CLASSES:
        raise ValueError(
            f"A cache stores labels and class indices as float32, exact below {_MAX_EXACT_CLASSES} classes. "
            f"Received a teacher with {num_classes} classes."
        )
    spec = payload_spec(loss, num_classes)
    if payload_dtype != "float32" and spec["kind"] != "logits":
        raise ValueError(
            f"`payload_dtype` {payload_dtype!r} is offered for full logits only; the payload of "
            f"{loss.method_name!r} may hold class indices. Received: payload_dtype={payload_dtype!r}"
        )

    batches = int(ordered_dataset.cardinality())
    needed = None  # the payload's bytes, twice (raw rows, then the .npy), for a full disk's report
    if spec["size"] and batches > 0:
        needed = (
            2
            * batches
            * int(np.shape(labels)[0])
            * max(1, int(np.prod(np.shape(labels)[1:])))
            * (spec["size"] * np.dtype(payload_dtype).itemsize)
        )
    with _building(directory) as building, naming(directory, needed):
        hasher = _DataHasher()
        position_shape = None
        raw_path = os.path.join(building, "payload.raw")
        with open(raw_path, "wb") as raw:
            element = first
            while element is not None:
                inputs, labels = _split_element(element)
                hasher.update(inputs, labels)
                if spec["size"]:
                    payload = teacher_payload(inputs, labels).numpy().astype(payload_dtype)
                    if position_shape is None:
                        position_shape = payload.shape[1:]
                    elif payload.shape[1:] != position_shape:
                        raise ValueError(
                            f"Every batch must give payloads of one shape per example to stack them; batch "
                            f"{hasher.examples} gave {payload.shape[1:]}, earlier ones {position_shape}. "
                            "For sequences use windows of one length (drop the last, shorter one)."
                        )
                    raw.write(np.ascontiguousarray(payload).tobytes())
                element = next(iterator, None)
        fingerprint = hasher.fingerprint()
        payload_file = None
        payload_shape = None
        if spec["size"]:
            payload_shape = [fingerprint["examples"], *position_shape]
            # np.save streams the memory-mapped rows to disk: the payload never has to fit in memory.
            raw_rows = np.memmap(raw_path, dtype=payload_dtype, mode="r", shape=tuple(payload_shape))
            np.save(os.path.join(building, PAYLOAD_NAME), raw_rows)
            del raw_rows
            payload_file = PAYLOAD_NAME
        os.remove(raw_path)
        manifest = _manifest(
            loss,
            spec,
            payload_file,
            payload_shape,
            payload_dtype,
            num_classes,
            teacher,
            fingerprint,
            augmented,
            building,
        )
        _publish(building, directory, manifest)
    return load_cache(directory, loss=loss, teacher=manifest["teacher_sha256"])


def write_cache(
    directory: str,
    loss: DistillationLoss,
    payload: np.ndarray | None,
    *,
    inputs,
    labels,
    teacher: keras.Model,
    num_classes: int,
    overwrite: bool = False,
) -> TeacherCache:
    """Stores a payload computed elsewhere as the cache `build_cache` would write for the ordered examples
    `(inputs, labels)`.

    For a teacher that cannot be run example by example: a language model's carries its state across the
    windows of a token stream (`kd_tf.language_model.teacher_payload_cache` computes its payload, one row
    per lane of the stream: `[lanes, steps, payload_size]` for labels `[lanes, steps]`).

    Args:
        directory: where to write the cache.
        loss: the `DistillationLoss` the payload serves.
        payload: `loss.teacher_payload` of every example, `[*labels.shape, payload_size]`; `None` for a loss
            that needs nothing per example.
        inputs, labels: the examples, in the order of the payload's rows (fingerprinted).
        teacher: the teacher that computed it (fingerprinted).
        num_classes: the teacher's number of classes.
        overwrite: replace an existing cache at `directory` (otherwise refused).
    """
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not overwrite:
        raise ValueError(f"A teacher cache already exists at {directory}. Pass overwrite=True to replace it.")
    spec = payload_spec(loss, num_classes)
    labels = np.asarray(labels)
    if spec["size"]:
        payload = np.asarray(payload, np.float32)
        if payload.shape != (*labels.shape, spec["size"]):
            raise ValueError(
                f"`payload` must have shape {(*labels.shape, spec['size'])} (the labels' shape, then "
                f"{loss.method_name}'s {spec['size']} values). Received: payload.shape={payload.shape}"
            )
    elif payload is not None:
        raise ValueError(f"{loss.method_name!r} needs nothing per example: pass `payload=None`.")
    with _building(directory) as building, naming(directory, None if payload is None else payload.nbytes):
        payload_file = payload_shape = None
        if spec["size"]:
            np.save(os.path.join(building, PAYLOAD_NAME), payload)
            payload_file, payload_shape = PAYLOAD_NAME, list(payload.shape)
        fingerprint = data_fingerprint(inputs, labels)
        manifest = _manifest(
            loss,
            spec,
            payload_file,
            payload_shape,
            "float32",
            num_classes,
            teacher,
            fingerprint,
            False,
            building,
        )
        _publish(building, directory, manifest)
    return load_cache(directory, loss=loss, teacher=manifest["teacher_sha256"])


def _manifest(
    loss,
    spec,
    payload_file,
    payload_shape,
    payload_dtype,
    num_classes,
    teacher,
    fingerprint,
    augmented,
    building,
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "method": loss.method_name,
        "loss_settings": _scalar_settings(loss.get_config()),
        "payload": spec,
        "payload_file": payload_file,
        # The payload's own bytes: the fingerprints say which teacher and data it was computed from, this
        # that it is still what was computed (a reader verifies it before trusting a value).
        "payload_sha256": sha256_of_file(os.path.join(building, payload_file)) if payload_file else None,
        "payload_shape": payload_shape,
        "payload_dtype": payload_dtype if payload_file else None,
        "bytes_per_position": spec["size"] * np.dtype(payload_dtype).itemsize,
        "num_classes": num_classes,
        "teacher_sha256": teacher_fingerprint(teacher),
        "data": fingerprint,
        "training_augmented": bool(augmented),
    }


@contextlib.contextmanager
def _building(directory: str):
    """A new directory beside `directory` to build a cache in (published by `_publish`), removed if the
    build fails: a failed build never touches a cache already at `directory`."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.building-", dir=parent)
    try:
        yield building
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _publish(building: str, directory: str, manifest: dict) -> None:
    """Writes the manifest (last: a directory without one is never a cache) and renames the finished
    `building` directory to `directory`, replacing any cache there."""
    _write_manifest(os.path.join(building, MANIFEST_NAME), manifest)
    parent = os.path.dirname(directory)
    if os.path.exists(directory):
        retired = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
        os.replace(directory, os.path.join(retired, "cache"))
        os.replace(building, directory)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(building, directory)


def load_cache(
    directory: str,
    *,
    loss: DistillationLoss,
    teacher: keras.Model | str | None = None,
    data=None,
    expected_examples: int | None = None,
    mmap: bool = False,
    augmented: bool = False,
    allow_augmented: bool = False,
    verify: bool = True,
) -> TeacherCache:
    """Loads a cache written by `build_cache`, refusing one that does not fit what it will be used with, or
    whose payload file is not what was written (`DamagedFileError`, naming the file).

    Args:
        directory: the cache directory.
        loss: the loss that will use the cache; its payload must be the cached one (same method and
            settings; KD's raw logits serve KD at any temperature and `alpha`).
        teacher: the teacher (its fingerprint is computed) or a fingerprint string from
            `teacher_fingerprint`; `None` skips the check.
        data: the ordered `tf.data.Dataset` or an `(inputs, labels)` pair of arrays the cache must have
            been built on (checked by fingerprint), or `None` to skip the check.
        expected_examples: the number of examples the cache must hold, or `None`.
        mmap: memory-map the payload instead of reading it into memory.
        augmented, allow_augmented: as in `build_cache`, for the pipeline the cache will now serve.
        verify: check the payload file's bytes against the SHA-256 in the manifest (one extra read of the
            file: `benchmarks/cache_verification.py` measures it against reading the payload).

    Raises:
        FileNotFoundError: no complete cache at `directory`.
        kd_tf.io.DamagedFileError: (a `ValueError`) the manifest or the payload file is damaged or altered.
        ValueError: the cache was built for another loss, teacher or data.
    """
    _check_not_augmented(augmented, allow_augmented)
    directory = os.path.abspath(directory)
    manifest_path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"No teacher cache at {directory}: it has no {MANIFEST_NAME}.")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise DamagedFileError(manifest_path, "it holds no manifest object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"The teacher cache at {directory} has format {manifest.get('format_version')}; this version "
            f"reads format {FORMAT_VERSION}. Rebuild it."
        )
    expected_spec = payload_spec(loss, manifest["num_classes"])
    if expected_spec != manifest["payload"]:
        raise ValueError(
            f"The teacher cache at {directory} is stale for this loss: it holds the payload of "
            f"{manifest['method']!r} {_describe(manifest['payload'])}, and {loss.method_name!r} needs "
            f"{_describe(expected_spec)}. Rebuild it with build_cache(..., overwrite=True)."
        )
    if teacher is not None:
        fingerprint = teacher if isinstance(teacher, str) else teacher_fingerprint(teacher)
        if fingerprint != manifest["teacher_sha256"]:
            raise ValueError(
                f"The teacher cache at {directory} was built by another teacher (different weights or "
                "architecture): its outputs are stale. Rebuild it with build_cache(..., overwrite=True)."
            )
    recorded = manifest["data"]
    if expected_examples is not None and expected_examples != recorded["examples"]:
        raise ValueError(
            f"The teacher cache at {directory} holds {recorded['examples']} examples. Received: "
            f"expected_examples={expected_examples}"
        )
    if data is not None:
        if isinstance(data, tf.data.Dataset):
            received = dataset_fingerprint(data)
        else:
            inputs, labels = data
            received = data_fingerprint(inputs, labels, recorded["input_dtypes"])
        for key in ("examples", "labels_sha256", "inputs_sha256"):
            if received[key] != recorded[key]:
                raise ValueError(
                    f"The teacher cache at {directory} was built on other data ({key} differs: "
                    f"{recorded[key]} cached, {received[key]} received). Rebuild it."
                )
    payload = None
    if manifest["payload_file"]:
        payload_path = os.path.join(directory, manifest["payload_file"])
        if not os.path.isfile(payload_path):
            raise DamagedFileError(payload_path, "the cache's manifest names it, and it is missing")
        if verify:
            verify_sha256(payload_path, manifest["payload_sha256"])
        try:
            payload = np.load(payload_path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as error:
            raise DamagedFileError(payload_path, f"it does not read as an array ({error})") from error
        if (
            list(payload.shape) != manifest["payload_shape"]
            or payload.dtype.name != manifest["payload_dtype"]
        ):
            raise DamagedFileError(
                payload_path,
                f"it has shape {payload.shape} and dtype {payload.dtype}, the manifest says "
                f"{manifest['payload_shape']} {manifest['payload_dtype']}",
            )
    return TeacherCache(directory=directory, manifest=manifest, payload=payload)


def _describe(spec: dict) -> str:
    if spec["kind"] == "none":
        return "(nothing per example)"
    if spec["kind"] == "logits":
        return f"(all {spec['size']} logits)"
    settings = ", ".join(f"{key}={value}" for key, value in sorted(spec["settings"].items()))
    return f"({spec['size']} values per example; {settings})"


def cached_dataset(
    inputs,
    labels,
    cache: TeacherCache,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    drop_remainder: bool = True,
    augment=None,
    allow_augmented: bool = False,
) -> tf.data.Dataset:
    """Batches of `(inputs, packed_targets)` for offline distillation, shuffled with their teacher payload.

    Inputs, labels and payload are sliced together before shuffling, so every example keeps its own
    teacher outputs in any order. The arrays are first checked against the cache's data fingerprint.

    Args:
        inputs: array (or nest of arrays) of the cached examples, in the cache's order.
        labels: integer labels in the same order.
        cache: a `TeacherCache`.
        batch_size: examples per batch.
        shuffle_seed: seed of a full reshuffle every epoch, or `None` to keep the cached order.
        drop_remainder: drop the last partial batch.
        augment: optional `inputs -> inputs` map applied to each example after shuffling; needs
            `allow_augmented=True`, since the cached outputs are those of the unaugmented inputs.
        allow_augmented: accept `augment`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    _check_not_augmented(augment is not None, allow_augmented)
    inputs, targets = cache.with_targets(inputs, labels)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(cache.examples, seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment is not None:
        dataset = dataset.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
