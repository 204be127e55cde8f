"""Learning-rate schedules of the paper's recipes: constant, and step decay with an optional linear warm-up."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

SCHEDULES = ("constant", "piecewise")


@keras.saving.register_keras_serializable(package="kd_tf")
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """`base · multipliers[i]` after `boundaries[i-1]` steps, after a linear warm-up over `warmup_steps`.

    The TF TPU ResNet recipe (5 warm-up epochs, ×0.1 steps) and the CIFAR recipe (no warm-up) are both this.

    Args:
        base_learning_rate: the rate after warm-up and before the first boundary.
        boundaries: increasing step counts at which the multiplier changes.
        multipliers: `len(boundaries) + 1` factors of the base rate; the first is usually 1.
        warmup_steps: steps of linear warm-up from 0 (0 for none).
    """

    def __init__(self, base_learning_rate, boundaries=(), multipliers=(1.0,), warmup_steps=0):
        if len(multipliers) != len(boundaries) + 1:
            raise ValueError(
                "`lr_multipliers` must have one more entry than the boundaries. "
                f"Received: {len(multipliers)} multipliers for {len(boundaries)} boundaries"
            )
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"`lr_boundary_epochs` must increase. Received: {list(boundaries)}")
        self.base_learning_rate = float(base_learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.multipliers = [float(m) for m in multipliers]
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.base_learning_rate * self.multipliers[0], "float32")
        for boundary, multiplier in zip(self.boundaries, self.multipliers[1:], strict=True):
            rate = ops.where(step >= boundary, self.base_learning_rate * multiplier, rate)
        if self.warmup_steps:
            rate = ops.where(step < self.warmup_steps, rate * (step + 1.0) / self.warmup_steps, rate)
        return rate

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "boundaries": self.boundaries,
            "multipliers": self.multipliers,
            "warmup_steps": self.warmup_steps,
        }


def make_learning_rate(
    schedule: str,
    learning_rate: float,
    *,
    steps_per_epoch: int,
    boundary_epochs: Sequence[float] = (),
    multipliers: Sequence[float] = (),
    warmup_epochs: float = 0.0,
):
    """The `--lr_schedule` rate: a float for `constant`, a `WarmupPiecewise` otherwise."""
    if schedule not in SCHEDULES:
        raise ValueError(f"`lr_schedule` must be one of {', '.join(SCHEDULES)}. Received: {schedule!r}")
    if schedule == "constant" and not warmup_epochs:
        return learning_rate
    boundaries = [round(epoch * steps_per_epoch) for epoch in boundary_epochs]
    return WarmupPiecewise(
        learning_rate,
        boundaries,
        list(multipliers) or [1.0] * (len(boundaries) + 1),
        warmup_steps=round(warmup_epochs * steps_per_epoch),
    )
