"""What starting `--jobs` workers costs: forked from a server that has imported TensorFlow (the default),
against a new interpreter each (`spawn`), side by side in one run.

Each measurement is a new interpreter that, like `run.py`, has imported TensorFlow and the project, then
times `kd_tf.parallel.run_unordered` of a trivial cell per worker: the first pool (which, forked, includes
starting the server), then a second pool in the same process (a sweep's next group; the server is up).
Prints the best of `--repeats` alternated runs of each and their ratio.

    python benchmarks/pool_start.py [--jobs N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MEASURE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import tensorflow, keras, kd_tf
from kd_tf import parallel
times = []
for _ in range(2):
    start = time.perf_counter()
    list(parallel.run_unordered(abs, range({jobs}), {jobs}, deterministic=False, precision="float32",
                                start_method={method!r}))
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def measure(method: str, jobs: int) -> list[float]:
    """Seconds of the first and second pool of `jobs` workers in a new interpreter."""
    code = _MEASURE.format(root=ROOT, jobs=jobs, method=method)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=600
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for name in ("jobs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1. Received: --{name}={getattr(args, name)}")
    best = {"spawn": [float("inf")] * 2, "forkserver": [float("inf")] * 2}
    for _ in range(args.repeats):  # alternated, so that both meet the same load
        for method in best:
            best[method] = [min(a, b) for a, b in zip(best[method], measure(method, args.jobs), strict=True)]
    print(f"{args.jobs} workers, a trivial cell each; best of {args.repeats}")
    print("| pool | spawn | forkserver (default) | spawn / forkserver |")
    print("|---|---|---|---|")
    for index, name in enumerate(("first", "second")):
        spawned, forked = best["spawn"][index], best["forkserver"][index]
        print(f"| {name} | {spawned:.2f} s | {forked:.2f} s | {spawned / forked:.1f} |")


if __name__ == "__main__":
    main()
