"""AWD-LSTM (Merity et al. 2018): stacked LSTMs with DropConnect, locked dropout and tied embeddings."""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import tensorflow as tf


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")


def _check_size(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")


class EmbeddingDropout(keras.layers.Layer):
    """Word embedding whose dropout removes whole words: a vocabulary row is zeroed for the whole batch.

    In training each row of the `[num_words, embedding_size]` matrix is kept with probability `1 - rate`
    (scaled by `1 / (1 - rate)`), so every occurrence of a dropped word in the batch sees a zero vector.
    The matrix is initialised uniform in ±0.1 and is also the output layer's kernel (tied weights).

    Args:
        num_words: vocabulary size.
        embedding_size: width of a word vector.
        rate: probability of dropping a vocabulary row in training (default 0.1).
        seed: seed of the dropout masks.
    """

    def __init__(self, num_words, embedding_size, rate=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_size("num_words", num_words)
        _check_size("embedding_size", embedding_size)
        _check_rate("rate", rate)
        self.num_words = int(num_words)
        self.embedding_size = int(embedding_size)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.num_words, self.embedding_size),
            initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=self.seed),
            name="embeddings",
        )

    def call(self, ids, training=False):
        ids = tf.cast(ids, tf.int32)
        embeddings = tf.convert_to_tensor(self.embeddings)
        vectors = tf.gather(embeddings, ids)
        if training and self.rate > 0:
            keep = 1.0 - self.rate
            row_kept = keras.random.uniform((self.num_words,), seed=self.seed_generator) < keep
            # Gathering the row mask at the ids equals masking the matrix, without a [V, E] product.
            scale = tf.gather(tf.cast(row_kept, vectors.dtype) / keep, ids)
            vectors = vectors * scale[..., None]
        return vectors

    def get_config(self):
        config = super().get_config()
        config.update(
            num_words=self.num_words,
            embedding_size=self.embedding_size,
            rate=self.rate,
            seed=self.seed,
        )
        return config


class LockedDropout(keras.layers.Layer):
    """Variational dropout: one mask per sequence and feature, the same at every time step.

    Input `[batch, time, features]`; the mask is `[batch, 1, features]` (Gal & Ghahramani 2016).
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = tf.stack([tf.shape(inputs)[0], 1, tf.shape(inputs)[2]])
        kept = keras.random.uniform(shape, seed=self.seed_generator) < keep
        return inputs * (tf.cast(kept, inputs.dtype) / keep)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


class DropConnectLSTM(keras.layers.Layer):
    """A single-layer LSTM whose hidden-to-hidden kernel gets DropConnect (Wan et al. 2013) in training.

    Each call in training draws one element-wise mask for the `[units, 4·units]` recurrent kernel and uses
    the masked kernel (scaled by `1 / (1 - weight_drop)`) at every time step of the window, as AWD-LSTM's
    `WeightDrop` does. Gates are ordered input, forget, cell, output. All weights start uniform in
    ±1/sqrt(units) (PyTorch's LSTM initialisation, which AWD-LSTM keeps); PyTorch's two bias vectors are
    one here (their sum is all the cell sees).

    Call arguments:
        inputs: `[batch, time, features]`.
        initial_state: `(h, c)`, each `[batch, units]`; zeros when omitted.
        training: whether to apply DropConnect.

    Returns:
        `(outputs [batch, time, units], (h, c))`, the hidden states at every step and the final state.
    """

    def __init__(self, units, weight_drop=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_size("units", units)
        _check_rate("weight_drop", weight_drop)
        self.units = int(units)
        self.weight_drop = float(weight_drop)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        limit = 1.0 / math.sqrt(self.units)
        initializer = keras.initializers.RandomUniform(-limit, limit, seed=self.seed)
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 4 * self.units), initializer=initializer, name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units), initializer=initializer, name="recurrent_kernel"
        )
        self.bias = self.add_weight(shape=(4 * self.units,), initializer=initializer, name="bias")

    def effective_recurrent_kernel(self, training=False):
        """The recurrent kernel the cell uses: DropConnect-masked in training, the raw kernel otherwise."""
        kernel = tf.convert_to_tensor(self.recurrent_kernel)
        if not training or self.weight_drop == 0:
            return kernel
        keep = 1.0 - self.weight_drop
        kept = keras.random.uniform(tf.shape(kernel), seed=self.seed_generator) < keep
        return kernel * (tf.cast(kept, kernel.dtype) / keep)

    def call(self, inputs, initial_state=None, training=False):
        if initial_state is None:
            zeros = tf.zeros(tf.stack([tf.shape(inputs)[0], self.units]), inputs.dtype)
            initial_state = (zeros, zeros)
        recurrent_kernel = self.effective_recurrent_kernel(training)
        # The input projection of every time step is one matrix product outside the sequential loop.
        projected = tf.einsum("btf,fg->btg", inputs, tf.convert_to_tensor(self.kernel))
        projected = projected + tf.convert_to_tensor(self.bias)

        def step(state, projected_input):
            hidden, cell = state
            gates = projected_input + tf.matmul(hidden, recurrent_kernel)
            input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
            cell = tf.sigmoid(forget_gate) * cell + tf.sigmoid(input_gate) * tf.tanh(candidate)
            hidden = tf.sigmoid(output_gate) * tf.tanh(cell)
            return hidden, cell

        initial_state = tuple(tf.cast(tensor, inputs.dtype) for tensor in initial_state)
        hiddens, cells = tf.scan(step, tf.transpose(projected, [1, 0, 2]), initializer=initial_state)
        outputs = tf.transpose(hiddens, [1, 0, 2])
        return outputs, (hiddens[-1], cells[-1])

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, weight_drop=self.weight_drop, seed=self.seed)
        return config


class LanguageModelOutput(NamedTuple):
    """What `AWDLSTM(..., return_states=True)` returns.

    Attributes:
        logits: `[batch, time, num_words]` float32.
        states: per layer `(h, c)`, each `[batch, units]`: feed them to the next window of the same lanes.
        activation_penalty: mean square of the dropped last-layer output (AR, times α in the loss).
        temporal_penalty: mean square of the step-to-step change of the undropped last-layer output
            (TAR, times β in the loss).
    """

    logits: tf.Tensor
    states: list
    activation_penalty: tf.Tensor
    temporal_penalty: tf.Tensor


@keras.saving.register_keras_serializable(package="kd_tf")
class AWDLSTM(keras.Model):
    """AWD-LSTM word-level language model (Merity, Keskar & Socher 2018).

    embedding (row dropout) → locked dropout → LSTM₁ → locked dropout → … → LSTMₙ → locked dropout →
    tied output layer `h·Eᵀ + b`. Each LSTM has DropConnect on its recurrent kernel. The last LSTM's width
    equals the embedding size so the output layer can reuse the embedding matrix `E` (one variable).

    The recurrent state is passed explicitly: `model(ids, states=states, return_states=True)` returns a
    `LanguageModelOutput` whose `states` feed the next window of the same lanes; `model(ids)` starts from
    zeros and returns the logits alone (what a plain Keras loop or `kd_tf.Distiller` sees). Explicit state
    needs no fixed batch size, serves training (20 lanes) and evaluation (10 lanes) with one model, lets a
    teacher and a student carry separate states through one `tf.function`, and a reset is just
    `initial_states(batch_size)`.

    Args:
        num_words: vocabulary size `M`.
        embedding_size: embedding width, also the last LSTM's width (400 teacher, 300 student).
        hidden_size: width of the other LSTMs (1150 teacher, 600 student).
        num_layers: number of LSTMs (3).
        dropout: locked dropout on the last LSTM's output (0.4).
        dropout_hidden: locked dropout between LSTMs (0.25 for PTB; 0.225 for the paper's student).
        dropout_input: locked dropout on the embedded input (0.4 for PTB).
        dropout_embedding: probability of dropping a vocabulary row (0.1; 0.4 for the paper's student).
        weight_drop: DropConnect rate on each recurrent kernel (0.5).
        seed: seed of initialisers and dropout masks (`None`: Keras's global seed).
    """

    def __init__(
        self,
        num_words,
        embedding_size=400,
        hidden_size=1150,
        num_layers=3,
        dropout=0.4,
        dropout_hidden=0.25,
        dropout_input=0.4,
        dropout_embedding=0.1,
        weight_drop=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("num_words", num_words),
            ("embedding_size", embedding_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            _check_size(name, value)
        for name, value in (
            ("dropout", dropout),
            ("dropout_hidden", dropout_hidden),
            ("dropout_input", dropout_input),
            ("dropout_embedding", dropout_embedding),
            ("weight_drop", weight_drop),
        ):
            _check_rate(name, value)
        self.num_words = int(num_words)
        self.embedding_size = int(embedding_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.dropout_hidden = float(dropout_hidden)
        self.dropout_input = float(dropout_input)
        self.dropout_embedding = float(dropout_embedding)
        self.weight_drop = float(weight_drop)
        self.seed = seed

        def layer_seed(offset):
            return None if seed is None else seed + offset

        self.embedding = EmbeddingDropout(
            num_words, embedding_size, dropout_embedding, seed=layer_seed(0), name="embedding"
        )
        self.input_dropout = LockedDropout(dropout_input, seed=layer_seed(1), name="input_dropout")
        self.hidden_dropout = LockedDropout(dropout_hidden, seed=layer_seed(2), name="hidden_dropout")
        self.output_dropout = LockedDropout(dropout, seed=layer_seed(3), name="output_dropout")
        self.lstms = [
            DropConnectLSTM(
                units,
                weight_drop=weight_drop,
                seed=layer_seed(10 + index),
                name=f"lstm_{index + 1}",
            )
            for index, units in enumerate(self.layer_sizes)
        ]

    @property
    def layer_sizes(self) -> list[int]:
        """Width of each LSTM: `hidden_size`, except the last one, which is `embedding_size`."""
        return [self.hidden_size] * (self.num_layers - 1) + [self.embedding_size]

    def build(self, input_shape=None):
        self.embedding.build(None)
        features = self.embedding_size
        for lstm in self.lstms:
            lstm.build((None, None, features))
            features = lstm.units
        self.output_bias = self.add_weight(shape=(self.num_words,), initializer="zeros", name="output_bias")
        self.built = True

    @property
    def output_kernel(self) -> tf.Tensor:
        """The output layer's class vectors as a `(embedding_size, num_words)` kernel: `Eᵀ` (tied)."""
        return tf.transpose(tf.convert_to_tensor(self.embedding.embeddings))

    def initial_states(self, batch_size: int, dtype="float32") -> list:
        """Zero `(h, c)` for each layer: the state at the start of an epoch or an evaluation."""
        return [
            (tf.zeros((batch_size, units), dtype), tf.zeros((batch_size, units), dtype))
            for units in self.layer_sizes
        ]

    def call(self, inputs, training=False, states=None, return_states=False):
        vectors = self.input_dropout(self.embedding(inputs, training=training), training=training)
        states = states or [None] * self.num_layers
        new_states = []
        for index, (lstm, state) in enumerate(zip(self.lstms, states, strict=True)):
            raw_output, new_state = lstm(vectors, initial_state=state, training=training)
            new_states.append(new_state)
            if index < self.num_layers - 1:
                vectors = self.hidden_dropout(raw_output, training=training)
        output = self.output_dropout(raw_output, training=training)
        embeddings = tf.convert_to_tensor(self.embedding.embeddings)
        logits = tf.einsum("bte,we->btw", output, embeddings) + tf.convert_to_tensor(self.output_bias)
        logits = tf.cast(logits, "float32")
        if not return_states:
            return logits
        output = tf.cast(output, "float32")
        change = tf.cast(raw_output[:, 1:] - raw_output[:, :-1], "float32")
        # A one-step window has no change; the guard keeps the mean of nothing at 0 instead of NaN.
        temporal_penalty = tf.reduce_sum(tf.square(change)) / tf.maximum(
            tf.cast(tf.size(change), "float32"), 1.0
        )
        return LanguageModelOutput(
            logits=logits,
            states=new_states,
            activation_penalty=tf.reduce_mean(tf.square(output)),
            temporal_penalty=temporal_penalty,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_words=self.num_words,
            embedding_size=self.embedding_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            dropout_hidden=self.dropout_hidden,
            dropout_input=self.dropout_input,
            dropout_embedding=self.dropout_embedding,
            weight_drop=self.weight_drop,
            seed=self.seed,
        )
        return config


def parameter_count(num_words, embedding_size=400, hidden_size=1150, num_layers=3) -> int:
    """Trainable parameters of `AWDLSTM` (one bias per LSTM; PyTorch's two would add `4·units` each)."""
    count = num_words * embedding_size + num_words  # tied embedding/output matrix + output bias
    features = embedding_size
    for units in [hidden_size] * (num_layers - 1) + [embedding_size]:
        count += 4 * units * (features + units + 1)
        features = units
    return count


def awd_lstm(
    num_classes,
    embedding_size=400,
    hidden_size=1150,
    num_layers=3,
    dropout=0.4,
    dropout_hidden=0.25,
    dropout_input=0.4,
    dropout_embedding=0.1,
    weight_drop=0.5,
    seed=None,
    name="awd_lstm",
    **unused,
):
    """A built `AWDLSTM` for `num_classes` words; PTB teacher defaults (24,210,800 weights at M = 10,000).

    The paper's student is `awd_lstm(10000, embedding_size=300, hidden_size=600, dropout_embedding=0.4,
    dropout_hidden=0.225)` (9,136,000 weights). Options meant for other models (e.g. `batch_size`: the
    state is passed explicitly, so no batch size is fixed) are ignored.
    """
    model = AWDLSTM(
        num_classes,
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        dropout_hidden=dropout_hidden,
        dropout_input=dropout_input,
        dropout_embedding=dropout_embedding,
        weight_drop=weight_drop,
        seed=seed,
        name=name,
    )
    model.build((None, None))
    return model
