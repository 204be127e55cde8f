"""What a full garbage collection before each test costs the tests, side by side in one run.

`tests/conftest.py` clears the Keras session before each test without `clear_session()`'s full collection
(`free_memory=False`): a test process keeps what its tests traced, and a full collection walks all of it.
This runs the same test files in one process (`pytest -n 0`) twice per repeat, alternated: as they are, and
with a full `gc.collect()` before each test (what `clear_session()` did). It prints the best session time of
each with their ratio, the collections' own time and the objects the process held at its end (those made
after the test process's `gc.freeze()`, which collections walk).

    python benchmarks/per_test_gc.py      # tests/test_configs.py, test_run.py and test_losses.py, minutes
    python benchmarks/per_test_gc.py --files tests/test_mlp.py --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
FILES = ["tests/test_configs.py", "tests/test_run.py", "tests/test_losses.py"]
_MODE, _OUTPUT = (
    "PER_TEST_GC_MODE",
    "PER_TEST_GC_OUTPUT",
)  # set for the pytest process this file is a plugin of


# As a pytest plugin (`-p per_test_gc`), in the test process.
_measured = {"tests": 0, "collections_s": 0.0}


def pytest_sessionstart(session):
    del session
    _measured["start"] = time.perf_counter()


def pytest_runtest_setup(item):
    del item
    _measured["tests"] += 1
    if os.environ.get(_MODE) == "collect":
        start = time.perf_counter()
        gc.collect()
        _measured["collections_s"] += time.perf_counter() - start


def pytest_sessionfinish(session, exitstatus):
    del session
    if os.environ.get(_OUTPUT):
        _measured.update(
            session_s=time.perf_counter() - _measured["start"],
            objects=len(gc.get_objects()),
            exit=int(exitstatus),
        )
        with open(os.environ[_OUTPUT], "w") as handle:
            json.dump(_measured, handle)


def _run(files: list[str], mode: str, directory: str) -> dict:
    output = os.path.join(directory, f"{mode}.json")
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")])
        ),
        _MODE: mode,
        _OUTPUT: output,
    }
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "per_test_gc", *files]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if completed.returncode or not os.path.exists(output):
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stdout[-3000:]}"
        )
    with open(output) as handle:
        return json.load(handle)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=FILES, help="test files, relative to the checkout")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1. Received: --repeats={args.repeats}")
    missing = [path for path in args.files if not os.path.isfile(os.path.join(ROOT, path))]
    if missing:
        parser.error(f"--files: no such test file under {ROOT}: {', '.join(missing)}")
    best = {}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.repeats):  # alternated, so that both meet the same load
            for mode in ("keep", "collect"):
                result = _run(args.files, mode, directory)
                if mode not in best or result["session_s"] < best[mode]["session_s"]:
                    best[mode] = result
    keep, collect = best["keep"], best["collect"]
    print(
        f"{' '.join(args.files)}: {keep['tests']} tests in one process, best of {args.repeats}, "
        f"{os.cpu_count()} CPU(s):\n"
    )
    print("| | as the tests run | a full collection before each test | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| session | {keep['session_s']:.1f} s | {collect['session_s']:.1f} s | "
        f"{collect['session_s'] / keep['session_s']:.2f} |"
    )
    mean_ms = 1000 * collect["collections_s"] / max(1, collect["tests"])
    print(
        f"\nThe {collect['tests']} collections took {collect['collections_s']:.1f} s ({mean_ms:.0f} ms each on "
        f"average); the process held {collect['objects']:,} objects at its end ({keep['objects']:,} as the "
        "tests run)."
    )
    return best


if __name__ == "__main__":
    main()
