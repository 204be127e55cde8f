"""The run's configuration: frozen dataclasses built once from `run.py`'s flags, with where each value came from.

`from_flags` is the one place below `run.py` that reads absl flags. It applies the precedence rule
(BUILD.md, "Precedence"): a value the user set, on the command line or in their flagfile, beats a dataset's
preset, which beats the flag's default; per method, an explicit `--method_overrides` value beats all three.
Everything after it (checks, modes, studies, figures) reads the `Config`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from types import MappingProxyType

import data as datasets
from kd_tf import losses
from kd_tf.repro import experiments

# Where a value came from, as `--dry_run` prints it.
COMMAND_LINE, FLAGFILE, PRESET, QUICK, DEFAULT, OVERRIDE = (
    "command line",
    "flagfile",
    "preset",
    "--quick",
    "default",
    "--method_overrides",
)


class UserError(Exception):
    """A problem with the command line, the data or a saved file, explained for the person who ran it."""


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class Training:
    """How one model is trained: the fields of `training.TrainConfig` that come from flags."""

    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    momentum: float
    lr_schedule: str
    lr_boundary_epochs: tuple[float, ...]
    lr_multipliers: tuple[float, ...]
    warmup_epochs: float
    weight_decay: float
    jit_compile: bool | str
    steps_per_execution: int
    tensorboard: bool


@dataclasses.dataclass(frozen=True)
class Models:
    """The flags the models' builders take their options from (`Config.model_options`)."""

    teacher_width: int
    student_width: int
    logit_scale: float
    resnet_variant: str
    sync_batch_norm: bool


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how the computation runs."""

    precision: str
    strategy: str
    tpu: str | None
    collective_timeout: float
    cpu_devices: int
    sync_batch_norm: bool
    jobs: int | None
    teacher_cache: str
    teacher_cache_max_mb: float
    steps_per_epoch: int | None
    checkpoint_every_steps: int
    deterministic: bool
    verbose: bool
    progress: str


@dataclasses.dataclass(frozen=True)
class Sweeps:
    """`--mode=data_efficiency`, `--mode=sweet_spot` and `--mode=regime_map`."""

    quick: bool
    train_sizes: tuple[int, ...]
    student_models: tuple[str, ...]
    student_steps: int
    evaluations: int
    teacher_examples: int
    difficulties: tuple[int, ...]
    teacher_batch_sizes: tuple[int, ...]
    teacher_epoch_grid: tuple[int, ...]
    student_widths: tuple[int, ...]
    grid_temperatures: tuple[float, ...]
    grid_alphas: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Analysis:
    """`--mode=analyze`."""

    ls_run_dir: str | None
    topk_sweep: tuple[int, ...]
    figures_dir: str | None


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """`--dataset=ptb`: the AWD-LSTM being trained and its NT-ASGD loop."""

    embedding_size: int
    hidden_size: int
    dropout: float
    dropout_hidden: float
    dropout_input: float
    dropout_embedding: float
    weight_drop: float
    bptt: int
    clip: float
    alpha_ar: float
    beta_tar: float
    nonmono: int
    max_windows_per_epoch: int | None


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run does, resolved: what the user set, the presets and the defaults.

    Attributes:
        mode, dataset, method, methods, seeds, teacher_dir, overwrite, dry_run, data_dir: the flags.
        output_dir: `--output_dir`, or the mode's default directory.
        taus: the synthetic class similarities, one table column each.
        task_seeds: the synthetic tasks a table's columns average over (empty: `--task_seed` alone).
        data_options: the options of the dataset's `load` (its `Facts.option_flags`).
        teacher_model, student_model: the architectures (the dataset's defaults unless set).
        models: what the models' builder options come from (`model_options`).
        teacher, student: how each is trained.
        hyperparameters: every method hyperparameter's global value (the flags of the same names).
        method_overrides: per method, the values that replace the global ones (explicit overrides and
            presets, by the precedence rule).
        explicit_overrides: the `--method_overrides` values alone.
        teacher_label_smoothing: the teacher's ε (Table 4).
        runtime, sweeps, analysis, language_model: the other groups of flags.
        set_by_user: names of the flags the user set (command line or flagfile).
        sources: flag name -> where its value came from (`COMMAND_LINE`, `FLAGFILE`, `PRESET`, `DEFAULT`).
        command: the command line, as results files quote it.
        values: flag name -> its resolved value, for flags an experiment module defines (`value`).
    """

    mode: str
    dataset: str
    method: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    output_dir: str
    teacher_dir: str | None
    overwrite: bool
    dry_run: bool
    data_dir: str | None
    taus: tuple[float, ...]
    task_seeds: tuple[int, ...]
    data_options: Mapping
    teacher_model: str
    student_model: str
    models: Models
    teacher: Training
    student: Training
    hyperparameters: Mapping
    method_overrides: Mapping
    explicit_overrides: Mapping
    teacher_label_smoothing: float
    runtime: Runtime
    sweeps: Sweeps
    analysis: Analysis
    language_model: LanguageModel
    set_by_user: frozenset
    sources: Mapping
    command: str
    values: Mapping = dataclasses.field(default_factory=lambda: _frozen({}))

    def value(self, name: str):
        """Flag `name`'s resolved value (presets applied), for an experiment's own flags."""
        return self.values[name]

    def was_set(self, name: str) -> bool:
        """Whether the user set flag `name` (on the command line or in their flagfile)."""
        return name in self.set_by_user

    def method_values(self, method: str) -> dict:
        """The hyperparameters `method` trains with."""
        values = {**self.hyperparameters, **self.method_overrides.get(method, {})}
        return losses.hyperparameters_of(method, values)

    def method_sources(self, method: str) -> dict:
        """Hyperparameter name -> where `method`'s value came from."""
        explicit = self.explicit_overrides.get(method, {})
        preset = self.method_overrides.get(method, {})
        sources = {}
        for name in losses.hyperparameters_of(method, self.hyperparameters):
            if name in explicit:
                sources[name] = OVERRIDE
            elif name in preset:
                sources[name] = PRESET
            else:
                sources[name] = self.sources[name]
        return sources

    def model_options(self, role: str, model: str | None = None) -> dict:
        """The builder options of `model` (default: the run's `role` architecture) trained as `role`."""
        model = model or (self.teacher_model if role == "teacher" else self.student_model)
        flags = self.models
        # Only where asked for: a model saved without it keeps the configuration it always had.
        synchronized = {"sync_batch_norm": True} if flags.sync_batch_norm else {}
        if model in ("mlp", "deep_linear"):
            width = flags.teacher_width if role == "teacher" else flags.student_width
            return {"width": width, "logit_scale": flags.logit_scale, "name": role, **synchronized}
        if model.startswith("resnet") and self.dataset in ("cifar100", "digits", "fashion_mnist"):
            return {"variant": flags.resnet_variant, "name": role, **synchronized}
        return {"name": role, **synchronized}


def from_flags(flag_values, argv: list[str] | None = None) -> Config:
    """Builds the `Config` of parsed `flag_values` (absl `FlagValues`); `argv` (default `sys.argv`) tells
    the command line's flags from the flagfile's."""
    argv = sys.argv if argv is None else argv
    set_by_user = frozenset(name for name in flag_values if flag_values[name].present)
    on_command_line = _named_on_command_line(argv, flag_values)
    experiment = experiments.get(flag_values.mode)
    preset = datasets.facts(flag_values.dataset).preset
    quick = dict(experiment.quick) if flag_values.quick else {}
    preset_flags = {**preset.get("flags", {}), **experiment.presets, **quick}
    if not experiment.teacher_cache:  # its students distil online: the plan says so
        preset_flags["teacher_cache"] = "off"

    def value(name: str):
        if name in preset_flags and name not in set_by_user:
            return preset_flags[name]
        return flag_values[name].value

    sources = {}
    for name in flag_values:
        if name in set_by_user:
            sources[name] = COMMAND_LINE if name in on_command_line else FLAGFILE
        elif name in quick:
            sources[name] = QUICK
        elif name in preset_flags:
            sources[name] = PRESET
        else:
            sources[name] = DEFAULT

    dataset = flag_values.dataset
    facts = datasets.facts(dataset)
    # A dataset's facts name its models unless the user or a mode's preset did.
    models_of = dict(zip(("teacher_model", "student_model"), facts.default_models, strict=True))
    for name in models_of:
        if name in set_by_user or name in preset_flags:
            models_of[name] = value(name)
        else:
            sources[name] = PRESET
    teacher_model, student_model = models_of["teacher_model"], models_of["student_model"]

    methods = tuple(value("methods"))
    if "methods" not in set_by_user and "methods" not in preset_flags:
        if facts.hierarchy(facts.options(value)) is None:
            methods = tuple(m for m in methods if "class_parents" not in losses.registered()[m].needs)

    hyperparameters = {name: flag_values[name].value for name in losses.HYPERPARAMETER_NAMES}
    try:
        explicit = losses.parse_overrides(flag_values.method_overrides)
    except ValueError as error:
        raise UserError(f"--method_overrides: {error}") from error
    method_overrides = {}
    for method in losses.NAMES:
        values = {
            name: number
            for name, number in preset.get("methods", {}).get(method, {}).items()
            if name not in set_by_user
        }
        values.update(explicit.get(method, {}))
        if values:
            method_overrides[method] = _frozen(values)

    def training(role: str) -> Training:
        epochs, learning_rate = value("epochs"), value("learning_rate")
        if role == "teacher":
            if value("teacher_epochs") is not None:
                epochs = value("teacher_epochs")
            if value("teacher_learning_rate") is not None:
                learning_rate = value("teacher_learning_rate")
        return Training(
            epochs=epochs,
            batch_size=value("batch_size"),
            optimizer=value("optimizer"),
            learning_rate=learning_rate,
            momentum=value("momentum"),
            lr_schedule=value("lr_schedule"),
            lr_boundary_epochs=tuple(float(v) for v in value("lr_boundary_epochs")),
            lr_multipliers=tuple(float(v) for v in value("lr_multipliers")),
            warmup_epochs=value("warmup_epochs"),
            weight_decay=value("weight_decay"),
            jit_compile={"auto": "auto", "true": True, "false": False}[value("jit_compile")],
            steps_per_execution=value("steps_per_execution"),
            tensorboard=value("tensorboard"),
        )

    return Config(
        mode=flag_values.mode,
        dataset=dataset,
        method=flag_values.method,
        methods=methods,
        seeds=tuple(int(seed) for seed in value("seeds")),
        output_dir=flag_values.output_dir or experiment.output_dir(dataset, flag_values.method),
        teacher_dir=flag_values.teacher_dir,
        overwrite=flag_values.overwrite,
        dry_run=flag_values.dry_run,
        data_dir=flag_values.data_dir,
        taus=tuple(float(tau) for tau in value("taus")),
        task_seeds=tuple(int(seed) for seed in flag_values.task_seeds),
        data_options=_frozen(facts.options(value)),
        teacher_model=teacher_model,
        student_model=student_model,
        models=Models(**{field.name: value(field.name) for field in dataclasses.fields(Models)}),
        teacher=training("teacher"),
        student=training("student"),
        hyperparameters=_frozen(hyperparameters),
        method_overrides=_frozen(method_overrides),
        explicit_overrides=_frozen({method: _frozen(values) for method, values in explicit.items()}),
        teacher_label_smoothing=flag_values.teacher_label_smoothing,
        runtime=Runtime(**{field.name: value(field.name) for field in dataclasses.fields(Runtime)}),
        sweeps=Sweeps(
            quick=flag_values.quick,
            train_sizes=tuple(int(v) for v in value("train_sizes")),
            student_models=tuple(value("student_models")),
            student_steps=value("student_steps"),
            evaluations=value("evaluations"),
            teacher_examples=value("teacher_examples"),
            difficulties=tuple(int(v) for v in value("difficulties")),
            student_widths=tuple(int(v) for v in value("student_widths")),
            grid_temperatures=tuple(float(v) for v in value("grid_temperatures")),
            grid_alphas=tuple(float(v) for v in value("grid_alphas")),
            teacher_batch_sizes=tuple(int(v) for v in value("teacher_batch_sizes")),
            teacher_epoch_grid=tuple(int(v) for v in value("teacher_epoch_grid")),
        ),
        analysis=Analysis(
            ls_run_dir=flag_values.ls_run_dir,
            topk_sweep=tuple(int(k) for k in flag_values.topk_sweep),
            figures_dir=flag_values.figures_dir,
        ),
        language_model=LanguageModel(
            **{field.name: flag_values[field.name].value for field in dataclasses.fields(LanguageModel)}
        ),
        set_by_user=set_by_user,
        sources=_frozen(sources),
        command=" ".join(argv),
        values=_frozen({name: value(name) for name in flag_values}),
    )


def _named_on_command_line(argv: list[str], flag_values) -> set[str]:
    """The flags `argv` names itself (`--name=value`, `--name value`, `--noname`), not through a flagfile."""
    names = set()
    for argument in argv[1:]:
        if not argument.startswith("-") or argument.lstrip("-").startswith("flagfile"):
            continue
        name = argument.lstrip("-").split("=", 1)[0]
        if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
            name = name[2:]
        names.add(name)
    return names
