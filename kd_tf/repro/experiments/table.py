"""`--mode=table`: a teacher per column (τ, or the dataset) and seed, then every method from it; the table
of test accuracies with the paper's numbers beside it. Also what `teacher` and `student` share with it."""

from __future__ import annotations

import dataclasses
import os

import data as datasets
from kd_tf import parallel
from kd_tf.io import read_json
from kd_tf.repro import grid, paired, paper, store, tables, trainers
from kd_tf.repro.experiments import Experiment, register
from kd_tf.repro.outputs import print_now


@register
class Table(Experiment):
    name = "table"
    rank = 1
    help = "a teacher per column, then every method"
    multi_worker = True
    task_seeds = True

    def output_dir(self, dataset: str, method: str) -> str:
        del method
        return os.path.join("runs", "synthetic_table1" if dataset == "synthetic" else f"{dataset}_table")

    def trained_methods(self, config) -> list[str]:
        return list(config.methods)

    def model_counts(self, config) -> dict:
        models = models_per_role(config)
        return {"teacher": models, "student": models * len(config.methods)}

    def check(self, config, missing) -> None:
        del missing
        check_hierarchy(config, self.trained_methods(config))

    def run(self, options) -> None:
        study = study_of(options)
        print(
            f"Table: {options.dataset}, {len({s[study.column_key] for s in study.settings})} column(s) × "
            + (f"{len(options.config.task_seeds)} task(s) × " if options.config.task_seeds else "")
            + f"{len(study.seeds)} seed(s) × "
            f"(teacher + {len(study.methods)} methods) -> {options.output_dir}"
        )
        jobs = options.jobs(len(study.settings) * len(study.seeds) * max(1, len(study.methods)))
        if jobs > 1:
            print(f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).")
        records = run_study(
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
        table = tables.format_table(records, study.column_key, paper=options.paper_column())
        table += data_lines(records, study.column_key)
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
                + tables.format_table(records, study.column_key, metric="last_epoch_test_accuracy")
            )
        paired_rows = paired.markdown_against(records, paired.BASELINE, study.column_key, "test_accuracy")
        if paired_rows:
            table += (
                "\nEach row minus the Student, paired seed by seed (points of test accuracy at the best "
                "validation epoch, mean ± std over seeds; `python -m kd_tf.repro.paired` pairs any two rows):\n\n"
                + paired_rows
            )
        tables.write_results(options.output_dir, records, table, header)
        tables.write_results_figure(
            options.output_dir, records, study.column_key, f"{options.dataset}: test accuracy, {seeds}"
        )
        print("\n" + table)
        print(
            f"Results: {os.path.join(options.final_output_dir, tables.RESULTS_MARKDOWN)} "
            f"(and .json, .csv, {tables.RESULTS_FIGURE})"
        )


class SingleModel(Experiment):
    """`teacher` and `student`: one model a command, a classifier or PTB's language model (its own loop)."""

    kinds = ("classification", "language_model")
    multi_worker = True

    def model_counts(self, config) -> dict:
        return {role: models_per_role(config) for role in self.roles(config)}

    def run(self, options) -> None:
        if options.kind == "language_model":
            from kd_tf.repro import language_model_runs

            return language_model_runs.run(options)
        return self.run_classifier(options)

    def run_classifier(self, options) -> None:
        raise NotImplementedError


def models_per_role(config) -> int:
    """Models of one role a run of `table`, `teacher` or `student` trains: one per column and seed."""
    columns = len(config.taus) * max(1, len(config.task_seeds)) if config.dataset == "synthetic" else 1
    return len(config.seeds) * columns


def check_hierarchy(config, methods) -> None:
    """Refuses a method that needs a class hierarchy on data without one."""
    from kd_tf import losses
    from kd_tf.repro.config import UserError

    if datasets.facts(config.dataset).hierarchy(dict(config.data_options)) is not None:
        return
    for method in methods:
        if "class_parents" in losses.registered()[method].needs:
            with_hierarchy = [
                name for name in datasets.NAMES if datasets.facts(name).class_parents is not None
            ]
            raise UserError(
                f"--method(s) {method} needs a class hierarchy, and --dataset={config.dataset} has none "
                f"(it works with: {', '.join(with_hierarchy)})."
            )


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
        splits = trainers.load_splits(self.dataset, data_options, self.batch_size, seed)
        return _limited(splits, self.steps_per_epoch, self.batch_size)


def study_of(options) -> trainers.StudyConfig:
    """The `StudyConfig` of a run of `table`, `teacher` or `student`."""
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
    return trainers.StudyConfig(
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
        teacher_cache_max_mb=config.runtime.teacher_cache_max_mb,
    )


def data_lines(records, column_key) -> str:
    """What the dataset measured of the data of each column (the synthetic task's label non-linearity), as
    a markdown list under the table; "" when it measures nothing."""
    lines = tables.describe_data(records, column_key)
    return "\nThe data:\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def finish_single(options, records, column_key) -> None:
    """Writes and prints the one-row table of a `teacher` or `student` run."""
    table = tables.format_table(records, column_key, paper=options.paper_column())
    table += data_lines(records, column_key)
    header = f"# {options.dataset}\n\nCommand: `{options.config.command}`\n\n"
    tables.write_results(options.output_dir, records, table, header)
    print("\n" + table)


def run_study(study: trainers.StudyConfig, output_dir: str, *, log=print_now, jobs=1, deterministic=False):
    """Trains (or reuses) a teacher per (setting, seed) and every method from it; returns the records.

    Each is recorded in `output_dir/runs/<column>/<seed>/<method>/record.json`, so an interrupted study
    resumes where it stopped. With `jobs > 1`, every teacher first, then each student in a worker as soon
    as its teacher has finished (reading it from its files); `study.load_splits` must then be picklable.
    """
    return grid.run(
        study, output_dir, grid_cells(study), _TableCells(), log=log, jobs=jobs, deterministic=deterministic
    )


def grid_cells(study: trainers.StudyConfig) -> list[dict]:
    """Every training of a table, in its order: per column and seed, the teacher (`method=None`), then each
    method's student."""
    return [
        {"setting": setting, "seed": seed, "method": method}
        for setting in study.settings
        for seed in study.seeds
        for method in (None, *study.methods)
    ]


class _TableCells(grid.Cells):
    """A table's cells: per column and seed, a teacher, then its students; each student may train as a task
    of its own (`split`), reading its teacher from its files. Its own loop: the teacher's run builds its
    cache, and a finished cell keeps its checkpoints."""

    split = True

    def key(self, cell: dict) -> tuple:
        return tuple(cell["setting"].items()), cell["seed"]

    def train_group(self, group: grid.Group, log=print_now) -> dict:
        """Trains (or reuses) a group's cells; a student without its teacher in the group (a task of its own
        in a worker) reads the teacher from its files."""
        study, records, teacher, teacher_record = group.config, {}, None, None
        for index, cell in group.members:
            setting, seed, method = cell["setting"], cell["seed"], cell["method"]
            data_options = {**study.data_options, **setting}
            cell_dir = _cell_dir(group.output_dir, study.column_key, setting, seed)
            teacher_dir = os.path.join(cell_dir, "teacher")
            splits = trainers.cell_splits(study, data_options, seed)
            if method is None:
                record, teacher = trainers.train_teacher(
                    study.teacher, splits, data_options, seed, teacher_dir
                )
                teacher_record = record
            else:
                if teacher is None:
                    teacher, _ = trainers.load_teacher(teacher_dir, study.dataset, splits.num_classes)
                    teacher_record = read_json(os.path.join(teacher_dir, store.RECORD))
                record = trainers.train_student(
                    study,
                    splits,
                    data_options,
                    seed,
                    method,
                    teacher,
                    teacher_record,
                    os.path.join(cell_dir, method),
                    teacher_dir=teacher_dir,
                )
            records[index] = record
            column = tables.column_text(study.column_key, setting)
            log(_progress(index, group.total, study.column_key, column, seed, method or "teacher", record))
        return records


def _cell_dir(output_dir: str, column_key: str, setting: dict, seed: int) -> str:
    """`runs/<column>=<value>[,<option>=<value>...]/seed=<seed>`: a setting's other options (a synthetic
    table's task seeds) name the directory beside its column."""
    others = "".join(f",{key}={value}" for key, value in setting.items() if key != column_key)
    return os.path.join(output_dir, "runs", f"{column_key}={setting[column_key]}{others}", f"seed={seed}")


def _progress(done, total, column_key, column_value, seed, method, record) -> str:
    line = (
        f"[{done:>3}/{total}] {column_key}={column_value} seed={seed} {method:<10} "
        f"test accuracy {100 * record['test_accuracy']:.2f}%  "
        f"(best validation {100 * record['best_validation_accuracy']:.2f}% at epoch {record['best_epoch']}, "
        f"{record['wall_time_s']:.0f} s)"
    )
    if record["role"] == "teacher":
        described = datasets.facts(record["dataset"]).describe(record.get("data_measures", {}))
        line += f"\n      data: {described}" if described else ""
    return line
