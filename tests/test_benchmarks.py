"""The throughput benchmark runs end to end at tiny sizes, so it cannot rot unnoticed."""

import json
import math
import os
import shlex
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import throughput  # noqa: E402


def check_results(results, pairs, variants, xla_modes):
    assert [pair["pair"] for pair in results["pairs"]] == pairs
    for pair in results["pairs"]:
        assert pair["skipped"] == []
        rows = {(row["variant"], row["xla"]): row for row in pair["rows"]}
        assert set(rows) == {(variant, xla) for variant in variants for xla in xla_modes}
        for row in rows.values():
            for key in ("ms_per_step", "min_ms_per_step", "per_second"):
                assert math.isfinite(row[key]) and row[key] > 0, (pair["pair"], row)
            assert row["min_ms_per_step"] <= row["ms_per_step"]
            assert row["peak_step_mb"] is None or row["peak_step_mb"] >= 0
        expected_ratios = {
            (name, xla)
            for name, numerator, denominator, _ in throughput.RATIOS
            for xla in xla_modes
            if set(numerator) | set(denominator) <= set(variants)
        }
        assert {(ratio["ratio"], ratio["xla"]) for ratio in pair["ratios"]} == expected_ratios
        for ratio in pair["ratios"]:
            assert math.isfinite(ratio["value"]) and ratio["value"] > 0


def first_losses(pair, xla):
    return {row["variant"]: row["first_step_loss"] for row in pair["rows"] if row["xla"] == xla}


@pytest.mark.slow
def test_every_variant_on_the_mlp_pair(tmp_path):
    """BUILD.md's `--breakdown --output` command at a tiny size with every variant, as a user runs it: a new
    process in a directory that holds `benchmarks/`, writing `runs/throughput.md` and `.json` there."""
    import cli_process

    os.symlink(os.path.join(cli_process.ROOT, "benchmarks"), tmp_path / "benchmarks")
    words = shlex.split(cli_process.THROUGHPUT_BREAKDOWN)
    tiny = ["--quick", "--pairs", "mlp", "--variants", ",".join(throughput.VARIANTS), "--xla", "off"]
    completed = cli_process.check_ok(
        cli_process.run([sys.executable, *words[1:], *tiny, "--repeats=1"], cwd=str(tmp_path))
    )
    assert "Traceback" not in completed.stderr
    output = tmp_path / "runs" / "throughput.md"
    results = json.loads((tmp_path / "runs" / "throughput.json").read_text())
    check_results(results, ["mlp"], throughput.VARIANTS, (False,))
    (pair,) = results["pairs"]
    assert len(pair["breakdown"]) == 7 and all(piece["ms"] > 0 for piece in pair["breakdown"])
    # Like for like: online, offline and Keras' Distiller start from the same loss; so do the floors.
    losses = first_losses(pair, False)
    assert losses["teacher"] is None
    assert losses["kd_offline"] == pytest.approx(losses["kd"], rel=1e-5)
    # Keras' KLDivergence clips probabilities at 1e-7 before the log: equal up to that.
    assert losses["keras_kd"] == pytest.approx(losses["kd"], rel=1e-4)
    assert losses["kd_topk_offline"] == pytest.approx(losses["kd_topk"], rel=1e-5)
    assert losses["fused_floor"] == pytest.approx(losses["student"], rel=1e-5)
    table = output.read_text()
    for variant in throughput.VARIANTS:
        assert f"| {variant} | off |" in table
    assert "online KD / fused floor" in table and "<= 1.10" in table


@pytest.mark.slow
def test_xla_on_and_off_side_by_side(tmp_path):
    """README's and BUILD.md's `--quick` command, as a user runs it, on the MLP pair."""
    import cli_process

    variants = ["student", "teacher", "kd"]
    words = shlex.split(cli_process.THROUGHPUT_QUICK)
    output = tmp_path / "throughput.md"
    tiny = ["--pairs", "mlp", "--variants", ",".join(variants), "--output", str(output)]
    completed = cli_process.check_ok(cli_process.run([sys.executable, *words[1:], *tiny]))
    assert "Traceback" not in completed.stderr
    results = json.loads(output.with_suffix(".json").read_text())
    check_results(results, ["mlp"], variants, (False, True))
    (pair,) = results["pairs"]
    assert set(pair["xla_speedup"]) == set(variants)
    assert all(row["xla_effective"] == row["xla"] for row in pair["rows"])
    assert first_losses(pair, True)["kd"] == pytest.approx(first_losses(pair, False)["kd"], rel=1e-5)


@pytest.mark.slow
def test_the_resnet_and_awd_lstm_pairs_distil_online_and_offline():
    variants = ["kd", "kd_offline"]
    argv = ["--quick", "--pairs", "resnet,awd_lstm", "--variants", ",".join(variants), "--xla", "off"]
    results = throughput.main(argv)
    check_results(results, ["resnet", "awd_lstm"], variants, (False,))
    units = {pair["pair"]: (pair["unit"], pair["units_per_step"]) for pair in results["pairs"]}
    assert units == {"resnet": ("examples", 4), "awd_lstm": ("tokens", 32)}
    for pair in results["pairs"]:
        losses = first_losses(pair, False)
        assert losses["kd_offline"] == pytest.approx(losses["kd"], rel=1e-5)


def test_bad_arguments_are_refused_with_the_flag_name():
    with pytest.raises(SystemExit):
        throughput.parse_args(["--pairs", "vgg"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--repeats", "0"])


@pytest.mark.slow
def test_the_pool_start_benchmark_times_both_start_methods():
    """`benchmarks/pool_start.py` at one worker, one repeat: both ways start a pool twice and it prints their
    times (each measurement is a new interpreter, so it runs as a user runs it)."""
    import cli_process

    script = os.path.join(cli_process.ROOT, "benchmarks", "pool_start.py")
    refused = cli_process.run([sys.executable, script, "--jobs=0"])
    assert refused.returncode == 2 and "--jobs must be at least 1. Received: --jobs=0" in refused.stderr
    completed = cli_process.check_ok(cli_process.run([sys.executable, script, "--jobs=1", "--repeats=1"]))
    rows = [line.split("|")[1:-1] for line in completed.stdout.splitlines() if line.startswith("| first")]
    rows += [line.split("|")[1:-1] for line in completed.stdout.splitlines() if line.startswith("| second")]
    assert len(rows) == 2, completed.stdout
    for _, spawned, forked, ratio in rows:
        assert float(spawned.strip(" s")) > 0 and float(forked.strip(" s")) > 0 and float(ratio) > 0
