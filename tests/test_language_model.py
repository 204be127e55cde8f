"""Tests of the language-model recipe: SGD step, NT-ASGD switch and averaging, perplexity, distillation."""

import math
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from data import ptb
from kd_tf import language_model as lm
from kd_tf import losses, runtime
from models.awd_lstm import awd_lstm

NO_DROPOUT = {
    "dropout": 0.0,
    "dropout_hidden": 0.0,
    "dropout_input": 0.0,
    "dropout_embedding": 0.0,
    "weight_drop": 0.0,
}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ptb"))
    return ptb.write_toy_corpus(directory, train_lines=300, valid_lines=60, test_lines=60, seed=1)


@pytest.fixture
def corpus(corpus_dir):
    return ptb.load_corpus(corpus_dir, batch_size=8, eval_batch_size=4, test_batch_size=4, bptt=12, seed=0)


def _model(corpus, embedding_size=8, hidden_size=16, **options):
    return awd_lstm(
        corpus.num_words, embedding_size=embedding_size, hidden_size=hidden_size, seed=5, **options
    )


def test_should_start_averaging_on_a_synthetic_sequence():
    assert not lm.should_start_averaging([], 9.0, nonmono=5)
    # Fewer than nonmono + 1 earlier evaluations: never.
    assert not lm.should_start_averaging([5.0, 4.0, 6.0, 7.0, 8.0], 9.0, nonmono=5)
    # Best of all but the last 2 of [5, 4, 3, 3.5, 3.6] is 3.
    assert lm.should_start_averaging([5.0, 4.0, 3.0, 3.5, 3.6], 3.01, nonmono=2)
    assert not lm.should_start_averaging([5.0, 4.0, 3.0, 3.5, 3.6], 2.99, nonmono=2)
    # A whole run: the loss stalls from the 4th evaluation on; with nonmono = 3 the trigger fires at the
    # first evaluation that is worse than the best one outside the 3-evaluation window.
    sequence = [6.0, 5.0, 4.0, 4.2, 4.1, 4.05, 4.3, 4.01]
    fired = [
        index
        for index in range(len(sequence))
        if lm.should_start_averaging(sequence[:index], sequence[index], nonmono=3)
    ]
    assert fired == [6, 7]
    with pytest.raises(ValueError, match="nonmono=-1"):
        lm.should_start_averaging([1.0], 2.0, nonmono=-1)


def test_weight_averager_keeps_the_mean_since_the_switch_and_swaps_back():
    variable = tf.Variable([0.0, 10.0])
    averager = lm.WeightAverager([variable])
    for value in ([1.0, 2.0], [2.0, 4.0], [6.0, 0.0]):
        variable.assign(value)
        averager.update()
    np.testing.assert_allclose(averager.averages[0].numpy(), [3.0, 2.0])
    with averager.swapped_in():
        np.testing.assert_allclose(variable.numpy(), [3.0, 2.0])
    np.testing.assert_allclose(variable.numpy(), [6.0, 0.0])


def test_perplexity():
    assert lm.perplexity(math.log(42.0)) == pytest.approx(42.0)
    assert lm.perplexity(1e6) == math.inf


def test_evaluation_matches_one_pass_over_whole_lanes(corpus):
    model = _model(corpus)
    lanes = corpus.lanes("valid")
    logits = model(lanes[:, :-1])
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=lanes[:, 1:], logits=logits)
    expected = math.exp(float(tf.reduce_mean(cross_entropy)))
    assert lm.evaluate_perplexity(model, corpus, "valid") == pytest.approx(expected, rel=1e-5)
    # An untrained model is close to uniform over the vocabulary.
    assert 0.8 * corpus.num_words < expected < 1.2 * corpus.num_words


def test_teacher_logits_do_not_depend_on_window_cuts(corpus):
    teacher = _model(corpus)
    streams = [
        np.concatenate([logits for _, logits in lm.teacher_logits_stream(teacher, corpus, "valid", bptt)], 1)
        for bptt in (7, 30)
    ]
    np.testing.assert_allclose(streams[0], streams[1], rtol=1e-5, atol=1e-5)
    lanes = corpus.lanes("valid")
    assert streams[0].shape == (4, lanes.shape[1] - 1, corpus.num_words)


def test_train_step_is_clipped_sgd_with_coupled_weight_decay(corpus):
    model = _model(corpus, **NO_DROPOUT)
    step = lm._make_train_step(
        model, None, None, corpus.batch_size, clip=0.1, weight_decay=0.01, alpha_ar=2.0, beta_tar=1.0
    )
    window = next(corpus.train_windows(0))
    variables = model.trainable_variables
    before = [variable.numpy().copy() for variable in variables]
    states = model.initial_states(corpus.batch_size)
    with tf.GradientTape() as tape:
        output = model(window.inputs, states=states, return_states=True)
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=window.targets, logits=output.logits
        )
        total = (
            tf.reduce_mean(cross_entropy) + 2.0 * output.activation_penalty + 1.0 * output.temporal_penalty
        )
    gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(total, variables)]
    norm = np.sqrt(sum(np.sum(g**2) for g in gradients))
    assert norm > 0.1, "the test needs a gradient that clipping shortens"
    data_loss, _, _ = step(window.inputs, window.targets, tf.constant(0.7), states, [])
    assert float(data_loss) == pytest.approx(float(tf.reduce_mean(cross_entropy)), rel=1e-5)
    for variable, old, gradient in zip(variables, before, gradients, strict=True):
        expected = old - 0.7 * (gradient * 0.1 / norm + 0.01 * old)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_a_few_epochs_of_teacher_training_reduce_perplexity(corpus_dir):
    # One test lane, as AWD-LSTM evaluates the test set; validation uses 4.
    corpus = ptb.load_corpus(corpus_dir, batch_size=8, eval_batch_size=4, bptt=12, seed=0)
    assert corpus.lane_count("test") == 1
    model = _model(corpus, **NO_DROPOUT)
    initial = lm.evaluate_perplexity(model, corpus)
    lines = []
    result = lm.train_language_model(
        model=model, corpus=corpus, epochs=2, lr=10.0, nonmono=5, log=lines.append
    )
    history = result["history"]
    assert len(lines) == 3 and lines[0].startswith("epoch    1/2")
    assert result["val_ppl"] == pytest.approx(min(history["val_ppl"]))
    assert result["val_ppl"] < 0.75 * initial
    assert history["train_loss"][1] < history["train_loss"][0] < math.log(corpus.num_words) + 0.1
    assert math.isfinite(result["test_ppl"]) and result["test_ppl"] < 0.75 * initial
    assert all(time > 0 for time in history["wall_time"])
    assert result["averaging_epoch"] is None
    # The model keeps the best weights: evaluating it again gives the reported perplexities.
    assert lm.evaluate_perplexity(model, corpus) == pytest.approx(result["val_ppl"], rel=1e-5)
    assert lm.evaluate_perplexity(model, corpus, "test") == pytest.approx(result["test_ppl"], rel=1e-5)


def test_kd_topk_student_trains_from_a_frozen_teacher(corpus):
    teacher = _model(corpus, embedding_size=10, hidden_size=20)
    student = _model(corpus, embedding_size=6, hidden_size=12)
    teacher_weights = [variable.numpy().copy() for variable in teacher.trainable_variables]
    student_weights = [variable.numpy().copy() for variable in student.trainable_variables]
    loss = losses.get("kd_topk", topk=3, temperature=2.0, alpha=0.5)
    result = lm.train_language_model(
        model=student,
        teacher=teacher,
        loss=loss,
        corpus=corpus,
        epochs=1,
        lr=5.0,
        max_windows_per_epoch=4,
        log=None,
    )
    assert np.isfinite(result["history"]["train_loss"][0])
    assert result["history"]["train_loss"][0] > 0
    assert math.isfinite(result["val_ppl"]) and math.isfinite(result["test_ppl"])
    for variable, value in zip(teacher.trainable_variables, teacher_weights, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert any(
        np.abs(variable.numpy() - value).max() > 0
        for variable, value in zip(student.trainable_variables, student_weights, strict=True)
    )


def test_cached_teacher_payloads_give_the_same_training_as_the_online_teacher(corpus):
    teacher = _model(corpus, embedding_size=10, hidden_size=20, num_layers=2)
    loss = losses.get("kd_topk", topk=3, temperature=2.0, alpha=0.5)
    payloads = lm.teacher_payload_cache(teacher, corpus, loss, bptt=9)
    lanes = corpus.lanes("train")
    assert payloads.shape == (8, lanes.shape[1] - 1, 6)
    # The ids half of the payload are the teacher's top-3 words at each position.
    logits = teacher(lanes[:, :20]).numpy()
    np.testing.assert_array_equal(payloads[:, :20, 3:], np.argsort(-logits, axis=-1)[..., :3])
    results = []
    for source in ({"teacher": teacher}, {"teacher_payloads": payloads}):
        # Same seed: the same initial weights and dropout masks in both runs.
        student = _model(corpus, embedding_size=6, hidden_size=12, num_layers=2)
        options = {"epochs": 1, "lr": 5.0, "max_windows_per_epoch": 2, "log": None}
        result = lm.train_language_model(model=student, corpus=corpus, loss=loss, **source, **options)
        results.append((result, [variable.numpy() for variable in student.trainable_variables]))
    (online, online_weights), (cached, cached_weights) = results
    assert cached["history"]["train_loss"][0] == pytest.approx(online["history"]["train_loss"][0], rel=1e-5)
    for cached_value, online_value in zip(cached_weights, online_weights, strict=True):
        np.testing.assert_allclose(cached_value, online_value, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="teacher_payloads.shape"):
        lm.train_language_model(
            model=student, corpus=corpus, loss=loss, teacher_payloads=payloads[:, :-1], epochs=1
        )


def test_nt_asgd_switches_evaluates_averages_and_keeps_the_best_weights(corpus, monkeypatch):
    model = _model(corpus, **NO_DROPOUT)
    scripted = iter([5.0, 4.0, 4.5, 4.6, 4.2, 3.9])  # five validations, then the test evaluation
    seen = []

    def scripted_loss(evaluation, model_, corpus_, split, bptt):
        seen.append((split, [variable.numpy().copy() for variable in model.trainable_variables]))
        return next(scripted)

    monkeypatch.setattr(lm, "_mean_cross_entropy", scripted_loss)
    result = lm.train_language_model(
        model=model, corpus=corpus, epochs=5, lr=1.0, nonmono=1, max_windows_per_epoch=2, log=None
    )
    # Evaluation 4 (4.6) is worse than the best before the last one (min(5, 4) = 4): averaging starts
    # with epoch 5.
    assert result["averaging_epoch"] == 5
    assert result["history"]["averaged"] == [False, False, False, False, True]
    assert [split for split, _ in seen] == ["valid"] * 5 + ["test"]
    assert result["val_ppl"] == pytest.approx(math.exp(4.0))
    assert result["test_ppl"] == pytest.approx(math.exp(3.9))
    # The weights of evaluation 2 (the best) are loaded back before the test evaluation.
    for tested, best in zip(seen[5][1], seen[1][1], strict=True):
        np.testing.assert_array_equal(tested, best)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(seen[4][1], seen[3][1], strict=True))


def test_bad_arguments_are_refused(corpus):
    model = _model(corpus)
    with pytest.raises(ValueError, match="teacher=None"):
        lm.train_language_model(model=model, corpus=corpus, epochs=1, loss=losses.get("kd", temperature=2.0))
    with pytest.raises(ValueError, match="lr=0"):
        lm.train_language_model(model=model, corpus=corpus, epochs=1, lr=0)
    with pytest.raises(ValueError, match="epochs=0"):
        lm.train_language_model(model=model, corpus=corpus, epochs=0)
    other = awd_lstm(corpus.num_words + 1, embedding_size=4, hidden_size=4)
    with pytest.raises(ValueError, match="num_words"):
        lm.train_language_model(model=other, corpus=corpus, epochs=1)
    with pytest.raises(ValueError, match="teacher.num_words"):
        lm.train_language_model(model=model, teacher=other, corpus=corpus, epochs=1)


def test_throughput_measurement_runs_the_recipe_step(corpus):
    model = _model(corpus, num_layers=1)
    speed = lm.measure_training_throughput(model, batch_size=2, bptt=5, steps=1)
    assert speed["tokens_per_second"] > 0 and speed["tokens_per_cpu_second"] > 0
    with pytest.raises(ValueError, match="steps=0"):
        lm.measure_training_throughput(model, steps=0)


def _train_scripted(corpus, monkeypatch, validation_losses, **options):
    """Trains a dropout student from seed 0 with NT-ASGD (`nonmono=1`), the validation losses scripted;
    returns the result and the trained weights."""
    scripted = iter(validation_losses)
    monkeypatch.setattr(lm, "_mean_cross_entropy", lambda *args: next(scripted))
    tf.keras.utils.set_random_seed(0)
    model = _model(corpus, dropout=0.3, weight_drop=0.2)
    result = lm.train_language_model(model=model, corpus=corpus, lr=1.0, nonmono=1, log=None, **options)
    return result, [variable.numpy() for variable in model.trainable_variables]


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_uninterrupted_result(corpus, monkeypatch, tmp_path):
    """Epoch state, NT-ASGD averages, the best weights and the dropout stream all survive a restart."""

    def train(epochs, losses, checkpoint_path):
        return _train_scripted(
            corpus,
            monkeypatch,
            losses,
            epochs=epochs,
            max_windows_per_epoch=2,
            checkpoint_path=checkpoint_path,
        )

    validations = [5.0, 4.0, 4.5, 4.6, 4.2]  # averaging starts with epoch 5
    whole, whole_weights = train(5, [*validations, 3.9], None)
    path = str(tmp_path / "checkpoint.npz")
    train(3, [*validations[:3], 3.9], path)
    resumed, resumed_weights = train(5, [*validations[3:], 3.9], path)
    assert resumed["history"]["averaged"] == whole["history"]["averaged"] == [False] * 4 + [True]
    assert resumed["history"]["val_loss"] == whole["history"]["val_loss"]
    # The training losses of epochs 4 and 5 come from the restored weights, optimizer-free SGD and dropout.
    assert resumed["history"]["train_loss"] == pytest.approx(whole["history"]["train_loss"], rel=1e-5)
    assert resumed["averaging_epoch"] == whole["averaging_epoch"] == 5
    for got, want in zip(resumed_weights, whole_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_sigterm_inside_an_epoch_saves_at_the_next_window_and_the_rerun_equals_the_uninterrupted_run(
    corpus, monkeypatch, tmp_path
):
    """The carried states of the student and of its online teacher, the epoch's running loss, the averages
    and the dropout stream survive a SIGTERM between two windows of an averaged epoch."""
    teacher = _model(corpus, hidden_size=12)
    teacher(np.zeros((corpus.batch_size, 3), np.int32))
    windows = ptb.Corpus.train_windows

    def train(epochs, losses_, checkpoint_path, sigterm_at=None):
        def signalling(self, epoch=0):
            for index, window in enumerate(windows(self, epoch)):
                if (epoch, index) == sigterm_at:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield window

        monkeypatch.setattr(ptb.Corpus, "train_windows", signalling)
        return _train_scripted(
            corpus,
            monkeypatch,
            losses_,
            teacher=teacher,
            loss=losses.get("kd", temperature=2.0, alpha=0.5),
            epochs=epochs,
            max_windows_per_epoch=4,
            checkpoint_path=checkpoint_path,
        )

    validations = [5.0, 4.0, 4.5, 4.6, 4.2]  # averaging starts with epoch 5
    whole, whole_weights = train(5, [*validations, 3.9], None)
    path = str(tmp_path / "checkpoint.npz")
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(runtime, "_terminated", False)  # and back to it when the test ends
    runtime.catch_terminations()
    try:
        with pytest.raises(runtime.Terminated) as stopped:
            train(5, validations[:4], path, sigterm_at=(4, 1))  # before window 2 of epoch 5: saved after it
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.setattr(runtime, "_terminated", False)
    assert stopped.value.code == 143
    assert stopped.value.message.startswith("Terminated (SIGTERM): checkpoint saved at epoch 5, step 2;")
    resumed, resumed_weights = train(5, [validations[4], 3.9], path)
    assert resumed["history"]["averaged"] == whole["history"]["averaged"] == [False] * 4 + [True]
    assert resumed["history"]["train_loss"] == pytest.approx(whole["history"]["train_loss"], rel=1e-5)
    for got, want in zip(resumed_weights, whole_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_checkpoint_every_steps_saves_inside_the_epoch(corpus, monkeypatch, tmp_path):
    saved, real = [], lm._save_state

    def save(*args, **kwargs):
        saved.append(kwargs.get("window"))
        real(*args, **kwargs)

    monkeypatch.setattr(lm, "_save_state", save)
    lm.train_language_model(
        model=_model(corpus),
        corpus=corpus,
        epochs=1,
        lr=1.0,
        max_windows_per_epoch=5,
        log=None,
        checkpoint_path=str(tmp_path / "checkpoint.npz"),
        checkpoint_every_steps=2,
    )
    assert saved == [2, 4, None]  # after windows 2 and 4, then at the epoch's end
