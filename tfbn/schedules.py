"""The codelab's learning-rate decay as a Keras LearningRateSchedule."""

import math

import keras


@keras.saving.register_keras_serializable(package="tfbn")
class DecayToFloor(keras.optimizers.schedules.LearningRateSchedule):
    """`floor + peak * exp(-step / decay_steps)`: the codelab's
    `0.0001 + tf.train.exponential_decay(0.003, step, 2000, 1/math.e)`.

    The rate starts at `floor + peak` and decays towards `floor`, never below it.
    """

    def __init__(self, peak: float, floor: float, decay_steps: float):
        if peak < 0 or floor < 0:
            raise ValueError(f"peak and floor must be >= 0, got peak={peak!r}, floor={floor!r}")
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps!r}")
        self.peak = float(peak)
        self.floor = float(floor)
        self.decay_steps = float(decay_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return self.floor + self.peak * keras.ops.exp(-step / self.decay_steps)

    def value_at(self, step: int) -> float:
        return self.floor + self.peak * math.exp(-step / self.decay_steps)

    def scaled(self, factor: float) -> "DecayToFloor":
        return DecayToFloor(self.peak * factor, self.floor * factor, self.decay_steps)

    def __str__(self) -> str:
        return f"{self.floor:g} + {self.peak:g} * exp(-t / {self.decay_steps:g})"

    def get_config(self):
        return {"peak": self.peak, "floor": self.floor, "decay_steps": self.decay_steps}
