"""The regime map's results: each method's best (T, λ) per cell, the paper's three claims per cell (mean ± std over seeds, where each holds), and the CSV, markdown and heatmaps that show them."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from kd_tf import plots
from kd_tf.repro import tables

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


def write_regime_map(output_dir: str, records: Sequence[dict], config, header: str = ""):
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
    tables.write_summary(output_dir, text, {"records": list(records), "summary": rows})
    return {"rows": rows, "figure": figure, "holds": found}


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
