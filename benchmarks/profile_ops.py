"""Where a step's time goes, per op type, for each BN variant of a codelab net.

Traces a few calls of `train_on_batch` (or `predict_on_batch`) of the models
bench_batchnorm.py times, with the TensorFlow profiler, and sums the executed kernels'
durations by op type. These are the ops that really ran, after Grappler's and oneDNN's
rewrites: `_MklNativeFusedBatchNormV3`, or a `_MklNativeFusedConv2D` that has absorbed
an inference-mode batch norm. It also splits the time between the BN layers' ops
(forward, gradient and moving-average update) and everything else; a convolution or
matmul kernel counts as "everything else" even when a BN was fused into it (the fused
node carries the BN's name).

Run (from the repository root; about a minute):

    python benchmarks/profile_ops.py --step 4.2 --mode train

Kernel durations are wall time on the op's thread: on a loaded machine they stretch when
the thread is descheduled, so compare shares within a variant rather than absolute values.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import os
import re
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# The profiler's trace format; TensorFlow ships its protobuf module under tsl.
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import tfbn  # noqa: E402
from tfbn.layer import BATCH_NORM_TYPES  # noqa: E402
from bench_batchnorm import FOLDED, STEPS, build_variants, synthetic_batch  # noqa: E402

MODES = ("train", "infer")
WARMUP_CALLS = 3
# Executor bookkeeping on the same threads as the kernels, not ops.
NOT_KERNELS = ("ThreadpoolListener", "ExecutorState")
WEIGHTED_SUM_OP = re.compile("Conv|MatMul")


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    step: str = "4.2"
    mode: str = "train"
    batch_size: int = 100
    calls: int = 10
    top: int = 12

    def __post_init__(self):
        if self.step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}, got {self.step!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("batch_size", "calls", "top"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


def kernel_milliseconds(trace_dir: str) -> collections.Counter:
    """Total duration per (node name, op type) of the kernels in a profiler trace."""
    [path] = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    durations = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith(NOT_KERNELS):
                    node, op_type = name.rsplit(":", 1)
                    durations[(node, op_type)] += event.duration_ps / 1e9
    return durations


def is_batch_norm_node(node: str, batch_norm_names: set[str]) -> bool:
    """Whether a node belongs to a BN layer (Keras may suffix a scope with "_1")."""
    return any(re.fullmatch(rf"{re.escape(name)}(_\d+)?", component)
               for component in node.split("/") for name in batch_norm_names)


def profile_model(model, run, calls: int) -> dict:
    """Milliseconds per call by op type, in the BN layers, and in all, for `run()`."""
    for _ in range(WARMUP_CALLS):
        run()
    with tempfile.TemporaryDirectory(prefix="tfbn-profile-") as trace_dir:
        tf.profiler.experimental.start(trace_dir)
        for _ in range(calls):
            run()
        tf.profiler.experimental.stop()
        durations = kernel_milliseconds(trace_dir)
    batch_norm_names = {layer.name for layer in model.layers
                        if isinstance(layer, BATCH_NORM_TYPES)}
    by_op_type = collections.Counter()
    batch_norm_total = 0.0
    for (node, op_type), milliseconds in durations.items():
        by_op_type[op_type] += milliseconds / calls
        if (is_batch_norm_node(node, batch_norm_names)
                and not WEIGHTED_SUM_OP.search(op_type)):
            batch_norm_total += milliseconds / calls
    return {
        "milliseconds_by_op_type": dict(by_op_type.most_common()),
        "batch_norm_milliseconds": batch_norm_total,
        "total_milliseconds": sum(by_op_type.values()),
    }


def main(config: ProfileConfig = ProfileConfig(), log=print) -> dict:
    models = build_variants(config.step)
    images, labels = synthetic_batch(config.batch_size, STEPS[config.step])
    if config.mode == "infer":
        models[FOLDED] = tfbn.fold_batchnorm(models["auto"], verbose=False).model
    profiles = {}
    for variant, model in models.items():
        if config.mode == "train":
            def run(model=model):
                return model.train_on_batch(images, labels)
        else:
            def run(model=model):
                return model.predict_on_batch(images)
        profile = profiles[variant] = profile_model(model, run, config.calls)
        log(f"\n{config.step} {config.mode} {variant}: "
            f"{profile['total_milliseconds']:.2f} ms of kernels per call, "
            f"{profile['batch_norm_milliseconds']:.2f} ms in BN layers")
        for op_type, milliseconds in list(
                profile["milliseconds_by_op_type"].items())[:config.top]:
            log(f"  {op_type:<34} {milliseconds:8.3f} ms")
    return profiles


def parse_config(argv=None) -> ProfileConfig:
    defaults = ProfileConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", default=defaults.step, choices=list(STEPS))
    parser.add_argument("--mode", default=defaults.mode, choices=MODES)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--calls", type=int, default=defaults.calls,
                        help=f"traced calls per variant (default {defaults.calls})")
    parser.add_argument("--top", type=int, default=defaults.top,
                        help=f"op types listed per variant (default {defaults.top})")
    arguments = parser.parse_args(argv)
    try:
        return ProfileConfig(step=arguments.step, mode=arguments.mode,
                             batch_size=arguments.batch_size, calls=arguments.calls,
                             top=arguments.top)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main(parse_config())
