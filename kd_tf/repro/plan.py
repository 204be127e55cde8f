"""`--dry_run`: the fully resolved configuration of a command, each value with where it came from."""

from __future__ import annotations

import data as datasets
from kd_tf import losses, training
from kd_tf.repro import checks, disk, outputs
from kd_tf.repro import config as config_module

# The flags behind each field of a `Training`, for naming where its value came from.
_TEACHER_FLAGS = {"epochs": "teacher_epochs", "learning_rate": "teacher_learning_rate"}


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
    if config.mode in config_module.SWEEPS:
        lines += ["", "sweep:", *_group_lines(config.sweeps, sources)]
    if config.mode == "analyze":
        lines += ["", "analysis:", *_group_lines(config.analysis, sources)]
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
    if config.mode == "teacher":
        return ["teacher"]
    if config.mode == "student":
        return ["student"]
    if config.mode == "analyze":
        return ["student"] if config.analysis.topk_sweep else []
    return ["teacher", "student"]


def _model_lines(config, role: str, examples: int | None) -> list[str]:
    sources = config.sources
    model = config.teacher_model if role == "teacher" else config.student_model
    settings = config.teacher if role == "teacher" else config.student
    options = ", ".join(f"{key}={value!r}" for key, value in config.model_options(role).items())
    lines = [f"{role}: {model} [{sources[f'{role}_model']}] ({options})"]
    for field in ("epochs", "batch_size", "optimizer", "learning_rate", "momentum", "weight_decay"):
        flag = field
        if role == "teacher" and field in _TEACHER_FLAGS and sources[_TEACHER_FLAGS[field]] != "default":
            flag = _TEACHER_FLAGS[field]
        lines.append(f"  {field} = {getattr(settings, field)!r} [{sources[flag]}]")
    steps = examples // settings.batch_size if examples else None
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
            "  steps: known once the data is read (its size sets the steps per epoch)",
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


def _group_lines(group, sources) -> list[str]:
    import dataclasses

    return [
        f"  {field.name} = {getattr(group, field.name)!r} [{sources.get(field.name, 'default')}]"
        for field in dataclasses.fields(group)
    ]
