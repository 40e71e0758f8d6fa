"""BN in practice: recalibrate the moving statistics, freeze BN for fine-tuning, convert.

These work on any Keras model holding `keras.layers.BatchNormalization` or
`tfbn.BatchNorm` layers, nested models included:

- `recalibrate_batchnorm(model, data)`: PreciseBN. The moving statistics lag the
  weights (each is an average over the last ~1/(1 - momentum) steps, taken while the
  weights still moved); this replaces them with statistics of the final weights.
- `freeze_batchnorm(model)` / `unfreeze_batchnorm(model)`: BN in inference mode for
  fine-tuning, its statistics and its gamma and beta left alone.
- `convert_batchnorm(model, to="tfbn" | "keras", **overrides)`: the same model with every
  BN layer swapped for the other implementation, weights copied.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfbn.layer import BATCH_NORM_TYPES, BatchNorm

TARGETS = {"tfbn": BatchNorm, "keras": keras.layers.BatchNormalization}
# tfbn.BatchNorm's arguments beyond Keras's, dropped when converting to Keras's layer.
TFBN_ONLY_ARGUMENTS = ("debiased", "implementation", "virtual_batch_size")


def batch_norm_layers(model) -> list[tuple[str, keras.layers.Layer]]:
    """(path, layer) for every BN layer of `model`, nested models included, in order;
    the path of a layer inside a nested model is "nested_model/layer"."""
    found = []
    for layer in model.layers:
        if isinstance(layer, BATCH_NORM_TYPES):
            found.append((layer.name, layer))
        elif hasattr(layer, "layers"):
            found += [(f"{layer.name}/{path}", inner) for path, inner in batch_norm_layers(layer)]
    return found


class Recalibrated(NamedTuple):
    """One BN layer's moving statistics before and after `recalibrate_batchnorm`."""

    name: str
    old_mean: np.ndarray
    old_variance: np.ndarray
    mean: np.ndarray
    variance: np.ndarray

    @property
    def mean_shift(self) -> float:
        """Largest |new - old| mean, in standard deviations of the new statistics."""
        return float(np.max(np.abs(self.mean - self.old_mean) / np.sqrt(self.variance + 1e-12)))

    @property
    def variance_ratio(self) -> float:
        """Largest ratio old / new variance, or its inverse, whichever is further from 1."""
        ratio = self.old_variance / np.maximum(self.variance, 1e-12)
        return float(max(np.max(ratio), 1 / max(np.min(ratio), 1e-12)))


def statistics_table(layers: list[Recalibrated]) -> list[str]:
    """The lines of a Markdown table: each layer's mean shift and variance ratio."""
    return ["| BN layer | mean shift (sd) | variance ratio |", "| --- | --- | --- |"] + [
        f"| {layer.name} | {layer.mean_shift:.3f} | {layer.variance_ratio:.3f} |"
        for layer in layers]


def recalibrate_batchnorm(model, data, steps: int | None = None, batch_size: int = 100
                          ) -> list[Recalibrated]:
    """Sets each BN layer's moving mean and variance to the average of its batch statistics
    over `data` (up to `steps` batches), every other weight fixed; returns what changed.

    The estimator is PreciseBN's (fvcore's `update_bn_stats`, PyTorch's
    `swa_utils.update_bn`): the model runs forward in training mode, as in training, and
    each layer's moving statistics become the plain average of its per-batch means and of
    its per-batch (biased) variances. Training mode matters: each layer's statistics are
    those of the inputs it sees in training, with the layers before it normalizing by batch
    statistics too. An average of batch variances ignores how much the batch means vary,
    which is tiny for batches of 32 or more. Frozen BN layers (`trainable=False`) are
    recalibrated too, and stay frozen.

    `data` is a tf.data dataset of inputs or of (inputs, labels[, weights]) batches, an array
    of inputs, or an (inputs, labels) pair of arrays (batched by `batch_size`). The forward
    passes run eagerly on one device; under a `tf.distribute` strategy, call it in the
    strategy's scope and every replica's copy of the statistics is set.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no batch-normalization layer to recalibrate")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
    saved = [(layer.momentum, layer.trainable, getattr(layer, "debiased", False))
             for _, layer in layers]
    before = [(keras.ops.convert_to_numpy(layer.moving_mean),
               keras.ops.convert_to_numpy(layer.moving_variance)) for _, layer in layers]
    batches = 0
    try:
        for _, layer in layers:
            layer.trainable = True
            if isinstance(layer, BatchNorm):
                layer.debiased = False
        for batches, inputs in enumerate(_input_batches(data, batch_size), start=1):
            # moving = (k - 1)/k * moving + 1/k * batch: the running mean of the k batches.
            for _, layer in layers:
                layer.momentum = (batches - 1) / batches
            model(inputs, training=True)
            if steps is not None and batches >= steps:
                break
    finally:
        for (_, layer), (momentum, trainable, debiased) in zip(layers, saved):
            layer.momentum, layer.trainable = momentum, trainable
            if isinstance(layer, BatchNorm):
                layer.debiased = debiased
    if batches == 0:
        raise ValueError("data gave no batch: nothing to recalibrate from")
    return [Recalibrated(name, old_mean, old_variance,
                         keras.ops.convert_to_numpy(layer.moving_mean),
                         keras.ops.convert_to_numpy(layer.moving_variance))
            for (name, layer), (old_mean, old_variance) in zip(layers, before)]


def _input_batches(data, batch_size: int):
    """The input part of each batch of `data` (see `recalibrate_batchnorm`)."""
    if isinstance(data, tf.data.Dataset):
        for element in data:
            yield element[0] if isinstance(element, (tuple, list)) else element
        return
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        data = data[0]
    inputs = np.asarray(data)
    if inputs.ndim < 2:
        raise ValueError(f"data must be a batch of inputs (rank 2 or more), got shape "
                         f"{inputs.shape}")
    for start in range(0, len(inputs), batch_size):
        yield tf.constant(inputs[start:start + batch_size])


def freeze_batchnorm(model) -> int:
    """Puts every BN layer of `model` in inference mode for fine-tuning; returns how many.

    In Keras 3, `layer.trainable = False` on a BN layer means more than "do not train
    gamma and beta": the layer also normalizes with its moving statistics and stops
    updating them, even inside `fit` (`training=True`). That is what fine-tuning on a few
    images needs: the pretrained statistics stay, and a small batch cannot replace them.
    Call `model.compile(...)` after freezing (or unfreezing): `fit` builds its training
    step from the trainable state at compile time.
    """
    layers = batch_norm_layers(model)
    for _, layer in layers:
        layer.trainable = False
    return len(layers)


def unfreeze_batchnorm(model) -> int:
    """Undoes `freeze_batchnorm`: BN layers train and update their statistics again
    (compile again afterwards); returns how many."""
    layers = batch_norm_layers(model)
    for _, layer in layers:
        layer.trainable = True
    return len(layers)


def convert_batchnorm(model, to: str = "tfbn", **overrides) -> keras.Model:
    """A new model like `model`, with every BN layer (nested ones too) replaced by
    `tfbn.BatchNorm` (`to="tfbn"`) or `keras.layers.BatchNormalization` (`to="keras"`),
    all weights copied, so its inference predictions are the original's.

    `overrides` set arguments of every new BN layer, e.g. `synchronized=True` for
    multi-GPU training or `implementation="moments"`. Converting to Keras's layer drops
    tfbn's own arguments (`debiased`, `implementation`). `model` must be a built Sequential
    or functional model (a subclassed model's layers are code, not a graph to rebuild).
    """
    from tfbn.fold import _check_rebuildable

    if to not in TARGETS:
        raise ValueError(f"to must be one of {', '.join(TARGETS)}, got {to!r}")
    _check_rebuildable(model)
    target = TARGETS[to]

    def clone(layer):
        if isinstance(layer, keras.Model):
            return convert_batchnorm(layer, to, **overrides)
        if isinstance(layer, BATCH_NORM_TYPES):
            config = layer.get_config()
            if target is not BatchNorm:
                for name in TFBN_ONLY_ARGUMENTS:
                    config.pop(name, None)
            config.update(overrides)
            try:
                return target.from_config(config)
            except TypeError as error:
                raise ValueError(f"convert_batchnorm: {target.__name__} does not take "
                                 f"{error}") from None
        return layer.__class__.from_config(layer.get_config())

    converted = keras.models.clone_model(model, clone_function=clone)
    for (_, old), (_, new) in zip(batch_norm_layers(model), batch_norm_layers(converted)):
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            if getattr(old, name, None) is not None and getattr(new, name, None) is not None:
                getattr(new, name).assign(getattr(old, name))
    converted_layers = {layer.name: layer for layer in converted.layers}
    for layer in model.layers:
        if not isinstance(layer, BATCH_NORM_TYPES) and not isinstance(layer, keras.Model) \
                and layer.weights:
            converted_layers[layer.name].set_weights(layer.get_weights())
    return converted


def recalibrate_run(run_dir, steps: int = 200, arrays=None) -> dict:
    """`tfbn recalibrate RUN_DIR`: the run's trained model, recalibrated over `steps`
    training batches, with its test metrics before and after; saved beside the run as
    `recalibrated.keras`. `arrays` replaces MNIST (tests pass tiny ones)."""
    from pathlib import Path

    from tfbn import data, rundir

    model, config = rundir.load_trained_model(run_dir)
    train, test = data.mnist_datasets(config["batch_size"], flat=data.takes_flat_images(model),
                                      seed=config["seed"], arrays=arrays)
    before = model.evaluate(test, verbose=0, return_dict=True)
    layers = recalibrate_batchnorm(model, train, steps=steps)
    after = model.evaluate(test, verbose=0, return_dict=True)
    output = Path(run_dir) / "recalibrated.keras"
    model.save(output)
    return {"before": before, "after": after, "layers": layers, "model": str(output)}


def describe_recalibration(result: dict) -> str:
    """The table `tfbn recalibrate` prints."""
    lines = statistics_table(result["layers"])
    before, after = result["before"], result["after"]
    lines += ["", f"test accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}, "
                  f"test loss {before['loss']:.4f} -> {after['loss']:.4f}",
              f"recalibrated model: {result['model']}"]
    return "\n".join(lines)


class Diagnosis(NamedTuple):
    """What `diagnose_batchnorm` found: each layer's statistics against the data's, and
    with labels the metrics with the moving and with recalibrated statistics."""

    layers: list
    moving: dict | None
    recalibrated: dict | None

    def __str__(self) -> str:
        lines = statistics_table(self.layers)
        if self.moving is not None:
            lines.append("")
            for name in self.moving:
                lines.append(f"{name}: {self.moving[name]:.4f} with the moving statistics, "
                             f"{self.recalibrated[name]:.4f} recalibrated")
        worst = max(self.layers, key=lambda layer: layer.mean_shift)
        verdict = ("the moving statistics match the data" if worst.mean_shift < 0.1
                   and max(layer.variance_ratio for layer in self.layers) < 1.2 else
                   f"the moving statistics are off (worst: {worst.name}, mean shift "
                   f"{worst.mean_shift:.2f} sd): recalibrate_batchnorm(model, training "
                   f"data) replaces them")
        return "\n".join(lines + ["", verdict])


def diagnose_batchnorm(model, data, steps: int | None = None, batch_size: int = 100
                       ) -> Diagnosis:
    """How far each BN layer's moving statistics are from the statistics of `data`, and,
    when `data` has labels and the model is compiled, its metrics with each. The model is
    left as it was. The answer to "why is my validation accuracy bad with BN?": a mean
    shift of more than about 0.1 standard deviation, or a variance ratio far from 1, means
    inference normalizes with statistics the data does not have.

    The data's statistics are `recalibrate_batchnorm`'s; `data` takes the same forms.
    """
    layers = [layer for _, layer in batch_norm_layers(model)]
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    labelled = _has_labels(data) and model.compiled
    moving = _evaluate(model, data, batch_size) if labelled else None
    try:
        changed = recalibrate_batchnorm(model, data, steps=steps, batch_size=batch_size)
        recalibrated = _evaluate(model, data, batch_size) if labelled else None
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    return Diagnosis(changed, moving, recalibrated)


def _has_labels(data) -> bool:
    if isinstance(data, tf.data.Dataset):
        return isinstance(data.element_spec, tuple) and len(data.element_spec) >= 2
    return isinstance(data, (tuple, list)) and len(data) in (2, 3)


def _evaluate(model, data, batch_size: int) -> dict:
    if isinstance(data, tf.data.Dataset):
        return model.evaluate(data, verbose=0, return_dict=True)
    return model.evaluate(data[0], data[1], batch_size=batch_size, verbose=0, return_dict=True)


def diagnose_saved_model(path, steps: int | None = None, arrays=None) -> Diagnosis:
    """`tfbn diagnose MODEL.keras`: `diagnose_batchnorm` on the MNIST test set (images
    flat or 28x28x1, as the model's input wants)."""
    from tfbn import data
    from tfbn.saving import load_model

    model = load_model(path)
    _, test = data.mnist_datasets(100, flat=data.takes_flat_images(model), arrays=arrays)
    return diagnose_batchnorm(model, test, steps=steps)
