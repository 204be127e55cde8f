"""What `run.py` runs: a `Config` checked (`checks`), then its `--mode` from the dispatch table."""

from __future__ import annotations

import contextlib
import dataclasses
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
from kd_tf.repro import checks, disk, experiment, outputs, paired, paper, plan
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
    if (config.mode, kind) not in MODES:
        runnable = [mode for mode, of_kind in MODES if of_kind == kind]
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
    if config.mode not in checks.WRITING_MODES:
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
            MODES[config.mode, datasets.facts(config.dataset).kind](options)
        except OSError as error:
            if config.runtime.verbose:
                raise
            raise UserError(_os_error_message(error, options)) from error
        except (
            ValueError,
            experiment.TeacherMismatchError,
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

    def train_config(self, role: str, verbose: int) -> experiment.TrainConfig:
        settings = self.config.teacher if role == "teacher" else self.config.student
        return experiment.TrainConfig(
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


def _study(options: Run) -> experiment.StudyConfig:
    config = options.config
    if options.dataset == "synthetic":
        settings = [{"tau": float(tau)} for tau in config.taus]
        if config.task_seeds:  # each τ column over every task (and each task over --seeds)
            settings = [{**setting, "task_seed": task} for setting in settings for task in config.task_seeds]
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
        teacher_label_smoothing=config.teacher_label_smoothing,
        precision=config.runtime.precision,
        load_splits=SplitsLoader(options.dataset, config.student.batch_size, config.runtime.steps_per_epoch),
        teacher_cache=options.teacher_cache(),
    )


def _run_table(options: Run) -> None:
    study = _study(options)
    print(
        f"Table: {options.dataset}, {len({s[study.column_key] for s in study.settings})} column(s) × "
        + (f"{len(options.config.task_seeds)} task(s) × " if options.config.task_seeds else "")
        + f"{len(study.seeds)} seed(s) × "
        f"(teacher + {len(study.methods)} methods) -> {options.output_dir}"
    )
    jobs = options.jobs(len(study.settings) * len(study.seeds) * max(1, len(study.methods)))
    if jobs > 1:
        print(f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).")
    records = experiment.run_study(
        study, options.output_dir, jobs=jobs, deterministic=options.config.runtime.deterministic
    )
    seeds = (
        f"mean ± std over seeds {', '.join(map(str, study.seeds))}"
        if len(study.seeds) > 1
        else f"one seed ({study.seeds[0]})"
    )
    if options.config.task_seeds:
        seeds = (
            f"mean ± std over task seeds {', '.join(map(str, options.config.task_seeds))} × seeds "
            f"{', '.join(map(str, study.seeds))}"
        )
    header = (
        f"# {options.dataset}: test accuracy (%) at the best validation epoch, {seeds}\n\n"
        f"Command: `{options.config.command}`\n\n"
    )
    table = experiment.format_table(records, study.column_key, paper=options.paper_column())
    table += _data_lines(records, study.column_key)
    if options.dataset == "synthetic":
        table += (
            "\nThe paper's Table 1 (its τ values, task sizes and widths were lost, so its columns do not "
            "line up with ours):\n\n" + paper.table1_markdown()
        )
    # Runs that selected their epoch on a validation split (records from before the field aside).
    if all("last_epoch_test_accuracy" in record for record in records) and any(
        record.get("selected_on") == "validation" for record in records
    ):
        table += (
            "\nTest accuracy (%) at the last epoch (no selection), the same runs:\n\n"
            + experiment.format_table(records, study.column_key, metric="last_epoch_test_accuracy")
        )
    paired_rows = paired.markdown_against(records, paired.BASELINE, study.column_key, "test_accuracy")
    if paired_rows:
        table += (
            "\nEach row minus the Student, paired seed by seed (points of test accuracy at the best "
            "validation epoch, mean ± std over seeds; `python -m kd_tf.repro.paired` pairs any two rows):\n\n"
            + paired_rows
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


def _run_teacher(options: Run) -> None:
    study = _study(options)
    seed = options.seeds[0]
    data_options = {**study.data_options, **study.settings[0]}
    if options.dataset == "synthetic":
        data_options["tau"] = float(options.config.taus[0])
    splits = study.load_splits(data_options, seed)
    study.teacher_train.verbose = options.keras_verbose(single_run=True)
    record, _ = experiment.train_teacher(study, splits, data_options, seed, options.output_dir)
    _finish_single(options, [record], study.column_key)


def _run_student(options: Run) -> None:
    study = _study(options)
    seed = options.seeds[0]
    teacher_dir = options.config.teacher_dir
    teacher_info = experiment.read_json(os.path.join(teacher_dir, experiment.TEACHER_INFO))
    if teacher_info.get("dataset") != options.dataset:
        raise experiment.TeacherMismatchError(
            f"The teacher in --teacher_dir={teacher_dir} was trained on --dataset={teacher_info.get('dataset')}, "
            f"not --dataset={options.dataset}."
        )
    # The student sees the teacher's data; a flag given explicitly must agree with it.
    facts = datasets.facts(options.dataset)
    data_options = dict(teacher_info.get("data_options", {}))
    for key, value in {**options.data_options(), "tau": float(options.config.taus[0])}.items():
        flag_name = "taus" if key == "tau" else facts.flag_of(key)
        if key in data_options and options.config.was_set(flag_name) and data_options[key] != value:
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
        options.config.method,
        teacher,
        teacher_info,
        options.output_dir,
        teacher_dir=teacher_dir,
    )
    _finish_single(options, [record], study.column_key)


def _data_lines(records, column_key) -> str:
    """What the dataset measured of the data of each column (the synthetic task's label non-linearity), as
    a markdown list under the table; "" when it measures nothing."""
    lines = experiment.describe_data(records, column_key)
    return "\nThe data:\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def _finish_single(options: Run, records, column_key) -> None:
    table = experiment.format_table(records, column_key, paper=options.paper_column())
    table += _data_lines(records, column_key)
    header = f"# {options.dataset}\n\nCommand: `{options.config.command}`\n\n"
    experiment.write_results(options.output_dir, records, table, header)
    print("\n" + table)


def _run_study_sweep(options: Run) -> None:
    from kd_tf.repro import study_runs

    study_runs.run(options)


def _run_analyze(options: Run) -> None:
    """`--mode=analyze`: optionally the KD-topk sweep, then every figure, for `--output_dir`.

    Reads the run's `output_dir`, `temperature` (heatmaps at T=1 and this), `topk`, `taus` and `seeds`
    (only when the user set them), `ls_run_dir`, `figures_dir`, `topk_sweep` (a list of k) and the student
    training values for the sweep.
    """
    from kd_tf.repro import figures, topk_sweep

    config = options.config
    run_dir = options.output_dir
    figures_dir = config.analysis.figures_dir or os.path.join(run_dir, figures.FIGURES_DIR)
    columns = list(config.taus) if config.was_set("taus") else None
    seeds = options.seeds if config.was_set("seeds") else None
    sweep = list(config.analysis.topk_sweep)
    sweep_csv = os.path.join(figures_dir, figures.SWEEP_CSV)
    if sweep:
        train_config = options.train_config("student", options.keras_verbose(single_run=False))
        topk_sweep.run(
            run_dir,
            sweep,
            columns=columns,
            seeds=seeds,
            train_config=train_config,
            epochs=config.student.epochs if config.was_set("epochs") else None,
            output_csv=sweep_csv,
            precision=config.runtime.precision,
        )
    figures.analyze_run(
        run_dir,
        ls_run_dir=config.analysis.ls_run_dir,
        figures_dir=figures_dir,
        temperatures=(1.0, config.hyperparameters["temperature"]),
        topk=config.hyperparameters["topk"],
        columns=columns,
        seeds=seeds,
        sweep_csv=sweep_csv,
    )


def _run_language_model(options: Run) -> None:
    from kd_tf.repro import language_model_runs

    language_model_runs.run(options)


# (--mode, the kind of data) -> what runs it. A language model trains with its own loop (NT-ASGD, carried
# hidden state), one model per command.
MODES = {
    ("table", "classification"): _run_table,
    ("teacher", "classification"): _run_teacher,
    ("student", "classification"): _run_student,
    ("analyze", "classification"): _run_analyze,
    ("data_efficiency", "classification"): _run_study_sweep,
    ("sweet_spot", "classification"): _run_study_sweep,
    ("regime_map", "classification"): _run_study_sweep,
    ("teacher", "language_model"): _run_language_model,
    ("student", "language_model"): _run_language_model,
}
