"""kd_tf installed as users install it (`pip install .`, not editable) and run as its console script `kd_tf`
from a directory outside the checkout."""

import os
import shutil
import subprocess
import sys

import pytest
from cli_process import ROOT, check_ok, environment
from test_documented_commands import SYNTHETIC

# What `setup.py` packages: the library, the models, the pipelines and the entry script.
SOURCES = ["setup.py", "pyproject.toml", "README.md", "run.py", "kd_tf", "models", "data"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A virtual environment holding a non-editable install of a copy of the checkout.

    It sees the machine's packages (TensorFlow and the rest: the test installs nothing from the network),
    while its own copy of kd_tf, models, data and run comes first on its path.
    """
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}
        copy(os.path.join(ROOT, name), source / name, **kwargs)
    venv = work / "venv"
    check_ok(
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
            capture_output=True,
            text=True,
        )
    )
    python = str(venv / "bin" / "python")
    check_ok(
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    shutil.rmtree(source)  # what runs now is the installed copy, or nothing
    env = environment()
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env["PATH"]])
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return env, elsewhere, venv


def _run(command, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_console_script_of_a_non_editable_install_runs_from_another_directory(installed):
    env, elsewhere, venv = installed
    # Where `import` finds each top-level name the install provides (found, not run: no TensorFlow import).
    where = check_ok(
        _run(
            [
                "python",
                "-c",
                "import importlib.util as u; print(*(u.find_spec(n).origin for n in ('kd_tf', 'run', 'models', 'data')))",
            ],
            env,
            elsewhere,
        )
    )
    found = where.stdout.split()
    assert len(found) == 4 and all(path.startswith(str(venv)) for path in found), where.stdout

    helped = _run(["kd_tf", "--helpfull"], env, elsewhere)
    assert helped.returncode == 1 and "--teacher_cache" in helped.stdout and "--dataset" in helped.stdout

    check_ok(_run(["kd_tf", *SYNTHETIC, "--taus=0.8", "--methods=student,kd", "--jobs=1"], env, elsewhere))
    assert os.path.isfile(elsewhere / "runs" / "synthetic_table1" / "results.md")

    # A flagfile given by its path from another directory (one that includes no recipe file).
    flagfile = os.path.join(ROOT, "configs", "synthetic_table1.flags")
    check_ok(
        _run(
            [
                "kd_tf",
                f"--flagfile={flagfile}",
                *SYNTHETIC,
                "--seeds=0",
                "--taus=0.8",
                "--methods=kd",
                "--jobs=1",
            ],
            env,
            elsewhere,
        )
    )
    assert os.path.isfile(elsewhere / "runs" / "synthetic_table1_3seeds" / "results.md")
