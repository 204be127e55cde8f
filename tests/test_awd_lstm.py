"""Tests of AWD-LSTM: shapes, tied weights, DropConnect, locked and embedding dropout, carried state."""

import numpy as np
import pytest
import tensorflow as tf

from models import awd_lstm as awd
from models import builder

NUM_WORDS = 23


def _small(**options):
    options = {"embedding_size": 6, "hidden_size": 10, "seed": 3, **options}
    return awd.awd_lstm(NUM_WORDS, **options)


def _ids(batch=3, time=8, seed=0):
    return np.random.default_rng(seed).integers(0, NUM_WORDS, (batch, time)).astype(np.int32)


def test_output_shapes_and_dtype():
    model = _small()
    logits = model(_ids())
    assert logits.shape == (3, 8, NUM_WORDS)
    assert logits.dtype == tf.float32
    output = model(_ids(), training=True, states=model.initial_states(3), return_states=True)
    assert output.logits.shape == (3, 8, NUM_WORDS)
    assert [tuple(tensor.shape) for state in output.states for tensor in state] == [
        (3, 10),
        (3, 10),
        (3, 10),
        (3, 10),
        (3, 6),
        (3, 6),
    ]
    assert output.activation_penalty.shape == output.temporal_penalty.shape == ()
    assert builder("awd_lstm") is awd.awd_lstm


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 24_210_800),  # the paper's teacher: 24.2 M
        ({"embedding_size": 300, "hidden_size": 600}, 9_136_000),  # the paper's student: 9.1 M
    ],
)
def test_parameter_counts_for_a_10k_vocabulary(options, expected):
    model = awd.awd_lstm(10_000, **options)
    assert model.count_params() == expected
    assert awd.parameter_count(10_000, **options) == expected


def test_input_and_output_embeddings_are_one_variable():
    model = _small()
    variables = model.trainable_variables
    # embedding + output bias + 3 LSTMs × (kernel, recurrent kernel, bias): no separate output kernel.
    assert len(variables) == 11
    shapes = [tuple(variable.shape) for variable in variables]
    assert shapes.count((NUM_WORDS, 6)) == 1
    assert (6, NUM_WORDS) not in shapes
    np.testing.assert_array_equal(model.output_kernel.numpy(), model.embedding.embeddings.numpy().T)
    # The logits depend on the embedding row of a word that never occurs in the input: the output
    # layer reads the embedding matrix.
    ids = np.zeros((2, 4), np.int32)
    with tf.GradientTape() as tape:
        logits = model(ids)
        target = tf.reduce_sum(logits[..., 5])
    gradient = tf.convert_to_tensor(tape.gradient(target, model.embedding.embeddings))
    assert np.abs(gradient.numpy()[5]).sum() > 0
    assert np.abs(gradient.numpy()[7]).sum() == 0


def test_initialisation_ranges():
    model = _small()
    embeddings = model.embedding.embeddings.numpy()
    assert np.abs(embeddings).max() <= 0.1
    assert embeddings.std() > 0.04
    np.testing.assert_array_equal(model.output_bias.numpy(), 0)
    kernel = model.lstms[0].recurrent_kernel.numpy()
    assert np.abs(kernel).max() <= 1 / np.sqrt(10)


def test_dropconnect_masks_the_recurrent_kernel_only_in_training():
    lstm = _small(weight_drop=0.5).lstms[1]
    raw = lstm.recurrent_kernel.numpy()
    np.testing.assert_array_equal(lstm.effective_recurrent_kernel(training=False).numpy(), raw)
    first = lstm.effective_recurrent_kernel(training=True).numpy()
    second = lstm.effective_recurrent_kernel(training=True).numpy()
    kept = first != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(first[kept], raw[kept] / 0.5, rtol=1e-6)
    assert (first != second).any(), "a new mask is drawn at every call"


def test_dropconnect_mask_is_the_same_at_every_time_step():
    # Feeding the recurrent path only (zero input kernel): with one mask per call, a constant-input
    # sequence of length 6 run once equals the same sequence split 3 + 3 with a shared kernel.
    lstm = _small(weight_drop=0.5).lstms[0]
    lstm.kernel.assign(np.zeros_like(lstm.kernel.numpy()))
    kernels = []
    original = lstm.effective_recurrent_kernel

    def recording(training=False):
        kernel = original(training)
        kernels.append(kernel)
        return kernel

    lstm.effective_recurrent_kernel = recording
    inputs = tf.zeros((2, 6, 6))
    start = (tf.fill((2, 10), 0.5), tf.fill((2, 10), 0.5))
    outputs, _ = lstm(inputs, initial_state=start, training=True)
    assert len(kernels) == 1
    # Recompute the recurrence by hand with the one recorded kernel.
    kernel = kernels[0].numpy()
    bias = lstm.bias.numpy()
    hidden, cell = np.full((2, 10), 0.5), np.full((2, 10), 0.5)
    sigmoid = lambda value: 1 / (1 + np.exp(-value))
    for step in range(6):
        gates = hidden @ kernel + bias
        input_gate, forget_gate, candidate, output_gate = np.split(gates, 4, axis=-1)
        cell = sigmoid(forget_gate) * cell + sigmoid(input_gate) * np.tanh(candidate)
        hidden = sigmoid(output_gate) * np.tanh(cell)
        np.testing.assert_allclose(outputs.numpy()[:, step], hidden, rtol=1e-5, atol=1e-6)


def test_locked_dropout_uses_one_mask_across_time():
    layer = awd.LockedDropout(0.4, seed=1)
    inputs = tf.ones((16, 9, 32))
    dropped = layer(inputs, training=True).numpy()
    # Each (sequence, feature) is either dropped at every step or kept (×1/0.6) at every step.
    np.testing.assert_array_equal(dropped, np.repeat(dropped[:, :1], 9, axis=1))
    np.testing.assert_allclose(np.unique(dropped), [0.0, 1 / 0.6], rtol=1e-6)
    assert 0.3 < (dropped[:, 0] == 0).mean() < 0.5
    np.testing.assert_array_equal(layer(inputs, training=False).numpy(), inputs.numpy())


def test_embedding_dropout_removes_whole_words():
    layer = awd.EmbeddingDropout(NUM_WORDS, 5, rate=0.5, seed=2)
    ids = np.tile(np.arange(NUM_WORDS, dtype=np.int32), (4, 2))  # every word 8 times
    vectors = layer(ids, training=True).numpy()
    table = layer.embeddings.numpy()
    dropped_words = set()
    for word in range(NUM_WORDS):
        occurrences = vectors[ids == word]
        if np.all(occurrences == 0):
            dropped_words.add(word)
        else:
            np.testing.assert_allclose(occurrences, np.tile(table[word] * 2, (8, 1)), rtol=1e-6)
    assert 3 <= len(dropped_words) <= NUM_WORDS - 3
    np.testing.assert_allclose(layer(ids, training=False).numpy(), table[ids])


def test_state_carries_across_calls_and_resets():
    model = _small()
    ids = _ids(batch=2, time=10, seed=4)
    whole = model(ids).numpy()
    first = model(ids[:, :6], states=model.initial_states(2), return_states=True)
    second = model(ids[:, 6:], states=first.states, return_states=True)
    np.testing.assert_allclose(
        np.concatenate([first.logits, second.logits], axis=1), whole, rtol=1e-5, atol=1e-6
    )
    reset = model(ids[:, 6:], states=model.initial_states(2)).numpy()
    np.testing.assert_allclose(reset, model(ids[:, 6:]).numpy(), rtol=1e-6)
    assert np.abs(reset - whole[:, 6:]).max() > 1e-4
    for hidden, cell in model.initial_states(2):
        assert not np.any(hidden.numpy()) and not np.any(cell.numpy())


def test_training_is_stochastic_and_inference_deterministic():
    model = _small()
    ids = _ids()
    np.testing.assert_array_equal(model(ids).numpy(), model(ids).numpy())
    assert np.abs(model(ids, training=True).numpy() - model(ids, training=True).numpy()).max() > 0


def test_activation_penalties():
    model = _small(dropout=0.0, dropout_hidden=0.0, dropout_input=0.0, dropout_embedding=0.0)
    one_step = model(_ids(time=1), return_states=True)
    assert float(one_step.temporal_penalty) == 0.0
    assert float(one_step.activation_penalty) > 0.0
    # Without dropout the last LSTM's output h satisfies logits = h·Eᵀ + b; recover h by least squares.
    output = model(_ids(time=5), return_states=True)
    embeddings = model.embedding.embeddings.numpy()
    hidden = np.linalg.lstsq(embeddings, output.logits.numpy().reshape(-1, NUM_WORDS).T, rcond=None)[0]
    hidden = hidden.T.reshape(3, 5, 6)
    assert float(output.activation_penalty) == pytest.approx(np.mean(hidden**2), rel=1e-4)
    change = hidden[:, 1:] - hidden[:, :-1]
    assert float(output.temporal_penalty) == pytest.approx(np.mean(change**2), rel=1e-3)


@pytest.mark.parametrize(
    ("option", "value"),
    [("dropout", 1.0), ("weight_drop", -0.1), ("dropout_embedding", 1.5), ("hidden_size", 0)],
)
def test_bad_options_are_refused_by_name(option, value):
    with pytest.raises(ValueError, match=f"{option}={value}"):
        _small(**{option: value})


def test_config_round_trip():
    model = _small(dropout_hidden=0.225)
    clone = awd.AWDLSTM.from_config(model.get_config())
    assert clone.get_config()["dropout_hidden"] == 0.225
    assert clone.layer_sizes == model.layer_sizes == [10, 10, 6]
