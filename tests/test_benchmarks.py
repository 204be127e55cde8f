"""The throughput benchmark runs end to end at tiny sizes, so it cannot rot unnoticed."""

import json
import math
import os
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


def test_every_variant_with_and_without_xla_on_the_mlp_pair(tmp_path):
    output = tmp_path / "throughput.md"
    argv = ["--quick", "--pairs", "mlp", "--variants", ",".join(throughput.VARIANTS), "--breakdown"]
    results = throughput.main([*argv, "--output", str(output)])
    check_results(results, ["mlp"], throughput.VARIANTS, (False, True))
    assert len(results["pairs"][0]["xla_speedup"]) == len(throughput.VARIANTS)
    assert {piece["xla"] for piece in results["pairs"][0]["breakdown"]} == {False, True}
    table = output.read_text()
    assert json.loads((tmp_path / "throughput.json").read_text())["pairs"][0]["pair"] == "mlp"
    for variant in throughput.VARIANTS:
        assert f"| {variant} | off |" in table and f"| {variant} | on |" in table
    assert "online KD / (student + teacher)" in table and "<= 1.05" in table


def test_the_resnet_and_awd_lstm_pairs_run_online_and_offline(tmp_path):
    variants = ["student", "teacher", "kd", "kd_offline"]
    argv = ["--quick", "--pairs", "resnet,awd_lstm", "--variants", ",".join(variants), "--xla", "off"]
    results = throughput.main(argv)
    check_results(results, ["resnet", "awd_lstm"], variants, (False,))
    units = {pair["pair"]: (pair["unit"], pair["units_per_step"]) for pair in results["pairs"]}
    assert units == {"resnet": ("examples", 4), "awd_lstm": ("tokens", 32)}


def test_bad_arguments_are_refused_with_the_flag_name():
    with pytest.raises(SystemExit):
        throughput.parse_args(["--pairs", "vgg"])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--repeats", "0"])
