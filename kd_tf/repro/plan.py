"""`--dry_run`: the fully resolved configuration of a command, each value with where it came from; and the same
configuration as the `config.json` every run writes before it trains."""

from __future__ import annotations

import dataclasses
import json
import os

import data as datasets
from kd_tf import losses, training
from kd_tf.repro import checks, disk, experiments, outputs
from kd_tf.repro import config as config_module

# The flags behind each field of a `Training`, for naming where its value came from.
_TEACHER_FLAGS = {"epochs": "teacher_epochs", "learning_rate": "teacher_learning_rate"}
# A `Config` group of flags an experiment reads -> its name in the plan and `config.json`.
_GROUP_TITLES = {"sweeps": "sweep", "analysis": "analysis"}


def text(config: config_module.Config, missing: list[str], replaces_results: bool) -> str:
    """The plan `--dry_run` prints: what would be trained, with what, where it would be written."""
    sources = config.sources
    lines = [
        "Plan (--dry_run: nothing is trained or written). [where each value comes from]",
        "",
        f"mode: {config.mode} [{sources['mode']}]   dataset: {config.dataset} [{sources['dataset']}]",
        f"seeds: {', '.join(map(str, config.seeds))} [{sources['seeds']}]",
        f"output: {config.output_dir} [{sources['output_dir']}]"
        + (" (its results would be replaced once the new ones are complete)" if replaces_results else ""),
    ]
    if config.teacher_dir:
        lines.append(f"teacher from: {config.teacher_dir} [{sources['teacher_dir']}]")
    lines += ["", "data:"]
    facts = datasets.facts(config.dataset)
    for option, value in config.data_options.items():
        lines.append(f"  {option} = {value!r} [{sources[facts.flag_of(option)]}]")
    if config.dataset == "synthetic":
        lines.append(f"  taus = {', '.join(f'{tau:g}' for tau in config.taus)} [{sources['taus']}]")
        if config.task_seeds:
            lines.append(f"  task_seeds = {', '.join(map(str, config.task_seeds))} [{sources['task_seeds']}]")
    examples = facts.examples(dict(config.data_options))
    roles = _roles(config)
    for role in roles:
        lines += ["", *_model_lines(config, role, examples)]
    methods = checks.trained_methods(config)
    if methods:
        lines += ["", "methods (hyperparameters each trains with):"]
        for method in methods:
            values = config.method_values(method)
            method_sources = config.method_sources(method)
            described = ", ".join(
                f"{name}={value:g} [{method_sources[name]}]" for name, value in values.items()
            )
            lines.append(f"  {losses.label(method)} ({method}): {described or 'cross-entropy only'}")
    mode = experiments.get(config.mode)
    if mode.group:
        lines += ["", f"{_GROUP_TITLES[mode.group]}:", *_group_lines(getattr(config, mode.group), sources)]
    if mode.flags:
        lines += ["", f"{config.mode}:"]
        lines += [f"  {name} = {config.value(name)!r} [{sources[name]}]" for name in mode.flags]
    if config.dataset == "ptb":
        lines += ["", "language model:", *_group_lines(config.language_model, sources)]
    lines += ["", "runtime:", *_group_lines(config.runtime, sources)]
    lines += ["", *_disk_lines(config)]
    if missing:
        lines += ["", "Missing before this command can run:", *(f"  - {problem}" for problem in missing)]
    else:
        lines += ["", "Nothing is missing: the command can run as it is."]
    return "\n".join(lines)


def _disk_lines(config) -> list[str]:
    needs = disk.estimate(config)
    free = outputs.free_bytes(config.output_dir)
    lines = [
        "disk: " + (needs.describe() if needs else "not known before the data is read"),
        f"  free on the output's filesystem: {disk.size_text(free) if free is not None else 'unknown'}",
    ]
    warning = disk.warning(config, needs)
    return lines + ([warning] if warning else [])


def _roles(config) -> list[str]:
    return experiments.get(config.mode).roles(config)


def _model_lines(config, role: str, examples: int | None) -> list[str]:
    sources = config.sources
    model = config.teacher_model if role == "teacher" else config.student_model
    settings = config.teacher if role == "teacher" else config.student
    options = ", ".join(f"{key}={value!r}" for key, value in config.model_options(role).items())
    lines = [f"{role}: {model} [{sources[f'{role}_model']}] ({options})"]
    grid = experiments.get(config.mode).grid_trained(config) if role == "teacher" else {}
    for field in ("epochs", "batch_size", "optimizer", "learning_rate", "momentum", "weight_decay"):
        if field in grid:
            lines.append(f"  {field} = {grid[field]}")
            continue
        lines.append(f"  {field} = {getattr(settings, field)!r} [{sources[_flag_of(config, role, field)]}]")
    steps = examples // settings.batch_size if examples and not grid else None
    schedule = f"  lr_schedule = {settings.lr_schedule} [{sources['lr_schedule']}]"
    if steps:
        rate = training.learning_rate_of(settings, steps)
        if isinstance(rate, float):
            schedule += f": {rate:g} at every step"
        else:
            shape = rate.get_config()
            schedule += (
                f": boundaries (steps) {list(shape['boundaries'])}, multipliers "
                f"{list(shape['multipliers'])}, warm-up {shape['warmup_steps']} steps"
            )
        lines += [
            schedule,
            f"  steps: {steps} per epoch ({examples:,} examples / batch {settings.batch_size}), "
            f"{steps * settings.epochs:,} in all",
        ]
    else:
        lines += [
            schedule + f" (boundaries at epochs {list(settings.lr_boundary_epochs)}, warm-up "
            f"{settings.warmup_epochs:g} epochs)",
            "  steps: set by each batch size of the grid"
            if grid
            else "  steps: known once the data is read (its size sets the steps per epoch)",
        ]
    lines.append(
        f"  steps_per_execution = {settings.steps_per_execution} [{sources['steps_per_execution']}], "
        f"jit_compile = {settings.jit_compile!r} [{sources['jit_compile']}]"
    )
    if role == "teacher" and config.teacher_label_smoothing:
        lines.append(
            f"  label smoothing = {config.teacher_label_smoothing:g} [{sources['teacher_label_smoothing']}]"
        )
    return lines


def _flag_of(config, role: str, field: str) -> str:
    """The flag a `Training` field of `role` took its value from (a teacher's own flag where it was set)."""
    own = _TEACHER_FLAGS.get(field) if role == "teacher" else None
    return own if own and config.sources[own] != "default" else field


def _group_lines(group, sources) -> list[str]:
    return [
        f"  {field.name} = {getattr(group, field.name)!r} [{sources.get(field.name, 'default')}]"
        for field in dataclasses.fields(group)
    ]


CONFIG_FILE = outputs.PLAN_FILE


def resolved(config: config_module.Config) -> dict:
    """The configuration `text` prints, as data: every value a run trains with, each as `{"value", "source"}`
    (where it came from), grouped as the plan groups them."""
    sources = config.sources

    def sourced(value, flag):
        return {"value": _plain(value), "source": sources.get(flag, config_module.DEFAULT)}

    facts = datasets.facts(config.dataset)
    roles = {}
    for role in _roles(config):
        settings = config.teacher if role == "teacher" else config.student
        entry = {
            "model": sourced(
                config.teacher_model if role == "teacher" else config.student_model, f"{role}_model"
            ),
            "options": _plain(config.model_options(role)),
        }
        for field in dataclasses.fields(settings):
            entry[field.name] = sourced(getattr(settings, field.name), _flag_of(config, role, field.name))
        if role == "teacher":
            entry["label_smoothing"] = sourced(config.teacher_label_smoothing, "teacher_label_smoothing")
        roles[role] = entry
    methods = {}
    for method in checks.trained_methods(config):
        method_sources = config.method_sources(method)
        methods[method] = {
            name: {"value": value, "source": method_sources[name]}
            for name, value in config.method_values(method).items()
        }

    def group(values):
        return {
            field.name: sourced(getattr(values, field.name), field.name)
            for field in dataclasses.fields(values)
        }

    mode = experiments.get(config.mode)
    groups = {title: None for title in _GROUP_TITLES.values()}
    if mode.group:
        groups[_GROUP_TITLES[mode.group]] = group(getattr(config, mode.group))
    return {
        "command": config.command,
        "mode": sourced(config.mode, "mode"),
        "dataset": sourced(config.dataset, "dataset"),
        "seeds": sourced(config.seeds, "seeds"),
        "output_dir": sourced(config.output_dir, "output_dir"),
        "teacher_dir": sourced(config.teacher_dir, "teacher_dir"),
        "data": {
            **{
                option: sourced(value, facts.flag_of(option)) for option, value in config.data_options.items()
            },
            **(
                {"taus": sourced(config.taus, "taus"), "task_seeds": sourced(config.task_seeds, "task_seeds")}
                if config.dataset == "synthetic"
                else {}
            ),
        },
        **roles,
        "methods": methods,
        **groups,
        "language_model": group(config.language_model) if config.dataset == "ptb" else None,
        "runtime": group(config.runtime),
        **(
            {config.mode: {name: sourced(config.value(name), name) for name in mode.flags}}
            if mode.flags
            else {}
        ),
    }


def write_resolved(config: config_module.Config, directory: str) -> None:
    """Writes `resolved(config)` to `directory/config.json` (whole or not at all)."""
    from kd_tf.io import atomic_write_text

    text = json.dumps(resolved(config), indent=2) + "\n"
    atomic_write_text(os.path.join(directory, CONFIG_FILE), text)


# What may change between a run and its resume: how it runs, not what it trains (the workers, the output, the
# progress it prints, how often it saves), and how long it trains (a resume may extend or shorten a run: the
# learning-rate boundaries are epochs counted from the start).
_RUN_ONLY = {
    "command",
    "output_dir",
    "teacher.epochs",
    "student.epochs",
    *(
        f"runtime.{name}"
        for name in (
            "strategy",
            "tpu",
            "collective_timeout",
            "cpu_devices",
            "jobs",
            "teacher_cache",
            "teacher_cache_max_mb",
            "checkpoint_every_steps",
            "verbose",
            "progress",
        )
    ),
}


def changed_values(config: config_module.Config, directory: str | None = None) -> list[str]:
    """`name: before → now` for each value that differs between the `config.json` in `directory` (default:
    the run's output directory) and `config`, leaving out how the run runs (`_RUN_ONLY`); empty where there
    is no `config.json` or it cannot be read (a run from before the file, or a damaged one)."""
    path = os.path.join(directory or config.output_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            before = _values(json.load(handle))
    except (OSError, ValueError):
        return []
    now = _values(json.loads(json.dumps(resolved(config))))
    return [
        f"{name}: {before.get(name)!r} → {now.get(name)!r}"
        for name in sorted(set(before) | set(now))
        if name not in _RUN_ONLY and before.get(name) != now.get(name)
    ]


def _values(tree, prefix: str = "") -> dict:
    """`resolved`'s tree as `dotted.name -> value`."""
    if isinstance(tree, dict) and set(tree) == {"value", "source"}:
        return {prefix: tree["value"]}
    if isinstance(tree, dict):
        values = {}
        for key, item in tree.items():
            values.update(_values(item, f"{prefix}.{key}" if prefix else key))
        return values
    return {prefix: tree}


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {key: _plain(item) for key, item in value.items()}
    return value
