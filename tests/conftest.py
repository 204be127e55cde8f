"""Test setup: quiet TensorFlow, two logical CPUs for MirroredStrategy tests, fixed seeds, the libraries'
objects frozen out of garbage collection."""

import gc
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

keras = tf = None  # imported by `pytest_configure` in each process that runs tests


def pytest_configure(config):
    """TensorFlow and Keras in the processes that run tests, not in pytest-xdist's controller, which only hands
    tests out: its import would delay every worker's start by as long."""
    global keras, tf
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import keras
    import tensorflow as tf

    # The 400,000-odd objects of the libraries just imported live as long as the test process. Frozen, they
    # are left out of every garbage collection (`benchmarks/gc_freeze.py` times a full one before and after).
    # The tests' own objects are collected as before.
    gc.freeze()
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from float32, a cleared Keras session and fixed seeds.

    The session is cleared without `clear_session`'s full garbage collection: that walks every object the
    process has made since its freeze (mostly what its tests traced: about 300,000 after three test files,
    137 ms a collection on average, `benchmarks/per_test_gc.py`), and Python's own collector frees the tests'
    cycles all the same."""
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def strategies():
    """One single-device and one two-replica strategy over the two logical CPUs, shared by the session.

    One MirroredStrategy for the whole run: several instances in one process can collide on collective keys.
    """
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    return tf.distribute.OneDeviceStrategy(devices[0]), tf.distribute.MirroredStrategy(devices)


def pytest_collection_modifyitems(config, items):
    """The `slow` tests at the head of each half of the run, about half of them in each: `--dist worksteal`
    (pyproject.toml) gives each of two workers one contiguous half and lets an idle worker take the tail of
    the other's queue, so the long tests start early on both workers and the short ones fill the end. A
    module's slow tests stay together, so that its module-scoped fixtures (a table trained once for several
    checks) are built once, not again each time the worker comes back to the module."""
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    by_module = {}
    for item in slow:
        by_module.setdefault(item.module.__name__, []).append(item)
    halves = ([], [])
    for group in sorted(by_module.values(), key=len, reverse=True):
        min(halves, key=len).extend(group)
    half = len(fast) // 2
    items[:] = halves[0] + fast[:half] + halves[1] + fast[half:]
