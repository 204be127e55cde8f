"""The base install (`pip install -e .`, no extra), as README's first command leaves it: in a new process where
every package of `setup.py`'s extras is unimportable, `--help`, `--dry_run` of every flagfile and the default
run work, and a dataset that needs an extra is refused with its install command."""

import importlib.metadata
import os
import re
import subprocess
import sys

import pytest
from cli_process import ROOT, check_ok, environment, run_cli
from test_documented_commands import SYNTHETIC

_BLOCKER = '''import sys

BLOCKED = {blocked!r}


class _Blocker:
    """Refuses the packages that only an extra of setup.py installs."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def extras_import_names() -> set[str]:
    """The top-level import names of every package that an extra of kd_tf's setup.py asks for."""
    extra_only = {
        re.split(r"[<>=;\[ ]", requirement)[0].lower()
        for requirement in importlib.metadata.requires("kd_tf") or []
        if "extra ==" in requirement
    }
    return {
        name
        for name, distributions in importlib.metadata.packages_distributions().items()
        if any(distribution.lower() in extra_only for distribution in distributions)
    }


@pytest.fixture(scope="module")
def base_env(tmp_path_factory):
    """A process environment whose `sitecustomize` makes every extra's packages unimportable."""
    blocked = extras_import_names()
    assert {"sklearn", "pytest", "xdist"} <= blocked  # the extras as setup.py declares them today
    directory = tmp_path_factory.mktemp("base_install")
    (directory / "sitecustomize.py").write_text(_BLOCKER.format(blocked=sorted(blocked)))
    env = environment()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user's shell has it: run.py then quiets TensorFlow's start itself
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), env.get("PYTHONPATH")]))
    probe = subprocess.run(
        [sys.executable, "-c", "import sklearn"], env=env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 1 and "No module named 'sklearn'" in probe.stderr
    return env


@pytest.mark.slow
def test_help_and_the_plan_of_every_flagfile_need_no_extra(base_env, tmp_path):
    helped = run_cli(["--help"], env=base_env)
    assert helped.returncode == 1 and "--dataset" in helped.stdout, helped.stderr[-2000:]
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    probe = check_ok(
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tests", "base_install_probe.py")],
            cwd=tmp_path,
            env=base_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    )
    planned = {line.split()[1] for line in probe.stdout.splitlines() if line.startswith("ok ")}
    commands = {
        name for name in os.listdir(os.path.join(ROOT, "configs")) if not name.endswith("_recipe.flags")
    }
    assert planned == commands
    assert "imported optional: []" in probe.stdout
    assert os.listdir(tmp_path) == ["configs"]  # no run directory, no staging, no lock


@pytest.mark.slow
def test_the_default_run_on_the_base_install(base_env, tmp_path):
    output = tmp_path / "table"
    check_ok(
        run_cli(
            [*SYNTHETIC, "--taus=0.8", "--methods=student,kd", "--jobs=1", f"--output_dir={output}"],
            cwd=tmp_path,
            env=base_env,
        )
    )
    assert {"results.md", "results.json", "results.csv", "results.png"} <= set(os.listdir(output))


@pytest.mark.slow
def test_a_dataset_that_needs_an_extra_is_refused_with_its_install_command(base_env, tmp_path):
    hint = 'needs scikit-learn, which is not installed (install it with: pip install -e ".[digits]")'
    refused = run_cli(["--dataset=digits", f"--output_dir={tmp_path / 'digits'}"], cwd=tmp_path, env=base_env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"Error: --dataset=digits {hint}."]
    assert os.listdir(tmp_path) == []
    planned = check_ok(run_cli(["--flagfile=configs/digits_table.flags", "--dry_run"], env=base_env))
    assert f"--dataset=digits {hint}." in planned.stdout.split("Missing before this command can run:")[1]
