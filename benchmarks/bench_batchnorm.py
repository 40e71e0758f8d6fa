"""Benchmark: tfbn.BatchNorm against keras.layers.BatchNormalization on the codelab's nets.

Times the step 4.2 conv net and the step 4.1 dense net, built once with the built-in layer
and cloned with `tfbn.BatchNorm` (implementation "auto", "fused", "moments"), all starting
from the same weights, on synthetic MNIST-shaped batches (compute, not loading):

1. training throughput of the compiled train step (`model.train_on_batch`, what `fit` runs);
2. inference throughput (`model.predict_on_batch`), also of `tfbn.fold_batchnorm(model)`;
3. the input pipeline (`tfbn.data.mnist_datasets`) against training: a full epoch out of the
   pipeline, and training fed by it against training on batches already in memory;
4. the training steps' achieved FLOP/s against a float32 matmul on the same machine.

Timings here are noisy (shared CPUs), so everything runs in one process, in rounds in
which the variants take turns in short slices, and each ratio is the median of the
per-round ratios (the table also gives their range). Every rate is given per wall second
and per CPU second of this process: when other processes load the machine, wall-clock
rates swing with their load while CPU-second rates barely move.

Run (from the repository root; 3 to 6 minutes on 2 shared CPU cores):

    python benchmarks/bench_batchnorm.py --json /tmp/bench_batchnorm.json

`--json OUT` also writes every per-round value; `--tiny --rounds 1` only checks that the
script runs (two calls per timing, tiny data). benchmarks/profile_ops.py shows which ops
run and where the time goes.

benchmarks/README.md has the results table, the command and the machine.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfbn  # noqa: E402
from tfbn import steps  # noqa: E402
from tfbn.data import EpochOrder, mnist_datasets  # noqa: E402

# Step -> whether its images are flat vectors (the dense net) or 28x28x1 (the conv net).
STEPS = {"4.2": False, "4.1": True}
# "keras" is the built-in layer; the next are tfbn.BatchNorm(implementation=...); "none" is
# the same network without BN (`--bn none`: a bias where BN was), the speed a BN layer that
# cost nothing would reach, so that BN's overhead is a variant's time minus its time.
IMPLEMENTATIONS = ("auto", "fused", "moments")
NO_BN = "none"
VARIANTS = ("keras", *IMPLEMENTATIONS, NO_BN)
FOLDED = "folded"
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
MATMUL_SIZE = 2048
TINY_MATMUL_SIZE = 256
TINY_TRAIN_SIZE = 400
MATMUL = "matmul"
WARMUP_CALLS = 3
# "wall": work per elapsed second; "cpu": work per CPU second this process used.
CLOCKS = ("wall", "cpu")
# Workloads take turns in slices this long; a round gives each `seconds_per_timing`.
SLICE_SECONDS = 0.2
TINY_SLICES = 2
CACHED_EPOCHS = 3
# Ops that show which batch norm path a graph takes.
BATCH_NORM_OPS = ("FusedBatchNormV3", "FusedBatchNormGradV3", "Mean", "SquaredDifference",
                  "Rsqrt")
FLOP_COUNTED_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    rounds: int = 7
    batch_size: int = 100
    seconds_per_timing: float = 0.8
    tiny: bool = False
    json: str | None = None

    def __post_init__(self):
        for name in ("rounds", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.seconds_per_timing > 0:
            raise ValueError(
                f"seconds_per_timing must be positive, got {self.seconds_per_timing!r}")


# ---------------------------------------------------------------------------------------
# Models


def with_tfbn_layers(model: keras.Model, implementation: str) -> keras.Model:
    """The same architecture with every built-in BN layer replaced by tfbn.BatchNorm."""

    def clone_layer(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return tfbn.BatchNorm(**layer.get_config(), implementation=implementation)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone_layer)


def build_variants(step_name: str) -> dict[str, keras.Model]:
    """The step's model with each BN variant, all compiled, all with the same weights."""
    step = steps.load(step_name)
    reference = step.build_model("keras")
    models = {"keras": reference}
    for implementation in IMPLEMENTATIONS:
        models[implementation] = with_tfbn_layers(reference, implementation)
        models[implementation].set_weights(reference.get_weights())
    models[NO_BN] = step.build_model(NO_BN)
    for model in models.values():
        # As tfbn.training compiles it, so train_on_batch runs the step fit runs.
        model.compile(optimizer=step.make_optimizer(), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return models


def synthetic_batch(batch_size: int, flat: bool, seed: int = 0):
    """MNIST-shaped float32 images in [0, 1] and int32 labels, as tensors in memory."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, 784) if flat else (batch_size, 28, 28, 1)
    images = rng.random(shape, dtype=np.float32)
    labels = rng.integers(0, 10, size=batch_size).astype(np.int32)
    return tf.constant(images), tf.constant(labels)


# ---------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class Workload:
    """Something timed: `run()` does one call's work, `work_per_call` images (or FLOPs)."""

    run: Callable[[], object]
    work_per_call: float
    calls_per_slice: int = 1


def time_calls(function: Callable[[], object], calls: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads) for `calls` calls.

    Each call returns only when its work is done, so no extra synchronization is needed.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        function()
    return time.perf_counter() - wall, time.process_time() - cpu


def calibrate(workloads: dict, reference_of: Callable[[tuple], tuple], config) -> None:
    """Warms every workload up, then sets its calls per slice from its reference's speed.

    All variants of a model do as many calls as the built-in layer's model needs to fill
    a slice, so each round compares the same work.
    """
    for workload in workloads.values():
        time_calls(workload.run, WARMUP_CALLS)
    calls_by_reference = {}
    for key, workload in workloads.items():
        reference = reference_of(key)
        if reference not in calls_by_reference:
            seconds_per_call = time_calls(workloads[reference].run, 2)[0] / 2
            calls_by_reference[reference] = (
                1 if config.tiny else max(1, round(SLICE_SECONDS / seconds_per_call)))
        workload.calls_per_slice = calls_by_reference[reference]


def rotated(items: tuple, shift: int) -> tuple:
    shift %= len(items)
    return items[shift:] + items[:shift]


def interleaved_rates(workloads: dict, config, log, section: str) -> dict[str, dict]:
    """Work per second of each workload, one value per round, on both clocks.

    Returns {"wall": {key: [rate per round]}, "cpu": {...}}; "cpu" divides by the CPU
    seconds this process used, which other processes' load barely changes. A round
    cycles through the workloads in short slices, starting at a different one each
    slice, so background load falls on all of them alike and a per-round ratio compares
    work done side by side.
    """
    slices = TINY_SLICES if config.tiny else max(
        1, round(config.seconds_per_timing / SLICE_SECONDS))
    keys = tuple(workloads)
    rates = {clock: {key: [] for key in keys} for clock in CLOCKS}
    for round_index in range(config.rounds):
        seconds = {clock: dict.fromkeys(keys, 0.0) for clock in CLOCKS}
        for slice_index in range(slices):
            for key in rotated(keys, round_index * slices + slice_index):
                wall, cpu = time_calls(workloads[key].run, workloads[key].calls_per_slice)
                seconds["wall"][key] += wall
                seconds["cpu"][key] += cpu
        for key, workload in workloads.items():
            work = slices * workload.calls_per_slice * workload.work_per_call
            for clock in CLOCKS:
                rates[clock][key].append(work / seconds[clock][key])
        log(f"{section} round {round_index + 1}/{config.rounds}, per wall (CPU) second: "
            + ", ".join(describe_rates(key, rates["wall"][key][-1], rates["cpu"][key][-1])
                        for key in keys))
    return rates


def describe_rates(key: tuple, wall_rate: float, cpu_rate: float) -> str:
    if key[0] == MATMUL:
        return f"matmul {wall_rate / 1e9:.1f} ({cpu_rate / 1e9:.1f}) GFLOP"
    return f"{' '.join(key)} {wall_rate:.0f} ({cpu_rate:.0f}) images"


def summarize(rates: dict[str, dict], step_name: str, reference: str) -> dict:
    """Per variant of `step_name` and per clock: the median images/s, and the median and
    range of the per-round ratios to `reference`."""
    summary = {}
    for clock, by_key in rates.items():
        variants = {variant: values for (step, variant), values in by_key.items()
                    if step == step_name}
        for variant, values in variants.items():
            ratios = [value / base for value, base in zip(values, variants[reference])]
            summary.setdefault(variant, {})[clock] = {
                "images_per_second": statistics.median(values),
                "ratio": statistics.median(ratios),
                "lowest_ratio": min(ratios),
                "highest_ratio": max(ratios),
                "per_round_images_per_second": values,
                "per_round_ratios": ratios,
            }
        if NO_BN not in variants:
            continue
        # BN's overhead: seconds per image beyond the no-BN network's, per round.
        limit = variants[NO_BN]
        overheads = {variant: [1 / value - 1 / base for value, base in zip(values, limit)]
                     for variant, values in variants.items() if variant != NO_BN}
        for variant, values in overheads.items():
            of_reference = [mine / theirs for mine, theirs in zip(values, overheads[reference])]
            summary[variant][clock].update({
                "overhead_microseconds_per_image": 1e6 * statistics.median(values),
                "overhead_fraction_of_step": statistics.median(
                    [overhead * rate for overhead, rate in zip(values, variants[variant])]),
                "overhead_ratio": statistics.median(of_reference),
                "lowest_overhead_ratio": min(of_reference),
                "highest_overhead_ratio": max(of_reference),
            })
    return summary


# ---------------------------------------------------------------------------------------
# FLOPs


def training_graph(model: keras.Model, batch_size: int, flat: bool) -> tf.Graph:
    """The graph of one training step (forward, gradients, Adam update) for `model`."""
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    images, labels = synthetic_batch(batch_size, flat)
    return train_step.get_concrete_function(images, labels).graph


def profiled_flops(graph: tf.Graph) -> int:
    """FLOPs TensorFlow's graph profiler counts (ops with registered flop statistics)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph=graph, options=options).total_float_ops


def analytic_training_flops_per_image(model: keras.Model) -> int:
    """Training FLOPs of the Dense and Conv2D layers, 2 per multiply-add.

    Each layer does one product per weight and output position forward, the same again
    for its weight gradient, and once more for its input gradient, except the first
    layer, whose input is the data and needs no gradient.
    """
    flops = 0
    for index, layer in enumerate(
            [layer for layer in model.layers if isinstance(layer, FLOP_COUNTED_LAYERS)]):
        output_positions = int(np.prod(layer.output.shape[1:-1]))
        forward = 2 * output_positions * int(np.prod(layer.kernel.shape))
        flops += forward * (2 if index == 0 else 3)
    return flops


def op_counts(graph: tf.Graph) -> dict[str, int]:
    counts = collections.Counter(operation.type for operation in graph.get_operations())
    return {op: counts[op] for op in BATCH_NORM_OPS}


def make_matmul(size: int) -> tuple[Callable[[], object], int]:
    """A float32 size x size matmul as a call, and its FLOPs (2 n^3)."""
    rng = np.random.default_rng(0)
    left = tf.constant(rng.random((size, size), dtype=np.float32))
    right = tf.constant(rng.random((size, size), dtype=np.float32))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(left, right)))
    return matmul, 2 * size ** 3


# ---------------------------------------------------------------------------------------
# The four measurements


def measure_training(models_by_step, batches, config, log):
    """Images/s of train_on_batch per step and variant; the matmul's FLOP/s per round."""
    size = TINY_MATMUL_SIZE if config.tiny else MATMUL_SIZE
    matmul, matmul_flops = make_matmul(size)
    matmul_key = (MATMUL, f"{size}x{size}")
    workloads = {matmul_key: Workload(matmul, matmul_flops)}
    for step_name, models in models_by_step.items():
        images, labels = batches[step_name]
        for variant, model in models.items():
            workloads[(step_name, variant)] = Workload(
                lambda model=model, images=images, labels=labels:
                model.train_on_batch(images, labels), config.batch_size)
    log("training: warming up and calibrating")
    calibrate(workloads, lambda key: key if key[0] == MATMUL else (key[0], "keras"), config)
    rates = interleaved_rates(workloads, config, log, "training")
    training = {step_name: summarize(rates, step_name, "keras") for step_name in models_by_step}
    matmul_rates = {clock: rates[clock][matmul_key] for clock in CLOCKS}
    return training, matmul_rates


def measure_inference(models_by_step, batches, config, log):
    """Images/s of predict_on_batch per variant and of the folded model."""
    workloads = {}
    folding = {}
    for step_name, models in models_by_step.items():
        images, _ = batches[step_name]
        result = tfbn.fold_batchnorm(models["auto"], verbose=False)
        reference = models["auto"].predict_on_batch(images)
        folding[step_name] = {
            "folded_layers": len(result.folded),
            "kept_layers": len(result.kept),
            "max_abs_prediction_difference": float(
                np.max(np.abs(result.model.predict_on_batch(images) - reference))),
        }
        for variant, model in {**models, FOLDED: result.model}.items():
            workloads[(step_name, variant)] = Workload(
                lambda model=model, images=images: model.predict_on_batch(images),
                config.batch_size)
    log("inference: warming up and calibrating")
    calibrate(workloads, lambda key: (key[0], "keras"), config)
    rates = interleaved_rates(workloads, config, log, "inference")
    inference = {step_name: summarize(rates, step_name, "keras") for step_name in models_by_step}
    for step_name, fold_facts in folding.items():
        inference[step_name][FOLDED].update(fold_facts)
    return inference


def epoch_rates(dataset: tf.data.Dataset) -> dict[str, float]:
    """Images per wall second and per CPU second (tf.data's threads too) of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    images_seen = sum(int(images.shape[0]) for images, _ in dataset)
    return {"wall": images_seen / (time.perf_counter() - wall),
            "cpu": images_seen / (time.process_time() - cpu)}


def measure_pipeline(models_by_step, batches, config, log):
    """The input pipeline's images/s over full epochs, and training fed by it.

    The first epoch also fills the pipeline's cache; later epochs read from it (the median
    of CACHED_EPOCHS of them is kept). "Fed over
    resident" compares train_on_batch on batches pulled from the pipeline with
    train_on_batch on a batch already in memory (per-round ratios, median): on 2 cores the
    pipeline's threads share the CPU with training even when the pipeline alone is fast.
    """
    train_size = TINY_TRAIN_SIZE if config.tiny else MNIST_TRAIN_SIZE
    test_size = TINY_TRAIN_SIZE // 4 if config.tiny else MNIST_TEST_SIZE
    rng = np.random.default_rng(0)
    arrays = tuple(
        (rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8),
         rng.integers(0, 10, size=size).astype(np.uint8))
        for size in (train_size, test_size))
    pipeline = {}
    for step_name, flat in STEPS.items():
        train_dataset, _ = mnist_datasets(config.batch_size, flat=flat, arrays=arrays,
                                          order=EpochOrder(0))  # as the lessons order it
        first_epoch = epoch_rates(train_dataset)
        cached_epochs = [epoch_rates(train_dataset) for _ in range(CACHED_EPOCHS)]
        cached_epoch = {clock: statistics.median(rates[clock] for rates in cached_epochs)
                        for clock in CLOCKS}

        model = models_by_step[step_name]["auto"]
        images, labels = batches[step_name]
        pipeline_batches = iter(train_dataset.repeat())
        workloads = {
            (step_name, "resident"): Workload(
                lambda: model.train_on_batch(images, labels), config.batch_size),
            (step_name, "fed"): Workload(
                lambda: model.train_on_batch(*next(pipeline_batches)), config.batch_size),
        }
        calibrate(workloads, lambda key: (key[0], "resident"), config)
        summary = summarize(interleaved_rates(workloads, config, log, "pipeline"),
                            step_name, "resident")["fed"]
        pipeline[step_name] = {
            "epoch_images": train_size,
            "first_epoch_images_per_second": first_epoch,
            "cached_epoch_images_per_second": cached_epoch,
            "fed_over_resident": summary,
        }
        log(f"pipeline {step_name}: first epoch {first_epoch['wall']:.0f} images/s, cached "
            f"epochs {cached_epoch['wall']:.0f} images/s ({cached_epoch['cpu']:.0f} per CPU "
            f"second); training fed by it / on a resident batch {summary['wall']['ratio']:.3f} "
            f"(CPU time {summary['cpu']['ratio']:.3f})")
    return pipeline


def measure_flops(models_by_step, graphs, training, matmul_rates, batch_size):
    """Achieved FLOP/s of the auto variant's training step against the matmul's.

    Counts the Dense and Conv2D FLOPs (analytic); TensorFlow's profiler count of the
    whole step's graph (BN, activations, loss and Adam too) is kept as a check. Per clock,
    the fraction is the median of the per-round ratios to the matmul's rate.
    """
    flops = {}
    for step_name in STEPS:
        model = models_by_step[step_name]["auto"]
        per_image = analytic_training_flops_per_image(model)
        flops[step_name] = {
            "analytic_training_flops_per_image": per_image,
            "profiled_training_flops_per_image":
                profiled_flops(graphs[step_name]["auto"]) / batch_size,
        }
        for clock in CLOCKS:
            achieved = [rate * per_image for rate in
                        training[step_name]["auto"][clock]["per_round_images_per_second"]]
            fractions = [rate / matmul for rate, matmul in zip(achieved, matmul_rates[clock])]
            flops[step_name][clock] = {
                "achieved_flops_per_second": statistics.median(achieved),
                "matmul_flops_per_second": statistics.median(matmul_rates[clock]),
                "fraction_of_matmul": statistics.median(fractions),
                "per_round_fractions_of_matmul": fractions,
            }
    return flops


# ---------------------------------------------------------------------------------------
# Report


def machine_facts() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                             if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "devices": [device.name for device in tf.config.list_physical_devices()],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)"),
        "load_average_at_start": os.getloadavg()[0],
    }


def format_ratio(summary: dict) -> str:
    return (f"{summary['ratio']:.3f} ({summary['lowest_ratio']:.2f}-"
            f"{summary['highest_ratio']:.2f})")


def format_variant_rows(section: dict, ops: dict | None = None) -> list[str]:
    rows = []
    for step_name, variants in section.items():
        for variant, summary in variants.items():
            row = (f"{step_name:<5} {variant:<8} {summary['wall']['images_per_second']:>9.0f} "
                   f"{format_ratio(summary['wall']):>19} "
                   f"{summary['cpu']['images_per_second']:>10.0f} "
                   f"{format_ratio(summary['cpu']):>19}")
            if ops is not None:
                row += "   " + ", ".join(f"{op} x{count}" for op, count
                                         in ops[step_name][variant].items() if count)
            rows.append(row)
    return rows


def format_overhead_rows(section: dict) -> list[str]:
    rows = []
    for step_name, variants in section.items():
        for variant, summary in variants.items():
            if variant == NO_BN or "overhead_ratio" not in summary["cpu"]:
                continue
            cells = []
            for clock in CLOCKS:
                facts = summary[clock]
                cells.append(f"{facts['overhead_microseconds_per_image']:>8.1f} us "
                             f"{facts['overhead_fraction_of_step']:>6.1%} "
                             f"{facts['overhead_ratio']:>6.3f} ({facts['lowest_overhead_ratio']:.2f}-"
                             f"{facts['highest_overhead_ratio']:.2f})")
            rows.append(f"{step_name:<5} {variant:<8} " + "   ".join(cells))
    return rows


def format_tables(results: dict) -> str:
    rounds = results["config"]["rounds"]
    header = (f"{'step':<5} {'variant':<8} {'images/s':>9} {'ratio (range)':>19} "
              f"{'img/CPU-s':>10} {'CPU ratio (range)':>19}")
    explanation = (f"images/s: median of {rounds} rounds; img/CPU-s: images per CPU second of "
                   f"this process; ratio: median of the per-round ratios to keras (their range)")
    lines = ["Training throughput, train_on_batch", explanation,
             header + "   BN ops in the step's graph",
             *format_variant_rows(results["training"], results["ops"]),
             "",
             "Inference throughput, predict_on_batch", explanation, header,
             *format_variant_rows(results["inference"]),
             "",
             f"BN's overhead: time per image beyond the same network without BN ({NO_BN}); "
             "share of the step; ratio to keras's overhead (median of the per-round ratios, "
             "range)",
             f"{'':<5} {'':<8} {'wall: overhead  share  ratio (range)':<36}   "
             f"{'CPU: overhead  share  ratio (range)'}",
             "training:",
             *format_overhead_rows(results["training"]),
             "inference:",
             *format_overhead_rows(results["inference"]),
             "",
             "Input pipeline (tfbn.data.mnist_datasets) against training (auto); "
             "fed/resident: training on the pipeline's batches / on a batch in memory",
             f"{'step':<5} {'1st epoch img/s':>15} {'cached img/s':>12} {'img/CPU-s':>10} "
             f"{'training img/s':>14} {'img/CPU-s':>10} {'fed/resident':>19} "
             f"{'CPU fed/resident':>19}"]
    for step_name, pipeline in results["pipeline"].items():
        training = results["training"][step_name]["auto"]
        cached = pipeline["cached_epoch_images_per_second"]
        lines.append(f"{step_name:<5} {pipeline['first_epoch_images_per_second']['wall']:>15.0f} "
                     f"{cached['wall']:>12.0f} {cached['cpu']:>10.0f} "
                     f"{training['wall']['images_per_second']:>14.0f} "
                     f"{training['cpu']['images_per_second']:>10.0f} "
                     f"{format_ratio(pipeline['fed_over_resident']['wall']):>19} "
                     f"{format_ratio(pipeline['fed_over_resident']['cpu']):>19}")
    lines += ["", "Achieved FLOP/s of the training step (auto) against a float32 "
                  "matmul, per wall second and per CPU second",
              f"{'step':<5} {'MFLOP/image':>11} {'(profiler)':>10} {'GFLOP/s':>8} "
              f"{'matmul':>7} {'fraction':>8} {'GFLOP/CPU-s':>12} {'matmul':>7} {'fraction':>8}"]
    for step_name, flops in results["flops"].items():
        wall, cpu = flops["wall"], flops["cpu"]
        lines.append(f"{step_name:<5} {flops['analytic_training_flops_per_image'] / 1e6:>11.1f} "
                     f"{flops['profiled_training_flops_per_image'] / 1e6:>10.1f} "
                     f"{wall['achieved_flops_per_second'] / 1e9:>8.1f} "
                     f"{wall['matmul_flops_per_second'] / 1e9:>7.1f} "
                     f"{wall['fraction_of_matmul']:>8.3f} "
                     f"{cpu['achieved_flops_per_second'] / 1e9:>12.1f} "
                     f"{cpu['matmul_flops_per_second'] / 1e9:>7.1f} "
                     f"{cpu['fraction_of_matmul']:>8.3f}")
    return "\n".join(lines)


def main(config: BenchmarkConfig = BenchmarkConfig(), log: Callable[[str], None] = print
         ) -> dict:
    started = time.perf_counter()
    results = {
        "command": " ".join(["python", *sys.argv]) if __name__ == "__main__" else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "config": dataclasses.asdict(config),
    }

    def progress(message: str) -> None:
        log(f"[{time.perf_counter() - started:4.0f} s] {message}")

    progress(f"building models for steps {', '.join(STEPS)}: {', '.join(VARIANTS)}")
    models_by_step = {step_name: build_variants(step_name) for step_name in STEPS}
    batches = {step_name: synthetic_batch(config.batch_size, flat)
               for step_name, flat in STEPS.items()}
    graphs = {
        step_name: {variant: training_graph(model, config.batch_size, STEPS[step_name])
                    for variant, model in models.items()}
        for step_name, models in models_by_step.items()
    }
    results["ops"] = {
        step_name: {variant: op_counts(graph) for variant, graph in by_variant.items()}
        for step_name, by_variant in graphs.items()
    }
    results["training"], matmul_rates = measure_training(
        models_by_step, batches, config, progress)
    results["inference"] = measure_inference(models_by_step, batches, config, progress)
    results["pipeline"] = measure_pipeline(models_by_step, batches, config, progress)
    results["flops"] = measure_flops(models_by_step, graphs, results["training"], matmul_rates,
                                     config.batch_size)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    results["seconds"] = time.perf_counter() - started
    log("")
    log(format_tables(results))
    log(f"\n{results['seconds']:.0f} s in all")
    if config.json:
        with open(config.json, "w") as file:
            json.dump(results, file, indent=2)
        log(f"results written to {config.json}")
    return results


def parse_config(argv=None) -> BenchmarkConfig:
    defaults = BenchmarkConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=defaults.rounds,
                        help=f"interleaved timing rounds (default {defaults.rounds})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"images per batch (default {defaults.batch_size})")
    parser.add_argument("--seconds-per-timing", type=float,
                        default=defaults.seconds_per_timing,
                        help="target length of each timed run (default "
                             f"{defaults.seconds_per_timing})")
    parser.add_argument("--tiny", action="store_true",
                        help="a couple of steps on tiny data: checks the script, times nothing")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this file")
    arguments = parser.parse_args(argv)
    try:
        return BenchmarkConfig(rounds=arguments.rounds, batch_size=arguments.batch_size,
                               seconds_per_timing=arguments.seconds_per_timing,
                               tiny=arguments.tiny, json=arguments.json)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main(parse_config())
