"""Runs the paper's experiments: `python run.py` reproduces Table 1 on synthetic data; flags select the rest."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time


@contextlib.contextmanager
def _quiet_native_start():
    """Hides what TensorFlow's C++ side prints while it loads and probes for accelerators (CUDA probing on a
    CPU machine, oneDNN notices): a newcomer reads those lines as errors. Only when the user set neither
    `TF_CPP_MIN_LOG_LEVEL` nor `--verbose`; a Python error raised meanwhile is still shown, after the block."""
    # A table's worker processes import this file again; the level set here is not the user's.
    set_here = os.environ.get("KD_TF_QUIET_START") == "1"
    if ("TF_CPP_MIN_LOG_LEVEL" in os.environ and not set_here) or "--verbose" in sys.argv:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["KD_TF_QUIET_START"] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_start():
    from absl import app, flags

    import data as datasets
    import models
    from data import synthetic
    from kd_tf import losses, runtime
    from kd_tf.repro import experiments, language_model_runs, sweeps
    from kd_tf.schedules import SCHEDULES

    if not any(arg.startswith(("--help", "-h", "--helpfull")) for arg in sys.argv[1:]):
        import tensorflow as tf

        tf.config.list_physical_devices()  # the accelerator probe, while its messages are hidden

MODES = tuple(experiments.names())
for _mode in MODES:  # the flags an experiment's module defines, shown by --help beside run.py's own
    flags.adopt_module_key_flags(sys.modules[type(experiments.get(_mode)).__module__])
flags.adopt_module_key_flags(sweeps)
flags.adopt_module_key_flags(language_model_runs)

# What to run.
_MODE = flags.DEFINE_enum(
    "mode",
    "table",
    MODES,
    "; ".join(f"{mode}: {experiments.get(mode).help}" for mode in MODES) + ".",
)
_DATASET = flags.DEFINE_enum("dataset", "synthetic", datasets.NAMES, "Dataset.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory of the prepared data (CIFAR-100, ImageNet, PTB)."
)
_METHOD = flags.DEFINE_enum("method", "kd", losses.NAMES, "Method of --mode=student.")
_METHODS = flags.DEFINE_list("methods", list(losses.NAMES), "Methods of --mode=table.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    None,
    "Where results, checkpoints and figures go. Default per mode: runs/synthetic_table1 (the synthetic table, "
    "and what --mode=analyze reads), runs/DATASET_table, runs/DATASET_teacher, runs/DATASET_METHOD (student), "
    "runs/data_efficiency, runs/sweet_spot, runs/regime_map.",
)
_TEACHER_DIR = flags.DEFINE_string("teacher_dir", None, "A --mode=teacher output directory (--mode=student).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the results already in --output_dir. The new run trains beside them (<output_dir>/.overwrite) "
    "and replaces them only when it has finished; interrupted, it resumes when run again with --overwrite.",
)
_SEEDS = flags.DEFINE_list(
    "seeds", ["0"], "Random seeds; a table reports mean ± std over them (--mode=sweet_spot: default 0,1,2)."
)

# Method hyperparameters (names of the loss arguments).
_TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "Softening temperature T.", lower_bound=1e-6)
_ALPHA = flags.DEFINE_float("alpha", 0.9, "Weight λ of the distillation term.", lower_bound=0, upper_bound=1)
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.1, "LS's ε.", lower_bound=0, upper_bound=1)
_TOPK = flags.DEFINE_integer("topk", 10, "KD-topk's k.", lower_bound=1)
_SIM_POWER = flags.DEFINE_float("sim_power", 1.0, "KD-sim's ρ.", lower_bound=1)
_SIM_TEMPERATURE = flags.DEFINE_float("sim_temperature", 0.1, "KD-sim's T_sim.", lower_bound=1e-6)
_MIX = flags.DEFINE_float("mix", 0.5, "β of KD-pt+sim and KD-pt+rel.", lower_bound=0, upper_bound=1)
_REL_TARGET = flags.DEFINE_float("rel_target", 0.6, "KD-rel's a.", lower_bound=0, upper_bound=1)
_REL_SIBLING = flags.DEFINE_float("rel_sibling", 0.03, "KD-rel's b.", lower_bound=0, upper_bound=1)
_METHOD_OVERRIDES = flags.DEFINE_string(
    "method_overrides",
    "",
    "Per-method hyperparameters, e.g. 'kd_pt:temperature=2,alpha=1;kd_sim:sim_temperature=0.1'. Precedence, "
    "per method and value: this flag > a hyperparameter flag you set (command line or flagfile) > the "
    "dataset's preset (--dataset=synthetic: T=1 and a tuned alpha for kd_pt, kd_sim, kd_pt_sim, kd_rel, "
    "kd_pt_rel) > the flag's default. Every run records the values it trained with.",
)
_TEACHER_LABEL_SMOOTHING = flags.DEFINE_float(
    "teacher_label_smoothing",
    0.0,
    "Train the teacher with label smoothing ε (the paper's Table 4).",
    lower_bound=0,
    upper_bound=1,
)

# Each experiment's own flags are defined in its module (kd_tf/repro/experiments/, kd_tf/repro/sweeps.py, the
# language model's in kd_tf/repro/language_model_runs.py) and shown by --help with these.
_QUICK = flags.DEFINE_bool(
    "quick",
    False,
    ", ".join(mode for mode in MODES if experiments.get(mode).quick)
    + ": a seconds-long version (tiny task and grid) that checks the bookkeeping.",
)

# Synthetic data (paper §5.1).
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 40, "Synthetic: classes M.", lower_bound=2)
_NUM_SUPERCLASSES = flags.DEFINE_integer("num_superclasses", 4, "Synthetic: super-classes K.", lower_bound=1)
_DIM = flags.DEFINE_integer("dim", 64, "Synthetic: input dimension d.", lower_bound=2)
_TAUS = flags.DEFINE_list("taus", ["0.0", "0.5", "0.9"], "Synthetic: class similarities τ, one column each.")
_TASK_SEED = flags.DEFINE_integer(
    "task_seed",
    0,
    "Synthetic: seed of the task (class vectors, sine constants); --seeds then vary data and models only.",
    lower_bound=0,
)
_TASK_SEEDS = flags.DEFINE_list(
    "task_seeds",
    [],
    "Synthetic --mode=table: several tasks; each τ column is then the mean ± std over every task seed × "
    "--seeds (default: the one task of --task_seed).",
)
_DIFFICULTY = flags.DEFINE_integer("difficulty", 2, "Synthetic: sine terms m_d.", lower_bound=0)
_TASK_KIND = flags.DEFINE_enum(
    "task_kind",
    synthetic.SHARED_SINE,
    synthetic.TASK_KINDS,
    "Synthetic: the labelling rule. shared_sine: one f(s) = s + Σ sin(α_i s + β_i) for every class (the "
    "paper's task; how non-linear its labels are depends on the task seed more than on --difficulty); "
    "per_class_sine: each class its own terms, so --difficulty sets how far the labels are from linear.",
)
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    "train_examples", 5_000, "Synthetic: training examples.", lower_bound=1
)
_VALIDATION_EXAMPLES = flags.DEFINE_integer(
    "validation_examples", 5_000, "Synthetic: validation examples.", lower_bound=1
)
_TEST_EXAMPLES = flags.DEFINE_integer("test_examples", 5_000, "Synthetic: test examples.", lower_bound=1)

# Models.
_TEACHER_MODEL = flags.DEFINE_enum("teacher_model", "mlp", models.NAMES, "Teacher architecture.")
_STUDENT_MODEL = flags.DEFINE_enum("student_model", "mlp", models.NAMES, "Student architecture.")
_TEACHER_WIDTH = flags.DEFINE_integer("teacher_width", 512, "MLP teacher width.", lower_bound=1)
_STUDENT_WIDTH = flags.DEFINE_integer("student_width", 64, "MLP student width.", lower_bound=1)
_LOGIT_SCALE = flags.DEFINE_float("logit_scale", 16.0, "MLP cosine-logit scale.", lower_bound=1e-6)
_RESNET_VARIANT = flags.DEFINE_enum(
    "resnet_variant",
    "v2",
    ["v2", "v1"],
    "CIFAR ResNet: v2 = legacy pre-activation (the paper's), v1 = TF2 official post-activation.",
)
_IMAGENET_SOURCE = flags.DEFINE_enum(
    "imagenet_source",
    "tfrecord",
    ["tfrecord", "tfds"],
    "ImageNet: TPU official TFRecord shards (1-based labels) or TFDS imagenet2012.",
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "ImageNet image size.", lower_bound=8)
_AUGMENT = flags.DEFINE_bool("augment", True, "Image datasets: random training augmentation.")
_COLOR_AUGMENT = flags.DEFINE_bool(
    "color_augment",
    True,
    "CIFAR-100: random brightness, saturation and contrast in the augmentation (the paper's).",
)
_CROP_PADDING = flags.DEFINE_integer(
    "crop_padding",
    2,
    "CIFAR-100: zero padding before the random 32x32 crop: 2 (36x36, the legacy code) or 4 (TF2's).",
    lower_bound=0,
)
_TRAIN_PER_CLASS = flags.DEFINE_integer(
    "train_per_class",
    None,
    "Digits: training images kept per class (default: all, 1,437 images); the test images stay the same.",
    lower_bound=1,
)
_IMAGENET_RESIZE = flags.DEFINE_enum(
    "imagenet_resize",
    "tf1_bicubic",
    ["tf1_bicubic", "bicubic"],
    "ImageNet: tf1_bicubic = the TPU code's tf.compat.v1.image.resize_bicubic; bicubic = TF2's tf.image.resize.",
)

# Training.
_EPOCHS = flags.DEFINE_integer("epochs", 20, "Student epochs.", lower_bound=1)
_TEACHER_EPOCHS = flags.DEFINE_integer(
    "teacher_epochs",
    None,
    "Teacher epochs (default: --epochs; --dataset=synthetic's preset: 10).",
    lower_bound=1,
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=1)
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer (sgd: Nesterov momentum).")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 3e-3, "Student learning rate.", lower_bound=0)
_TEACHER_LEARNING_RATE = flags.DEFINE_float(
    "teacher_learning_rate",
    None,
    "Teacher learning rate (default: --learning_rate; --dataset=synthetic's preset: 1e-3).",
    lower_bound=0,
)
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", "constant", SCHEDULES, "Learning-rate schedule.")
_LR_BOUNDARY_EPOCHS = flags.DEFINE_list("lr_boundary_epochs", [], "Epochs at which the rate steps.")
_LR_MULTIPLIERS = flags.DEFINE_list("lr_multipliers", [], "Rate multipliers, one more than the boundaries.")
_WARMUP_EPOCHS = flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up epochs.", lower_bound=0)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0, upper_bound=1)
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 0.0, "Weight decay rate (TF l2_loss convention).", lower_bound=0
)
_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "steps_per_epoch", None, "Cap on steps per epoch (smoke runs).", lower_bound=1
)
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution",
    8,
    "Training steps per compiled call (fewer host round trips for small models).",
    lower_bound=1,
)
_JIT_COMPILE = flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA compilation.")

# Runtime.
_PRECISION = flags.DEFINE_enum("precision", "float32", runtime.PRECISIONS, "Compute precision.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", runtime.STRATEGIES, "Distribution strategy.")
_TPU = flags.DEFINE_string("tpu", None, "TPU name or address (--strategy=tpu).")
_COLLECTIVE_TIMEOUT = flags.DEFINE_float(
    "collective_timeout",
    300.0,
    "--strategy=multi_worker_mirrored: seconds a collective waits for the other workers before the run stops "
    "with an error naming the lost worker (0: wait forever).",
    lower_bound=0,
)
_SYNC_BATCH_NORM = flags.DEFINE_bool(
    "sync_batch_norm",
    False,
    "Batch normalisation over the global batch of every replica and worker (an all-reduce per BN layer), so "
    "that data-parallel training makes the single-process update; off: each replica's own statistics, as "
    "the paper's TPU and GPU recipes computed them.",
)
_JOBS = flags.DEFINE_integer(
    "jobs",
    None,
    "--mode=table, data_efficiency, sweet_spot, regime_map: trainings at a time, each in its own worker process (a "
    "table's teachers first, each teacher's students once it has finished; a sweep's groups of cells that "
    "share a teacher), threads split among them. Default: one per CPU core under --strategy=default "
    "without accelerators, else 1.",
    lower_bound=1,
)
_TEACHER_CACHE = flags.DEFINE_enum(
    "teacher_cache",
    "auto",
    ["auto", "on", "off"],
    "Students of data without random augmentation (synthetic, PTB, digits or CIFAR with --noaugment) train on "
    "their teacher's outputs computed once (kept beside the teacher) instead of running it at every step; "
    "the same batches in the same order. auto: wherever the data allows it under --strategy=default or "
    "mirrored, where the cache fits --teacher_cache_max_mb; on: the same, refusing what cannot be cached; "
    "off: the teacher runs at every step.",
)
_TEACHER_CACHE_MAX_MB = flags.DEFINE_float(
    "teacher_cache_max_mb",
    4096.0,
    "The largest teacher cache (MB) students read and hold in memory: a classifier's logits over its training "
    "examples (CIFAR-100: 19 MB), PTB's payload of the method over the training text (KD-topk at k=5 takes 40 "
    "bytes a token, 37 MB; KD's 10,000 logits a token would take 37 GB and stays online).",
    lower_bound=0,
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    1,
    "Split the CPU into this many logical devices, so that --strategy=mirrored has that many replicas on a "
    "machine without accelerators (a rehearsal of a multi-device run).",
    lower_bound=1,
)
_CHECKPOINT_EVERY_STEPS = flags.DEFINE_integer(
    "checkpoint_every_steps",
    0,
    "Also checkpoint every N training steps (besides every epoch), so that a killed run loses at most N steps "
    "(0: at epoch ends only). A SIGTERM saves at the next step boundary whatever this is.",
    lower_bound=0,
)
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Seeded, op-deterministic run.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Check the command and print its fully resolved configuration (every method's hyperparameters, the "
    "optimizer, the learning-rate schedule in steps, models, data, runtime, output paths), each value with "
    "where it came from (command line, flagfile, preset, default), and what is missing (data, a trained "
    "teacher); then exit without training or writing anything.",
)
_TENSORBOARD = flags.DEFINE_bool(
    "tensorboard",
    True,
    "Write TensorBoard logs (per epoch: loss, hard and soft terms, accuracy, top-5, validation, learning rate) "
    "under each run's logs/; every run also writes history.csv. View: tensorboard --logdir runs/...",
)
_PROGRESS = flags.DEFINE_enum("progress", "auto", ["auto", "bar", "epoch", "none"], "Keras progress output.")


@flags.validator("seeds", "--seeds must be a list of integers")
def _seeds_are_integers(values):
    return all(value.lstrip("-").isdigit() for value in values)


@flags.validator("taus", "--taus must be numbers in [0, 1)")
def _taus_in_range(values):
    try:
        return bool(values) and all(0.0 <= float(value) < 1.0 for value in values)
    except ValueError:
        return False


@flags.validator("task_seeds", "--task_seeds must be a list of non-negative integers")
def _task_seeds_are_integers(values):
    return all(value.isdigit() for value in values)


@flags.validator("methods", f"--methods must be names from: {', '.join(losses.NAMES)}")
def _known_methods(values):
    return bool(values) and all(value in losses.NAMES for value in values)


@flags.multi_flags_validator(
    ["num_classes", "num_superclasses"], "--num_classes must be a multiple of --num_superclasses"
)
def _classes_divisible(values):
    return values["num_classes"] % values["num_superclasses"] == 0


@flags.multi_flags_validator(["strategy", "tpu"], "--strategy=tpu needs --tpu (a TPU name, or 'local')")
def _tpu_named(values):
    return values["strategy"] != "tpu" or bool(values["tpu"])


@flags.multi_flags_validator(
    ["lr_boundary_epochs", "lr_multipliers"],
    "--lr_multipliers needs one more entry than --lr_boundary_epochs (or both empty)",
)
def _schedule_shapes(values):
    boundaries, multipliers = values["lr_boundary_epochs"], values["lr_multipliers"]
    return (not boundaries and not multipliers) or len(multipliers) == len(boundaries) + 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so that `--help` does not load TensorFlow.
    from kd_tf.repro import config, modes

    # The libraries' objects (about 400,000 after TensorFlow's import) live as long as the run: frozen, every
    # garbage collection skips them, among them `keras.backend.clear_session()`'s and the one at the
    # interpreter's exit (`benchmarks/gc_freeze.py`). The run's own objects are collected as before.
    gc.freeze()
    runtime.catch_interrupts()
    runtime.catch_terminations()

    start = time.perf_counter()
    try:
        modes.run(config.from_flags(flags.FLAGS, sys.argv))
    except modes.UserError as error:
        if _VERBOSE.value:
            raise
        print(f"\nError: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if _VERBOSE.value:
            raise
        print("\nInterrupted; run the same command again to resume.", file=sys.stderr, flush=True)
        sys.exit(130)
    except runtime.Terminated as terminated:
        print(f"\n{terminated.message}", file=sys.stderr, flush=True)
        sys.exit(143)
    if not _DRY_RUN.value:
        print(f"Done in {time.perf_counter() - start:.0f} s.")


def entry_point():
    app.run(main)


if __name__ == "__main__":
    entry_point()
