"""Tests of the PTB reader: vocabulary, `<eos>`/`<unk>`, lanes, and AWD-LSTM's BPTT windows."""

import os

import numpy as np
import pytest

from data import Splits, ptb


def _write(directory, train, valid, test):
    for name, text in zip(ptb.FILENAMES, (train, valid, test), strict=True):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
            file.write(text)
    return str(directory)


@pytest.fixture
def toy_corpus(tmp_path):
    directory = ptb.write_toy_corpus(str(tmp_path), train_lines=400, valid_lines=60, test_lines=60)
    return ptb.load_corpus(directory, batch_size=4, eval_batch_size=3, bptt=12, seed=7)


def test_vocabulary_orders_by_frequency_then_word_and_appends_eos(tmp_path):
    directory = _write(tmp_path, " a b b \n c b \n", " b a \n", " c \n")
    corpus = ptb.load_corpus(directory, batch_size=1, eval_batch_size=1)
    # Counts: b 3, <eos> 2, a 1, c 1, and <unk> 0 (added because train has none).
    assert corpus.vocabulary == ("b", "<eos>", "a", "c", "<unk>")
    np.testing.assert_array_equal(corpus.train_ids, [2, 0, 0, 1, 3, 0, 1])
    np.testing.assert_array_equal(corpus.valid_ids, [0, 2, 1])
    np.testing.assert_array_equal(corpus.test_ids, [3, 1])


def test_unk_in_train_is_an_ordinary_word_and_unseen_words_map_to_it(tmp_path):
    directory = _write(tmp_path, "x <unk> y\n<unk> x\n", "x zebra <unk>\n", "glacier y\n")
    corpus = ptb.load_corpus(directory, batch_size=1, eval_batch_size=1)
    assert corpus.vocabulary == ("<eos>", "<unk>", "x", "y")
    unk = corpus.word_index["<unk>"]
    np.testing.assert_array_equal(corpus.valid_ids, [2, unk, unk, 0])
    np.testing.assert_array_equal(corpus.test_ids, [unk, 3, 0])


def test_toy_corpus_eval_only_nouns_become_unk(tmp_path):
    directory = ptb.write_toy_corpus(str(tmp_path), train_lines=300, valid_lines=300, test_lines=10)
    corpus = ptb.load_corpus(directory)
    valid_words = ptb.read_words(os.path.join(directory, "ptb.valid.txt"))
    unseen = [word for word in valid_words if word.startswith(("zebra", "glacier"))]
    assert unseen, "the validation file should contain nouns the training file lacks"
    assert not any(word.startswith(("zebra", "glacier")) for word in corpus.vocabulary)
    unk = corpus.word_index["<unk>"]
    assert np.sum(corpus.valid_ids == unk) >= len(unseen)
    assert len(corpus.valid_ids) == len(valid_words)


def test_batchify_makes_contiguous_lanes_and_drops_the_tail():
    stream = np.arange(103, dtype=np.int32)
    lanes = ptb.batchify(stream, 4)
    assert lanes.shape == (4, 25)
    np.testing.assert_array_equal(lanes[1], np.arange(25, 50))
    np.testing.assert_array_equal(lanes.reshape(-1), np.arange(100))
    with pytest.raises(ValueError, match="batch_size=60"):
        ptb.batchify(stream, 60)
    with pytest.raises(ValueError, match="batch_size=0"):
        ptb.batchify(stream, 0)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_train_windows_cover_every_target_exactly_once(toy_corpus, epoch):
    lanes = toy_corpus.lanes("train")
    windows = list(toy_corpus.train_windows(epoch))
    seen = np.zeros(lanes.shape[1], np.int32)
    for window in windows:
        seen[window.start + 1 : window.start + 1 + window.length] += 1
        np.testing.assert_array_equal(window.inputs, lanes[:, window.start : window.start + window.length])
        np.testing.assert_array_equal(
            window.targets, lanes[:, window.start + 1 : window.start + 1 + window.length]
        )
        assert window.lr_scale == pytest.approx(window.length / 12)
        assert window.inputs.shape == window.targets.shape == (4, window.length)
    # Position 0 is never a target; every other position is a target exactly once.
    np.testing.assert_array_equal(seen, [0] + [1] * (lanes.shape[1] - 1))
    assert all(window.length >= 5 for window in windows[:-1])


def test_window_lengths_follow_awd_lstm_and_are_seeded():
    lengths = [ptb.variable_window_lengths(100_000, 70, np.random.default_rng(seed)) for seed in (3, 3, 4)]
    assert lengths[0] == lengths[1]
    assert lengths[0] != lengths[2]
    body = np.array(lengths[0][:-1])
    assert sum(lengths[0]) == 100_000 - 1
    assert body.min() >= 5
    # Mostly N(70, 5); about 5 % of windows come from the half-length base N(35, 5).
    short = body < 52
    assert 0.03 < short.mean() < 0.07
    assert abs(body[~short].mean() - 69.5) < 0.5
    assert abs(body[short].mean() - 34.5) < 1.5


def test_train_windows_are_deterministic_per_seed_and_epoch(tmp_path):
    directory = ptb.write_toy_corpus(str(tmp_path), train_lines=400, valid_lines=5, test_lines=5)

    def lengths(seed, epoch):
        corpus = ptb.load_corpus(directory, batch_size=4, bptt=12, seed=seed)
        return [window.length for window in corpus.train_windows(epoch)]

    assert lengths(1, 0) == lengths(1, 0)
    assert lengths(1, 0) != lengths(1, 1)
    assert lengths(1, 0) != lengths(2, 0)


def test_eval_windows_and_dataset_agree_and_cover_the_split(toy_corpus):
    lanes = toy_corpus.lanes("valid")
    windows = list(toy_corpus.eval_windows("valid"))
    assert [window.length for window in windows[:-1]] == [12] * (len(windows) - 1)
    assert sum(window.length for window in windows) == lanes.shape[1] - 1
    elements = list(toy_corpus.dataset("valid").as_numpy_iterator())
    assert len(elements) == len(windows)
    for (inputs, targets), window in zip(elements, windows, strict=True):
        np.testing.assert_array_equal(inputs, window.inputs)
        np.testing.assert_array_equal(targets, window.targets)
    np.testing.assert_array_equal(np.concatenate([t for _, t in elements], axis=1), lanes[:, 1:])


def test_load_returns_splits_carrying_the_corpus(tmp_path):
    directory = ptb.write_toy_corpus(str(tmp_path), train_lines=200, valid_lines=40, test_lines=40)
    splits = ptb.load(
        data_dir=directory, batch_size=5, eval_batch_size=2, test_batch_size=3, bptt=10, image_size=32
    )
    assert isinstance(splits, Splits)
    corpus = splits.corpus
    assert splits.num_classes == corpus.num_words == len(corpus.vocabulary)
    steps = len(corpus.train_ids) // 5
    assert splits.train_examples == 5 * (steps - 1)
    assert not splits.augmented
    inputs, targets = next(iter(splits.train))
    assert inputs.shape == targets.shape == (5, 10)
    inputs, _ = next(iter(splits.test))
    assert inputs.shape == (3, 10)
    inputs, _ = next(iter(splits.validation))
    assert inputs.shape == (2, 10)
    # AWD-LSTM's defaults: 20 training lanes, 10 validation lanes, one test lane.
    default = ptb.load(data_dir=directory).corpus
    assert [default.lane_count(split) for split in ptb.SPLIT_NAMES] == [20, 10, 1]


def test_missing_files_name_the_flag_and_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ptb.load(data_dir=str(tmp_path))
    message = str(error.value)
    assert "--data_dir" in message
    for name in ptb.FILENAMES:
        assert name in message
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        ptb.load()


def test_unigram_perplexity_of_a_uniform_stream_is_the_vocabulary_size(tmp_path):
    # Every word (including <eos>) appears equally often in train, <unk> gets add-one mass too.
    line = " a b c \n"
    directory = _write(tmp_path, line * 50, line * 10, line * 10)
    corpus = ptb.load_corpus(directory, batch_size=2, eval_batch_size=2)
    counts = np.array([50, 50, 50, 50, 0]) + 1.0
    expected = counts.sum() / 51.0
    assert ptb.unigram_perplexity(corpus) == pytest.approx(expected)


def test_toy_corpus_is_far_from_uniform(tmp_path):
    directory = ptb.write_toy_corpus(str(tmp_path), train_lines=500, valid_lines=100, test_lines=10)
    corpus = ptb.load_corpus(directory)
    unigram = ptb.unigram_perplexity(corpus)
    assert 20 < unigram < corpus.num_words
