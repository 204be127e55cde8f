"""Penn Treebank word-level language modelling: Mikolov's split, batched lanes and AWD-LSTM's BPTT windows."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from data import Facts, Splits

FILENAMES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
SPLIT_NAMES = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"

# AWD-LSTM's variable BPTT: the base length is `bptt` with this probability, else `bptt / 2`; the window
# length is then drawn from N(base, _LENGTH_STDDEV) and never shorter than _MIN_LENGTH.
_FULL_BASE_PROBABILITY = 0.95
_LENGTH_STDDEV = 5.0
_MIN_LENGTH = 5


def read_words(path: str) -> list[str]:
    """The words of a PTB-format file: whitespace-split lines, each followed by `<eos>`."""
    words = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            words.extend(line.split())
            words.append(EOS)
    return words


def build_vocabulary(words: list[str]) -> tuple[str, ...]:
    """Every word of `words` (plus `<unk>`), most frequent first, ties broken alphabetically."""
    counts = collections.Counter(words)
    counts.setdefault(UNK, 0)
    return tuple(sorted(counts, key=lambda word: (-counts[word], word)))


def to_ids(words: list[str], word_index: dict[str, int]) -> np.ndarray:
    """Word ids `[len(words)]` int32; a word outside the vocabulary becomes `<unk>`."""
    unk_id = word_index[UNK]
    return np.fromiter((word_index.get(word, unk_id) for word in words), np.int32, len(words))


def batchify(stream: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a 1-D id stream into `batch_size` contiguous lanes `[batch_size, steps]` (the tail is dropped).

    Lane `b` holds tokens `b·steps … (b+1)·steps - 1` of the stream, so a lane read left to right is running
    text and a recurrent state can carry over from one window of a lane to the next (as in AWD-LSTM, whose
    arrays are the transpose of these).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    steps = len(stream) // batch_size
    if steps < 2:
        raise ValueError(
            f"A stream of {len(stream)} tokens is too short for {batch_size} lanes of at least 2 tokens "
            f"(input and target). Received: batch_size={batch_size}"
        )
    return np.asarray(stream[: steps * batch_size], np.int32).reshape(batch_size, steps)


def variable_window_lengths(steps: int, bptt: int, rng: np.random.Generator) -> list[int]:
    """AWD-LSTM's random BPTT lengths for one pass over lanes of `steps` tokens.

    Each window's base is `bptt` with probability 0.95, else `bptt / 2`; its length is `int(N(base, 5))`,
    at least 5, and cut so the last window ends at the last target. The lengths sum to `steps - 1`: every
    target position of every lane is predicted exactly once per epoch.
    """
    if bptt < 1:
        raise ValueError(f"`bptt` must be >= 1. Received: bptt={bptt}")
    lengths = []
    position, end = 0, steps - 1
    while position < end:
        base = bptt if rng.random() < _FULL_BASE_PROBABILITY else bptt / 2
        length = max(_MIN_LENGTH, int(rng.normal(base, _LENGTH_STDDEV)))
        length = min(length, end - position)
        lengths.append(length)
        position += length
    return lengths


def fixed_window_lengths(steps: int, bptt: int) -> list[int]:
    """Windows of `bptt` tokens (the last one shorter) covering the `steps - 1` targets of a lane."""
    if bptt < 1:
        raise ValueError(f"`bptt` must be >= 1. Received: bptt={bptt}")
    end = steps - 1
    return [min(bptt, end - start) for start in range(0, end, bptt)]


@dataclasses.dataclass(frozen=True)
class Window:
    """One BPTT window over all lanes.

    Attributes:
        inputs: `[batch, length]` int32 ids at lane positions `start … start + length - 1`.
        targets: `[batch, length]` int32 ids one position later (the next word).
        start: position of the window's first input token in each lane.
        lr_scale: `length / bptt`; AWD-LSTM multiplies the learning rate by it so every token gets the
            same step whatever the window length (the loss is a mean over the window's tokens).
    """

    inputs: np.ndarray
    targets: np.ndarray
    start: int
    lr_scale: float

    @property
    def length(self) -> int:
        return self.inputs.shape[1]


def _windows(lanes: np.ndarray, lengths: list[int], bptt: int) -> Iterator[Window]:
    start = 0
    for length in lengths:
        yield Window(
            inputs=lanes[:, start : start + length],
            targets=lanes[:, start + 1 : start + 1 + length],
            start=start,
            lr_scale=length / bptt,
        )
        start += length


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: vocabulary, the three id streams, and the windows a language model trains on.

    Attributes:
        vocabulary: the words, id order (most frequent first).
        train_ids, valid_ids, test_ids: 1-D int32 id streams (an `<eos>` closes every line).
        batch_size: lanes of the training stream.
        eval_batch_size: lanes of the validation stream.
        test_batch_size: lanes of the test stream (AWD-LSTM: 1, so the whole test set is one running text).
        bptt: base window length.
        seed: seed of the random window lengths (combined with the epoch number).
    """

    vocabulary: tuple[str, ...]
    train_ids: np.ndarray
    valid_ids: np.ndarray
    test_ids: np.ndarray
    batch_size: int = 20
    eval_batch_size: int = 10
    test_batch_size: int = 1
    bptt: int = 70
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "eval_batch_size", "test_batch_size", "bptt"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")

    @property
    def num_words(self) -> int:
        """Vocabulary size `M`."""
        return len(self.vocabulary)

    @functools.cached_property
    def word_index(self) -> dict[str, int]:
        """Word -> id."""
        return {word: index for index, word in enumerate(self.vocabulary)}

    def ids(self, split: str) -> np.ndarray:
        """The 1-D id stream of `split` ("train", "valid" or "test")."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"`split` must be one of {SPLIT_NAMES}. Received: split={split!r}")
        return getattr(self, f"{split}_ids")

    def lane_count(self, split: str) -> int:
        """Lanes (batch size) used for `split`."""
        return {"train": self.batch_size, "valid": self.eval_batch_size}.get(split, self.test_batch_size)

    def lanes(self, split: str) -> np.ndarray:
        """`[lanes, steps]` int32 array of `split` (see `batchify`)."""
        return batchify(self.ids(split), self.lane_count(split))

    def train_windows(self, epoch: int = 0) -> Iterator[Window]:
        """One epoch of training windows with AWD-LSTM's random lengths, the same for a given seed and epoch."""
        lanes = self.lanes("train")
        rng = np.random.default_rng([self.seed, epoch])
        return _windows(lanes, variable_window_lengths(lanes.shape[1], self.bptt, rng), self.bptt)

    def eval_windows(self, split: str, bptt: int | None = None) -> Iterator[Window]:
        """Fixed windows of `bptt` tokens (default `self.bptt`) over `split`, in lane order."""
        bptt = bptt or self.bptt
        lanes = self.lanes(split)
        return _windows(lanes, fixed_window_lengths(lanes.shape[1], bptt), bptt)

    def target_count(self, split: str) -> int:
        """Number of predicted tokens in one pass over `split` (lanes × (steps - 1))."""
        lanes = self.lanes(split)
        return lanes.shape[0] * (lanes.shape[1] - 1)

    def dataset(self, split: str, bptt: int | None = None) -> tf.data.Dataset:
        """`(inputs, targets)` `[lanes, time]` int32 fixed windows over `split`, in order (time may vary)."""
        bptt = bptt or self.bptt
        lanes_array = self.lanes(split)
        end = lanes_array.shape[1] - 1
        lanes = tf.constant(lanes_array)

        def window(index):
            start = tf.cast(index, tf.int32) * bptt
            length = tf.minimum(bptt, end - start)
            return lanes[:, start : start + length], lanes[:, start + 1 : start + 1 + length]

        return tf.data.Dataset.range(math.ceil(end / bptt)).map(window)

    def splits(self) -> LanguageModelSplits:
        """The corpus as a `data.Splits` (fixed windows) that also carries the corpus itself."""
        train = self.dataset("train")
        return LanguageModelSplits(
            train=train,
            test=self.dataset("test"),
            num_classes=self.num_words,
            train_examples=self.target_count("train"),
            train_ordered=train,
            validation=self.dataset("valid"),
            corpus=self,
        )


@dataclasses.dataclass(frozen=True)
class LanguageModelSplits(Splits):
    """`Splits` of a language model: every token is an example; `corpus` gives stateful BPTT access.

    `train`, `train_ordered`, `validation` and `test` yield fixed `bptt` windows in lane order, so a model
    carrying its state from one element to the next reads each lane as running text. `train_examples` counts
    predicted tokens. The trainer in `kd_tf.language_model` uses `corpus` for AWD-LSTM's random lengths.
    """

    corpus: Corpus | None = None


def load_corpus(
    data_dir: str | None,
    batch_size: int = 20,
    eval_batch_size: int = 10,
    test_batch_size: int = 1,
    bptt: int = 70,
    seed: int = 0,
) -> Corpus:
    """Reads `ptb.{train,valid,test}.txt` from `data_dir`; the vocabulary is built from the training file."""
    paths = [os.path.join(data_dir or "", name) for name in FILENAMES]
    missing = [path for path in paths if not os.path.isfile(path)]
    if data_dir is None or missing:
        raise FileNotFoundError(
            "PTB needs Mikolov's files " + ", ".join(FILENAMES) + " in the directory given by --data_dir "
            f"(they are not downloaded). Received: data_dir={data_dir!r}"
            + (f"; missing: {', '.join(missing)}" if data_dir is not None else "")
        )
    train_words, valid_words, test_words = (read_words(path) for path in paths)
    vocabulary = build_vocabulary(train_words)
    word_index = {word: index for index, word in enumerate(vocabulary)}
    return Corpus(
        vocabulary=vocabulary,
        train_ids=to_ids(train_words, word_index),
        valid_ids=to_ids(valid_words, word_index),
        test_ids=to_ids(test_words, word_index),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        test_batch_size=test_batch_size,
        bptt=bptt,
        seed=seed,
    )


def load(
    data_dir: str | None = None,
    batch_size: int = 20,
    eval_batch_size: int = 10,
    test_batch_size: int = 1,
    bptt: int = 70,
    seed: int = 0,
    **unused,
) -> LanguageModelSplits:
    """PTB as `LanguageModelSplits`; options of other datasets are ignored."""
    return load_corpus(data_dir, batch_size, eval_batch_size, test_batch_size, bptt, seed).splits()


def unigram_perplexity(corpus: Corpus, split: str = "valid") -> float:
    """Perplexity on `split` of the unigram distribution of the training stream (add-one smoothed).

    The bar any trained language model must clear by a wide margin.
    """
    counts = np.bincount(corpus.train_ids, minlength=corpus.num_words).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    targets = corpus.lanes(split)[:, 1:]
    return float(np.exp(-log_probs[targets].mean()))


# A small stochastic grammar in PTB's format: agreement between subject and verb across adjectives and
# prepositional phrases, Zipf-distributed word choice, `N` for numbers and `<unk>` for rare words, so a
# recurrent model can do far better than the unigram distribution.
_SINGULAR_DETERMINERS = ("the", "a", "this", "every")
_PLURAL_DETERMINERS = ("the", "some", "these")
_ADJECTIVES = tuple("big small new old red green fast slow quiet loud early late strong weak bright".split())
_NOUNS = tuple("dog cat bank market trader company bond stock price city house bird river plan deal".split())
_VERBS = tuple("see like buy sell watch follow want need move help".split())
_ADVERBS = tuple("today quickly again rarely often".split())
_PREPOSITIONS = tuple("near with from under behind".split())
_EVAL_ONLY_NOUNS = ("zebra", "glacier")


def _zipf_choice(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    weights = 1.0 / np.arange(1, len(words) + 1)
    return words[rng.choice(len(words), p=weights / weights.sum())]


def _noun_phrase(rng, plural: bool, depth: int, unseen_rate: float) -> list[str]:
    if plural:
        words = [] if rng.random() < 0.5 else [_zipf_choice(rng, _PLURAL_DETERMINERS)]
    else:
        words = [_zipf_choice(rng, _SINGULAR_DETERMINERS)]
    if rng.random() < 0.4:
        words.append(_zipf_choice(rng, _ADJECTIVES))
    if rng.random() < 0.1:
        words.append("N")
    if rng.random() < unseen_rate:
        noun = _EVAL_ONLY_NOUNS[rng.integers(len(_EVAL_ONLY_NOUNS))]
    elif rng.random() < 0.03:
        noun = UNK
    else:
        noun = _zipf_choice(rng, _NOUNS)
    words.append(noun + "s" if plural and noun != UNK else noun)
    if depth < 1 and rng.random() < 0.25:
        words.append(_zipf_choice(rng, _PREPOSITIONS))
        words.extend(_noun_phrase(rng, rng.random() < 0.5, depth + 1, unseen_rate))
    return words


def _sentence(rng: np.random.Generator, unseen_rate: float) -> str:
    plural = rng.random() < 0.5
    words = _noun_phrase(rng, plural, 0, unseen_rate)
    verb = _zipf_choice(rng, _VERBS)
    words.append(verb if plural else verb + "s")
    if rng.random() < 0.7:
        words.extend(_noun_phrase(rng, rng.random() < 0.5, 0, unseen_rate))
    if rng.random() < 0.3:
        words.append(_zipf_choice(rng, _ADVERBS))
    return " ".join(words)


def write_toy_corpus(
    directory: str,
    train_lines: int = 2000,
    valid_lines: int = 200,
    test_lines: int = 200,
    seed: int = 0,
) -> str:
    """Writes `ptb.{train,valid,test}.txt` of a small stochastic grammar to `directory`; returns it.

    Lines look like PTB's (" the big dog near some cats sees a bank today "); the validation and test files
    contain two nouns the training file never does, which the reader maps to `<unk>`.
    """
    for name, value in (("train_lines", train_lines), ("valid_lines", valid_lines)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    if test_lines < 1:
        raise ValueError(f"`test_lines` must be >= 1. Received: test_lines={test_lines}")
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    for filename, count, unseen_rate in zip(
        FILENAMES, (train_lines, valid_lines, test_lines), (0.0, 0.02, 0.02), strict=True
    ):
        with open(os.path.join(directory, filename), "w", encoding="utf-8") as file:
            for _ in range(count):
                file.write(f" {_sentence(rng, unseen_rate)} \n")
    return directory


FACTS = Facts(
    default_models=("awd_lstm", "awd_lstm"),
    option_flags={"data_dir": "data_dir"},
    needs_data_dir=True,
    kind="language_model",
)
