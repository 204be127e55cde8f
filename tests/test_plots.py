"""Tests for kd_tf.plots: every figure is a real, small PNG and bad inputs are refused."""

import numpy as np
import pytest

from kd_tf import plots

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_BYTES = 200 * 1024


def _check_png(path):
    with open(path, "rb") as handle:
        content = handle.read()
    assert content.startswith(_PNG_SIGNATURE)
    assert 1000 < len(content) <= _MAX_BYTES, len(content)


def test_correlation_heatmaps_four_noisy_100_class_panels_stay_small(tmp_path):
    rng = np.random.default_rng(0)
    # Noise is the worst case for PNG compression.
    matrices = {
        title: np.clip(rng.standard_normal((100, 100)), -1, 1)
        for title in ("teacher T=1", "teacher T=4", "top-5 T=4", "logit-weight cosine")
    }
    path = plots.correlation_heatmaps(
        matrices, tmp_path / "figure1.png", boundaries=range(5, 100, 5), title="Figure 1"
    )
    assert path == str(tmp_path / "figure1.png")
    _check_png(path)


def test_correlation_heatmaps_side_by_side_with_own_ranges(tmp_path):
    matrices = {"w/o LS": np.eye(10), "with LS": 0.5 * np.eye(10), "nan": np.full((10, 10), np.nan)}
    _check_png(plots.correlation_heatmaps(matrices, tmp_path / "sub" / "f4.png", value_range=None))
    _check_png(plots.correlation_heatmaps(matrices, tmp_path / "s.png", value_range="off_diagonal_shared"))
    _check_png(plots.correlation_heatmaps(matrices, tmp_path / "f.png", value_range=(-1, 1)))
    assert plots._off_diagonal_range(np.array([[1.0, 0.2], [-0.1, 1.0]])) == (-0.1, 0.2)


def test_rescaling_scatter_subsamples_many_points(tmp_path):
    rng = np.random.default_rng(1)
    teacher_probs = rng.random(50_000)
    w = 0.5 + teacher_probs + 0.1 * rng.standard_normal(50_000)
    _check_png(plots.rescaling_scatter(teacher_probs, w, tmp_path / "figure2.png"))


def test_topk_uplift_linear_and_log_k(tmp_path):
    _check_png(plots.topk_uplift([1, 2, 5, 10], [0.1, 0.3, 0.2, -0.1], tmp_path / "a.png"))
    _check_png(
        plots.topk_uplift(
            [1, 10, 100, 1000],
            [0.2, 0.5, 0.3, 0.0],
            tmp_path / "b.png",
            stds=[0.1, 0.1, 0.2, 0.1],
            ylabel="perplexity gain over KD",
        )
    )


def test_probability_histograms_and_geometry_scatter(tmp_path):
    rng = np.random.default_rng(2)
    histograms = {"teacher w/o LS": rng.beta(5, 2, 1000), "teacher with LS": rng.beta(20, 20, 1000)}
    _check_png(plots.probability_histograms(histograms, tmp_path / "figure5.png"))
    teacher_probs = rng.random(20_000) ** 4
    distances = 1.5 - teacher_probs + 0.05 * rng.standard_normal(20_000)
    _check_png(plots.geometry_scatter(teacher_probs, distances, tmp_path / "geometry.png"))


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="path"):
        plots.topk_uplift([1], [0.1], tmp_path / "figure.jpg")
    with pytest.raises(ValueError, match="square"):
        plots.correlation_heatmaps({"a": np.ones((2, 3))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="matrices"):
        plots.correlation_heatmaps({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="teacher_probs"):
        plots.rescaling_scatter([0.1, 0.2], [1.0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="stds"):
        plots.topk_uplift([1, 2], [0.1, 0.2], tmp_path / "x.png", stds=[0.1])
    with pytest.raises(ValueError, match="value_range"):
        plots.correlation_heatmaps({"a": np.eye(3)}, tmp_path / "x.png", value_range="diagonal")
    with pytest.raises(ValueError, match="bins"):
        plots.probability_histograms({"a": [0.5]}, tmp_path / "x.png", bins=0)
    assert not list(tmp_path.iterdir())


def test_accuracy_bars_draw_a_table_with_seed_spreads(tmp_path):
    means = np.array([[60.0, 61.5], [42.0, np.nan]])
    spreads = np.array([[0.5, 0.4], [np.nan, np.nan]])
    path = plots.accuracy_bars(
        ["Teacher", "KD"], ["τ = 0.0", "τ = 0.9"], means, spreads, tmp_path / "r.png", "t"
    )
    assert open(path, "rb").read()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="must have shape"):
        plots.accuracy_bars(["Teacher"], ["a", "b"], means, spreads, tmp_path / "bad.png", "t")
