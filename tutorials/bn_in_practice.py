# %% [markdown]
# # BN in practice: recalibrate, diagnose, ghost batches, freeze
#
# **The problems people hit with BN in Keras, each shown once with numbers before and
# after:** inference far below training after a short run, large batches, fine-tuning.
#
# - `tfbn.diagnose_batchnorm(model, data)`: how far each BN layer's moving statistics are
#   from the data's, and the metrics with each.
# - `tfbn.recalibrate_batchnorm(model, data)`: PreciseBN. The moving statistics are
#   averages taken while the weights still moved; this recomputes them for the final
#   weights, every other weight fixed.
# - `tfbn.BatchNorm(virtual_batch_size=G)`: ghost batches. In training each group of G
#   samples is normalized by its own statistics, as if the batch were G.
# - `tfbn.freeze_batchnorm(model)`: BN in inference mode for fine-tuning.
#
# Run it: `python tutorials/bn_in_practice.py` (a few minutes on a CPU; `--seeds 0 1 2`).

# %% tags=["active-ipynb"]
# # In a fresh Jupyter or Colab: install tfbn, from this repository's checkout (the
# # notebook's parent folder) or from TFBN_SOURCE (a path or a git URL of the repository).
# import importlib.util, os, subprocess, sys
# if importlib.util.find_spec("tfbn") is None:
#     source = os.environ.get("TFBN_SOURCE", "..")
#     subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", source])

# %% [markdown]
# ## Setup

# %%
import argparse
import statistics

import tfbn  # first: tfbn quiets TensorFlow's start-up logs
import keras
import numpy as np

from tfbn import cli, data, steps


def compiled(model, optimizer):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def mean_sd(values) -> str:
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}%"


# %% [markdown]
# ## 1. Inference after a short run: diagnose, then recalibrate
#
# Step 4.0's network trained for 25 steps. Its moving statistics started at 0 and 1 and
# moved 1% of the way to each batch's statistics per step: after 25 steps they still hold
# 0.99^25 = 78% of those initial values, so inference normalizes with statistics the data
# does not have. `diagnose_batchnorm` shows it; `recalibrate_batchnorm` repairs it with 50
# training batches, without training anything.


# %%
def short_run(mnist, seed, steps_trained=25):
    keras.utils.set_random_seed(seed)
    lesson = steps.load("4.0")
    train, test = data.mnist_datasets(100, flat=True, seed=seed, arrays=mnist, repeat=True)
    model = compiled(lesson.build_model("custom"), lesson.make_optimizer())
    model.fit(train, epochs=1, steps_per_epoch=steps_trained, verbose=0)
    diagnosis = tfbn.diagnose_batchnorm(model, test)
    tfbn.recalibrate_batchnorm(model, train, steps=50)
    return diagnosis, model.evaluate(test, verbose=0)[1]


# %% [markdown]
# ## 2. Large batches: ghost batches
#
# BN's batch statistics are noisy, and that noise regularizes. With a batch of 1,000 the
# statistics are almost exact; ghost batches of 100 bring the noise of batch 100 back
# while the optimizer still takes batch-1,000 steps. Step 4.1's network, its optimizer,
# 5 epochs (300 steps), with and without `virtual_batch_size=100`.


# %%
def large_batch_run(mnist, seed, virtual_batch_size, epochs=5, batch_size=1000):
    keras.utils.set_random_seed(seed)
    lesson = steps.load("4.1")
    inputs = keras.Input(shape=(784,))
    x = inputs
    for units in (200, 100, 60, 30):
        x = keras.layers.Dense(units, use_bias=False)(x)
        x = tfbn.BatchNorm(scale=False, virtual_batch_size=virtual_batch_size)(x)
        x = keras.layers.Activation("relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = compiled(keras.Model(inputs, outputs), lesson.make_optimizer())
    train, test = data.mnist_datasets(batch_size, flat=True, seed=seed, arrays=mnist)
    model.fit(train, epochs=epochs, verbose=0)
    return model.evaluate(test, verbose=0)[1]


# %% [markdown]
# ## 3. Fine-tuning: freeze BN
#
# Step 4.1's network learns digits 0-4 for one epoch. For the new task, 200 images of
# digits 5-9, it gets a new softmax layer (its old one never saw a 5), and all of it is
# fine-tuned in batches of 10 for 10 epochs (200 steps). Trained, BN
# normalizes each small fine-tuning batch by its own noisy statistics and keeps replacing
# its moving statistics with them; frozen (`tfbn.freeze_batchnorm`, then `compile`), it
# keeps the pretraining statistics, gamma and beta, while every other weight trains. The
# score is the test accuracy on the new task's digits, 5-9.


# %%
def fine_tuning_run(mnist, seed, freeze, images=200, epochs=10):
    keras.utils.set_random_seed(seed)
    lesson = steps.load("4.1")
    (x_train, y_train), (x_test, y_test) = mnist
    old_task, new_task = y_train < 5, y_train >= 5
    pretraining = ((x_train[old_task], y_train[old_task]), (x_test, y_test))
    new_test = y_test >= 5
    fine_tuning = ((x_train[new_task][:images], y_train[new_task][:images]),
                   (x_test[new_test], y_test[new_test]))
    model = compiled(lesson.build_model("custom"), lesson.make_optimizer())
    train, _ = data.mnist_datasets(100, flat=True, seed=seed, arrays=pretraining)
    model.fit(train, epochs=1, verbose=0)
    features = model.get_layer("dense4_relu").output
    model = keras.Model(model.inputs, keras.layers.Dense(10, activation="softmax")(features))
    if freeze:
        tfbn.freeze_batchnorm(model)
    compiled(model, keras.optimizers.Adam(0.001))  # after freezing, compile again
    train, test = data.mnist_datasets(10, flat=True, seed=seed, arrays=fine_tuning)
    model.fit(train, epochs=epochs, verbose=0)
    return model.evaluate(test, verbose=0)[1]


# %% [markdown]
# ## Run it all

# %%
def main(seeds=(0, 1, 2), datasets=None, batch_size=1000, virtual_batch_size=100) -> dict:
    mnist = datasets if datasets is not None else data.load_mnist()
    results = {}
    diagnosis, recalibrated = short_run(mnist, seeds[0])
    print(f"1. step 4.0's network after 25 steps (seed {seeds[0]}):\n{diagnosis}")
    results["short run"] = (diagnosis.moving["accuracy"], recalibrated)
    print(f"   test accuracy {diagnosis.moving['accuracy']:.4f} with the moving statistics, "
          f"{recalibrated:.4f} recalibrated over 50 training batches\n")
    results["large batches"] = {
        f"batch {batch_size}": [large_batch_run(mnist, seed, None, batch_size=batch_size)
                                for seed in seeds],
        f"ghost batches of {virtual_batch_size}": [
            large_batch_run(mnist, seed, virtual_batch_size, batch_size=batch_size)
            for seed in seeds]}
    results["fine-tuning"] = {
        label: [fine_tuning_run(mnist, seed, freeze) for seed in seeds]
        for label, freeze in (("BN trained", False), ("BN frozen", True))}
    test_sizes = {"large batches": len(mnist[1][1]),
                  "fine-tuning": int(np.sum(mnist[1][1] >= 5))}
    for name in ("large batches", "fine-tuning"):
        for label, accuracies in results[name].items():
            print(f"{name}, {label}: test accuracy {mean_sd(accuracies)} over seeds "
                  f"{list(seeds)} ({', '.join(f'{a:.4f}' for a in accuracies)})")
        accuracy = np.mean([a for runs in results[name].values() for a in runs])
        noise = np.sqrt(accuracy * (1 - accuracy) / test_sizes[name])
        print(f"  the test set's own noise floor at {100 * accuracy:.1f}% over "
              f"{test_sizes[name]:,} digits: ± {100 * noise:.2f} points")
    return results


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="BN in practice: recalibrate, diagnose, "
                                                 "ghost batches, freeze")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    main(tuple(parser.parse_args([] if cli.in_notebook() else None).seeds))
