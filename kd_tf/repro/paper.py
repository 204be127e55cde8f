"""The paper's published numbers (shared/PAPER.md), placed beside ours in the tables a run writes.

Accuracies in %, perplexities as printed. Table 2's ± is the spread over the paper's runs.
"""

from __future__ import annotations

import numpy as np

# Table 1 (synthetic): the paper's τ values and task sizes were lost; only "low / mid / high τ" remain.
TABLE1_COLUMNS = ("low τ", "mid τ", "high τ")
TABLE1 = {
    "Teacher": (54.82, 60.60, 61.53),
    "Student": (38.45, 42.81, 47.10),
    "KD": (55.97, 56.95, 57.70),
    "KD-pt": (57.05, 56.99, 56.25),
    "KD-sim": (51.90, 53.69, 57.20),
}

# Table 2 (mean, std), with Table 6's KD-rel rows for CIFAR-100.
TABLE2 = {
    "cifar100": {
        "Teacher": (75.68, 0.42),
        "Student": (72.51, 0.27),
        "LS": (73.87, 0.16),
        "KD": (75.94, 0.26),
        "KD-pt": (75.08, 0.16),
        "KD-sim": (74.30, 0.17),
        "KD-pt+sim": (75.24, 0.17),
        "KD-topk": (76.17, 0.25),
        "KD-rel": (74.14, None),
        "KD-pt+rel": (75.07, None),
    },
    "imagenet": {
        "Teacher": (77.98, 0.12),
        "Student": (76.34, 0.11),
        "LS": (76.83, 0.07),
        "KD": (77.49, 0.07),
        "KD-pt": (77.00, 0.08),
        "KD-sim": (76.95, 0.07),
        "KD-pt+sim": (77.17, 0.08),
        "KD-topk": (77.85, 0.03),
    },
}

# Table 4: CIFAR-100 from a ResNet-56 teacher trained with label smoothing (the "with LS" column).
TABLE4_LS_TEACHER = {"Teacher": 76.69, "KD": 75.02, "KD-pt": 74.13, "KD-sim": 74.01}

# Table 3: PTB perplexity (validation, test).
TABLE3 = {
    "Teacher": (60.90, 58.58),
    "Student": (64.17, 61.55),
    "KD": (64.04, 61.33),
    "KD-topk": (63.59, 60.85),
}


def accuracy_column(dataset: str, label_smoothed_teacher: bool = False) -> dict[str, tuple]:
    """Row label -> the paper's (accuracy, spread or `None`) for a table of `dataset` (empty if none)."""
    if dataset == "cifar100" and label_smoothed_teacher:
        return {row: (value, None) for row, value in TABLE4_LS_TEACHER.items()}
    return dict(TABLE2.get(dataset, {}))


def gap_rows(means: dict[str, float]) -> list[tuple[str, str]]:
    """The teacher–student gap and KD's share of it, from row label -> accuracy (%); `[]` without them."""
    teacher, student, kd = (means.get(name, np.nan) for name in ("Teacher", "Student", "KD"))
    if not (np.isfinite(teacher) and np.isfinite(student)):
        return []
    gap = teacher - student
    rows = [("Teacher − Student (points)", f"{gap:+.2f}")]
    if np.isfinite(kd) and gap != 0:
        rows.append(("KD's share of the gap", f"{100 * (kd - student) / gap:.0f} %"))
    return rows


def table1_markdown() -> str:
    """The paper's Table 1 with its gap rows, as a markdown block."""
    lines = ["| method | " + " | ".join(TABLE1_COLUMNS) + " |", "|---" * (len(TABLE1_COLUMNS) + 1) + "|"]
    for row, values in TABLE1.items():
        lines.append(f"| {row} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    per_column = [gap_rows({row: values[i] for row, values in TABLE1.items()}) for i in range(3)]
    for k, (name, _) in enumerate(per_column[0]):
        lines.append(f"| {name} | " + " | ".join(column[k][1] for column in per_column) + " |")
    return "\n".join(lines) + "\n"
