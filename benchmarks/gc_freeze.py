"""What freezing the libraries' objects out of garbage collection (`gc.freeze()`) saves, side by side in one run.

After TensorFlow's import a process holds about 400,000 objects that live as long as it does. A full garbage
collection walks all of them: the collections at an interpreter's exit, and the one of
`keras.backend.clear_session()`, which the figures and the KD-topk sweep call (`benchmarks/per_test_gc.py`:
what it cost before each test). `run.py`, the `--jobs` workers, the test processes and the tests' command
server freeze them.

Two measurements, alternated `--repeats` times, the best of each printed with their ratio:
- `python run.py --dry_run` in a new interpreter, as it is and with `gc.freeze` made a no-op (wall seconds,
  the exit included);
- `keras.backend.clear_session()` after the libraries' imports, in a new interpreter, before and after
  `gc.freeze()` (seconds per call, the mean of 5).

    python benchmarks/gc_freeze.py [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "run.py")

_UNFROZEN_RUN = (
    "import gc, runpy, sys; gc.freeze = lambda: None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
_CLEAR_SESSION = """
import gc, json, time
import keras, tensorflow
times = {}
for name in ("unfrozen", "frozen"):
    if name == "frozen":
        gc.freeze()
    start = time.perf_counter()
    for _ in range(5):
        keras.backend.clear_session()
    times[name] = (time.perf_counter() - start) / 5
print(json.dumps(times))
"""


def _environment() -> dict:
    return {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}


def _dry_run(frozen: bool) -> float:
    prefix = [sys.executable] if frozen else [sys.executable, "-c", _UNFROZEN_RUN]
    start = time.perf_counter()
    subprocess.run(
        [*prefix, RUN, "--dry_run"],
        cwd=ROOT,
        env=_environment(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - start


def _clear_session() -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _CLEAR_SESSION],
        env=_environment(),
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1. Received: --repeats={args.repeats}")
    best = {name: float("inf") for name in ("run_unfrozen", "run_frozen", "clear_unfrozen", "clear_frozen")}
    for _ in range(args.repeats):  # alternated, so that both meet the same load
        best["run_unfrozen"] = min(best["run_unfrozen"], _dry_run(frozen=False))
        best["run_frozen"] = min(best["run_frozen"], _dry_run(frozen=True))
        cleared = _clear_session()
        best["clear_unfrozen"] = min(best["clear_unfrozen"], cleared["unfrozen"])
        best["clear_frozen"] = min(best["clear_frozen"], cleared["frozen"])
    print(f"Best of {args.repeats}, {os.cpu_count()} CPU(s):\n")
    print("| measure | unfrozen | frozen | ratio |")
    print("|---|---:|---:|---:|")
    rows = (
        ("`run.py --dry_run`, new interpreter", "run", 1, "s"),
        ("`clear_session()`", "clear", 1000, "ms"),
    )
    for label, key, scale, unit in rows:
        unfrozen, frozen = best[f"{key}_unfrozen"], best[f"{key}_frozen"]
        print(
            f"| {label} | {scale * unfrozen:.2f} {unit} | {scale * frozen:.2f} {unit} | {unfrozen / frozen:.1f} |"
        )
    return best


if __name__ == "__main__":
    main()
