"""Training recipe for word-level language models: stateful BPTT, NT-ASGD, and token-level distillation."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from kd_tf import runtime
from kd_tf.io import replaced_atomically


def perplexity(mean_cross_entropy: float) -> float:
    """`exp` of a mean per-token cross-entropy (in nats); `inf` where that overflows."""
    return math.exp(mean_cross_entropy) if mean_cross_entropy < 700 else math.inf


def should_start_averaging(validation_losses, current_loss: float, nonmono: int) -> bool:
    """NT-ASGD's trigger (Merity et al. 2018): start averaging when the model stops improving.

    True when there are more than `nonmono` earlier evaluations and `current_loss` is worse than the best
    of all of them except the last `nonmono`, i.e. `nonmono` evaluations have passed without beating it.

    Args:
        validation_losses: earlier validation losses, oldest first (not including `current_loss`).
        current_loss: the validation loss just measured.
        nonmono: how many recent evaluations are left out of the comparison (5 in AWD-LSTM).
    """
    if nonmono < 0:
        raise ValueError(f"`nonmono` must be >= 0. Received: nonmono={nonmono}")
    validation_losses = list(validation_losses)
    if len(validation_losses) <= nonmono:
        return False
    return current_loss > min(validation_losses[: len(validation_losses) - nonmono])


class WeightAverager:
    """Running mean of variables from the step averaging starts on (ASGD with t0 = 0 and λ = 0).

    After the n-th step since the switch, `average ← average + (weight - average) / n`, so the average is
    the plain mean of the weights after each of those steps, as PyTorch's ASGD keeps it for AWD-LSTM.
    """

    def __init__(self, variables):
        self.variables = list(variables)
        self.averages = [
            tf.Variable(tf.convert_to_tensor(variable), trainable=False) for variable in self.variables
        ]
        self.count = tf.Variable(0.0, trainable=False)

    @tf.function
    def update(self):
        """Folds the current weights into the average (call after every optimizer step)."""
        self.count.assign_add(1.0)
        for average, variable in zip(self.averages, self.variables, strict=True):
            average.assign_add((tf.convert_to_tensor(variable) - average) / self.count)

    @contextlib.contextmanager
    def swapped_in(self):
        """Within the block the variables hold the averages; on exit they get their own values back."""
        saved = [np.array(variable.numpy()) for variable in self.variables]
        for variable, average in zip(self.variables, self.averages, strict=True):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, saved, strict=True):
                variable.assign(value)


def _state_signature(model, batch_size: int):
    return tf.nest.map_structure(tf.TensorSpec.from_tensor, model.initial_states(batch_size))


def _window_signature(batch_size: int):
    return tf.TensorSpec([batch_size, None], tf.int32)


def _make_forward(model, batch_size: int) -> Callable:
    """`(inputs, states) -> (logits, states)` in inference mode, compiled for `batch_size` lanes."""

    @tf.function(input_signature=[_window_signature(batch_size), _state_signature(model, batch_size)])
    def forward(inputs, states):
        output = model(inputs, training=False, states=states, return_states=True)
        return output.logits, output.states

    return forward


def _make_cross_entropy_sum(model, batch_size: int) -> Callable:
    """`(inputs, targets, states) -> (summed token cross-entropy, states)`, inference mode."""
    forward = _make_forward(model, batch_size)

    @tf.function(
        input_signature=[
            _window_signature(batch_size),
            _window_signature(batch_size),
            _state_signature(model, batch_size),
        ]
    )
    def cross_entropy_sum(inputs, targets, states):
        logits, states = forward(inputs, states)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(cross_entropy), states

    return cross_entropy_sum


def _mean_cross_entropy(cross_entropy_sum, model, corpus, split: str, bptt: int | None) -> float:
    states = model.initial_states(corpus.lane_count(split))
    total = 0.0
    for window in corpus.eval_windows(split, bptt):
        window_sum, states = cross_entropy_sum(window.inputs, window.targets, states)
        total += float(window_sum)
    return total / corpus.target_count(split)


def evaluate_perplexity(model, corpus, split: str = "valid", bptt: int | None = None) -> float:
    """Perplexity of `model` on `split`: `exp` of the mean cross-entropy over every target token.

    The lanes are read in fixed windows of `bptt` tokens (default `corpus.bptt`) with the state carried
    from window to window, starting from zeros.
    """
    cross_entropy_sum = _make_cross_entropy_sum(model, corpus.lane_count(split))
    return perplexity(_mean_cross_entropy(cross_entropy_sum, model, corpus, split, bptt))


def teacher_logits_stream(teacher, corpus, split: str = "train", bptt: int | None = None) -> Iterator[tuple]:
    """Yields `(window, logits)` for the fixed windows of `split` in order; logits `[lanes, time, M]`.

    The teacher runs in inference mode with its state carried across windows, so the logits at a lane
    position depend on the text before it and not on where windows are cut: a per-position cache made
    from this stream (e.g. KD-topk's top-k values and ids) serves the student's random-length windows too.
    """
    forward = _make_forward(teacher, corpus.lane_count(split))
    states = teacher.initial_states(corpus.lane_count(split))
    for window in corpus.eval_windows(split, bptt):
        logits, states = forward(window.inputs, states)
        yield window, logits


def teacher_payload_cache(teacher, corpus, loss, split: str = "train", bptt: int | None = None) -> np.ndarray:
    """What `loss` needs from `teacher` at every position of `split`: `[lanes, steps - 1, payload_size]`.

    Entry `[lane, position]` is `loss.teacher_payload(target, teacher_logits)` for the input token at
    `position` (e.g. KD-topk's `k` probabilities and `k` class ids, 10 floats a token for `k = 5`). Exact
    for any windowing (see `teacher_logits_stream`); pass it to `train_language_model(teacher_payloads=)`
    to train a student without running the teacher.
    """
    if not loss.payload_size(corpus.num_words):
        raise ValueError(f"`loss` {loss.name!r} needs nothing from the teacher; there is nothing to cache.")
    payloads = [
        loss.teacher_payload(window.targets, logits).numpy()
        for window, logits in teacher_logits_stream(teacher, corpus, split, bptt)
    ]
    return np.concatenate(payloads, axis=1).astype(np.float32)


def _make_train_step(
    model,
    teacher,
    loss,
    batch_size: int,
    clip: float,
    weight_decay: float,
    alpha_ar: float,
    beta_tar: float,
    payload_size: int | None = None,
) -> Callable:
    """The compiled SGD step on one window; see `train_language_model` for what it does.

    The step's last argument and last result are the teacher's: its states when `teacher` runs online,
    the window's cached payload `[batch, time, payload_size]` when `payload_size` is given, else `[]`.
    """
    variables = model.trainable_variables
    if payload_size is not None:
        teacher_signature = tf.TensorSpec([batch_size, None, payload_size], tf.float32)
    elif teacher is not None:
        teacher_signature = _state_signature(teacher, batch_size)
    else:
        teacher_signature = []

    @tf.function(
        input_signature=[
            _window_signature(batch_size),
            _window_signature(batch_size),
            tf.TensorSpec([], tf.float32),
            _state_signature(model, batch_size),
            teacher_signature,
        ]
    )
    def train_step(inputs, targets, step_size, states, teacher_input):
        teacher_logits = None
        if payload_size is None and teacher is not None:
            teacher_output = teacher(inputs, training=False, states=teacher_input, return_states=True)
            teacher_logits = tf.stop_gradient(teacher_output.logits)
            teacher_input = teacher_output.states
        with tf.GradientTape() as tape:
            output = model(inputs, training=True, states=states, return_states=True)
            if loss is None:
                token_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=targets, logits=output.logits
                )
            elif payload_size is not None:
                token_losses = loss.combine(*loss.terms(targets, teacher_input, output.logits))
            else:
                token_losses = loss.per_example(targets, teacher_logits, output.logits)
            data_loss = tf.reduce_mean(token_losses)
            total_loss = data_loss + alpha_ar * output.activation_penalty + beta_tar * output.temporal_penalty
        gradients = tape.gradient(total_loss, variables)
        gradients, _ = tf.clip_by_global_norm(gradients, clip)
        # PyTorch SGD's coupled weight decay, added after clipping: w ← w - lr·(clip(g) + wd·w).
        for variable, gradient in zip(variables, gradients, strict=True):
            value = tf.convert_to_tensor(variable)
            variable.assign_sub(step_size * (tf.convert_to_tensor(gradient) + weight_decay * value))
        return data_loss, output.states, teacher_input

    return train_step


def _check_arguments(model, teacher, loss, corpus, epochs, lr, clip, weight_decay, nonmono, teacher_payloads):
    for name, value, low in (
        ("epochs", epochs, 1),
        ("lr", lr, 0.0),
        ("clip", clip, 0.0),
        ("weight_decay", weight_decay, 0.0),
        ("nonmono", nonmono, 0),
    ):
        if value < low or (name in ("lr", "clip") and value == 0):
            bound = "> 0" if name in ("lr", "clip") else f">= {low}"
            raise ValueError(f"`{name}` must be {bound}. Received: {name}={value}")
    if model.num_words != corpus.num_words:
        raise ValueError(
            f"The model predicts {model.num_words} words but the corpus has {corpus.num_words}. "
            f"Received: model.num_words={model.num_words}"
        )
    if teacher is not None and teacher.num_words != model.num_words:
        raise ValueError(
            f"Teacher and student must share the vocabulary. Received: teacher.num_words="
            f"{teacher.num_words}, model.num_words={model.num_words}"
        )
    if teacher_payloads is not None:
        if teacher is not None:
            raise ValueError("Give `teacher` or `teacher_payloads`, not both.")
        if loss is None:
            raise ValueError("`teacher_payloads` needs the distillation `loss` they were made for.")
        lanes = corpus.lanes("train")
        expected = (lanes.shape[0], lanes.shape[1] - 1, loss.payload_size(corpus.num_words))
        if tuple(teacher_payloads.shape) != expected:
            raise ValueError(
                f"`teacher_payloads` must have shape {expected} ([lanes, steps - 1, payload size] of the "
                f"training stream; see `teacher_payload_cache`). Received: teacher_payloads.shape="
                f"{tuple(teacher_payloads.shape)}"
            )
    elif loss is not None and teacher is None and loss.payload_size(corpus.num_words):
        raise ValueError(
            f"`loss` {loss.name!r} needs teacher outputs, but `teacher` is None. Received: teacher=None"
        )


def train_language_model(
    *,
    model,
    corpus,
    epochs: int,
    teacher=None,
    loss=None,
    teacher_payloads: np.ndarray | None = None,
    lr: float = 30.0,
    clip: float = 0.25,
    weight_decay: float = 1.2e-6,
    alpha_ar: float = 2.0,
    beta_tar: float = 1.0,
    nonmono: int = 5,
    averaging: bool = True,
    max_windows_per_epoch: int | None = None,
    log: Callable[[str], None] | None = print,
    checkpoint_path: str | None = None,
    checkpoint_every_steps: int = 0,
) -> dict:
    """Trains a stateful language model (AWD-LSTM's recipe), alone or distilled from a teacher.

    Each epoch resets the lanes' states to zero and walks `corpus.train_windows(epoch)` (AWD-LSTM's random
    BPTT lengths), carrying the student's state, and the teacher's, from window to window. One window is
    one step:

    - loss: the mean over the window's `lanes × length` tokens of plain cross-entropy (`loss=None`) or of
      `loss.per_example(targets, teacher_logits, student_logits)` (every token is an example, `M` = the
      vocabulary), plus `alpha_ar`·AR + `beta_tar`·TAR from the model's `LanguageModelOutput`;
    - teacher: always called with `training=False`, never updated;
    - update: SGD with the gradient clipped to global norm `clip`, coupled weight decay, and the learning
      rate `lr` times the window's `lr_scale` (length / bptt).

    After every epoch the validation perplexity is measured (fixed windows, fresh state). NT-ASGD: while
    plain SGD runs, if `should_start_averaging(earlier validation losses, this one, nonmono)` holds, every
    later step also updates a running mean of the weights (`WeightAverager`), and from then on validation
    (and model selection) uses the averaged weights. The weights with the best validation loss are kept;
    at the end they are loaded into `model` and the test perplexity is measured with them.

    Single device, float32. The state is passed explicitly (see `models.awd_lstm.AWDLSTM`): `model` and
    `teacher` need `num_words`, `initial_states(batch_size)` and a call
    `(ids, training=, states=, return_states=True)` returning `logits`, `states`, `activation_penalty`,
    `temporal_penalty`.

    Args:
        model: the model to train (teacher or student).
        corpus: a `data.ptb.Corpus` (lanes, windows, vocabulary).
        epochs: number of passes over the training stream.
        teacher: a trained model to distill from, or `None`.
        loss: a `kd_tf.losses` distillation loss, or `None` for plain cross-entropy.
        teacher_payloads: instead of `teacher`, what `loss` needs from it at every training position,
            `[lanes, steps - 1, payload_size]` from `teacher_payload_cache` (offline distillation; the
            same updates as the online teacher, without its forward pass).
        lr: base learning rate (AWD-LSTM: 30).
        clip: global gradient-norm bound (0.25).
        weight_decay: L2 coefficient added to the gradient (1.2e-6).
        alpha_ar: weight of activation regularisation (2).
        beta_tar: weight of temporal activation regularisation (1).
        nonmono: NT-ASGD's patience in evaluations (5).
        averaging: whether NT-ASGD may switch to averaged weights (False: plain SGD throughout).
        max_windows_per_epoch: stop each epoch after this many windows (quick runs); `None`: whole stream.
        log: called with one progress line per epoch; `None` for silence.
        checkpoint_path: a `.npz` file rewritten (atomically) after every epoch with everything the loop
            carries: every model variable, the averaged weights, the best weights, the validation losses
            and the history. When it exists at the start, training resumes where it was written. With it,
            SIGTERM (`runtime.catch_terminations`) saves the loop inside its epoch at the next window and
            raises `runtime.Terminated`: the saved state then also holds the windows done, the carried
            states of the student (and of an online teacher) and the epoch's running loss, so that the
            resumed run takes the same remaining windows from the same state.
        checkpoint_every_steps: with `checkpoint_path`, also save every this many windows of an epoch
            (0: at the epoch ends, and on SIGTERM, only).

    Returns:
        A dict: `history` (per epoch: `train_loss`, `val_loss`, `val_ppl`, `averaged`, `wall_time`,
        `tokens_per_second`), `val_ppl` (best), `test_ppl` (of the kept weights), `averaging_epoch` (first
        epoch trained with averaging, 1-based, or `None`), `epochs`.
    """
    _check_arguments(model, teacher, loss, corpus, epochs, lr, clip, weight_decay, nonmono, teacher_payloads)
    log = log or (lambda line: None)
    train_step = _make_train_step(
        model,
        teacher,
        loss,
        corpus.batch_size,
        clip=float(clip),
        weight_decay=float(weight_decay),
        alpha_ar=float(alpha_ar),
        beta_tar=float(beta_tar),
        payload_size=None if teacher_payloads is None else teacher_payloads.shape[-1],
    )
    evaluation = _make_cross_entropy_sum(model, corpus.lane_count("valid"))
    variables = model.trainable_variables
    history = {
        key: [] for key in ("train_loss", "val_loss", "val_ppl", "averaged", "wall_time", "tokens_per_second")
    }
    validation_losses = []
    best_loss, best_weights = math.inf, None
    averager, averaging_epoch = None, None
    first_epoch, first_window, inside = 0, 0, None
    if checkpoint_path and os.path.exists(checkpoint_path):
        state = _load_state(checkpoint_path, model)
        first_epoch, history, validation_losses = state["epoch"], state["history"], state["validation_losses"]
        first_window, inside = state.get("window", 0), state["inside_epoch"]
        best_loss, best_weights, averaging_epoch = (
            state["best_loss"],
            state["best_weights"],
            state["averaging_epoch"],
        )
        if state["averages"] is not None:
            averager = WeightAverager(variables)
            for average, value in zip(averager.averages, state["averages"], strict=True):
                average.assign(value)
            averager.count.assign(state["count"])
        within = f", window {first_window}" if first_window else ""
        log(f"Resuming from epoch {first_epoch}{within} ({checkpoint_path}).")

    def save(epoch, **inside_epoch):
        _save_state(
            checkpoint_path,
            model,
            epoch=epoch,
            history=history,
            validation_losses=validation_losses,
            best_loss=best_loss,
            best_weights=best_weights,
            averaging_epoch=averaging_epoch,
            averager=averager,
            **inside_epoch,
        )

    stops_at_windows = runtime.deferring_terminations() if checkpoint_path else contextlib.nullcontext()
    with stops_at_windows:
        for epoch in range(first_epoch, epochs):
            runtime.raise_if_interrupted()
            epoch_start = time.perf_counter()
            states = model.initial_states(corpus.batch_size)
            teacher_states = teacher.initial_states(corpus.batch_size) if teacher is not None else []
            loss_sum, token_count, skip, resumed_time = 0.0, 0, 0, 0.0
            if epoch == first_epoch and first_window:
                states, teacher_states = inside["states"], inside["teacher_states"] or teacher_states
                loss_sum, token_count = inside["loss_sum"], inside["token_count"]
                skip, resumed_time = first_window, inside["train_time"]
            for index, window in enumerate(corpus.train_windows(epoch)):
                if max_windows_per_epoch is not None and index >= max_windows_per_epoch:
                    break
                if index < skip:
                    continue
                if teacher_payloads is not None:
                    teacher_states = teacher_payloads[:, window.start : window.start + window.length]
                data_loss, states, teacher_states = train_step(
                    window.inputs,
                    window.targets,
                    tf.constant(lr * window.lr_scale, tf.float32),
                    states,
                    teacher_states,
                )
                if averager is not None:
                    averager.update()
                tokens = window.inputs.size
                loss_sum += float(data_loss) * tokens
                token_count += tokens
                done = index + 1
                every = checkpoint_every_steps and done % checkpoint_every_steps == 0
                if checkpoint_path and (runtime.terminated() or every):
                    save(
                        epoch,
                        window=done,
                        loss_sum=loss_sum,
                        token_count=token_count,
                        train_time=resumed_time + time.perf_counter() - epoch_start,
                        states=states,
                        teacher_states=teacher_states if teacher is not None else None,
                    )
                    if runtime.terminated():
                        raise runtime.Terminated(runtime.stopped_message(epoch + 1, done))
            train_time = resumed_time + time.perf_counter() - epoch_start

            averaged = averager is not None
            with averager.swapped_in() if averaged else contextlib.nullcontext():
                val_loss = _mean_cross_entropy(evaluation, model, corpus, "valid", None)
                improved = val_loss < best_loss
                if improved:
                    best_loss = val_loss
                    best_weights = [np.array(variable.numpy()) for variable in variables]
            if not averaged:
                if averaging and should_start_averaging(validation_losses, val_loss, nonmono):
                    averager = WeightAverager(variables)
                    averaging_epoch = epoch + 2
                validation_losses.append(val_loss)

            wall_time = time.perf_counter() - epoch_start
            history["train_loss"].append(loss_sum / max(token_count, 1))
            history["val_loss"].append(val_loss)
            history["val_ppl"].append(perplexity(val_loss))
            history["averaged"].append(averaged)
            history["wall_time"].append(wall_time)
            history["tokens_per_second"].append(token_count / train_time)
            log(
                f"epoch {epoch + 1:4d}/{epochs} | train loss {history['train_loss'][-1]:.4f} | "
                f"val ppl {history['val_ppl'][-1]:9.2f}{' *' if improved else '  '} | "
                f"{'averaged' if averaged else 'sgd     '} | "
                f"{history['tokens_per_second'][-1]:8.0f} tok/s | {wall_time:7.1f} s"
                + (" | switching to averaged SGD" if averaging_epoch == epoch + 2 else "")
            )
            if checkpoint_path:
                save(epoch + 1)

    if best_weights is not None:
        for variable, value in zip(variables, best_weights, strict=True):
            variable.assign(value)
    if corpus.lane_count("test") != corpus.lane_count("valid"):
        evaluation = _make_cross_entropy_sum(model, corpus.lane_count("test"))
    test_loss = _mean_cross_entropy(evaluation, model, corpus, "test", None)
    result = {
        "history": history,
        "val_ppl": perplexity(best_loss),
        "test_ppl": perplexity(test_loss),
        "averaging_epoch": averaging_epoch,
        "epochs": epochs,
    }
    log(f"best val ppl {result['val_ppl']:.2f} | test ppl {result['test_ppl']:.2f}")
    return result


def _save_state(
    path: str, model, *, averager, best_weights, states=None, teacher_states=None, **scalars
) -> None:
    """Writes the loop's state to `path` as one `.npz`, through a temporary name and a rename; inside an
    epoch, with the carried `(h, c)` states of each layer of the student (and of an online teacher)."""
    arrays = {f"variable/{i}": np.asarray(v) for i, v in enumerate(model.variables)}
    if best_weights is not None:
        arrays.update({f"best/{i}": value for i, value in enumerate(best_weights)})
    for name, carried in (("states", states), ("teacher_states", teacher_states)):
        for layer, pair in enumerate(carried or ()):
            arrays.update({f"{name}/{layer}/{part}": np.asarray(value) for part, value in enumerate(pair)})
    if averager is not None:
        arrays.update({f"average/{i}": np.asarray(v) for i, v in enumerate(averager.averages)})
        scalars["count"] = float(averager.count.numpy())
    arrays["state"] = np.asarray(json.dumps(scalars))
    with replaced_atomically(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)


def _load_state(path: str, model) -> dict:
    """Reads `_save_state`'s file back into `model` and returns the loop's other state."""
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"The checkpoint {path} is damaged ({error}); remove it to start over.") from error
    try:
        state = json.loads(str(arrays.pop("state")))
    except (KeyError, ValueError) as error:
        raise ValueError(f"The checkpoint {path} is damaged ({error}); remove it to start over.") from error
    variables = model.variables
    if sum(name.startswith("variable/") for name in arrays) != len(variables):
        raise ValueError(f"The checkpoint {path} was written by another model; remove it to start over.")
    for i, variable in enumerate(variables):
        variable.assign(arrays[f"variable/{i}"])

    def listed(prefix):
        count = sum(name.startswith(prefix) for name in arrays)
        return [arrays[f"{prefix}{i}"] for i in range(count)] if count else None

    state["best_weights"] = listed("best/")
    state["averages"] = listed("average/")
    state.setdefault("count", 0.0)
    state["inside_epoch"] = None
    if state.get("window"):
        state["inside_epoch"] = {
            "states": _carried(arrays, "states"),
            "teacher_states": _carried(arrays, "teacher_states"),
            **{key: state[key] for key in ("loss_sum", "token_count", "train_time")},
        }
    return state


def _carried(arrays: dict, name: str) -> list | None:
    """The `[(h, c)]` states `_save_state` wrote under `name`, as tensors, or `None`."""
    layers = sum(key.startswith(f"{name}/") and key.endswith("/0") for key in arrays)
    if not layers:
        return None
    return [
        tuple(tf.constant(arrays[f"{name}/{layer}/{part}"]) for part in (0, 1)) for layer in range(layers)
    ]


def measure_training_throughput(
    model,
    *,
    batch_size: int = 20,
    bptt: int = 70,
    steps: int = 3,
    teacher=None,
    loss=None,
    seed: int = 0,
) -> dict:
    """Training speed of `train_language_model`'s step on random ids, after one warm-up step.

    Times `steps` steps of `[batch_size, bptt]` windows with the full recipe (AR/TAR, clipping, weight
    decay, and the teacher's forward pass when `teacher` is given).

    Returns:
        `tokens_per_second` (wall clock) and `tokens_per_cpu_second` (tokens over the process's CPU time,
        all threads: on a shared machine, `cores ×` this bounds what an idle machine would reach).
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1. Received: steps={steps}")
    train_step = _make_train_step(
        model, teacher, loss, batch_size, clip=0.25, weight_decay=1.2e-6, alpha_ar=2.0, beta_tar=1.0
    )
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, model.num_words, (batch_size, bptt * (steps + 1) + 1), dtype=np.int32)
    states = model.initial_states(batch_size)
    teacher_states = teacher.initial_states(batch_size) if teacher is not None else []
    step_size = tf.constant(1.0, tf.float32)
    for step in range(steps + 1):
        if step == 1:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
        window = stream[:, step * bptt : (step + 1) * bptt + 1]
        data_loss, states, teacher_states = train_step(
            window[:, :-1], window[:, 1:], step_size, states, teacher_states
        )
        float(data_loss)
    tokens = steps * batch_size * bptt
    return {
        "tokens_per_second": tokens / (time.perf_counter() - wall_start),
        "tokens_per_cpu_second": tokens / (time.process_time() - cpu_start),
    }
