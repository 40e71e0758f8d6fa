"""One worker of the two-process MultiWorkerMirroredStrategy test (test_distribute.py).

    TF_CONFIG='{"cluster": ..., "task": {"type": "worker", "index": I}}' \\
        python multi_worker_run.py WORK_DIR

With WORK_DIR/tiny_mnist.npz as data, it trains step 4.1 through `training.train`
(--strategy multiworker) and saves its metrics to WORK_DIR/metrics-I.json, then trains a
small BN model with synchronized and with local statistics and saves its weights to
WORK_DIR/weights-I.npz.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbn import BatchNorm, devices, training
from tfbn.config import RunConfig

GLOBAL_BATCH_SIZE = 16


def small_bn_data(size: int = 64):
    """Inputs whose second half of every global batch is shifted by 3: with two replicas,
    each sees one half, so local batch statistics differ from global ones."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((size, 6)).astype("float32")
    images[np.arange(size) % GLOBAL_BATCH_SIZE >= GLOBAL_BATCH_SIZE // 2] += 3.0
    labels = rng.integers(0, 3, size)
    return images, labels


def train_small_bn_model(strategy, synchronized: bool) -> dict[str, np.ndarray]:
    """A dense layer, BN, a softmax: one epoch of SGD on `small_bn_data`; its weights by path."""
    images, labels = small_bn_data()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((6,)),
            keras.layers.Dense(8, use_bias=False, name="dense"),
            BatchNorm(momentum=0.5, synchronized=synchronized, name="bn"),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3, activation="softmax", name="classifier"),
        ], name="small_bn_model")
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        if devices.is_multi_worker(strategy):
            devices.prepare_multi_worker_fit(model)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH_SIZE)
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    return {variable.path: variable.numpy() for variable in model.weights}


def main(work_dir: Path) -> None:
    strategy = devices.make_strategy("multiworker")
    worker = devices.worker_index(strategy)
    with np.load(work_dir / "tiny_mnist.npz") as arrays:
        tiny_mnist = ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]))
    config = RunConfig(strategy="multiworker", epochs=1, steps_per_epoch=2,
                       batch_size=GLOBAL_BATCH_SIZE, verbose=0)
    metrics = training.train("4.1", config, arrays=tiny_mnist)
    (work_dir / f"metrics-{worker}.json").write_text(json.dumps(metrics))

    weights = {}
    for synchronized in (True, False):
        for path, value in train_small_bn_model(strategy, synchronized).items():
            weights[f"{'synchronized' if synchronized else 'local'}/{path}"] = value
    np.savez(work_dir / f"weights-{worker}.npz", **weights)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
