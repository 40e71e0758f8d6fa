"""The ablation behind step 5.0's schedule: step 4.2's network and data order, trained for a
few epochs with other learning-rate schedules (and, optionally, label smoothing or image
shifts); it prints the test accuracy after every epoch.

One run per command (one seed); a learner can try a schedule without writing a lesson:

    # step 5.0's schedule (Keras's CosineDecayRestarts: one epoch, then three, same peak)
    python benchmarks/schedule_ablation.py --restarts 0.02,3,1.0
    # one cosine cycle over all 4 epochs, 10% linear warm-up from peak/25
    python benchmarks/schedule_ablation.py --one-cycle 0.01 --warmup 0.1
    # one-epoch cycle, then a three-epoch cycle at another peak (20% warm-up each)
    python benchmarks/schedule_ablation.py --cycles 1:0.02,3:0.01 --warmup 0.2

Each run is about 2.5 minutes on 2 CPU cores (4 epochs). It uses the lesson's
`build_model`, Adam, batches of 100 in `data.EpochOrder`'s order with `training.EpochSeeds`,
as `tfbn run` does, without the run directory's callbacks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time


def cycle(step, length: float, peak: float, warmup: float):
    """A linear warm-up from peak/25 over `warmup` of the cycle, then a cosine down to
    peak/1e4 at its end (`step` counted from the cycle's start)."""
    import tensorflow as tf

    rise = warmup * length
    low, end = peak / 25, peak / 1e4
    up = low + (peak - low) * step / rise
    fraction = tf.clip_by_value((step - rise) / (length - rise), 0.0, 1.0)
    down = end + (peak - end) * 0.5 * (1 + tf.cos(math.pi * fraction))
    return tf.where(step < rise, up, down)


def make_schedule(options, steps_per_epoch: int):
    import keras
    import tensorflow as tf

    if options.restarts:
        peak, t_mul, m_mul = (float(value) for value in options.restarts.split(","))
        return keras.optimizers.schedules.CosineDecayRestarts(
            peak, steps_per_epoch, t_mul=t_mul, m_mul=m_mul, alpha=1e-4)
    if options.cycles:
        cycles = [(int(epochs) * steps_per_epoch, float(peak)) for epochs, peak in
                  (item.split(":") for item in options.cycles.split(","))]
    else:
        cycles = [(options.epochs * steps_per_epoch, options.one_cycle)]

    class Cycles(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            rate, begin = tf.constant(0.0), 0
            for length, peak in cycles:
                local = step - begin
                inside = tf.logical_and(local >= 0, local < length)
                rate = tf.where(inside, cycle(local, length, peak, options.warmup), rate)
                begin += length
            return rate

    return Cycles()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    schedule = parser.add_mutually_exclusive_group(required=True)
    schedule.add_argument("--restarts", metavar="PEAK,T_MUL,M_MUL",
                          help="keras CosineDecayRestarts, the first cycle one epoch")
    schedule.add_argument("--one-cycle", type=float, metavar="PEAK",
                          help="one warm-up + cosine cycle over all the epochs")
    schedule.add_argument("--cycles", metavar="EPOCHS:PEAK,...",
                          help="consecutive warm-up + cosine cycles")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="fraction of each cycle spent warming up (--one-cycle, --cycles)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--shift", type=float, default=0.0,
                        help="random shifts of up to this fraction of the image (training only)")
    parser.add_argument("--bn", default="custom", choices=("custom", "keras", "none"))
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tfbn import data, steps
    from tfbn.training import EpochSeeds

    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    arrays = data.load_mnist()
    steps_per_epoch = math.ceil(len(arrays[0][0]) / options.batch_size)
    model = steps.load("4.2").build_model(options.bn)
    if options.shift:
        inputs = keras.Input((28, 28, 1))
        shifted = keras.layers.RandomTranslation(options.shift, options.shift,
                                                 fill_mode="constant", seed=options.seed)(inputs)
        model = keras.Model(inputs, model(shifted))
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing)

    def smoothed_loss(labels, probabilities):  # only the one-hot loss smooths
        return smoothed(tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), 10),
                        probabilities)

    loss = smoothed_loss if options.label_smoothing else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(make_schedule(options, steps_per_epoch)),
                  loss=loss, metrics=["accuracy"])
    order = data.EpochOrder(options.seed)
    train, test = data.mnist_datasets(options.batch_size, order=order, arrays=arrays,
                                      test_batch_size=1000)
    started_cpu, started = time.process_time(), time.perf_counter()
    history = model.fit(train, validation_data=test, epochs=options.epochs, verbose=2,
                        callbacks=[EpochSeeds(order)])
    print(json.dumps({
        "options": vars(options),
        "test_accuracy": [round(value, 4) for value in
                          history.history["val_accuracy"]],
        "cpu_seconds": round(time.process_time() - started_cpu, 1),
        "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
