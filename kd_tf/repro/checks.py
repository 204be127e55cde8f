"""Every check of a run's `Config` against itself and the disk, before any work; nothing is written.

`check` raises `UserError` naming the flag for a value that cannot run. What the disk lacks (the data, a
trained teacher) or an output directory that holds results refuses a run too, except under `--dry_run`,
whose plan lists it instead (`Verdict.missing`).
"""

from __future__ import annotations

import dataclasses
import os

import data as datasets
from kd_tf import keras_compat, losses, offline
from kd_tf.repro import config as config_module
from kd_tf.repro import experiments, outputs, tables, trainers
from kd_tf.repro.config import UserError

# Strategies under which students can train on a teacher cache (`--teacher_cache`).
OFFLINE_STRATEGIES = ("default", "mirrored")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the checks found: what is missing on disk (listed by `--dry_run`; any other run was refused),
    whether the run replaces finished results (`--overwrite`), and flags the user set that this run's
    dataset does not read (`unread`, a line each, printed as warnings)."""

    missing: tuple[str, ...]
    replaces_results: bool
    unread: tuple[str, ...] = ()


def check(config: config_module.Config) -> Verdict:
    """Runs every check of `config`; raises `UserError` before any work."""
    checker = _Checker(config)
    checker.run()
    return Verdict(tuple(checker.missing), checker.replaces_results, checker.unread_dataset_flags())


def trained_methods(config: config_module.Config) -> list[str]:
    """The methods the run builds a loss for: the only ones whose values are checked."""
    return _Checker(config).trained_methods()


def one_step_per_call(config: config_module.Config, strategy) -> bool:
    """Whether the run must take one step per compiled call under `strategy` (see `_Checker.check_replicas`);
    raises `UserError` where the user asked for more."""
    return _Checker(config).check_replicas(strategy)


class _Checker:
    def __init__(self, config: config_module.Config):
        self.config = config
        self.missing = []
        self.replaces_results = False

    def unread_dataset_flags(self) -> tuple[str, ...]:
        """The flags the user set that are another dataset's own data options and not this one's, a line each.

        Warnings, not refusals: one flagfile may serve several datasets.
        """
        facts = datasets.facts(self.config.dataset)
        read = {facts.flag_of(option) for option in facts.option_flags}
        owners = {}
        for name in datasets.NAMES:
            for flag in sorted(datasets.facts(name).verbatim_flags() - read):
                owners.setdefault(flag, []).append(name)
        return tuple(
            f"--{flag} is a data option of --dataset={'/'.join(owners[flag])}; --dataset={self.config.dataset} "
            "does not read it."
            for flag in sorted(owners)
            if self.config.was_set(flag)
        )

    def trained_methods(self) -> list[str]:
        """The methods this mode builds a loss for: the only ones whose values are checked."""
        return experiments.get(self.config.mode).trained_methods(self.config)

    def run(self) -> None:
        """Every check that needs more than one flag or the disk; raises `UserError` before any work.

        Under `--dry_run`, what is missing on disk (the data, a trained teacher) or would refuse the output
        directory is listed in `self.missing` instead, so that the plan can still be printed."""
        config = self.config
        self.missing = []
        methods = self.trained_methods()
        facts = datasets.facts(self.config.dataset)
        for package in facts.missing_packages():
            self._missing(f"--dataset={config.dataset} needs {package}.")
        mode = experiments.get(config.mode)
        if mode.datasets and config.dataset not in mode.datasets:
            raise UserError(f"--mode={config.mode} runs on --dataset={'/'.join(mode.datasets)} only.")
        if config.task_seeds and (not mode.task_seeds or "task_seed" not in facts.option_flags):
            raise UserError(
                f"--task_seeds is for --mode=table on a dataset with task seeds (--task_seed); received "
                f"--mode={config.mode} --dataset={config.dataset}."
            )
        if facts.needs_data_dir and not config.data_dir:
            self._missing(
                f"--dataset={self.config.dataset} needs --data_dir (see BUILD.md for preparing the data)."
            )
        if facts.data_problem is not None:
            problem = facts.data_problem(dict(config.data_options))
            if problem:
                self._missing(problem)
        elif config.data_dir and not config.data_dir.startswith("gs://"):
            if not os.path.isdir(config.data_dir):
                self._missing(f"--data_dir={config.data_dir} is not a directory.")
        if config.runtime.strategy == "multi_worker_mirrored":
            self._check_multi_worker()
        if (
            config.runtime.jobs is not None
            and config.runtime.jobs > 1
            and config.runtime.strategy != "default"
        ):
            raise UserError(
                f"--jobs={config.runtime.jobs} trains cells in separate processes, which --strategy="
                f"{config.runtime.strategy} cannot span: use --jobs=1 with it."
            )
        if not mode.teacher_cache and config.runtime.teacher_cache != "off":
            raise UserError(
                f"--teacher_cache={config.runtime.teacher_cache}: --mode={config.mode} distils its students "
                "from their teachers online; leave --teacher_cache unset, or off."
            )
        if config.runtime.teacher_cache == "on":
            self._check_teacher_cache()
        mode.check(config, self._missing)
        for method, values in self.config.explicit_overrides.items():
            if method not in methods:
                continue
            # Building the loss once checks every value; the class vectors and hierarchy are stand-ins.
            try:
                probe_loss(
                    method, {**dict(self.config.hyperparameters), **values}, self.class_parents_shape()
                )
            except ValueError as error:
                raise UserError(f"--method_overrides for {method}: {error}") from error
        classes = facts.classes(dict(config.data_options))
        try:
            for method in methods:
                values = {
                    **dict(self.config.hyperparameters),
                    **dict(self.config.method_overrides.get(method, {})),
                }
                loss = probe_loss(method, values, self.class_parents_shape())
                if classes:
                    loss.check_num_classes(classes)
        except ValueError as error:
            raise UserError(f"--method={method}: {error}") from error
        # Last, after every other check: nothing on disk is touched by a refused command.
        if mode.writes:
            self._check_output_dir()
        if self.missing and not config.dry_run:
            raise UserError(self.missing[0])

    def _missing(self, problem: str) -> None:
        """A refusal for what the disk lacks: at once, or (`--dry_run`) listed with the plan."""
        if not self.config.dry_run:
            raise UserError(problem)
        self.missing.append(problem)

    def _check_teacher_cache(self) -> None:
        """`--teacher_cache=on`: refused where students would still run their teacher at every step."""
        config = self.config
        if config.runtime.strategy not in OFFLINE_STRATEGIES:
            reason = f"--strategy={config.runtime.strategy} distils online"
        elif config.runtime.steps_per_epoch:
            reason = "--steps_per_epoch caps the epochs, which then see other examples than a cache holds"
        else:
            reason = datasets.cache_refusal(self.config.dataset, dict(self.config.data_options))
        facts, options = datasets.facts(config.dataset), dict(config.data_options)
        examples, classes = facts.examples(options), facts.classes(options)
        if reason is None and facts.kind == "classification" and examples and classes:
            megabytes = offline.logits_megabytes(examples, classes)
            reason = offline.too_large(megabytes, config.runtime.teacher_cache_max_mb, offline.LOGITS_CACHE)
        if reason is not None:
            raise UserError(
                f"--teacher_cache=on cannot serve this run: {reason}. Use --teacher_cache=auto or off."
            )

    def _check_multi_worker(self) -> None:
        """What runs across workers: the Keras training of `table`, `teacher` and `student`."""
        config = self.config
        if not experiments.get(config.mode).multi_worker:
            across = experiments.all_of(multi_worker=True)
            raise UserError(
                f"--strategy=multi_worker_mirrored runs --mode={'/'.join(across)}; "
                f"--mode={config.mode} runs in one process (--strategy=default or mirrored)."
            )
        if datasets.facts(self.config.dataset).kind == "language_model":
            raise UserError(
                "--strategy=multi_worker_mirrored does not run --dataset=ptb: its training loop (NT-ASGD, "
                "carried hidden state) is its own; train it with --strategy=default or mirrored."
            )

    def _check_output_dir(self) -> None:
        """Refuses an `--output_dir` that is a file, or that holds results not to be replaced; removes nothing
        (`--overwrite` replaces the results only once the new run has finished, see `outputs.claim`)."""
        try:
            outputs.check_path(self.config.output_dir)
        except ValueError as error:
            raise UserError(str(error)) from error
        existing = [
            name
            for name in (tables.RESULTS_JSON, trainers.TEACHER_INFO)
            if os.path.exists(os.path.join(self.config.output_dir, name))
        ]
        pending = outputs.unfinished_replacement(self.config.output_dir)
        from kd_tf.repro import plan  # (plan reads the checks)

        changed = plan.changed_values(self.config)
        if changed and not existing and not self.config.overwrite:
            self._missing(
                f"--output_dir={self.config.output_dir} holds an unfinished run of another configuration "
                f"({plan.CONFIG_FILE}: {'; '.join(changed)}). Run the command that started it to resume it, "
                "pass --overwrite to replace it (its files stay until the new run has finished), or choose "
                "another --output_dir."
            )
        if existing and not self.config.overwrite:
            resume = (
                f" An --overwrite run into it was interrupted (its work is in {outputs.STAGING}/): pass "
                "--overwrite again to resume it."
                if pending
                else ""
            )
            self._missing(
                f"--output_dir={self.config.output_dir} already holds results ({', '.join(existing)}). Pass "
                "--overwrite to replace them, or choose another --output_dir. (An interrupted run resumes "
                f"by itself: it has no results file yet.){resume}"
            )
        self.replaces_results = bool(existing) or pending or bool(changed)

    def class_parents_shape(self):
        """The run's hierarchy (classes per parent) where the dataset has one, for checking KD-rel's a and b
        early; else a stand-in, whose method the checks refuse on their own."""
        import numpy as np

        parents = datasets.facts(self.config.dataset).hierarchy(dict(self.config.data_options))
        return np.repeat(np.arange(20), 5) if parents is None else parents

    def check_replicas(self, strategy) -> bool:
        """Over several replicas (GPUs, logical CPUs or workers), Keras' loop of several steps per call fails
        (keras-team/keras#19246, `kd_tf.keras_compat.multi_step_loop_fails`): one step per call there, and
        an explicit `--steps_per_execution` above 1 is refused rather than replaced. TPUs keep theirs."""
        if not keras_compat.multi_step_loop_fails(strategy):
            return False
        requested = self.config.student.steps_per_execution
        if self.config.was_set("steps_per_execution") and requested > 1:
            raise UserError(
                f"--steps_per_execution must be 1 with --strategy={self.config.runtime.strategy} over "
                f"{strategy.num_replicas_in_sync} replicas (Keras' multi-step loop fails there). "
                f"Received: --steps_per_execution={requested}"
            )
        return True


def probe_loss(method: str, values: dict, class_parents) -> losses.DistillationLoss:
    """Builds the method's loss with stand-in class vectors and the run's hierarchy shape, so bad values
    fail before any work."""
    import numpy as np

    arguments = losses.hyperparameters_of(method, values)
    unknown = set(values) - set(losses.HYPERPARAMETER_NAMES)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {losses.HYPERPARAMETER_NAMES}")
    needs = losses.registered()[method].needs
    if "class_vectors" in needs:
        arguments["class_vectors"] = np.eye(4, dtype=np.float32)
    if "class_parents" in needs:
        arguments["class_parents"] = class_parents
    return losses.get(method, **arguments)
