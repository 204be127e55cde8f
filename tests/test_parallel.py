"""`--jobs`: a table's cells in worker processes give the records one process gives, in any method order."""

import json
import os
import shlex
import signal
import sys
import time

import cli_process
import pytest
from cli_process import SWEET_SPOT, TINY, check_ok, run_cli, start_cli, wait_for

# 60 teacher epochs (milliseconds each) give a kill time to land while a teacher trains.
# Every test here starts several TensorFlow processes (20–120 s each on two cores).
pytestmark = pytest.mark.slow

TABLE = [*TINY, "--taus=0.2,0.8", "--methods=kd,kd_pt", "--deterministic", "--teacher_epochs=60"]


def records(directory):
    with open(os.path.join(directory, "results.json")) as handle:
        return {(record["tau"], record["method"]): record for record in json.load(handle)}


def same_records(one, other):
    assert one.keys() == other.keys()
    for key in one:
        assert {**one[key], "wall_time_s": 0} == {**other[key], "wall_time_s": 0}, key


@pytest.fixture(scope="module")
def one_job_table(tmp_path_factory):
    """The table trained in one process: what every run with `--jobs=2` must write."""
    sequential = str(tmp_path_factory.mktemp("one_job") / "one")
    check_ok(run_cli([*TABLE, f"--output_dir={sequential}"]))
    return sequential


def test_two_jobs_write_the_one_job_table_and_method_order_does_not_matter(one_job_table, tmp_path):
    parallel = str(tmp_path / "two")
    completed = check_ok(run_cli([*TABLE, "--jobs=2", "--methods=kd_pt,kd", f"--output_dir={parallel}"]))
    assert "2 jobs at a time, 1 thread(s) each (--jobs)." in completed.stdout
    assert completed.stdout.count(" test accuracy ") == 6  # one line per finished cell
    same_records(records(one_job_table), records(parallel))


def test_a_killed_parallel_table_leaves_no_worker_writing_and_resumes_to_the_same_table(
    one_job_table, tmp_path
):
    argv = [*TABLE, "--jobs=2"]
    killed = str(tmp_path / "killed")
    process = start_cli([*argv, f"--output_dir={killed}"])
    pointer = os.path.join(killed, "runs", "tau=0.2", "seed=0", "teacher", "backup", "latest.json")
    wait_for(lambda: os.path.exists(pointer), process=process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    def files():
        return {
            os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(killed)
            for name in names
        }

    time.sleep(2)  # the kernel kills the workers with their parent; give a stray one time to show itself
    before = files()
    time.sleep(3)
    assert files() == before, "a worker kept training after its run was killed"
    check_ok(run_cli([*argv, f"--output_dir={killed}"]))
    same_records(records(one_job_table), records(killed))


def sweep_records(directory):
    """A sweep's `results.json` (its records and their summary), wall times aside."""
    with open(os.path.join(directory, "results.json")) as handle:
        written = json.load(handle)
    return {**written, "records": [{**record, "wall_time_s": 0} for record in written["records"]]}


def test_a_sweep_with_two_jobs_writes_the_one_job_results(tmp_path):
    # Every sweep runs through one runner (`sweeps.SweepExperiment.run`) and the grid engine (`grid.run`), which
    # hands whole groups to the workers. The sweet spot's groups are the most their own (one teacher per group,
    # read at several epoch counts), so it stands for the three; their cells at one job: tests/test_studies.py.
    # README's command word for word (`cli_process.SWEET_SPOT`), then its `--quick` form's flags; two seeds
    # make two groups, each one teacher read at the quick grid's two epoch counts (one batch size of its two).
    argv = [sys.executable, *shlex.split(SWEET_SPOT)[1:], "--quick", "--progress=none", "--seeds=0,1"]
    argv.append("--teacher_batch_sizes=32")
    argv.append("--deterministic")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    check_ok(cli_process.run([*argv, "--jobs=1", f"--output_dir={one}"]))
    completed = check_ok(cli_process.run([*argv, "--jobs=2", f"--output_dir={two}"]))
    assert "2 jobs at a time" in completed.stdout and "Traceback" not in completed.stderr
    assert sweep_records(one) == sweep_records(two)
