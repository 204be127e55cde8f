"""Step time of a student run across two worker processes against one process, side by side on one machine.

Trains one synthetic teacher, then alternates the same `--mode=student` run (KD, `--sync_batch_norm`
`--deterministic`) in one process and as two workers started by `kd_tf.launch`, `--repeats` times each.
A run's step time is its recorded training wall time (`wall_time_s`: `fit` with its validation passes, not
the process start) over its training steps. The ratio is two workers over one process, per repeat (the
pair ran back to back), reported as the median. On one machine both workers share its cores and talk over
loopback gRPC, so this measures the cost of the collectives, not a speed-up.

    python benchmarks/multi_worker.py            # synthetic preset sizes, a few minutes on 2 CPU cores
    python benchmarks/multi_worker.py --quick    # tiny sizes
    python benchmarks/multi_worker.py --output runs/multi_worker.md   # also writes runs/multi_worker.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "run.py")

DEFAULT = [
    "--train_examples=5000",
    "--validation_examples=1000",
    "--test_examples=1000",
    "--batch_size=128",
    "--epochs=3",
    "--teacher_epochs=3",
]
QUICK = [
    "--num_classes=8",
    "--num_superclasses=2",
    "--dim=16",
    "--train_examples=512",
    "--validation_examples=128",
    "--test_examples=128",
    "--batch_size=64",
    "--epochs=2",
    "--teacher_epochs=1",
    "--teacher_width=16",
    "--student_width=4",
]
COMMON = ["--taus=0.5", "--progress=none", "--sync_batch_norm", "--deterministic", "--jit_compile=false"]


def _environment() -> dict:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.pop("TF_CONFIG", None)
    return environment


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=3600)
    if completed.returncode:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
            f"stderr:\n{completed.stderr[-3000:]}"
        )


def _step_ms(output_dir: str, sizes: list[str]) -> float:
    with open(os.path.join(output_dir, "results.json")) as handle:
        (record,) = json.load(handle)
    values = dict(flag.lstrip("-").split("=", 1) for flag in sizes if "=" in flag)
    steps = record["epochs"] * (int(values["train_examples"]) // int(values["batch_size"]))
    return 1000.0 * record["wall_time_s"] / steps


def measure(sizes: list[str], repeats: int, directory: str, log=print) -> dict:
    flags = [*sizes, *COMMON]
    teacher = os.path.join(directory, "teacher")
    _run([sys.executable, RUN, *flags, "--mode=teacher", f"--output_dir={teacher}"])
    student = [*flags, "--mode=student", "--method=kd", f"--teacher_dir={teacher}"]
    one, two = [], []
    for repeat in range(repeats):
        single = os.path.join(directory, f"one-{repeat}")
        _run([sys.executable, RUN, *student, f"--output_dir={single}"])
        double = os.path.join(directory, f"two-{repeat}")
        launcher = [sys.executable, "-m", "kd_tf.launch", "--workers=2", "--", sys.executable, RUN]
        _run([*launcher, *student, "--strategy=multi_worker_mirrored", f"--output_dir={double}"])
        one.append(_step_ms(single, sizes))
        two.append(_step_ms(double, sizes))
        log(
            f"repeat {repeat + 1}/{repeats}: one process {one[-1]:.1f} ms/step, two workers {two[-1]:.1f} ms/step"
        )
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    return {
        "flags": [*student[:-1], "--teacher_dir=TEACHER"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "one_process_ms_per_step": one,
        "two_workers_ms_per_step": two,
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
    }


def markdown(result: dict) -> str:
    lines = [
        f"Machine: {result['machine']}. Student run: `{' '.join(result['flags'])}`.",
        "",
        "| | ms per training step (median) |",
        "|---|---|",
        f"| one process | {statistics.median(result['one_process_ms_per_step']):.1f} |",
        f"| two workers (loopback) | {statistics.median(result['two_workers_ms_per_step']):.1f} |",
        f"| ratio two / one, median of {len(result['ratios'])} paired repeats | "
        f"{result['ratio_median']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="paired repeats (default 3; quick 1)")
    parser.add_argument("--output", default=None, help="write the table here (and the numbers as .json)")
    arguments = parser.parse_args(argv)
    if arguments.repeats is not None and arguments.repeats < 1:
        parser.error(f"--repeats must be at least 1. Received: --repeats={arguments.repeats}")
    return arguments


def main(argv=None) -> dict:
    arguments = parse_args(argv)
    repeats = arguments.repeats or (1 if arguments.quick else 3)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        result = measure(QUICK if arguments.quick else DEFAULT, repeats, directory)
    table = markdown(result)
    print("\n" + table + f"\nTotal {time.perf_counter() - start:.0f} s.")
    if arguments.output:
        os.makedirs(os.path.dirname(os.path.abspath(arguments.output)), exist_ok=True)
        with open(arguments.output, "w") as handle:
            handle.write(table)
        with open(os.path.splitext(arguments.output)[0] + ".json", "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
