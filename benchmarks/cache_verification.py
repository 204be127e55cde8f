"""What verifying a teacher cache's payload checksum costs, beside reading the payload (one run, side by side).

`kd_tf.teacher_cache.load_cache` reads the payload file's bytes once more to check their SHA-256 against the
manifest. This prints, for a few payload sizes, the time to read the payload (`np.load`), the time to verify
it, and their ratio, each the best of `--repeats` alternated runs.

    python benchmarks/cache_verification.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_tf.io import sha256_of_file  # noqa: E402


def timed(function, path: str) -> float:
    start = time.perf_counter()
    function(path)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small payloads only (a few seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # (examples, values per example): CIFAR-100's 50,000 x 100 logits, then a ten-times larger payload.
    sizes = [(5_000, 100), (50_000, 100)] if args.quick else [(50_000, 100), (500_000, 100)]
    print("| payload | read (np.load) | verify (SHA-256) | verify / read |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for examples, width in sizes:
            path = os.path.join(directory, "payload.npy")
            np.save(path, np.random.default_rng(0).standard_normal((examples, width), dtype=np.float32))
            read = verify = float("inf")
            for _ in range(args.repeats):  # alternated, so that both meet the same cache state
                read = min(read, timed(np.load, path))
                verify = min(verify, timed(sha256_of_file, path))
            megabytes = os.path.getsize(path) / 2**20
            print(
                f"| {megabytes:,.1f} MB | {read * 1e3:.1f} ms | {verify * 1e3:.1f} ms | {verify / read:.2f} |"
            )


if __name__ == "__main__":
    main()
