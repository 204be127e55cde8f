"""What `run.py` does with its flags: check them against each other and the disk, then run one mode."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys

import keras
import tensorflow as tf

import data as datasets
from kd_tf import experiment, losses, outputs, paper, parallel, runtime
from kd_tf.checkpoint import DirectoryInUseError, DirectoryLock
from kd_tf.io import atomic_write_text

# A dataset's preset: values applied to every flag the user did not set, globally ("flags", `_Options.value`)
# or for one method ("methods", `_resolve_overrides`). The synthetic study's come from the search in BUILD.md
# ("Training", "Method hyperparameters"); the other datasets' recipes live in their flagfiles (configs/).
PRESETS = {
    "synthetic": {
        "flags": {"teacher_epochs": 10, "teacher_learning_rate": 1e-3},
        "methods": {
            "kd_pt": {"temperature": 1.0, "alpha": 0.3},
            "kd_sim": {"temperature": 1.0, "alpha": 0.3},
            "kd_pt_sim": {"temperature": 1.0, "alpha": 0.3},
            "kd_rel": {"temperature": 1.0, "alpha": 0.1},
            "kd_pt_rel": {"temperature": 1.0, "alpha": 0.3},
        },
    }
}

# Default teacher and student architectures per dataset (the paper's pairs).
DEFAULT_MODELS = {
    "synthetic": ("mlp", "mlp"),
    "cifar100": ("resnet56", "resnet20"),
    "digits": ("resnet56", "resnet20"),
    "imagenet": ("resnet152", "resnet50"),
    "ptb": ("awd_lstm", "awd_lstm"),
}
HIERARCHIES = ("synthetic", "cifar100")
WRITING_MODES = ("table", "teacher", "student", "data_efficiency", "sweet_spot")
KNOWN_CLASSES = {"cifar100": 100, "digits": 10, "imagenet": 1000}
NEEDS_DATA_DIR = ("imagenet", "ptb")
SWEEPS = ("data_efficiency", "sweet_spot")
MULTI_WORKER_MODES = ("table", "teacher", "student")
# Strategies under which students can train on a teacher cache (`--teacher_cache`).
OFFLINE_STRATEGIES = ("default", "mirrored")


class UserError(Exception):
    """A problem with the command line, the data or a saved file, explained for the person who ran it."""


def run(flag_values) -> None:
    """Checks the flags, then runs `--mode`.

    Every check runs before anything is written or removed. A mode that writes results then holds
    `--output_dir` for its whole run (`outputs.claim`): a second run into it is refused, and finished results
    that `--overwrite` replaces stay in place until the new ones are complete.
    """
    options = _Options(flag_values)
    options.check()
    runtime.quiet_retracing_warnings()
    if flag_values.cpu_devices > 1:
        runtime.split_cpu(flag_values.cpu_devices)
    if flag_values.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(options.seeds[0])
    runtime.set_precision(flag_values.precision)
    try:
        strategy = runtime.make_strategy(
            flag_values.strategy, flag_values.tpu, collective_timeout=flag_values.collective_timeout or None
        )
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"--strategy={flag_values.strategy}: {error}") from error
    options.check_replicas(strategy)
    worker = runtime.worker_of(strategy)
    if not worker.chief:
        return _run_as_worker(options, strategy, worker)
    if flag_values.mode not in WRITING_MODES:
        return _run_mode(options, strategy)
    try:
        with outputs.claim(options.output_dir, replace=options.replaces_results) as work_dir:
            options.output_dir = work_dir
            _run_mode(options, strategy)
    except DirectoryInUseError as error:
        raise UserError(str(error)) from error
    finally:
        options.output_dir = options.final_output_dir


def _run_as_worker(options: _Options, strategy, worker: runtime.Worker) -> None:
    """A worker other than the chief: the same training, its files in `<output_dir>/workertemp_<index>/`.

    It trains every model with the chief (each step's gradients are summed across workers) and keeps its own
    checkpoints, records and copy of the teacher there, so that it can resume as the chief does. The chief
    alone writes the results; a worker removes its directory once the run has finished.
    """
    work_dir = os.path.join(options.final_output_dir, outputs.worker_directory(worker.index))
    try:
        with DirectoryLock(work_dir):
            options.output_dir = work_dir
            _run_mode(options, strategy)
    except DirectoryInUseError as error:
        raise UserError(str(error)) from error
    finally:
        options.output_dir = options.final_output_dir
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(options.final_output_dir)  # empty where this worker's host keeps no results of its own
    print(f"Worker {worker.index} of {worker.count}: finished; the chief (worker 0) wrote the results.")


def _run_mode(options: _Options, strategy) -> None:
    flag_values = options.flags
    with strategy.scope():
        try:
            if options.dataset == "ptb":
                from kd_tf import language_model_runs

                return language_model_runs.run(options)
            {
                "table": _run_table,
                "teacher": _run_teacher,
                "student": _run_student,
                "analyze": _run_analyze,
                "data_efficiency": _run_study_sweep,
                "sweet_spot": _run_study_sweep,
            }[flag_values.mode](options)
        except (
            ValueError,
            FileNotFoundError,
            experiment.TeacherMismatchError,
            experiment.NonFiniteLossError,
        ) as error:
            if flag_values.verbose:
                raise
            raise UserError(str(error)) from error
        except _LOST_PEER_ERRORS as error:
            runtime.raise_if_interrupted()  # a Ctrl-C given to every worker: the peers' loss follows from it
            if flag_values.verbose or not runtime.across_workers(strategy):
                raise
            raise UserError(_lost_worker_message(error, strategy, flag_values.collective_timeout)) from error


def _first_telling_line(message: str) -> str:
    """The line of a TensorFlow error that says what happened (not "Graph execution error:")."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for key in ("stopped sending heartbeats", "timed out", "Deadline", "Socket closed", "aborted"):
        for line in lines:
            if key in line:
                return line
    return next((line for line in lines if not line.endswith("error:")), "")


# What a collective raises when another worker is gone: its connection closed, or no answer in time.
_LOST_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)


def _lost_worker_message(error: tf.errors.OpError, strategy, timeout: float) -> str:
    """Names the worker a collective lost, from the task in the error or else the cluster's addresses."""
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    me = (strategy.cluster_resolver.task_type, int(strategy.cluster_resolver.task_id))
    named = sorted(set(re.findall(r"/job:(chief|worker)/replica:\d+/task:(\d+)", str(error.message))))
    lost = [(job, int(task)) for job, task in named if (job, int(task)) != me]
    if not lost:
        lost = [(job, task) for job in ("chief", "worker") for task in range(len(spec.get(job, ())))]
        lost = [peer for peer in lost if peer != me]
    peers = ", ".join(f"{job} {task} ({spec[job][task]})" for job, task in lost)
    cause = _first_telling_line(error.message or "") or type(error).__name__
    return (
        f"Lost contact with {peers}: a collective failed ({type(error).__name__}: {cause[:300]}). "
        f"A worker that stops answering is given up after --collective_timeout={timeout:g} s. Start every "
        "worker again with the same command (each with its own TF_CONFIG): the run resumes from the last "
        "checkpoint all workers hold."
    )


class _Options:
    """The flags, grouped into the configs the experiment functions take."""

    def __init__(self, flag_values):
        self.flags = flag_values
        self.dataset = flag_values.dataset
        self.seeds = [int(seed) for seed in flag_values.seeds]
        teacher_model, student_model = DEFAULT_MODELS[self.dataset]
        self.teacher_model = (
            flag_values.teacher_model if _was_set(flag_values, "teacher_model") else teacher_model
        )
        self.student_model = (
            flag_values.student_model if _was_set(flag_values, "student_model") else student_model
        )
        self.output_dir = self.final_output_dir = flag_values.output_dir or default_output_dir(flag_values)
        self.replaces_results = False  # set by `check`
        self.one_step_per_call = False  # set by `check_replicas`
        self.methods = list(flag_values.methods)
        if self.dataset not in HIERARCHIES and not _was_set(flag_values, "methods"):
            self.methods = [m for m in self.methods if m not in losses.NEEDS_CLASS_PARENTS]
        if flag_values.mode == "data_efficiency" and not _was_set(flag_values, "methods"):
            from kd_tf import studies

            self.methods = list(studies.DATA_EFFICIENCY_METHODS)
        self.explicit_overrides = _parse_overrides(flag_values.method_overrides)
        self.method_overrides = self._resolve_overrides()

    def _resolve_overrides(self) -> dict:
        """Per-method values that replace the global flags, by the one precedence rule (BUILD.md):

        an explicit `--method_overrides` value > a flag the user set > the dataset's preset > a flag default.
        So a preset value (`PRESETS`) applies only where the user set neither the flag nor an override.
        """
        preset = PRESETS.get(self.dataset, {}).get("methods", {})
        resolved = {}
        for method in losses.NAMES:
            values = {
                name: value
                for name, value in preset.get(method, {}).items()
                if not _was_set(self.flags, name)
            }
            values.update(self.explicit_overrides.get(method, {}))
            if values:
                resolved[method] = values
        return resolved

    def value(self, name: str):
        """A flag's value by the precedence rule: set by the user > the dataset's preset > the default."""
        preset = PRESETS.get(self.dataset, {}).get("flags", {})
        if name in preset and not _was_set(self.flags, name):
            return preset[name]
        return self.flags[name].value

    def paper_column(self) -> dict[str, tuple] | None:
        """The paper's numbers for this run's table (Tables 2, 4 and 6), or `None` where it has none."""
        return paper.accuracy_column(self.dataset, self.flags.teacher_label_smoothing > 0) or None

    def trained_methods(self) -> list[str]:
        """The methods this mode builds a loss for: the only ones whose values are checked."""
        mode = self.flags.mode
        if mode in ("student", "sweet_spot"):
            return [self.flags.method]
        if mode == "table" or mode == "data_efficiency":
            return list(self.methods)
        if mode == "analyze" and self.flags.topk_sweep:
            return ["kd_topk"]
        return []  # teacher: no method; analyze: reads finished runs

    def check(self) -> None:
        """Every check that needs more than one flag or the disk; raises `UserError` before any work."""
        flag_values = self.flags
        methods = self.trained_methods()
        if flag_values.mode in SWEEPS:
            self._check_sweep()
        if self.dataset not in HIERARCHIES:
            for method in methods:
                if method in losses.NEEDS_CLASS_PARENTS and flag_values.mode in ("table", "student"):
                    raise UserError(
                        f"--method(s) {method} needs a class hierarchy, and --dataset={self.dataset} has none "
                        f"(KD-rel works with: {', '.join(HIERARCHIES)})."
                    )
        if self.dataset in NEEDS_DATA_DIR and not flag_values.data_dir:
            raise UserError(
                f"--dataset={self.dataset} needs --data_dir (see BUILD.md for preparing the data)."
            )
        if flag_values.data_dir and not flag_values.data_dir.startswith("gs://"):
            if not os.path.isdir(flag_values.data_dir):
                raise UserError(f"--data_dir={flag_values.data_dir} is not a directory.")
        if flag_values.strategy == "multi_worker_mirrored":
            self._check_multi_worker()
        if flag_values.jobs is not None and flag_values.jobs > 1 and flag_values.strategy != "default":
            raise UserError(
                f"--jobs={flag_values.jobs} trains cells in separate processes, which --strategy="
                f"{flag_values.strategy} cannot span: use --jobs=1 with it."
            )
        if flag_values.teacher_cache == "on":
            self._check_teacher_cache()
        if self.dataset == "ptb" and flag_values.mode not in ("teacher", "student"):
            raise UserError("--dataset=ptb runs with --mode=teacher or --mode=student (configs/ptb_*.flags).")
        if flag_values.mode == "student":
            teacher_info = os.path.join(flag_values.teacher_dir, experiment.TEACHER_INFO)
            if not os.path.exists(teacher_info):
                raise UserError(
                    f"--teacher_dir={flag_values.teacher_dir} holds no trained teacher "
                    f"({experiment.TEACHER_FILE} and {experiment.TEACHER_INFO}); train one with --mode=teacher."
                )
        for method, values in self.explicit_overrides.items():
            if method not in methods:
                continue
            # Building the loss once checks every value; the class vectors and hierarchy are stand-ins.
            try:
                _probe_loss(method, {**self.hyperparameters(), **values}, self.class_parents_shape())
            except ValueError as error:
                raise UserError(f"--method_overrides for {method}: {error}") from error
        try:
            for method in methods:
                values = {**self.hyperparameters(), **self.method_overrides.get(method, {})}
                _probe_loss(method, values, self.class_parents_shape())
                classes = KNOWN_CLASSES.get(self.dataset) or (
                    flag_values.num_classes if self.dataset == "synthetic" else None
                )
                if method == "kd_topk" and classes and values["topk"] > classes:
                    raise ValueError(
                        f"--topk must be at most the number of classes ({classes}). Received: {values['topk']}"
                    )
        except ValueError as error:
            raise UserError(f"--method={method}: {error}") from error
        # Last, after every other check: nothing on disk is touched by a refused command.
        if flag_values.mode in WRITING_MODES:
            self._check_output_dir()

    def _check_teacher_cache(self) -> None:
        """`--teacher_cache=on`: refused where students would still run their teacher at every step."""
        flag_values = self.flags
        if flag_values.strategy not in OFFLINE_STRATEGIES:
            reason = f"--strategy={flag_values.strategy} distils online"
        elif flag_values.steps_per_epoch:
            reason = "--steps_per_epoch caps the epochs, which then see other examples than a cache holds"
        else:
            reason = datasets.cache_refusal(self.dataset, self.data_options())
        if reason is not None:
            raise UserError(
                f"--teacher_cache=on cannot serve this run: {reason}. Use --teacher_cache=auto or off."
            )

    def teacher_cache(self) -> str:
        """`--teacher_cache` as the runner applies it: `auto` distils online across workers and on TPUs (the
        cache is built and read by one process)."""
        mode = self.flags.teacher_cache
        if mode == "auto" and self.flags.strategy not in OFFLINE_STRATEGIES:
            return "off"
        return mode

    def _check_multi_worker(self) -> None:
        """What runs across workers: the Keras training of `table`, `teacher` and `student`."""
        flag_values = self.flags
        if flag_values.mode not in MULTI_WORKER_MODES:
            raise UserError(
                f"--strategy=multi_worker_mirrored runs --mode={'/'.join(MULTI_WORKER_MODES)}; "
                f"--mode={flag_values.mode} runs in one process (--strategy=default or mirrored)."
            )
        if self.dataset == "ptb":
            raise UserError(
                "--strategy=multi_worker_mirrored does not run --dataset=ptb: its training loop (NT-ASGD, "
                "carried hidden state) is its own; train it with --strategy=default or mirrored."
            )

    def _check_sweep(self) -> None:
        flag_values = self.flags
        if self.dataset != "synthetic":
            raise UserError(f"--mode={flag_values.mode} runs on --dataset=synthetic only.")
        if flag_values.mode == "sweet_spot" and _was_set(flag_values, "taus") and len(flag_values.taus) != 1:
            raise UserError(
                f"--mode=sweet_spot studies one task: give one --taus value. Received: {flag_values.taus}"
            )
        if flag_values.mode == "sweet_spot" and flag_values.lr_schedule != "constant":
            raise UserError(
                "--mode=sweet_spot reads every epoch count off one teacher run, which needs "
                f"--lr_schedule=constant. Received: --lr_schedule={flag_values.lr_schedule}"
            )
        if flag_values.quick:
            return
        if flag_values.mode == "data_efficiency" and flag_values.batch_size > min(
            int(size) for size in flag_values.train_sizes
        ):
            raise UserError(
                f"--batch_size={flag_values.batch_size} exceeds the smallest --train_sizes "
                f"({min(int(size) for size in flag_values.train_sizes)})."
            )
        if (
            flag_values.mode == "sweet_spot"
            and max(int(size) for size in flag_values.teacher_batch_sizes) > flag_values.train_examples
        ):
            raise UserError(
                f"--teacher_batch_sizes go up to {max(int(size) for size in flag_values.teacher_batch_sizes)}"
                f", more than --train_examples={flag_values.train_examples}."
            )

    def _check_output_dir(self) -> None:
        """Refuses an `--output_dir` that is a file, or that holds results not to be replaced; removes nothing
        (`--overwrite` replaces the results only once the new run has finished, see `outputs.claim`)."""
        try:
            outputs.check_path(self.output_dir)
        except ValueError as error:
            raise UserError(str(error)) from error
        existing = [
            name
            for name in (experiment.RESULTS_JSON, experiment.TEACHER_INFO)
            if os.path.exists(os.path.join(self.output_dir, name))
        ]
        pending = outputs.unfinished_replacement(self.output_dir)
        if existing and not self.flags.overwrite:
            resume = (
                f" An --overwrite run into it was interrupted (its work is in {outputs.STAGING}/): pass "
                "--overwrite again to resume it."
                if pending
                else ""
            )
            raise UserError(
                f"--output_dir={self.output_dir} already holds results ({', '.join(existing)}). Pass "
                "--overwrite to replace them, or choose another --output_dir. (An interrupted run resumes "
                f"by itself: it has no results file yet.){resume}"
            )
        self.replaces_results = bool(existing) or pending

    def class_parents_shape(self):
        """A hierarchy with the run's shape (classes per parent), for checking KD-rel's a and b early."""
        import numpy as np

        if self.dataset == "synthetic":
            per_parent = self.flags.num_classes // self.flags.num_superclasses
            return np.repeat(np.arange(self.flags.num_superclasses), per_parent)
        return np.repeat(np.arange(20), 5)  # CIFAR-100: 20 super-classes of 5

    def hyperparameters(self) -> dict:
        return {name: getattr(self.flags, name) for name in experiment.HYPERPARAMETER_NAMES}

    def data_options(self) -> dict:
        flag_values = self.flags
        if self.dataset == "synthetic":
            return {
                "num_classes": flag_values.num_classes,
                "num_superclasses": flag_values.num_superclasses,
                "dim": flag_values.dim,
                "difficulty": flag_values.difficulty,
                "task_seed": flag_values.task_seed,
                "train_examples": flag_values.train_examples,
                "validation_examples": flag_values.validation_examples,
                "test_examples": flag_values.test_examples,
            }
        if self.dataset in ("cifar100", "digits"):
            options = {"data_dir": flag_values.data_dir, "augment": flag_values.augment}
            if self.dataset == "cifar100":  # digits keeps its own: no colour jitter, padding 2
                options.update(color_augment=flag_values.color_augment, crop_padding=flag_values.crop_padding)
            return options
        if self.dataset == "imagenet":
            dtype = "bfloat16" if flag_values.precision == "mixed_bfloat16" else "float32"
            return {
                "data_dir": flag_values.data_dir,
                "source": flag_values.imagenet_source,
                "image_size": flag_values.image_size,
                "resize": flag_values.imagenet_resize,
                "dtype": dtype,
            }
        return {"data_dir": flag_values.data_dir}

    def model_options(self, role: str, model: str | None = None) -> dict:
        flag_values = self.flags
        model = model or (self.teacher_model if role == "teacher" else self.student_model)
        # Only where asked for: a model saved without it keeps the configuration it always had.
        synchronized = {"sync_batch_norm": True} if flag_values.sync_batch_norm else {}
        if model in ("mlp", "deep_linear"):
            width = flag_values.teacher_width if role == "teacher" else flag_values.student_width
            return {"width": width, "logit_scale": flag_values.logit_scale, "name": role, **synchronized}
        if model.startswith("resnet") and self.dataset in ("cifar100", "digits"):
            return {"variant": flag_values.resnet_variant, "name": role, **synchronized}
        return {"name": role, **synchronized}

    def train_config(self, role: str, verbose: int) -> experiment.TrainConfig:
        flag_values = self.flags
        epochs = flag_values.epochs
        learning_rate = flag_values.learning_rate
        if role == "teacher":
            if self.value("teacher_epochs") is not None:
                epochs = self.value("teacher_epochs")
            if self.value("teacher_learning_rate") is not None:
                learning_rate = self.value("teacher_learning_rate")
        return experiment.TrainConfig(
            epochs=epochs,
            batch_size=flag_values.batch_size,
            optimizer=flag_values.optimizer,
            learning_rate=learning_rate,
            momentum=flag_values.momentum,
            lr_schedule=flag_values.lr_schedule,
            lr_boundary_epochs=[float(value) for value in flag_values.lr_boundary_epochs],
            lr_multipliers=[float(value) for value in flag_values.lr_multipliers],
            warmup_epochs=flag_values.warmup_epochs,
            weight_decay=flag_values.weight_decay,
            jit_compile={"auto": "auto", "true": True, "false": False}[flag_values.jit_compile],
            steps_per_execution=self.steps_per_execution(),
            verbose=verbose,
            tensorboard=flag_values.tensorboard,
        )

    def jobs(self, cells: int) -> int:
        """Trainings at a time (`--jobs`): as set, else one per core on a machine without accelerators and
        under the default strategy, at most `cells`; 1 wherever a strategy spans devices or workers."""
        if self.flags.jobs is not None:
            return min(self.flags.jobs, max(1, cells))
        if self.flags.strategy != "default" or tf.config.list_physical_devices("GPU"):
            return 1
        return min(parallel.default_jobs(), max(1, cells))

    def steps_per_execution(self) -> int:
        """`--steps_per_execution`; 1 over several replicas (`check_replicas`)."""
        return 1 if self.one_step_per_call else self.flags.steps_per_execution

    def check_replicas(self, strategy) -> None:
        """Over several replicas (GPUs, logical CPUs or workers), Keras' loop of several steps per call fails
        (keras-team/keras#19246: its loop condition calls into the strategy): one step per call there, and
        an explicit `--steps_per_execution` above 1 is refused rather than replaced. TPUs keep theirs."""
        if strategy.num_replicas_in_sync == 1 or isinstance(strategy, tf.distribute.TPUStrategy):
            return
        self.one_step_per_call = True
        if _was_set(self.flags, "steps_per_execution") and self.flags.steps_per_execution > 1:
            raise UserError(
                f"--steps_per_execution must be 1 with --strategy={self.flags.strategy} over "
                f"{strategy.num_replicas_in_sync} replicas (Keras' multi-step loop fails there). "
                f"Received: --steps_per_execution={self.flags.steps_per_execution}"
            )

    def keras_verbose(self, single_run: bool) -> int:
        progress = self.flags.progress
        if progress == "auto":
            progress = ("bar" if sys.stdout.isatty() else "epoch") if single_run else "none"
        return {"bar": 1, "epoch": 2, "none": 0}[progress]


def default_output_dir(flag_values) -> str:
    """Where a mode writes when `--output_dir` is not given: one directory per kind of run, so that the
    documented commands never collide (a sweep never lands in the table's directory)."""
    mode, dataset = flag_values.mode, flag_values.dataset
    if mode in SWEEPS:
        return os.path.join("runs", mode)
    if mode == "teacher":
        return os.path.join("runs", f"{dataset}_teacher")
    if mode == "student":
        return os.path.join("runs", f"{dataset}_{flag_values.method}")
    return os.path.join("runs", "synthetic_table1" if dataset == "synthetic" else f"{dataset}_table")


def _was_set(flag_values, name: str) -> bool:
    return flag_values[name].present > 0


def _parse_overrides(text: str) -> dict:
    """`'kd_pt:temperature=2,alpha=1;kd_sim:sim_temperature=0.1'` -> {method: {name: value}}."""
    overrides = {}
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        method, _, assignments = part.partition(":")
        method = method.strip()
        if method not in losses.NAMES:
            raise UserError(
                f"--method_overrides names an unknown method {method!r}. Known: {', '.join(losses.NAMES)}."
            )
        values = {}
        for assignment in filter(None, (piece.strip() for piece in assignments.split(","))):
            name, equals, value = assignment.partition("=")
            if not equals:
                raise UserError(f"--method_overrides: expected name=value, got {assignment!r} for {method}.")
            if name.strip() not in experiment.HYPERPARAMETER_NAMES:
                raise UserError(
                    f"--method_overrides for {method}: unknown hyperparameter(s) {[name.strip()]}; known: "
                    f"{experiment.HYPERPARAMETER_NAMES}"
                )
            try:
                values[name.strip()] = int(value) if name.strip() == "topk" else float(value)
            except ValueError as error:
                raise UserError(
                    f"--method_overrides: {name}={value!r} for {method} is not a number."
                ) from error
        overrides[method] = values
    return overrides


def _probe_loss(method: str, values: dict, class_parents) -> None:
    """Builds the method's loss with stand-in class vectors and the run's hierarchy shape, so bad values
    fail before any work."""
    import numpy as np

    arguments = experiment.method_hyperparameters(method, values)
    unknown = set(values) - set(experiment.HYPERPARAMETER_NAMES)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {sorted(unknown)}; known: {experiment.HYPERPARAMETER_NAMES}"
        )
    if method in losses.NEEDS_CLASS_VECTORS:
        arguments["class_vectors"] = np.eye(4, dtype=np.float32)
    if method in losses.NEEDS_CLASS_PARENTS:
        arguments["class_parents"] = class_parents
    losses.get(method, **arguments)


def _limited(splits: datasets.Splits, steps: int | None, batch_size: int) -> datasets.Splits:
    """Caps every pipeline at `steps` batches (`--steps_per_epoch`, for smoke runs)."""
    if not steps:
        return splits
    return dataclasses.replace(
        splits,
        train=splits.train.take(steps),
        test=splits.test.take(steps),
        validation=None if splits.validation is None else splits.validation.take(steps),
        train_ordered=None if splits.train_ordered is None else splits.train_ordered.take(steps),
        train_examples=min(splits.train_examples, steps * batch_size),
        train_with_targets=None,  # a capped run distils online: a cache would cover other examples
        train_pipeline=(
            None
            if splits.train_pipeline is None
            else lambda context: splits.train_pipeline(context).take(steps)
        ),
    )


@dataclasses.dataclass(frozen=True)
class SplitsLoader:
    """Loads a study's data for (data options, seed); plain values only, so worker processes can take it."""

    dataset: str
    batch_size: int
    steps_per_epoch: int | None = None

    def __call__(self, data_options: dict, seed: int) -> datasets.Splits:
        splits = experiment.load_splits(self.dataset, data_options, self.batch_size, seed)
        return _limited(splits, self.steps_per_epoch, self.batch_size)


def _load_splits(options: _Options, data_options: dict, seed: int) -> datasets.Splits:
    return SplitsLoader(options.dataset, options.flags.batch_size, options.flags.steps_per_epoch)(
        data_options, seed
    )


def _study(options: _Options) -> experiment.StudyConfig:
    flag_values = options.flags
    if options.dataset == "synthetic":
        settings = [{"tau": float(tau)} for tau in flag_values.taus]
        column_key = "tau"
    else:
        settings = [{"dataset": options.dataset}]
        column_key = "dataset"
    verbose = options.keras_verbose(single_run=False)
    return experiment.StudyConfig(
        dataset=options.dataset,
        methods=options.methods,
        seeds=options.seeds,
        settings=settings,
        column_key=column_key,
        data_options=options.data_options(),
        teacher_model=options.teacher_model,
        student_model=options.student_model,
        teacher_model_options=options.model_options("teacher"),
        student_model_options=options.model_options("student"),
        teacher_train=options.train_config("teacher", verbose),
        student_train=options.train_config("student", verbose),
        hyperparameters=options.hyperparameters(),
        method_overrides=options.method_overrides,
        teacher_label_smoothing=flag_values.teacher_label_smoothing,
        precision=flag_values.precision,
        load_splits=SplitsLoader(options.dataset, flag_values.batch_size, flag_values.steps_per_epoch),
        teacher_cache=options.teacher_cache(),
    )


def _run_table(options: _Options) -> None:
    study = _study(options)
    print(
        f"Table: {options.dataset}, {len(study.settings)} column(s) × {len(study.seeds)} seed(s) × "
        f"(teacher + {len(study.methods)} methods) -> {options.output_dir}"
    )
    jobs = options.jobs(len(study.settings) * len(study.seeds) * max(1, len(study.methods)))
    if jobs > 1:
        print(f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).")
    records = experiment.run_study(
        study, options.output_dir, jobs=jobs, deterministic=options.flags.deterministic
    )
    seeds = (
        f"mean ± std over seeds {', '.join(map(str, study.seeds))}"
        if len(study.seeds) > 1
        else f"one seed ({study.seeds[0]})"
    )
    header = (
        f"# {options.dataset}: test accuracy (%) at the best validation epoch, {seeds}\n\n"
        f"Command: `{' '.join(sys.argv)}`\n\n"
    )
    table = experiment.format_table(records, study.column_key, paper=options.paper_column())
    if options.dataset == "synthetic":
        table += (
            "\nThe paper's Table 1 (its τ values, task sizes and widths were lost, so its columns do not "
            "line up with ours):\n\n" + paper.table1_markdown()
        )
    experiment.write_results(options.output_dir, records, table, header)
    experiment.write_results_figure(
        options.output_dir, records, study.column_key, f"{options.dataset}: test accuracy, {seeds}"
    )
    print("\n" + table)
    print(
        f"Results: {os.path.join(options.final_output_dir, experiment.RESULTS_MARKDOWN)} "
        f"(and .json, .csv, {experiment.RESULTS_FIGURE})"
    )


def _run_teacher(options: _Options) -> None:
    study = _study(options)
    seed = options.seeds[0]
    data_options = {**study.data_options, **study.settings[0]}
    if options.dataset == "synthetic":
        data_options["tau"] = float(options.flags.taus[0])
    splits = study.load_splits(data_options, seed)
    study.teacher_train.verbose = options.keras_verbose(single_run=True)
    record, _ = experiment.train_teacher(study, splits, data_options, seed, options.output_dir)
    _finish_single(options, [record], study.column_key)


# Data option -> the flag that sets it, where the names differ.
_DATA_OPTION_FLAGS = {"tau": "taus", "source": "imagenet_source"}


def _run_student(options: _Options) -> None:
    study = _study(options)
    seed = options.seeds[0]
    teacher_dir = options.flags.teacher_dir
    teacher_info = experiment.read_json(os.path.join(teacher_dir, experiment.TEACHER_INFO))
    if teacher_info.get("dataset") != options.dataset:
        raise experiment.TeacherMismatchError(
            f"The teacher in --teacher_dir={teacher_dir} was trained on --dataset={teacher_info.get('dataset')}, "
            f"not --dataset={options.dataset}."
        )
    # The student sees the teacher's data; a flag given explicitly must agree with it.
    data_options = dict(teacher_info.get("data_options", {}))
    for key, value in {**options.data_options(), "tau": float(options.flags.taus[0])}.items():
        flag_name = _DATA_OPTION_FLAGS.get(key, key)
        if key in data_options and _was_set(options.flags, flag_name) and data_options[key] != value:
            raise experiment.TeacherMismatchError(
                f"The teacher in --teacher_dir={teacher_dir} was trained with {key}={data_options[key]!r}, "
                f"but --{flag_name} asks for {value!r}."
            )
        data_options.setdefault(key, value)
    splits = study.load_splits(data_options, seed)
    teacher, _ = experiment.load_teacher(teacher_dir, options.dataset, splits.num_classes)
    study.student_train.verbose = options.keras_verbose(single_run=True)
    record = experiment.train_student(
        study,
        splits,
        data_options,
        seed,
        options.flags.method,
        teacher,
        teacher_info,
        options.output_dir,
        teacher_dir=teacher_dir,
    )
    _finish_single(options, [record], study.column_key)


def _finish_single(options: _Options, records, column_key) -> None:
    table = experiment.format_table(records, column_key, paper=options.paper_column())
    header = f"# {options.dataset}\n\nCommand: `{' '.join(sys.argv)}`\n\n"
    experiment.write_results(options.output_dir, records, table, header)
    print("\n" + table)


def _run_study_sweep(options: _Options) -> None:
    from kd_tf import study_runs

    study_runs.run(options)


def _run_analyze(options: _Options) -> None:
    from kd_tf import figures

    figures.run(options)


def write_json(path: str, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
