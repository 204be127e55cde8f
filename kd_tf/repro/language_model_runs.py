"""`run.py --dataset=ptb`: train an AWD-LSTM teacher, or distil a student from it, and write the results."""

from __future__ import annotations

import json
import os

import keras
from absl import flags

import data.ptb
import models
from kd_tf import language_model, losses, offline, teacher_cache, training
from kd_tf.io import DamagedFileError, atomic_write_text
from kd_tf.repro import paper, tables, trainers

# Language model (PTB, AWD-LSTM; paper §5.3). The sizes are the trained model's: the teacher's in
# --mode=teacher, the student's in --mode=student.
flags.DEFINE_integer("embedding_size", 400, "AWD-LSTM embedding size.", lower_bound=1)
flags.DEFINE_integer("hidden_size", 1150, "AWD-LSTM hidden size.", lower_bound=1)
flags.DEFINE_float("dropout", 0.4, "AWD-LSTM output dropout.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_float(
    "dropout_hidden", 0.25, "AWD-LSTM dropout between layers.", lower_bound=0, upper_bound=0.99
)
flags.DEFINE_float("dropout_input", 0.4, "AWD-LSTM input dropout.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_float("dropout_embedding", 0.1, "AWD-LSTM embedding dropout.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_float(
    "weight_drop", 0.5, "AWD-LSTM DropConnect on the recurrent kernels.", lower_bound=0, upper_bound=0.99
)
flags.DEFINE_integer("bptt", 70, "Mean BPTT window length.", lower_bound=5)
flags.DEFINE_float("clip", 0.25, "Gradient clipping (global norm).", lower_bound=1e-9)
flags.DEFINE_float("alpha_ar", 2.0, "AR activation regularisation.", lower_bound=0)
flags.DEFINE_float("beta_tar", 1.0, "TAR temporal activation regularisation.", lower_bound=0)
flags.DEFINE_integer("nonmono", 5, "NT-ASGD non-monotone interval.", lower_bound=0)
flags.DEFINE_integer(
    "max_windows_per_epoch", None, "Cap on BPTT windows per epoch (smoke runs).", lower_bound=1
)


def run(options) -> None:
    config = options.config
    lm = config.language_model
    corpus = data.ptb.load_corpus(
        config.data_dir, batch_size=config.student.batch_size, bptt=lm.bptt, seed=options.seeds[0]
    )
    keras.utils.set_random_seed(options.seeds[0])
    model = models.builder("awd_lstm")(
        corpus.num_words,
        embedding_size=lm.embedding_size,
        hidden_size=lm.hidden_size,
        dropout=lm.dropout,
        dropout_hidden=lm.dropout_hidden,
        dropout_input=lm.dropout_input,
        dropout_embedding=lm.dropout_embedding,
        weight_drop=lm.weight_drop,
        seed=options.seeds[0],
        name=config.mode,
    )
    teacher, loss, teacher_info, hyperparameters = None, None, None, {}
    method = "teacher"
    if config.mode == "student":
        method = config.method
        teacher, teacher_info = trainers.load_teacher(config.teacher_dir, "ptb", corpus.num_words)
        values = {**options.hyperparameters(), **options.method_overrides.get(method, {})}
        hyperparameters = losses.hyperparameters_of(method, values)
        if method != "student":
            splits = data.ptb.load(data_dir=config.data_dir, bptt=lm.bptt)
            loss = trainers.method_loss(method, hyperparameters, teacher, splits)
            if not loss.payload_size(corpus.num_words):
                teacher = None  # LS, KD-sim: nothing per token from the teacher
    teacher_payloads = None
    if teacher is not None and loss is not None and _cached(options, corpus, loss):
        places = dict.fromkeys([options.output_dir, options.final_output_dir])
        refuse = options.teacher_cache() == "on"
        teacher_payloads, teacher = _teacher_payloads(teacher, corpus, loss, list(places), refuse), None
    result = language_model.train_language_model(
        model=model,
        corpus=corpus,
        epochs=config.student.epochs,
        teacher=teacher,
        loss=loss,
        teacher_payloads=teacher_payloads,
        lr=config.student.learning_rate,
        clip=lm.clip,
        weight_decay=config.student.weight_decay,
        alpha_ar=lm.alpha_ar,
        beta_tar=lm.beta_tar,
        nonmono=lm.nonmono,
        max_windows_per_epoch=lm.max_windows_per_epoch,
        checkpoint_path=os.path.join(options.output_dir, "checkpoint.npz"),
        checkpoint_every_steps=config.runtime.checkpoint_every_steps,
    )
    record = {
        "dataset": "ptb",
        "teacher_cache": teacher_payloads is not None,
        "role": "teacher" if config.mode == "teacher" else "student",
        "method": method,
        "seed": options.seeds[0],
        "parameters": int(sum(keras.ops.size(v) for v in model.trainable_weights)),
        "embedding_size": lm.embedding_size,
        "hidden_size": lm.hidden_size,
        "hyperparameters": hyperparameters,
        "validation_perplexity": float(result["val_ppl"]),
        "test_perplexity": float(result["test_ppl"]),
        "averaging_epoch": result["averaging_epoch"],
        "epochs": config.student.epochs,
        "wall_time_s": float(sum(result["history"]["wall_time"])),
        "teacher_validation_perplexity": None
        if teacher_info is None
        else teacher_info.get("validation_perplexity"),
    }
    output_dir = options.output_dir
    os.makedirs(output_dir, exist_ok=True)
    if config.mode == "teacher":
        info = {
            "dataset": "ptb",
            "num_classes": corpus.num_words,
            "data_options": {"data_dir": config.data_dir},
            "model": "awd_lstm",
            "validation_perplexity": record["validation_perplexity"],
            "test_perplexity": record["test_perplexity"],
        }
        trainers.save_teacher(model, output_dir, info)
    else:
        training.save_model(model, os.path.join(output_dir, "student.keras"))
    atomic_write_text(
        os.path.join(output_dir, "history.json"), json.dumps(result["history"], indent=2) + "\n"
    )
    label = tables.row_label(record)
    published = paper.TABLE3.get(label)
    published = "" if published is None else f"{published[0]:.2f} / {published[1]:.2f}"
    table = (
        "| model | method | parameters | validation ppl | test ppl | paper (validation / test) |\n"
        "|---|---|---|---|---|---|\n"
        f"| {config.mode} | {label} | {record['parameters']:,} | {record['validation_perplexity']:.2f} | "
        f"{record['test_perplexity']:.2f} | {published} |\n"
    )
    header = f"# PTB\n\nCommand: `{config.command}`\n\n"
    tables.write_results(output_dir, [record], table, header)
    print("\n" + table)


def _teacher_payloads(teacher, corpus, loss, output_dirs: list[str], refuse: bool = False):
    """The teacher's payload over the training text, read from a teacher cache (`teacher_cache/` in one of
    `output_dirs`, the cache format of every dataset: `kd_tf.teacher_cache`) that fits this teacher, loss and
    text, or computed and stored in the first of them (a resumed or repeated student reads it back)."""
    lanes = corpus.lanes("train")
    examples = {"inputs": lanes[:, :-1], "labels": lanes[:, 1:]}
    for output_dir in output_dirs:
        try:
            cached = teacher_cache.load_cache(
                os.path.join(output_dir, offline.CACHE_DIR),
                loss=loss,
                teacher=teacher,
                data=(examples["inputs"], examples["labels"]),
            )
        except DamagedFileError as error:
            offline.damaged(error, refuse)
            continue
        except (FileNotFoundError, ValueError):
            continue
        print(f"Reading the teacher's outputs from {cached.directory}.", flush=True)
        return cached.payload
    print("Caching the teacher's outputs over the training text (--teacher_cache)...", flush=True)
    payload = language_model.teacher_payload_cache(teacher, corpus, loss)
    cached = teacher_cache.write_cache(
        os.path.join(output_dirs[0], offline.CACHE_DIR),
        loss,
        payload,
        teacher=teacher,
        num_classes=corpus.num_words,
        overwrite=True,
        **examples,
    )
    return cached.payload


def _cached(options, corpus, loss) -> bool:
    """Whether the student reads its teacher's per-token payload from a teacher cache (`offline.decide`):
    where the payload of every training position fits `--teacher_cache_max_mb` (KD-topk's 2k numbers a token
    do, KD's full logits over the vocabulary do not)."""
    lanes = corpus.lanes("train")
    megabytes = lanes.shape[0] * (lanes.shape[1] - 1) * loss.payload_size(corpus.num_words) * 4 / 2**20
    what = f"the {loss.method_name} payload of the training text"
    return offline.decide(
        options.teacher_cache(), None, megabytes, options.config.runtime.teacher_cache_max_mb, what
    )
