"""`run.py --mode=regime_map`: where the paper's three synthetic claims hold.

The grid is training-set size × student width × task difficulty (`--task_kind=per_class_sine`, its label
non-linearity measured) × τ × task seed. Each (size, difficulty, τ, seed) trains one teacher on its `n`
examples and caches its outputs; every student of that group distils from the cache: the hard-label
Student, then each method at every (T, λ) of a small grid, the one with the best validation accuracy standing
for the method in that cell. The claims, each a heatmap over (difficulty, size) × width, mean over seeds:

1. KD-pt ≥ KD at τ = 0 (gradient rescaling is all there is): `KD-pt − KD` at the lowest τ.
2. KD-sim gains as τ grows: `(KD-sim − Student)` at the highest τ minus at the lowest.
3. KD closes most of the teacher–student gap: `(KD − Student) / (Teacher − Student)` at each τ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from data import synthetic
from kd_tf import offline, plots, training
from kd_tf.io import atomic_write_text
from kd_tf.repro import grid, outputs, store, sweeps, tables, trainers

REGIME_MAP_CSV = "regime_map.csv"
SUMMARY_CSV = "regime_map_claims.csv"
FIGURE = "regime_map.png"
# The paper's claims, each the name of a summary column: what it measures and when it counts as holding.
# Claims 1 and 2 hold in a cell only where their mean clears the threshold by more than its std over seeds.
CLAIMS = {
    "kd_pt_minus_kd_at_low_tau": "KD-pt − KD at the lowest τ (points; holds where mean − std ≥ 0)",
    "kd_sim_gain_rise": "(KD-sim − Student) at the highest τ minus at the lowest (points; holds where "
    "mean − std > 0)",
    "kd_share_of_gap": "KD's share of the teacher–student gap, (KD − Student) / (Teacher − Student) "
    "(holds where ≥ 0.5 with a gap of at least 1 point)",
}
# A gap below this many points leaves KD's share undefined (noise over noise).
MIN_GAP_POINTS = 1.0
FIELDS = (
    "train_examples",
    "difficulty",
    "tau",
    "seed",
    "width",
    "method",
    "temperature",
    "alpha",
    "test_accuracy",
    "best_validation_accuracy",
    "best_evaluation",
    "teacher_test_accuracy",
    "differs_from_linear_argmax",
    "linear_accuracy",
    "wall_time_s",
)


@dataclasses.dataclass
class RegimeMapConfig:
    """The grid and how each of its models is trained.

    `data_options` are the synthetic task's options shared by every cell (sizes of the validation and test
    splits, the geometry, `task_kind`); a cell sets `train_examples`, `difficulty`, `tau` and `task_seed`
    (the seed: each seed is its own task, and its own data and initialisations). Every student trains for
    `student_steps` steps whatever `n`, with `evaluations` validation checks (the best is kept).
    """

    train_sizes: Sequence[int]
    student_widths: Sequence[int]
    difficulties: Sequence[int]
    taus: Sequence[float]
    seeds: Sequence[int]
    methods: Sequence[str]
    temperatures: Sequence[float]
    alphas: Sequence[float]
    data_options: dict
    teacher_model: str
    teacher_model_options: dict
    student_model: str
    student_model_options: dict
    teacher_train: training.TrainConfig
    student_train: training.TrainConfig
    student_steps: int
    evaluations: int
    hyperparameters: dict
    method_overrides: dict
    precision: str = "float32"

    def __post_init__(self):
        if "student" in self.methods:
            raise ValueError("`methods` are the distilled methods; the hard-label Student is always trained.")
        sweeps.check_steps(self.student_steps, self.evaluations)
        smallest = min(self.train_sizes)
        for role, config in (("teacher", self.teacher_train), ("student", self.student_train)):
            if config.batch_size > smallest:
                raise ValueError(
                    f"The {role}'s batch size must not exceed the smallest training-set size. Received: "
                    f"batch_size={config.batch_size}, train_sizes={list(self.train_sizes)}"
                )

    def grid(self, method: str) -> list[tuple[float | None, float | None]]:
        """The (T, λ) pairs `method` is trained at: the grid, or `(None, None)` for the Student."""
        if method == "student":
            return [(None, None)]
        return [(t, a) for t in self.temperatures for a in self.alphas]

    def cells(self) -> list[dict]:
        """Every student of the map, once, in the order they are trained (a group's widths, then methods)."""
        return [
            {
                "train_examples": size,
                "difficulty": difficulty,
                "tau": tau,
                "seed": seed,
                "width": width,
                "method": method,
                "temperature": temperature,
                "alpha": alpha,
            }
            for size in self.train_sizes
            for difficulty in self.difficulties
            for tau in self.taus
            for seed in self.seeds
            for width in self.student_widths
            for method in ("student", *self.methods)
            for temperature, alpha in self.grid(method)
        ]


def _group_key(cell: dict) -> tuple:
    """The cells of one (size, difficulty, τ, seed) share a teacher and its cache."""
    return cell["train_examples"], cell["difficulty"], cell["tau"], cell["seed"]


def _setting_dir(output_dir: str, cell: dict) -> str:
    return os.path.join(
        output_dir,
        "runs",
        f"n={cell['train_examples']}",
        f"difficulty={cell['difficulty']}",
        f"tau={cell['tau']}",
        f"seed={cell['seed']}",
    )


def _cell_dir(output_dir: str, cell: dict) -> str:
    grid = "default" if cell["temperature"] is None else f"T={cell['temperature']:g},alpha={cell['alpha']:g}"
    return os.path.join(_setting_dir(output_dir, cell), f"width={cell['width']}", cell["method"], grid)


@dataclasses.dataclass
class _Teacher:
    arrays: synthetic.SyntheticArrays
    model: object
    record: dict
    cache_dir: str
    measures: dict


def _data_options(config: RegimeMapConfig, cell: dict) -> dict:
    return {
        **config.data_options,
        "train_examples": cell["train_examples"],
        "difficulty": cell["difficulty"],
        "tau": cell["tau"],
        "task_seed": cell["seed"],
    }


def _prepare_teacher(config: RegimeMapConfig, cell: dict, directory: str) -> _Teacher:
    """Trains (or reuses) the group's teacher on its `n` examples, with its outputs cached for the students."""
    data_options = _data_options(config, cell)
    seed = cell["seed"]
    arrays = synthetic.arrays(**data_options, seed=seed)
    keras.utils.set_random_seed(seed)  # before the pipeline: the seed enters its shuffle order
    splits = synthetic.splits(arrays, config.teacher_train.batch_size, seed)
    study = sweeps.teacher_spec(config, teacher_cache="on")
    record, model = trainers.train_teacher(study, splits, data_options, seed, directory)
    return _Teacher(
        arrays=arrays,
        model=model,
        record=record,
        cache_dir=os.path.join(directory, offline.CACHE_DIR),
        measures=synthetic.measures(data_options, seed),
    )


def _train_cell(config: RegimeMapConfig, teacher: _Teacher, cell: dict, directory: str) -> dict:
    method = cell["method"]
    steps_between_checks = config.student_steps // config.evaluations
    train_config = dataclasses.replace(config.student_train, epochs=config.evaluations)
    keras.utils.set_random_seed(cell["seed"] + 1)  # before the pipeline: the seed enters its shuffle order
    # The n examples as an endless stream, an "epoch" being one validation interval: every student trains for
    # the same number of steps whatever n, so sizes compare data, not compute.
    splits = synthetic.splits(
        teacher.arrays,
        train_config.batch_size,
        cell["seed"],
        examples_per_epoch=steps_between_checks * train_config.batch_size,
    )
    values = {**config.hyperparameters, **config.method_overrides.get(method, {})}
    if cell["temperature"] is not None:
        values.update(temperature=cell["temperature"], alpha=cell["alpha"])
    _, result, hyperparameters = trainers.distil(
        method,
        values,
        teacher.model,
        splits,
        config.student_model,
        {**config.student_model_options, "width": cell["width"]},
        train_config,
        precision=config.precision,
        seed=cell["seed"],
        run_dir=directory,
        cache_dirs=[teacher.cache_dir],
    )
    return {
        **cell,
        "test_accuracy": result["test_accuracy"],
        "best_validation_accuracy": result["best_validation_accuracy"],
        "best_evaluation": result["best_epoch"],
        "teacher_test_accuracy": teacher.record["test_accuracy"],
        "teacher_cache": result["teacher_cache"],
        "hyperparameters": hyperparameters,
        "data_measures": teacher.measures,
        "wall_time_s": result["wall_time_s"],
    }


def _regime_group(group: grid.Group, log: Callable[[str], None] = outputs.print_now) -> dict:
    """Trains (or reuses) one group's teacher and students; returns {cell index: record}."""
    config, records, teacher = group.config, {}, None
    for index, cell in group.members:
        setting_dir = _setting_dir(group.output_dir, cell)
        cell_dir = _cell_dir(group.output_dir, cell)

        def train_cell(cell=cell, setting_dir=setting_dir, cell_dir=cell_dir) -> dict:
            nonlocal teacher
            if teacher is None:
                teacher = _prepare_teacher(config, cell, os.path.join(setting_dir, "teacher"))
                log(
                    f"teacher n={cell['train_examples']} difficulty={cell['difficulty']} tau={cell['tau']} "
                    f"seed={cell['seed']}: test accuracy {100 * teacher.record['test_accuracy']:.2f}%; "
                    f"{synthetic.describe_measures(teacher.measures)}"
                )
            return _train_cell(config, teacher, cell, cell_dir)

        record = store.reuse_or_train(cell_dir, train_cell, drop_resume_state=True)
        records[index] = record
        grid = "" if cell["temperature"] is None else f" T={cell['temperature']:g} λ={cell['alpha']:g}"
        log(
            f"[{index:>4}/{group.total}] n={cell['train_examples']} difficulty={cell['difficulty']} "
            f"tau={cell['tau']} seed={cell['seed']} width={cell['width']} {cell['method']}{grid}: "
            f"validation {100 * record['best_validation_accuracy']:.2f}%, "
            f"test {100 * record['test_accuracy']:.2f}% ({record['wall_time_s']:.0f} s)"
        )
    return records


def run_regime_map(
    config: RegimeMapConfig,
    output_dir: str,
    *,
    log: Callable[[str], None] = outputs.print_now,
    header: str = "",
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Runs (or resumes) the whole map and writes its CSVs, JSON, markdown summary and heatmaps.

    Finished cells are kept in `output_dir/runs/.../record.json` and reused: an interrupted map resumes cell
    by cell. With `jobs > 1` the groups (cells sharing a teacher) train in that many worker processes.
    """
    records = grid.run(
        config,
        output_dir,
        config.cells(),
        _group_key,
        _regime_group,
        log=log,
        jobs=jobs,
        deterministic=deterministic,
    )
    write_regime_map(output_dir, records, config, header)
    return records


def select(records: Sequence[dict]) -> list[dict]:
    """Per (size, difficulty, τ, seed, width, method): the grid point with the best validation accuracy (the
    first in grid order on a tie), its test accuracy standing for the method."""
    best: dict = {}
    for record in records:
        key = tuple(
            record[name] for name in ("train_examples", "difficulty", "tau", "seed", "width", "method")
        )
        if key not in best or record["best_validation_accuracy"] > best[key]["best_validation_accuracy"]:
            best[key] = record
    return list(best.values())


def summarize(records: Sequence[dict]) -> list[dict]:
    """One row per (size, difficulty, width): the three claims' values, mean and std over seeds (points),
    the accuracies behind them and the measured label non-linearity."""
    chosen = select(records)
    accuracy: dict = {}
    for record in chosen:
        key = (record["train_examples"], record["difficulty"], record["width"], record["tau"], record["seed"])
        accuracy.setdefault(key, {})[record["method"]] = 100 * record["test_accuracy"]
        accuracy[key]["teacher"] = 100 * record["teacher_test_accuracy"]
        accuracy[key]["differs"] = record["data_measures"]["differs_from_linear_argmax"]
    taus = sorted({key[3] for key in accuracy})
    seeds = sorted({key[4] for key in accuracy})
    low, high = taus[0], taus[-1]
    rows = []
    for size, difficulty, width in sorted({key[:3] for key in accuracy}):

        def at(tau, seed, size=size, difficulty=difficulty, width=width):
            return accuracy.get((size, difficulty, width, tau, seed), {})

        row = {"train_examples": size, "difficulty": difficulty, "width": width, "seeds": len(seeds)}
        row["differs_from_linear_argmax"] = float(
            np.mean([at(tau, seed)["differs"] for tau in taus for seed in seeds if at(tau, seed)])
        )
        for tau in taus:
            for method in ("teacher", "student", "kd", "kd_pt", "kd_sim", "kd_topk"):
                values = [at(tau, seed)[method] for seed in seeds if method in at(tau, seed)]
                if values:
                    row[f"{method}@tau={tau:g}"] = float(np.mean(values))
        _claim(row, "kd_pt_minus_kd_at_low_tau", [_difference(at(low, s), "kd_pt", "kd") for s in seeds])
        _claim(
            row,
            "kd_sim_gain_rise",
            [
                _difference(at(high, s), "kd_sim", "student") - _difference(at(low, s), "kd_sim", "student")
                if high != low
                else np.nan
                for s in seeds
            ],
        )
        for tau in taus:
            gaps = [_difference(at(tau, s), "teacher", "student") for s in seeds]
            gains = [_difference(at(tau, s), "kd", "student") for s in seeds]
            gap = float(np.nanmean(gaps)) if np.isfinite(gaps).any() else np.nan
            row[f"gap@tau={tau:g}"] = gap
            row[f"kd_share_of_gap@tau={tau:g}"] = (
                float(np.nanmean(gains)) / gap if np.isfinite(gap) and gap >= MIN_GAP_POINTS else np.nan
            )
        rows.append(row)
    return rows


def _difference(accuracies: dict, first: str, second: str) -> float:
    if first in accuracies and second in accuracies:
        return accuracies[first] - accuracies[second]
    return np.nan


def _claim(row: dict, name: str, values: list[float]) -> None:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    row[name] = float(finite.mean()) if finite.size else np.nan
    row[f"{name}_std"] = float(finite.std()) if finite.size else np.nan


def holds(rows: Sequence[dict], taus: Sequence[float]) -> dict[str, list[dict]]:
    """Per claim, the summary rows (cells of the map) where it holds (claims 1 and 2: by more than the std
    over seeds)."""

    def clear(row, name):  # mean − std over seeds; accuracies are multiples of 1/examples (a 0 may be −1e-15)
        value = row[name] - (row[f"{name}_std"] if np.isfinite(row[f"{name}_std"]) else 0.0)
        return round(value, 9) if np.isfinite(value) else np.nan

    found = {
        "kd_pt_minus_kd_at_low_tau": [r for r in rows if clear(r, "kd_pt_minus_kd_at_low_tau") >= 0],
        "kd_sim_gain_rise": [r for r in rows if clear(r, "kd_sim_gain_rise") > 0],
    }
    found["kd_share_of_gap"] = [
        {**r, "tau": tau}
        for r in rows
        for tau in taus
        if r.get(f"kd_share_of_gap@tau={tau:g}", np.nan) >= 0.5
    ]
    return found


def _row_label(row: dict) -> str:
    return (
        f"m_d={row['difficulty']} ({100 * row['differs_from_linear_argmax']:.0f}% non-lin.), "
        f"n={row['train_examples']:,}"
    )


def write_regime_map(output_dir: str, records: Sequence[dict], config: RegimeMapConfig, header: str = ""):
    """Writes `regime_map.csv` (one row per trained student), `regime_map_claims.csv` (one per map cell),
    `results.json`, `results.md` and the heatmaps."""
    os.makedirs(output_dir, exist_ok=True)
    # The CSV's one row per student carries the task's measures as columns of their own.
    flat = [{**record, **record.get("data_measures", {})} for record in records]
    tables.write_csv(os.path.join(output_dir, REGIME_MAP_CSV), flat, FIELDS)
    rows = summarize(records)
    taus = sorted(config.taus)
    columns = list(dict.fromkeys(name for row in rows for name in row))
    tables.write_csv(os.path.join(output_dir, SUMMARY_CSV), rows, columns)
    row_keys = sorted({(r["difficulty"], r["train_examples"]) for r in rows})
    widths = sorted({r["width"] for r in rows})
    by_key = {(r["difficulty"], r["train_examples"], r["width"]): r for r in rows}
    labels = [_row_label(by_key[(d, n, widths[0])]) for d, n in row_keys]

    def grid(name):
        return [[by_key[(d, n, w)].get(name, np.nan) for w in widths] for d, n in row_keys]

    panels = [
        (f"KD-pt − KD at τ={taus[0]:g} (points)", grid("kd_pt_minus_kd_at_low_tau"), 0.0),
        (f"(KD-sim − Student) τ={taus[-1]:g} minus τ={taus[0]:g}", grid("kd_sim_gain_rise"), 0.0),
        *[(f"KD's share of the gap, τ={tau:g}", grid(f"kd_share_of_gap@tau={tau:g}"), 0.5) for tau in taus],
    ]
    figure = plots.claim_heatmaps(
        panels, labels, [f"width {w}" for w in widths], os.path.join(output_dir, FIGURE)
    )
    found = holds(rows, taus)
    text = (
        "# Regime map of the synthetic claims\n\n"
        + header
        + f"Teachers: {config.teacher_model} {config.teacher_model_options.get('width', '')}; students: "
        f"{config.student_model} at widths {', '.join(map(str, widths))}, {config.student_steps} steps each; "
        f"per method and cell the (T, λ) of the grid T ∈ {{{', '.join(f'{t:g}' for t in config.temperatures)}}}"
        f" × λ ∈ {{{', '.join(f'{a:g}' for a in config.alphas)}}} with the best validation accuracy; mean ± std "
        f"over seeds {', '.join(map(str, config.seeds))} (each its own task). Heatmaps: {FIGURE}.\n\n"
        + format_summary(rows, taus)
        + "\n## Where each claim holds\n\n"
        + format_holds(found, rows, taus)
    )
    atomic_write_text(os.path.join(output_dir, tables.RESULTS_MARKDOWN), text)
    atomic_write_text(
        os.path.join(output_dir, tables.RESULTS_JSON),
        json.dumps({"records": list(records), "summary": rows}, indent=2, default=_numpy_scalar) + "\n",
    )
    return {"rows": rows, "figure": figure, "holds": found}


def _numpy_scalar(value):
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def _number(value: float, spread: float | None = None, digits: int = 2) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}"
    return f"{text} ± {spread:.{digits}f}" if spread is not None and np.isfinite(spread) else text


def format_summary(rows: Sequence[dict], taus: Sequence[float]) -> str:
    """The map as a markdown table: one line per (difficulty, size, width)."""
    low, high = taus[0], taus[-1]
    header = [
        "m_d (labels off linear)",
        "n",
        "width",
        *[f"Teacher / Student / KD τ={tau:g}" for tau in taus],
        f"KD-pt − KD τ={low:g}",
        f"KD-sim gain rise τ={low:g}→{high:g}",
        *[f"KD's share τ={tau:g}" for tau in taus],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{row['difficulty']} ({100 * row['differs_from_linear_argmax']:.0f}%)",
            f"{row['train_examples']:,}",
            str(row["width"]),
        ]
        for tau in taus:
            accuracies = [row.get(f"{m}@tau={tau:g}", np.nan) for m in ("teacher", "student", "kd")]
            cells.append(" / ".join("–" if not np.isfinite(v) else f"{v:.1f}" for v in accuracies))
        cells.append(_number(row["kd_pt_minus_kd_at_low_tau"], row["kd_pt_minus_kd_at_low_tau_std"]))
        cells.append(_number(row["kd_sim_gain_rise"], row["kd_sim_gain_rise_std"]))
        cells += [_number(row.get(f"kd_share_of_gap@tau={tau:g}", np.nan)) for tau in taus]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_holds(found: dict, rows: Sequence[dict], taus: Sequence[float]) -> str:
    lines = []
    for name, description in CLAIMS.items():
        where = found[name]
        total = len(rows) * (len(taus) if name == "kd_share_of_gap" else 1)
        cells = "; ".join(
            f"{_row_label(r)}, width {r['width']}" + (f", τ={r['tau']:g}" if "tau" in r else "")
            for r in where
        )
        lines.append(
            f"- {description}: holds in {len(where)} of {total} cells" + (f": {cells}." if where else ".")
        )
    return "\n".join(lines) + "\n"
