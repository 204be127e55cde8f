"""What `run.py` runs: a `Config` checked (`checks`), then its `--mode`'s experiment (`experiments`)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys

import keras
import tensorflow as tf

import data as datasets
from kd_tf import parallel, runtime, training
from kd_tf.checkpoint import DirectoryInUseError, DirectoryLock
from kd_tf.repro import checks, disk, experiments, outputs, paper, plan, trainers
from kd_tf.repro import config as config_module
from kd_tf.repro.config import UserError


def run(config: config_module.Config) -> None:
    """Checks the configuration, then runs `--mode`.

    Every check runs before anything is written or removed. A mode that writes results then holds
    `--output_dir` for its whole run (`outputs.claim`): a second run into it is refused, and finished results
    that `--overwrite` replaces stay in place until the new ones are complete.
    """
    verdict = checks.check(config)
    kind = datasets.facts(config.dataset).kind
    if kind not in experiments.get(config.mode).kinds:
        runnable = [mode for mode in experiments.names() if kind in experiments.get(mode).kinds]
        raise UserError(
            f"--dataset={config.dataset} runs with --mode={' or --mode='.join(runnable)}, not --mode={config.mode}."
        )
    for line in verdict.unread:
        print(f"Warning: {line}", file=sys.stderr, flush=True)
    if config.dry_run:
        print(plan.text(config, verdict.missing, verdict.replaces_results))
        return
    options = Run(config)
    options.replaces_results = verdict.replaces_results
    runtime.quiet_retracing_warnings()
    if config.runtime.cpu_devices > 1:
        runtime.split_cpu(config.runtime.cpu_devices)
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(options.seeds[0])
    runtime.set_precision(config.runtime.precision)
    try:
        strategy = runtime.make_strategy(
            config.runtime.strategy,
            config.runtime.tpu,
            collective_timeout=config.runtime.collective_timeout or None,
        )
    except (ValueError, tf.errors.OpError) as error:
        raise UserError(f"--strategy={config.runtime.strategy}: {error}") from error
    options.one_step_per_call = checks.one_step_per_call(config, strategy)
    worker = runtime.worker_of(strategy)
    if not worker.chief:
        return _run_as_worker(options, strategy, worker)
    if not experiments.get(config.mode).writes:
        return _run_mode(options, strategy)
    _run_held(options, strategy, outputs.claim(options.output_dir, replace=options.replaces_results))


def _run_held(options: Run, strategy, holding) -> None:
    """Runs the mode writing into the directory that the context manager `holding` holds for the run and
    gives as its value."""
    try:
        with holding as work_dir:
            options.output_dir = work_dir
            plan.write_resolved(options.config, work_dir)  # the plan `--dry_run` prints, before any work
            _run_mode(options, strategy)
    except DirectoryInUseError as error:
        raise UserError(str(error)) from error
    except OSError as error:  # taking the directory, or the `--overwrite` swap
        if options.config.runtime.verbose:
            raise
        raise UserError(_os_error_message(error, options)) from error
    finally:
        options.output_dir = options.final_output_dir


def _os_error_message(error: OSError, options: Run) -> str:
    """A refusal's own message (a missing input the run named), or the I/O error's path, cause and cure."""
    if error.errno is None:
        return str(error)
    run_needs = None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            run_needs = (disk.estimate(options.config) or disk.Estimate({}, None)).total
        except Exception:  # noqa: BLE001 (an estimate must never hide the error it explains)
            run_needs = None
    return outputs.io_error_message(error, options.final_output_dir, run_needs)


def _run_as_worker(options: Run, strategy, worker: runtime.Worker) -> None:
    """A worker other than the chief: the same training, its files in `<output_dir>/workertemp_<index>/`.

    It trains every model with the chief (each step's gradients are summed across workers) and keeps its own
    checkpoints, records and copy of the teacher there, so that it can resume as the chief does. The chief
    alone writes the results; a worker removes its directory once the run has finished.
    """
    work_dir = os.path.join(options.final_output_dir, outputs.worker_directory(worker.index))
    _run_held(options, strategy, _locked(work_dir))
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(options.final_output_dir)  # empty where this worker's host keeps no results of its own
    print(f"Worker {worker.index} of {worker.count}: finished; the chief (worker 0) wrote the results.")


@contextlib.contextmanager
def _locked(directory: str):
    with DirectoryLock(directory):
        yield directory


def _run_mode(options: Run, strategy) -> None:
    config = options.config
    with strategy.scope():
        try:
            experiments.get(config.mode).run(options)
        except OSError as error:
            if config.runtime.verbose:
                raise
            raise UserError(_os_error_message(error, options)) from error
        except (
            ValueError,
            trainers.TeacherMismatchError,
            training.NonFiniteLossError,
        ) as error:
            if config.runtime.verbose:
                raise
            raise UserError(str(error)) from error
        except _LOST_PEER_ERRORS as error:
            runtime.raise_if_interrupted()  # a Ctrl-C given to every worker: the peers' loss follows from it
            if config.runtime.verbose or not runtime.across_workers(strategy):
                raise
            raise UserError(
                _lost_worker_message(error, strategy, config.runtime.collective_timeout)
            ) from error


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


class Run:
    """A run of a checked `config`, and what is decided as it starts (the directory it writes in, one step
    per call over several replicas)."""

    def __init__(self, config: config_module.Config):
        self.config = config
        self.dataset = config.dataset
        self.kind = datasets.facts(config.dataset).kind
        self.seeds = list(config.seeds)
        self.teacher_model = config.teacher_model
        self.student_model = config.student_model
        self.output_dir = self.final_output_dir = config.output_dir
        self.replaces_results = False  # the checks' verdict
        self.one_step_per_call = False  # `checks.one_step_per_call` under the run's strategy
        self.methods = list(config.methods)
        self.explicit_overrides = {
            method: dict(values) for method, values in config.explicit_overrides.items()
        }
        self.method_overrides = {method: dict(values) for method, values in config.method_overrides.items()}

    def paper_column(self) -> dict[str, tuple] | None:
        """The paper's numbers for this run's table (Tables 2, 4 and 6), or `None` where it has none."""
        return paper.accuracy_column(self.dataset, self.config.teacher_label_smoothing > 0) or None

    def teacher_cache(self) -> str:
        """`--teacher_cache` as the runner applies it: `auto` distils online across workers and on TPUs (the
        cache is built and read by one process)."""
        mode = self.config.runtime.teacher_cache
        if mode == "auto" and self.config.runtime.strategy not in checks.OFFLINE_STRATEGIES:
            return "off"
        return mode

    def hyperparameters(self) -> dict:
        return dict(self.config.hyperparameters)

    def data_options(self) -> dict:
        return dict(self.config.data_options)

    def model_options(self, role: str, model: str | None = None) -> dict:
        return self.config.model_options(role, model)

    def train_config(self, role: str, verbose: int) -> training.TrainConfig:
        settings = self.config.teacher if role == "teacher" else self.config.student
        return training.TrainConfig(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            optimizer=settings.optimizer,
            learning_rate=settings.learning_rate,
            momentum=settings.momentum,
            lr_schedule=settings.lr_schedule,
            lr_boundary_epochs=list(settings.lr_boundary_epochs),
            lr_multipliers=list(settings.lr_multipliers),
            warmup_epochs=settings.warmup_epochs,
            weight_decay=settings.weight_decay,
            jit_compile=settings.jit_compile,
            steps_per_execution=self.steps_per_execution(),
            verbose=verbose,
            tensorboard=settings.tensorboard,
            checkpoint_every_steps=self.config.runtime.checkpoint_every_steps,
        )

    def jobs(self, cells: int) -> int:
        """Trainings at a time (`--jobs`): as set, else one per core on a machine without accelerators and
        under the default strategy, at most `cells`; 1 wherever a strategy spans devices or workers."""
        if self.config.runtime.jobs is not None:
            return min(self.config.runtime.jobs, max(1, cells))
        if self.config.runtime.strategy != "default" or tf.config.list_physical_devices("GPU"):
            return 1
        return min(parallel.default_jobs(), max(1, cells))

    def steps_per_execution(self) -> int:
        """`--steps_per_execution`; 1 over several replicas (`check_replicas`)."""
        return 1 if self.one_step_per_call else self.config.student.steps_per_execution

    def keras_verbose(self, single_run: bool) -> int:
        progress = self.config.runtime.progress
        if progress == "auto":
            progress = ("bar" if sys.stdout.isatty() else "epoch") if single_run else "none"
        return {"bar": 1, "epoch": 2, "none": 0}[progress]
