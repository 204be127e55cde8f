"""Independent trainings in worker processes: `--jobs` cells of a table or sweep at a time.

The workers are forked from one server process (`multiprocessing`'s `forkserver`), started at the run's first
pool, that has imported TensorFlow, Keras and the project and nothing else: no TensorFlow runtime, no device,
no thread pool, so each fork is safe and starts in a fraction of a second, the libraries' memory shared. A
worker sizes its thread pools so that jobs × threads stays within the machine's cores and trains the cells
it is handed. Cells share nothing in memory: each reads its data and teacher from disk and writes its own run
directory, as a rerun would, so a cell gives the same record whichever process trains it.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator


def default_jobs() -> int:
    """As many jobs as the machine has cores (what `--jobs` defaults to on a machine without accelerators)."""
    return max(1, os.cpu_count() or 1)


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


# What the pool's server imports before it forks a worker: libraries and the project's modules, nothing that
# starts TensorFlow's runtime or probes a device (CUDA cannot be forked once initialised).
PRELOAD = ("tensorflow", "keras", "kd_tf", "data", "models")


def _start_worker(threads: int, deterministic: bool, precision: str, quiet: bool, run: int) -> None:
    _die_with_run(run)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    with _quiet(quiet):
        import keras
        import tensorflow as tf

        import kd_tf  # noqa: F401 (registers the saved models' layers)
        from kd_tf import runtime
    runtime.quiet_retracing_warnings()
    gc.freeze()  # the libraries' objects, kept for the worker's life: left out of its garbage collections
    # The pool's end (a SIGTERM to the run, Ctrl-C, a failed cell) SIGTERMs its workers: a cell in training
    # saves its step and stops; an idle worker just goes.
    runtime.catch_terminations(exit_at_once=True)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(precision)


def _die_with_run(run: int) -> None:
    """Kills this worker when the run's process ends, however it ends: a SIGKILLed run must not leave workers
    writing into its directory. The worker's parent is the pool's server, which outlives the run while any
    worker lives, so a thread waits on the run itself: on its pid file descriptor (Linux ≥ 5.3), which turns
    readable when the process ends, or else by polling its pid."""
    try:
        handle = os.pidfd_open(run)
    except ProcessLookupError:
        os._exit(1)  # the run was gone before this worker started
    except (AttributeError, OSError):
        handle = None

    def watch():
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(run):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-run", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, under another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def _quiet(quiet: bool):
    """Hides what TensorFlow's C++ side prints while it loads (as `run.py` does in its own process)."""
    if not quiet:
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_unordered(
    function: Callable,
    items: Iterable,
    jobs: int,
    *,
    deterministic: bool,
    precision: str,
    quiet: bool = True,
    then: Callable[[object, object], Iterable] | None = None,
    start_method: str = "forkserver",
) -> Iterator:
    """`function(item)` for every item in `jobs` worker processes; yields `(item, result)` as each finishes.

    `then(item, result)`, when given, returns the items that may start once `item` has finished (a teacher's
    students); they run in the same workers, after the items already waiting. An exception in a cell is
    raised here (the other cells stop); Ctrl-C stops every worker. `start_method` is `multiprocessing`'s
    (`"spawn"`: every worker a new interpreter, as `benchmarks/pool_start.py` compares).
    """
    items = list(items)
    if not items:
        return
    if start_method not in multiprocessing.get_all_start_methods():  # no fork server on Windows
        start_method = "spawn"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(list(PRELOAD))
    initargs = (threads_per_job(jobs), deterministic, precision, quiet, os.getpid())
    pool = context.Pool(jobs, initializer=_start_worker, initargs=initargs)
    finished = queue.SimpleQueue()
    running = 0

    def submit(item):
        nonlocal running
        running += 1
        pool.apply_async(
            function,
            (item,),
            callback=lambda result: finished.put((item, result, None)),
            error_callback=lambda error: finished.put((item, None, error)),
        )

    try:
        for item in items:
            submit(item)
        while running:
            try:
                item, result, error = finished.get(timeout=0.2)  # a timeout keeps Ctrl-C deliverable
            except queue.Empty:
                continue
            running -= 1
            if error is not None:
                raise error
            yield item, result
            for follower in then(item, result) if then else ():
                submit(follower)
    finally:
        # Every result is in (or the run is stopping): the workers are stopped rather than left to unload
        # TensorFlow one by one, which takes longer than a small cell.
        _stop(pool)


def _stop(pool, patience_s: float = 5.0, grace_s: float = 120.0) -> None:
    """`pool.terminate()` (each worker SIGTERMed once, then joined), watched: a worker has been seen to lose
    that SIGTERM while idle, and the pool then waits for it forever. After `patience_s`, every worker still
    alive is SIGTERMed again each second (a second SIGTERM during a step's save is ignored, so a cell that
    is saving finishes it), and SIGKILLed after `grace_s`. The watch starts late on purpose: an idle worker
    holds the pool's task-queue lock until the pool's own stop takes it, and a worker killed before that
    would leave the lock taken."""
    workers = list(getattr(pool, "_pool", ()))
    done = threading.Event()

    def watch():
        start = time.monotonic()
        if done.wait(patience_s):
            return
        while not done.wait(1.0):
            alive = [worker for worker in workers if worker.exitcode is None]
            for worker in alive:
                if time.monotonic() - start > grace_s:
                    worker.kill()
                else:
                    worker.terminate()

    watcher = threading.Thread(target=watch, name="pool-stop-watch", daemon=True)
    watcher.start()
    try:
        pool.terminate()
        pool.join()
    finally:
        done.set()
        watcher.join()
