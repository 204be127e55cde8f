"""Per-task breakdown of a synthetic table over `--task_seeds` (RESULTS.md, "Over three tasks").

Usage: python results/synthetic_table1_tasks/per_task.py results/synthetic_table1_tasks/results.json

Prints, per task and τ, mean ± std over seeds of Teacher, Student and KD, the paired differences the paper's
claims are about (KD-pt − KD, KD-sim − Student) and KD's share of the teacher–student gap; then the same
paired differences over every (task, seed) pair.
"""

import json
import sys

import numpy as np


def spread(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():+.2f} ± {values.std(ddof=1):.2f}"


def main(path: str) -> None:
    records = json.load(open(path, encoding="utf-8"))
    accuracy, off_linear = {}, {}
    for record in records:
        task = record["data_options"]["task_seed"]
        key = (record["tau"], task, record["seed"])
        accuracy.setdefault(key, {})[record["method"]] = 100 * record["test_accuracy"]
        off_linear[(record["tau"], task)] = record["data_measures"]["differs_from_linear_argmax"]
    taus = sorted({key[0] for key in accuracy})
    tasks = sorted({key[1] for key in accuracy})
    seeds = sorted({key[2] for key in accuracy})
    print(
        "| task (labels off linear at each τ) | τ | Teacher | Student | KD | KD-pt − KD | KD-sim − Student "
        "| KD's share of the gap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task in tasks:
        label = f"{task} ({' / '.join(f'{100 * off_linear[(tau, task)]:.0f}%' for tau in taus)})"
        for tau in taus:
            cells = [accuracy[(tau, task, seed)] for seed in seeds]
            mean = {name: np.mean([cell[name] for cell in cells]) for name in ("teacher", "student", "kd")}
            std = {name: np.std([cell[name] for cell in cells], ddof=1) for name in mean}
            share = (mean["kd"] - mean["student"]) / (mean["teacher"] - mean["student"])
            models = " | ".join(
                f"{mean[name]:.2f} ± {std[name]:.2f}" for name in ("teacher", "student", "kd")
            )
            print(
                f"| {label} | {tau:g} | {models} | {spread([c['kd_pt'] - c['kd'] for c in cells])} | "
                f"{spread([c['kd_sim'] - c['student'] for c in cells])} | {100 * share:.0f} % |"
            )
    print("\nOver every (task, seed) pair, paired differences (points), mean ± std:")
    for tau in taus:
        cells = [accuracy[(tau, task, seed)] for task in tasks for seed in seeds]
        print(
            f"- τ = {tau:g}: KD-pt − KD {spread([c['kd_pt'] - c['kd'] for c in cells])}; KD-sim − Student "
            f"{spread([c['kd_sim'] - c['student'] for c in cells])}; KD − Student "
            f"{spread([c['kd'] - c['student'] for c in cells])}; Teacher − Student "
            f"{spread([c['teacher'] - c['student'] for c in cells])}"
        )
    low, high = taus[0], taus[-1]
    rise = [
        (accuracy[(high, t, s)]["kd_sim"] - accuracy[(high, t, s)]["student"])
        - (accuracy[(low, t, s)]["kd_sim"] - accuracy[(low, t, s)]["student"])
        for t in tasks
        for s in seeds
    ]
    print(f"- KD-sim − Student at τ = {high:g} minus at τ = {low:g}: {spread(rise)}")


if __name__ == "__main__":
    main(sys.argv[1])
