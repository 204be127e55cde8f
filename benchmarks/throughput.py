"""Throughput and per-step memory of distillation against its floor: student step + teacher forward pass.

For each model pair (synthetic MLPs, ResNet-56 -> ResNet-20 on 32x32x3, a small AWD-LSTM pair on
PTB-shaped windows) and with XLA off and on, this times in one process, interleaved:

    student          plain student step: `student.compile(loss=SparseCategoricalCrossentropy(from_logits=True))`
    teacher          teacher forward pass, `teacher(x, training=False)` in a `tf.function`
    fused_floor      student step and teacher forward pass in one compiled step, nothing else
    kd, kd_topk      `kd_tf.Distiller` online step (teacher forward inside the compiled step)
    kd_offline, kd_topk_offline
                     `kd_tf.Distiller(teacher=None)` on targets packed with the cached teacher payload
    keras_kd         `keras.distillation.Distiller` with `LogitsDistillation(loss=KLDivergence())`

Every training variant runs through the same Keras machinery `fit` uses: `model.train_function(iterator)`
on a `tf.data` iterator over one fixed batch (so input cost is the same, and tiny, for all), one step per
call. The teacher forward pass is timed the same way: a `tf.function` that pulls the batch from a
`tf.data` iterator and calls a (possibly XLA-compiled) inner function. After warm-up, each repeat runs
every variant for about `--repeat_seconds`, in a rotating order; a variant's time is the median over
repeats. Ratios are time-per-step ratios computed per repeat (the variants of one repeat ran under the
same machine load) and reported as the median over repeats: on a shared machine many short interleaved
repeats and paired ratios resolve a few percent where whole-run medians do not.

Memory is the peak of TensorFlow's CPU allocator during one step above what was allocated before it
(`tf.config.experimental.get_memory_info`, with `TF_ENABLE_CPU_ALLOCATOR_STATS=1` set before TensorFlow
is imported; XLA's buffers are counted): the step's working memory (activations, gradients,
temporaries), not the weights. Tensors of up to a few hundred KB come from a small-block pool the
statistics do not see, so tiny models (`--quick`) read near 0. It reads `n/a` when TensorFlow was
imported without that variable.

    python benchmarks/throughput.py                  # default sizes, about 10 minutes on 2 busy CPU cores
    python benchmarks/throughput.py --quick          # tiny sizes
    python benchmarks/throughput.py --breakdown      # also times the loss-side pieces alone
    python benchmarks/throughput.py --output runs/throughput.md   # also writes runs/throughput.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_CPU_ALLOCATOR_STATS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kd_tf  # noqa: E402
from kd_tf import losses  # noqa: E402

VARIANTS = (
    "student",
    "teacher",
    "fused_floor",
    "kd",
    "kd_topk",
    "kd_offline",
    "kd_topk_offline",
    "keras_kd",
)
DEFAULT_VARIANTS = ("student", "teacher", "fused_floor", "kd", "kd_topk", "kd_offline", "keras_kd")
PAIR_NAMES = ("mlp", "resnet", "awd_lstm")
TEMPERATURE, ALPHA = 4.0, 0.9

# (name, numerator variants, denominator variants, target or None): time-per-step ratios.
RATIOS = (
    ("online KD / fused floor", ("kd",), ("fused_floor",), 1.10),
    ("online KD-topk / fused floor", ("kd_topk",), ("fused_floor",), 1.10),
    ("offline KD / student", ("kd_offline",), ("student",), 1.10),
    ("offline KD-topk / student", ("kd_topk_offline",), ("student",), 1.10),
    ("online KD / keras Distiller", ("kd",), ("keras_kd",), 1.0),
    ("online KD / (student + teacher)", ("kd",), ("student", "teacher"), None),
    ("fused floor / (student + teacher)", ("fused_floor",), ("student", "teacher"), None),
)


@dataclasses.dataclass
class Pair:
    """A teacher/student pair and the batch they are timed on."""

    name: str
    description: str
    build_teacher: Callable[[], keras.Model]
    build_student: Callable[[], keras.Model]
    inputs: np.ndarray
    labels: np.ndarray
    unit: str  # what one "example" is: an image/vector, or a token
    topk: int
    num_classes: int

    @property
    def units_per_step(self) -> int:
        return int(np.prod(self.labels.shape))


def seeded(builder, seed):
    def build():
        keras.utils.set_random_seed(seed)
        return builder()

    return build


def mlp_pair(quick: bool) -> Pair:
    from models.mlp import mlp

    classes, dim, batch = (10, 16, 32) if quick else (40, 64, 128)
    widths = (32, 8) if quick else (256, 32)
    rng = np.random.default_rng(0)
    return Pair(
        name="mlp",
        description=f"MLP {widths[0]} -> {widths[1]} (models.mlp, dim {dim}, {classes} classes, batch {batch})",
        build_teacher=seeded(lambda: mlp(classes, (dim,), width=widths[0], name="teacher"), 1),
        build_student=seeded(lambda: mlp(classes, (dim,), width=widths[1], name="student"), 2),
        inputs=rng.normal(size=(batch, dim)).astype(np.float32),
        labels=rng.integers(0, classes, size=batch).astype(np.int32),
        unit="examples",
        topk=3 if quick else 5,
        num_classes=classes,
    )


def resnet_pair(quick: bool) -> Pair:
    from models.resnet_cifar import resnet

    # Weight decay off for every variant: keras.distillation.Distiller leaves out the student's
    # regularisation losses, which would make it do less work than the others.
    depths, classes, size, batch = ((14, 8), 10, 8, 4) if quick else ((56, 20), 100, 32, 32)
    shape = (size, size, 3)
    rng = np.random.default_rng(0)
    return Pair(
        name="resnet",
        description=(
            f"ResNet-{depths[0]} -> ResNet-{depths[1]} (models.resnet_cifar, {size}x{size}x3, "
            f"{classes} classes, batch {batch})"
        ),
        build_teacher=seeded(lambda: resnet(depths[0], classes, shape, weight_decay=0.0), 1),
        build_student=seeded(lambda: resnet(depths[1], classes, shape, weight_decay=0.0), 2),
        inputs=rng.normal(size=(batch, *shape)).astype(np.float32),
        labels=rng.integers(0, classes, size=batch).astype(np.int32),
        unit="examples",
        topk=3 if quick else 5,
        num_classes=classes,
    )


def awd_lstm_pair(quick: bool) -> Pair:
    from models.awd_lstm import awd_lstm

    if quick:
        words, batch, bptt, teacher_sizes, student_sizes, layers = 200, 4, 8, (16, 32), (8, 16), 2
    else:
        words, batch, bptt, teacher_sizes, student_sizes, layers = 10_000, 20, 35, (200, 400), (100, 200), 3
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, words, size=(batch, bptt + 1)).astype(np.int32)

    def build(sizes, seed):
        return lambda: awd_lstm(
            words, embedding_size=sizes[0], hidden_size=sizes[1], num_layers=layers, seed=seed
        )

    return Pair(
        name="awd_lstm",
        description=(
            f"AWD-LSTM {layers}x(emb {teacher_sizes[0]}, hidden {teacher_sizes[1]}) -> "
            f"{layers}x(emb {student_sizes[0]}, hidden {student_sizes[1]}) (models.awd_lstm, "
            f"{words} words, {batch} lanes x {bptt} tokens)"
        ),
        build_teacher=seeded(build(teacher_sizes, 1), 1),
        build_student=seeded(build(student_sizes, 2), 2),
        inputs=tokens[:, :-1],
        labels=tokens[:, 1:],
        unit="tokens",
        topk=3 if quick else 5,
        num_classes=words,
    )


PAIR_BUILDERS = {"mlp": mlp_pair, "resnet": resnet_pair, "awd_lstm": awd_lstm_pair}


def memory_stats_enabled() -> bool:
    try:
        probe = tf.ones((256, 256))
        enabled = tf.config.experimental.get_memory_info("CPU:0")["peak"] > 0
        del probe
        return enabled
    except (ValueError, RuntimeError):
        return False


class Runner:
    """One variant with XLA on or off: a compiled step pulled from an iterator over one fixed batch."""

    def __init__(self, variant: str, jit: bool, step: Callable[[], object], model=None):
        self.variant = variant
        self.jit = jit
        self.step = step
        self.model = model
        self.seconds: list[float] = []
        self.steps_per_repeat = 1
        self.peak_bytes = None
        self.first_loss = None
        self.graph_ops = None
        # What Keras resolved `jit_compile` to (it may turn XLA off for models it cannot compile).
        self.jit_effective = jit if model is None else bool(getattr(model, "jit_compile", jit))

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            outputs = self.step()
        # Eager calls on CPU return when the step has run; reading one value makes sure of it.
        np.asarray(tf.nest.flatten(outputs)[0])
        return (time.perf_counter() - start) / steps

    def warm_up(self, steps: int, repeat_seconds: float, max_steps: int):
        for _ in range(steps):
            self.run(1)
        one_step = self.run(1)
        self.steps_per_repeat = int(min(max_steps, max(1, math.ceil(repeat_seconds / one_step))))

    def measure_memory(self):
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        self.run(1)
        self.peak_bytes = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def train_runner(variant, jit, model, inputs, targets) -> Runner:
    dataset = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    iterator = iter(dataset)
    # What `fit` does before its first step (create the model, optimizer and metric variables), without
    # `fit` itself: a later call on another iterator type would trace, and with XLA compile, the step again.
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=next(iter(dataset)))
    else:
        model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    model.make_train_function()
    runner = Runner(variant, jit, lambda: model.train_function(iterator), model)
    runner.graph_ops = graph_ops(model, inputs, targets)
    # The loss of the first step (fresh student, fixed batch): equal across variants that compute the
    # same objective, which checks that the comparison is like for like.
    runner.first_loss = float(runner.step()["loss"])
    return runner


# Ops that cost the executor (next to) nothing: constants, identities, variable reads, the step's inputs.
_FREE_OPS = frozenset({"Const", "Identity", "NoOp", "ReadVariableOp", "Placeholder"})


def graph_ops(model, inputs, targets) -> int:
    """Ops one training step runs without XLA: those of `model.train_step` traced alone and of every function
    it calls (a `tf.cond` branch counts whether or not it is taken), the free ones aside. For a small model the
    step's time is mostly the executor's per-op cost, so this count says where the time goes."""
    step = tf.function(model.train_step)
    graph = step.get_concrete_function((tf.constant(inputs), tf.constant(targets))).graph.as_graph_def()
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    return sum(node.op not in _FREE_OPS for node in nodes)


def forward_runner(jit, teacher, inputs) -> Runner:
    forward = tf.function(lambda x: teacher(x, training=False), jit_compile=jit)
    iterator = iter(tf.data.Dataset.from_tensors(inputs).repeat())
    pull_and_forward = tf.function(lambda: forward(iterator.get_next()))
    return Runner("teacher", jit, pull_and_forward)


class FusedFloor(keras.Model):
    """The online floor in one compiled step: a plain student step plus the teacher's forward pass.

    The teacher's logits feed a metric, so the forward pass cannot be pruned, but nothing else: no
    distillation term, no extra metric. `kd / fused_floor` is the cost of what the Distiller adds.
    """

    def __init__(self, student, teacher, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.teacher_tracker = keras.metrics.Mean(name="teacher_logit_sum")

    @property
    def metrics(self):
        return [self.loss_tracker, self.teacher_tracker]

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def train_step(self, data):
        inputs, labels = data[0], tf.cast(data[1], tf.int32)
        teacher_logits = self.teacher(inputs, training=False)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.student(inputs, training=True), tf.float32)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.loss_tracker.update_state(loss)
        self.teacher_tracker.update_state(tf.reduce_sum(teacher_logits))
        return {"loss": self.loss_tracker.result()}


def optimizer():
    return keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)


def make_loss(name, topk):
    return losses.get(
        name, temperature=TEMPERATURE, alpha=ALPHA, **({"topk": topk} if name == "kd_topk" else {})
    )


def packed_targets(loss, teacher, inputs, labels):
    payload = loss.teacher_payload(tf.constant(labels), teacher(inputs, training=False))
    return kd_tf.pack_targets(labels, payload).numpy()


def build_runner(variant, jit, pair: Pair, teacher) -> Runner:
    if variant == "teacher":
        return forward_runner(jit, teacher, pair.inputs)
    student = pair.build_student()
    if variant == "fused_floor":
        floor = FusedFloor(student, teacher)
        floor.compile(optimizer=optimizer(), jit_compile=jit)
        return train_runner(variant, jit, floor, pair.inputs, pair.labels)
    if variant == "student":
        student.compile(
            optimizer=optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        return train_runner(variant, jit, student, pair.inputs, pair.labels)
    if variant == "keras_kd":
        distiller = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
            ),
            student_loss_weight=1.0 - ALPHA,
        )
        distiller.compile(
            optimizer=optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        return train_runner(variant, jit, distiller, pair.inputs, pair.labels)
    loss = make_loss("kd_topk" if variant.startswith("kd_topk") else "kd", pair.topk)
    if variant.endswith("_offline"):
        distiller = kd_tf.Distiller(student, None, loss)
        targets = packed_targets(loss, teacher, pair.inputs, pair.labels)
    else:
        distiller = kd_tf.Distiller(student, teacher, loss)
        targets = pair.labels
    distiller.compile(optimizer=optimizer(), jit_compile=jit)
    return train_runner(variant, jit, distiller, pair.inputs, targets)


def paired_ratio(runners_by_key, numerator, denominator, jit):
    """Median over repeats of the per-repeat time ratio (both sides measured in the same repeat)."""
    try:
        top = [runners_by_key[(name, jit)].seconds for name in numerator]
        bottom = [runners_by_key[(name, jit)].seconds for name in denominator]
    except KeyError:
        return None
    repeats = min(len(series) for series in top + bottom)
    if not repeats:
        return None
    ratios = [sum(series[i] for series in top) / sum(series[i] for series in bottom) for i in range(repeats)]
    return statistics.median(ratios)


def loss_breakdown(pair: Pair, jit_modes, repeats: int) -> list[dict]:
    """Times the loss-side pieces of a distillation step alone, on random logits of the pair's shape.

    What a distillation step adds to the floor is this work on `[units, classes]` logits; at a large
    vocabulary it is a sizeable part of a small student's step.
    """
    rng = np.random.default_rng(0)
    shape = (*pair.labels.shape, pair.num_classes)
    student_logits = tf.constant(rng.normal(size=shape).astype(np.float32))
    teacher_logits = tf.constant(3.0 * rng.normal(size=shape).astype(np.float32))
    labels = tf.constant(pair.labels)
    kd, topk = make_loss("kd", pair.topk), make_loss("kd_topk", pair.topk)
    topk_payload = topk.teacher_payload(labels, teacher_logits)
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=5)
    flat_labels = tf.reshape(labels, [-1])
    flat_logits = tf.reshape(student_logits, [-1, pair.num_classes])

    def with_gradient(loss_of_logits):
        def run():
            with tf.GradientTape() as tape:
                tape.watch(student_logits)
                value = tf.reduce_mean(loss_of_logits(student_logits))
            return tape.gradient(value, student_logits)

        return run

    pieces = {
        "cross-entropy, forward + gradient": with_gradient(
            lambda logits: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        ),
        "KD loss from teacher logits, forward + gradient": with_gradient(
            lambda logits: kd.per_example(labels, teacher_logits, logits)
        ),
        "KD-topk loss from its payload, forward + gradient": with_gradient(
            lambda logits: topk.combine(*topk.terms(labels, topk_payload, logits))
        ),
        "KD-topk payload (softmax + top-k)": lambda: topk.teacher_payload(labels, teacher_logits),
        "KD-topk target distribution from payload": lambda: topk.target_distribution(
            labels, topk_payload, pair.num_classes
        ),
        "accuracy metric (SparseCategoricalAccuracy)": lambda: accuracy.update_state(
            flat_labels, flat_logits
        ),
        "top-5 metric (SparseTopKCategoricalAccuracy)": lambda: top5.update_state(flat_labels, flat_logits),
    }
    rows = []
    for jit in jit_modes:
        for name, piece in pieces.items():
            compiled = tf.function(piece, jit_compile=jit)
            for _ in range(2):
                compiled()
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs = compiled()
                if outputs is not None:
                    np.asarray(tf.nest.flatten(outputs)[0])
                seconds.append(time.perf_counter() - start)
            rows.append({"piece": name, "xla": jit, "ms": 1000 * statistics.median(seconds)})
    return rows


def benchmark_pair(pair: Pair, variants, jit_modes, args, log) -> dict:
    keras.backend.clear_session()
    teacher = pair.build_teacher()
    teacher.trainable = False
    runners, skipped = [], {}
    for jit in jit_modes:
        for variant in variants:
            started = time.perf_counter()
            try:
                runner = build_runner(variant, jit, pair, teacher)
                runner.warm_up(args.warmup, args.repeat_seconds, args.max_steps)
            except Exception as error:  # noqa: BLE001 (a variant that cannot run is reported, not fatal)
                skipped[(variant, jit)] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
                log(f"  {pair.name} {variant} xla={jit}: skipped ({skipped[(variant, jit)]})")
                continue
            runners.append(runner)
            log(
                f"  {pair.name} {variant} xla={jit}: ready in {time.perf_counter() - started:.1f} s, "
                f"{runner.steps_per_repeat} steps per repeat"
            )
    # As `timeit` does: a garbage-collection pass over the many traced graphs alive here can take longer
    # than a whole repeat of a small model, so collect once up front and not while timing.
    gc.collect()
    gc.disable()
    try:
        for repeat in range(args.repeats):
            # Rotate the order so no variant always runs first (or right after the heaviest one).
            shift = repeat % max(len(runners), 1)
            for runner in runners[shift:] + runners[:shift]:
                runner.seconds.append(runner.run(runner.steps_per_repeat))
    finally:
        gc.enable()
    if args.memory:
        for runner in runners:
            runner.measure_memory()
    by_key = {(runner.variant, runner.jit): runner for runner in runners}
    rows = []
    for runner in runners:
        seconds = statistics.median(runner.seconds)
        rows.append(
            {
                "pair": pair.name,
                "variant": runner.variant,
                "xla": runner.jit,
                "xla_effective": runner.jit_effective,
                "ms_per_step": 1000 * seconds,
                "min_ms_per_step": 1000 * min(runner.seconds),
                "per_second": pair.units_per_step / seconds,
                "unit": pair.unit,
                "peak_step_mb": None if runner.peak_bytes is None else runner.peak_bytes / 2**20,
                "repeats": len(runner.seconds),
                "steps_per_repeat": runner.steps_per_repeat,
                "seconds_per_repeat": runner.seconds,
                "first_step_loss": runner.first_loss,
                "graph_ops": runner.graph_ops,
            }
        )
    ratios = []
    for jit in jit_modes:
        for name, numerator, denominator, target in RATIOS:
            value = paired_ratio(by_key, numerator, denominator, jit)
            if value is not None:
                ratios.append(
                    {"pair": pair.name, "xla": jit, "ratio": name, "value": value, "target": target}
                )
    xla_speedups = {}
    if set(jit_modes) == {False, True}:
        for variant in variants:
            if (variant, False) in by_key and (variant, True) in by_key:
                off = statistics.median(by_key[(variant, False)].seconds)
                on = statistics.median(by_key[(variant, True)].seconds)
                xla_speedups[variant] = off / on
    breakdown = loss_breakdown(pair, jit_modes, max(args.repeats, 3)) if args.breakdown else []
    return {
        "pair": pair.name,
        "description": pair.description,
        "breakdown": breakdown,
        "units_per_step": pair.units_per_step,
        "num_classes": pair.num_classes,
        "unit": pair.unit,
        "rows": rows,
        "ratios": ratios,
        "xla_speedup": xla_speedups,
        "skipped": [{"variant": v, "xla": j, "reason": reason} for (v, j), reason in skipped.items()],
    }


def markdown(results: dict) -> str:
    lines = [
        f"Command: `{results['command']}`  ",
        f"Wall time: {results['wall_seconds']:.0f} s; machine: {results['machine']}; load average "
        f"(1 min) {results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after.  ",
        f"TensorFlow {results['tensorflow']}, Keras {results['keras']}; {results['repeats']} repeats after "
        f"{results['warmup']} warm-up steps; memory: {results['memory_method']}.",
        "",
    ]
    for pair in results["pairs"]:
        lines += [f"### {pair['description']}", ""]
        lines += [
            f"| variant | XLA | ms/step (median) | ms/step (min) | {pair['unit']}/s | peak step memory (MB) "
            "| graph ops |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in pair["rows"]:
            memory = "n/a" if row["peak_step_mb"] is None else f"{row['peak_step_mb']:.1f}"
            xla = "on" if row["xla_effective"] else ("off" if not row["xla"] else "off (Keras)")
            lines.append(
                f"| {row['variant']} | {xla} | {row['ms_per_step']:.2f} | {row['min_ms_per_step']:.2f} | "
                f"{row['per_second']:,.0f} | {memory} | {'' if row['graph_ops'] is None else row['graph_ops']} |"
            )
        for skip in pair["skipped"]:
            lines.append(
                f"| {skip['variant']} | {'on' if skip['xla'] else 'off'} | skipped: {skip['reason']} | | | | |"
            )
        lines += ["", "| time-per-step ratio | XLA | value | target | met |", "|---|---|---:|---:|---|"]
        for ratio in pair["ratios"]:
            if ratio["target"] is None:
                target, met = "-", "-"
            else:
                target = f"<= {ratio['target']:.2f}"
                met = "yes" if ratio["value"] <= ratio["target"] else "no"
            lines.append(
                f"| {ratio['ratio']} | {'on' if ratio['xla'] else 'off'} | {ratio['value']:.3f} | "
                f"{target} | {met} |"
            )
        first_mode = pair["rows"][0]["xla"] if pair["rows"] else False
        first_losses = [
            f"{row['variant']} {row['first_step_loss']:.6g}"
            for row in pair["rows"]
            if row["first_step_loss"] is not None and row["xla"] == first_mode
        ]
        if first_losses:
            lines += [
                "",
                f"First-step loss (same initial student, same batch, XLA {'on' if first_mode else 'off'}): "
                + ", ".join(first_losses)
                + ".",
            ]
        if pair["breakdown"]:
            shape = f"{pair['units_per_step']} {pair['unit']} x {pair['num_classes']} classes"
            lines += ["", f"| loss-side piece alone ({shape}) | XLA | ms |", "|---|---|---:|"]
            for piece in pair["breakdown"]:
                lines.append(f"| {piece['piece']} | {'on' if piece['xla'] else 'off'} | {piece['ms']:.2f} |")
        if pair["xla_speedup"]:
            speedups = ", ".join(f"{name} {value:.2f}x" for name, value in pair["xla_speedup"].items())
            lines += ["", f"XLA speed-up (time off / time on): {speedups}."]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds)")
    parser.add_argument("--pairs", default=",".join(PAIR_NAMES), help=f"comma list of {PAIR_NAMES}")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma list of {VARIANTS}")
    parser.add_argument("--xla", choices=("both", "off", "on"), default="both")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 12; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2; quick 1)")
    parser.add_argument(
        "--repeat_seconds", type=float, default=None, help="target seconds per variant per repeat"
    )
    parser.add_argument("--max_steps", type=int, default=30, help="most steps per variant per repeat")
    parser.add_argument("--no_memory", dest="memory", action="store_false", help="skip the memory step")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the loss-side pieces alone at each pair's shape"
    )
    parser.add_argument("--output", default=None, help="write the table to this .md file and a .json")
    args = parser.parse_args(argv)
    args.pairs = [name for name in args.pairs.split(",") if name]
    args.variants = [name for name in args.variants.split(",") if name]
    for name in args.pairs:
        if name not in PAIR_NAMES:
            parser.error(f"--pairs: unknown pair {name!r}; known: {', '.join(PAIR_NAMES)}")
    for name in args.variants:
        if name not in VARIANTS:
            parser.error(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    defaults = (2, 1, 0.01) if args.quick else (12, 2, 0.15)
    args.repeats = defaults[0] if args.repeats is None else args.repeats
    args.warmup = defaults[1] if args.warmup is None else args.warmup
    args.repeat_seconds = defaults[2] if args.repeat_seconds is None else args.repeat_seconds
    for name in ("repeats", "warmup", "max_steps"):
        if getattr(args, name) < (1 if name != "warmup" else 0):
            parser.error(f"--{name} must be >= 1. Received: {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    jit_modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.xla]
    memory_enabled = args.memory and memory_stats_enabled()
    args.memory = memory_enabled
    log = lambda message: print(message, file=sys.stderr, flush=True)
    pairs = []
    for name in args.pairs:
        pair = PAIR_BUILDERS[name](args.quick)
        log(f"{pair.description}")
        pairs.append(benchmark_pair(pair, args.variants, jit_modes, args, log))
    results = {
        "command": " ".join(["python benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)]),
        "wall_seconds": time.perf_counter() - started,
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU",
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "memory_method": (
            "TF CPU allocator peak during one step minus the allocation before it"
            if memory_enabled
            else "not measured (TF_ENABLE_CPU_ALLOCATOR_STATS was not set before TensorFlow was imported)"
        ),
        "pairs": pairs,
    }
    table = markdown(results)
    print(table)
    if args.output:
        base = args.output[:-3] if args.output.endswith(".md") else args.output
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        with open(base + ".md", "w", encoding="utf-8") as handle:
            handle.write(table)
        with open(base + ".json", "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
