"""Every command printed in README.md and BUILD.md, run as a user would: a new process, at a tiny size.

The commands run in a scratch directory that links `run.py`, `configs/` and `benchmarks/` from the repository,
so a command's own relative paths (`runs/...`, `configs/...`) work unchanged and nothing lands in the checkout.
Flags appended to a command override its flagfile's (absl keeps the last value), which makes it tiny. A
command that cannot run here must match a row of BUILD.md's "Commands the tests do not run", with its reason.
"""

import fnmatch
import os
import re
import shlex
import sys

import cli_process
import pytest
import tiny
from cli_process import ROOT

from kd_tf.repro import experiments

# Tiny versions: the synthetic preset's sizes, a one-window PTB epoch, two-step digits epochs.
# README's first command (`python run.py`, in tests/test_run.py) and the word-for-word quick data-efficiency
# sweep run with the default `--jobs` (one worker per core), as users run them; the other commands at
# `--jobs=1`, in their own process: a pool's start costs seconds of CPU, and tests/test_parallel.py checks that
# the pool writes what one process writes.
ONE_JOB = ["--jobs=1"]
SYNTHETIC = [
    *(flag for flag in tiny.SYNTHETIC if not flag.startswith("--jobs")),
    "--epochs=1",
    "--teacher_epochs=1",
    "--topk=3",
    "--rel_target=0.5",
    "--rel_sibling=0.1",
]
FIGURES = [  # the figure pipeline keeps 40 classes (its KD-topk sweep goes up to k = 40)
    "--taus=0.9",  # the column the KD-topk sweep reads; tests/test_figures.py analyses two
    "--train_examples=512",
    "--validation_examples=256",
    "--test_examples=256",
    "--teacher_width=16",
    "--student_width=8",
    "--teacher_epochs=1",
    "--epochs=1",
    "--progress=none",
    "--jit_compile=false",
    *ONE_JOB,
]
PTB = [
    "--embedding_size=16",
    "--hidden_size=24",
    "--epochs=1",
    "--max_windows_per_epoch=3",
    "--bptt=12",
    "--progress=none",
]
DIGITS = [
    "--steps_per_epoch=2",
    "--epochs=1",
    "--teacher_epochs=1",
    "--batch_size=32",
    "--progress=none",
    *ONE_JOB,
]
# ResNet-8 for the flagfiles' ResNet-56 and ResNet-20: the same family and path, a fraction of the tracing.
SMALL_RESNETS = ["--teacher_model=resnet8", "--student_model=resnet8"]
FASHION = [  # generated Fashion-MNIST-format files (240 training images), one epoch of 6 steps, one seed
    "--data_dir=runs/fashion_mnist_toy",
    "--epochs=1",
    "--lr_boundary_epochs=0.5,0.75",
    "--batch_size=32",
    "--seeds=0",
    "--progress=none",
    "--jobs=1",  # every cell in the run's own process: no worker start-ups (the table path is the same)
]
MAKE_FASHION_TOY = "python -c \"import data.fashion_mnist as f; f.write_toy_data('runs/fashion_mnist_toy')\""
QUICK = ["--quick", "--progress=none"]
# A flagfile's values beat `--quick` (a preset), so a documented sweep flagfile is made tiny by `--quick`'s
# values given as flags, which beat the flagfile's.
QUICK_AS_FLAGS = {
    mode: [
        *QUICK,
        *(f"--{name}={','.join(map(str, v)) if isinstance(v, list) else v}" for name, v in values.items()),
    ]
    for mode, values in ((mode, experiments.get(mode).quick) for mode in experiments.names())
    if values
}
PTB_DATA = "runs/ptb_toy_data"  # what `DIR` and `~/ptb` stand for here
SUBSTITUTIONS = {"--data_dir=DIR": f"--data_dir={PTB_DATA}", "--data_dir=~/ptb": f"--data_dir={PTB_DATA}"}
MAKE_TOY_CORPUS = (
    'python -c "import data.ptb as p; '
    "p.write_toy_corpus('runs/ptb_toy_data', train_lines=3000, valid_lines=300, test_lines=300)\""
)

# Each documented command (as its words) -> what the tiny run appends, in the order the runs go.
GROUPS = {
    "synthetic": [
        # `python run.py`: tests/test_run.py (`RUN_ELSEWHERE`), at the default `--jobs`.
        (
            "python run.py --flagfile=configs/synthetic_table1.flags",
            [*SYNTHETIC, "--methods=kd", "--taus=0.8", "--seeds=0,1", *ONE_JOB],  # two seeds: mean ± std
        ),
        (
            "python run.py --flagfile=configs/synthetic_table1_tasks.flags",
            [*SYNTHETIC, "--methods=kd", "--seeds=0", "--task_seeds=0,1", "--taus=0.8", *ONE_JOB],
        ),
        ("python run.py --helpfull", [], 1),  # absl's help flags exit with 1
    ],
    "sweeps": [  # the first two also run the documented `... --quick` commands word for word
        ("python run.py --mode=data_efficiency", ["--quick"]),
        # `python run.py --mode=sweet_spot --quick`: tests/test_parallel.py (`RUN_ELSEWHERE`).
        (
            "python run.py --flagfile=configs/data_efficiency_difficulty.flags",
            [*QUICK_AS_FLAGS["data_efficiency"], *ONE_JOB],
        ),
        # `python run.py --flagfile=configs/regime_map.flags`: tests/test_regime_map.py (`RUN_ELSEWHERE`).
    ],
    "digits": [
        ("python run.py --flagfile=configs/digits_table.flags", [*DIGITS, *SMALL_RESNETS]),
        (
            "python run.py --flagfile=configs/digits_teacher_wins.flags",
            [*DIGITS, "--teacher_model=resnet8", "--seeds=0", "--lr_boundary_epochs=0.5,0.75"],
        ),
    ],
    "fashion_mnist": [
        (MAKE_FASHION_TOY, []),
        (  # the methods the paired comparisons below read
            "python run.py --flagfile=configs/fashion_mnist_table.flags",
            [*FASHION, "--methods=student,ls,kd,kd_pt,kd_pt_sim,kd_topk"],
        ),
        ("python run.py --flagfile=configs/fashion_mnist_ls_teacher.flags", FASHION),
        (
            "python -m kd_tf.repro.paired runs/fashion_mnist_table/results.json kd-student kd-ls kd_topk-kd "
            "kd_pt_sim-kd_pt",
            [],
        ),
        (
            "python -m kd_tf.repro.paired runs/fashion_mnist_ls_teacher/results.json teacher-teacher kd-kd "
            "kd_pt-kd_pt kd_sim-kd_sim --against runs/fashion_mnist_table/results.json",
            [],
        ),
    ],
    "dry_run": [("python run.py --flagfile=configs/cifar100_resnet20_kd_topk.flags --dry_run", [])],
    "ptb": [
        (MAKE_TOY_CORPUS, []),
        ("python run.py --flagfile=configs/ptb_teacher.flags --data_dir=DIR", PTB),
        ("python run.py --flagfile=configs/ptb_student.flags --data_dir=DIR", PTB),
        ("python run.py --flagfile=configs/ptb_kd.flags --data_dir=DIR", [*PTB, "--learning_rate=20"]),
        ("python run.py --flagfile=configs/ptb_kd_topk.flags --data_dir=DIR", [*PTB, "--learning_rate=20"]),
        ("python run.py --flagfile=configs/ptb_kd_topk.flags --data_dir=~/ptb", [*PTB, "--overwrite"]),
        ("python run.py --flagfile=configs/ptb_toy_teacher.flags", PTB),
        ("python run.py --flagfile=configs/ptb_toy_kd_topk.flags", PTB),
        ("python run.py --flagfile=configs/ptb_toy_student.flags", PTB),
    ],
    "figures": [
        (
            "python run.py --output_dir=runs/fig --taus=0.0,0.9 --methods=student,ls,kd,kd_pt,kd_topk "
            "--difficulty=0 --teacher_width=256 --student_width=32 --train_examples=10000 "
            "--validation_examples=2000 --test_examples=5000 --teacher_epochs=10 --epochs=20",
            FIGURES,
        ),
        (
            "python run.py --output_dir=runs/fig_ls --teacher_label_smoothing=0.1 --methods=kd,kd_pt "
            "--taus=0.0,0.9 --difficulty=0 --teacher_width=256 --student_width=32 --train_examples=10000 "
            "--validation_examples=2000 --test_examples=5000 --teacher_epochs=10 --epochs=20",
            FIGURES,
        ),
        (
            "python -c \"from kd_tf import training; from kd_tf.repro import topk_sweep; topk_sweep.run('runs/fig', "
            '[1, 2, 3, 5, 10, 20, 40], columns=[0.9], train_config=training.TrainConfig(verbose=0))"',
            [],
        ),
        (
            "python -c \"from kd_tf.repro import figures; figures.analyze_run(figures.AnalysisRequest('runs/fig', "
            "ls_run_dir='runs/fig_ls', temperatures=(1, 4), topk=5))\"",
            [],
        ),
        # A heading's short form, with the flags that make it the long form word for word: one run for both.
        ("python run.py --mode=analyze", ["--output_dir=runs/fig", "--methods=kd"]),
    ],
    # BUILD.md's two-worker table runs in tests/test_multi_worker.py (`RUN_ELSEWHERE`).
    "multi_worker": [("python benchmarks/multi_worker.py", ["--quick"])],
    "benchmarks": [
        # `python benchmarks/throughput.py --quick`: tests/test_benchmarks.py (`RUN_ELSEWHERE`).
        ("python benchmarks/gc_freeze.py", ["--repeats=1"]),
        ("python benchmarks/per_test_gc.py", ["--files", "tests/test_mlp.py", "--repeats=1"]),
        # BUILD.md's `--breakdown --output` command: tests/test_benchmarks.py (`RUN_ELSEWHERE`).
    ],
}


# Documented commands that another test runs at a tiny size, word for word with what it appends after them
# (the words and those flags may be documented commands too), for checks of its own: (the command's name in
# cli_process, the flags, the test module that runs it).
RUN_ELSEWHERE = [
    ("README_RUN", [], "test_run.py"),  # test_tiny_table_writes_well_formed_results
    ("LAUNCH_TABLE", [], "test_multi_worker.py"),  # fixture `tables`
    ("THROUGHPUT_BREAKDOWN", [], "test_benchmarks.py"),  # test_every_variant_on_the_mlp_pair
    ("THROUGHPUT_QUICK", [], "test_benchmarks.py"),  # test_xla_on_and_off_side_by_side
    ("SWEET_SPOT", ["--quick"], "test_parallel.py"),  # test_a_sweep_with_two_jobs_writes_the_one_job_results
    ("REGIME_MAP", [*QUICK_AS_FLAGS["regime_map"], *ONE_JOB], "test_regime_map.py"),  # the quick map
]

PROGRAMS = ("python", "tensorboard")  # the commands a reader is told to run


def _words(text: str) -> tuple:
    return tuple(shlex.split(text))


def documented_commands() -> set:
    """The words of every `python ...` and `tensorboard ...` command in README.md and BUILD.md (code lines
    and inline spans)."""
    found = set()
    for name in ("README.md", "BUILD.md"):
        text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        in_code = False
        pending = ""
        for line in text.splitlines():
            if line.startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if in_code:
                line = pending + line
                if line.rstrip().endswith("\\"):
                    pending = line.rstrip()[:-1] + " "
                    continue
                pending = ""
                words = shlex.split(line, comments=True)
                while set(PROGRAMS) & set(words):
                    words = words[min(words.index(p) for p in PROGRAMS if p in words) :]
                    end = words.index("&&") if "&&" in words else len(words)
                    found.add(tuple(words[:end]))
                    words = words[end:]
            else:
                for span in re.findall(r"`((?:python|tensorboard) [^`]*)`", line):
                    found.add(_words(span))
    return found


def not_run_patterns() -> list:
    """The command patterns of BUILD.md's "Commands the tests do not run" table."""
    text = open(os.path.join(ROOT, "BUILD.md"), encoding="utf-8").read()
    section = text.split("### Commands the tests do not run", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_every_documented_command_is_run_here_or_listed_with_its_reason():
    commands = {_words(command) for group in GROUPS.values() for command, *_ in group}
    commands |= {_words(getattr(cli_process, name)) for name, *_ in RUN_ELSEWHERE}
    # A documented command is run here as it is, or as one of these commands with the flags appended to it.
    as_run = {(*_words(command), *extra) for group in GROUPS.values() for command, extra, *_ in group}
    as_run |= {(*_words(getattr(cli_process, name)), *extra) for name, extra, _ in RUN_ELSEWHERE}
    patterns = not_run_patterns()
    assert patterns, "BUILD.md lists no commands that the tests do not run"
    unaccounted = [
        " ".join(words)
        for words in documented_commands()
        if words not in commands | as_run and not any(fnmatch.fnmatch(" ".join(words), p) for p in patterns)
    ]
    assert not unaccounted, (
        f"documented commands neither run by this test nor listed in BUILD.md: {unaccounted}"
    )
    stale = [" ".join(words) for words in commands if words not in documented_commands()]
    assert not stale, f"commands this test runs that the docs no longer print: {stale}"


def test_every_command_run_elsewhere_is_run_by_the_module_credited_with_it():
    # The module builds its command from the constant (`shlex.split(cli_process.NAME)`), not from a copy of
    # the words that could drift from what the docs print.
    for name, _, module in RUN_ELSEWHERE:
        source = open(os.path.join(ROOT, "tests", module), encoding="utf-8").read()
        assert re.search(rf"shlex\.split\((cli_process\.)?{name}\)", source), (name, module)


@pytest.fixture
def scratch(tmp_path):
    for name in ("run.py", "configs", "benchmarks"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


# Each group but the dry run starts several processes that train: 25–85 s a group on two cores.
SLOW_GROUPS = set(GROUPS) - {"dry_run"}


@pytest.mark.parametrize(
    "group", [pytest.param(g, marks=pytest.mark.slow) if g in SLOW_GROUPS else g for g in sorted(GROUPS)]
)
def test_documented_commands_run_at_a_tiny_size(group, scratch):
    if group == "digits":
        pytest.importorskip("sklearn")
    for command, extra, *expected in GROUPS[group]:
        words = [SUBSTITUTIONS.get(word, word) for word in _words(command)]
        argv = [sys.executable, *words[1:], *extra]
        completed = cli_process.run(argv, cwd=scratch, timeout=600)
        assert completed.returncode == (expected[0] if expected else 0), (
            f"{command} {' '.join(extra)}\nexit {completed.returncode}\n{completed.stdout[-2000:]}\n"
            f"{completed.stderr[-4000:]}"
        )
        assert "Traceback" not in completed.stderr
