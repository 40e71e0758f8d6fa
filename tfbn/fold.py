"""Fold Batch Normalization into the preceding Dense or convolution for inference.

At inference a BN layer uses its moving statistics, so it is a fixed per-channel
affine map of its input x:

    y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta

When x = W z + b comes straight from a Dense or convolution layer, the two maps
compose into one layer with

    s  = gamma / sqrt(moving_variance + epsilon)
    W' = W * s                        (scaled per output channel)
    b' = beta + (b - moving_mean) * s

(gamma = 1 when scale=False, beta = 0 when center=False, b = 0 when the layer
has no bias, so the folded layer always gains a bias). The folded model does
one pass over each activation tensor less and has no BN weights.

`fold_batchnorm(model)` returns a `FoldResult(model, folded, kept)`: the new
model, the names of the BN layers folded away, and (name, reason) for each BN
layer that stayed. The original model is not modified.
"""

import functools
import os
from collections import Counter
from typing import NamedTuple

import keras
import numpy as np

from tfbn.layer import BATCH_NORM_TYPES


DENSE_AND_CONV_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
DEPTHWISE_CONV_TYPES = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
# Exact types, not isinstance: a subclass may change what call() computes.
FOLDABLE_TYPES = DENSE_AND_CONV_TYPES + DEPTHWISE_CONV_TYPES


class FoldResult(NamedTuple):
    """What `fold_batchnorm` produced.

    model:  the inference model with the foldable BN layers removed.
    folded: names of the BN layers folded into their preceding layer.
    kept:   (BN layer name, reason) for each BN layer left in `model`.
    BN layers inside a nested model are named "nested_model/bn_layer".
    """

    model: keras.Model
    folded: list
    kept: list


class _Call(NamedTuple):
    """How a layer is called inside the model graph."""

    sources: list  # names of the layers whose outputs are its inputs
    kwargs: dict  # keyword arguments of the call other than tensors


class _Fold(NamedTuple):
    batch_norm: keras.layers.Layer
    into: keras.layers.Layer  # the Dense/Conv layer that absorbs it


def fold_batchnorm(model, verbose=True):
    """Return a `FoldResult` whose model computes `model(x, training=False)`
    with each BN layer that directly follows a Dense/Conv folded into it.

    A BN layer (keras.layers.BatchNormalization or tfbn.BatchNorm) is folded
    when the layer before it is a Dense, Conv1D/2D/3D or DepthwiseConv1D/2D
    with a linear activation, that layer's output feeds nothing but this BN
    layer, and the BN layer normalises that layer's feature axis. Other BN
    layers stay and are listed in `kept` with the reason; `verbose` prints the
    same report. Nested Sequential/functional models are folded recursively.

    `model` must be a built Sequential or functional model without shared
    layers (a layer called more than once); anything else raises ValueError,
    because the graph could not be rebuilt faithfully.
    """
    _check_rebuildable(model)
    folds, kept = _plan_folds(model)
    nested_results = {}  # nested model name -> its FoldResult, filled by _rebuild
    new_model = _rebuild(model, folds, nested_results)
    _copy_weights(model, new_model, folds, already_set=set(nested_results))

    folded = list(folds)
    for nested_name, nested in nested_results.items():
        folded += [f"{nested_name}/{name}" for name in nested.folded]
        kept += [(f"{nested_name}/{name}", reason) for name, reason in nested.kept]
    result = FoldResult(new_model, folded, kept)
    if verbose:
        print(_report(result, folds))
    return result


def _plan_folds(model):
    """({BN name: _Fold}, [(BN name, reason kept)]) for the BN layers of `model`."""
    calls, uses = _graph(model)
    layers_by_name = {
        layer.name: layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    folds, kept = {}, []
    for layer in model.layers:
        if not isinstance(layer, BATCH_NORM_TYPES):
            continue
        call = calls[layer.name]
        reason = _why_not_foldable(layer, call, uses, layers_by_name)
        if reason is None:
            folds[layer.name] = _Fold(layer, into=layers_by_name[call.sources[0]])
        else:
            kept.append((layer.name, reason))
    return folds, kept


def _rebuild(model, folds, nested_results):
    """A model with `model`'s architecture minus the folded BN layers, whose
    absorbing layers gain a bias. Weights are fresh; `_copy_weights` fills them."""
    absorbing_names = {fold.into.name for fold in folds.values()}

    def clone(operation):
        if isinstance(operation, keras.Model):
            nested_results[operation.name] = fold_batchnorm(operation, verbose=False)
            return nested_results[operation.name].model
        config = operation.get_config()
        if operation.name in absorbing_names:
            config["use_bias"] = True
        try:
            return operation.__class__.from_config(config)
        except (TypeError, ValueError, NotImplementedError) as error:
            raise ValueError(
                f"fold_batchnorm cannot rebuild layer {operation.name!r} "
                f"({type(operation).__name__}) from its config: {error}"
            ) from error

    def call_skipping_folded(layer, *args, **kwargs):
        if layer.name in folds:
            return args[0]
        return layer(*args, **kwargs)

    config = model.get_config()
    if isinstance(model, keras.Sequential):
        model_input = model.inputs[0]
        first_layer = config["layers"][0]
        input_name = (
            first_layer["config"]["name"]
            if first_layer["class_name"] == "InputLayer"
            else None
        )
        new_model = keras.Sequential(
            [
                keras.Input(
                    batch_shape=model_input.shape,
                    dtype=model_input.dtype,
                    name=input_name,
                )
            ]
            + [clone(layer) for layer in model.layers if layer.name not in folds],
            name=model.name,
        )
        if model.compiled:
            new_model.compile_from_config(model.get_compile_config())
        return new_model

    # Named like the original inputs (clone_model would name them after the
    # symbolic tensors), so that exported signatures keep their input names.
    original_inputs = keras.tree.flatten(model.input)
    input_names = _history_names(config["input_layers"])
    new_inputs = [
        keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name)
        for tensor, name in zip(original_inputs, input_names)
    ]
    return keras.models.clone_model(
        model,
        input_tensors=keras.tree.pack_sequence_as(model.input, new_inputs),
        clone_function=clone,
        call_function=call_skipping_folded,
    )


def _copy_weights(model, new_model, folds, already_set):
    """Copy each layer's weights into its clone; absorbing layers get the folded ones."""
    fold_by_absorbing_name = {fold.into.name: fold for fold in folds.values()}
    for layer in model.layers:
        if (
            isinstance(layer, keras.layers.InputLayer)
            or layer.name in folds
            or layer.name in already_set
        ):
            continue
        new_layer = new_model.get_layer(layer.name)
        if layer.name in fold_by_absorbing_name:
            kernel, bias = folded_kernel_and_bias(
                layer, fold_by_absorbing_name[layer.name].batch_norm
            )
            new_layer.kernel.assign(kernel.astype(new_layer.kernel.dtype))
            new_layer.bias.assign(bias.astype(new_layer.bias.dtype))
        else:
            new_layer.set_weights(layer.get_weights())


def folded_kernel_and_bias(layer, bn_layer):
    """The kernel and bias of `layer` with `bn_layer`'s inference map folded in.

    Computed in float64 so that the folded weights are the exact values
    rounded once to float32, not an accumulation of float32 roundings.
    """
    moving_mean = _to_float64(bn_layer.moving_mean)
    moving_variance = _to_float64(bn_layer.moving_variance)
    gamma = _to_float64(bn_layer.gamma) if bn_layer.scale else 1.0
    beta = _to_float64(bn_layer.beta) if bn_layer.center else 0.0
    channel_scale = gamma / np.sqrt(moving_variance + bn_layer.epsilon)

    kernel = _to_float64(layer.kernel)
    if isinstance(layer, DEPTHWISE_CONV_TYPES):
        # Output channel c * depth_multiplier + m comes from kernel[..., c, m].
        kernel = kernel * channel_scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * channel_scale
    bias = _to_float64(layer.bias) if layer.use_bias else 0.0
    return kernel, beta + (bias - moving_mean) * channel_scale


def export_inference_model(model, directory, verbose=True):
    """Fold `model`'s BN layers and write the result to `directory` as
    `model.keras` (reload with keras.models.load_model) and `saved_model/`
    (a TensorFlow SavedModel from `Model.export`, for TF Serving or TFLite).
    Returns the `FoldResult`.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"directory={directory!r} exists and is not a directory"
        )
    os.makedirs(directory, exist_ok=True)
    result = fold_batchnorm(model, verbose=verbose)
    result.model.save(os.path.join(directory, "model.keras"))
    result.model.export(os.path.join(directory, "saved_model"), verbose=verbose)
    return result


@functools.cache
def _functional_class() -> type:
    """The class `keras.Model(inputs, outputs)` makes (Keras does not export it)."""
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, inputs))


def _check_rebuildable(model):
    if type(model) not in (keras.Sequential, _functional_class()):
        raise ValueError(
            "fold_batchnorm needs a Sequential or functional keras model, whose "
            "graph it can rebuild; got model of type "
            f"{type(model).__module__}.{type(model).__qualname__} (a subclassed "
            "model's call() is code, not a graph of layers)"
        )
    if not model.built:
        raise ValueError(
            f"model={model.name!r} is not built: give it an Input or call it on "
            "data first, so that its layers have weights to fold"
        )


def _graph(model):
    """The calls of each layer and how many times each layer's output is used
    (as a layer input or a model output), read from the model's config."""
    config = model.get_config()
    if isinstance(model, keras.Sequential):
        if len(set(map(id, model.layers))) != len(model.layers):
            raise ValueError(
                f"model={model.name!r} uses the same layer more than once; "
                "fold_batchnorm cannot rebuild shared layers"
            )
        # A chain: each layer reads the output of the one listed before it.
        names = [layer_config["config"]["name"] for layer_config in config["layers"]]
        calls = {
            name: _Call(sources=names[index - 1 : index], kwargs={})
            for index, name in enumerate(names)
        }
        return calls, Counter(names)

    calls = {}
    uses = Counter(_history_names(config["output_layers"]))
    for layer_config in config["layers"]:
        nodes = layer_config["inbound_nodes"]
        if len(nodes) > 1:
            raise ValueError(
                f"layer {layer_config['name']!r} of model={model.name!r} is called "
                f"{len(nodes)} times (a shared layer); fold_batchnorm cannot "
                "rebuild shared layers"
            )
        if nodes:
            sources = _tensor_sources(nodes[0]["args"]) + _tensor_sources(nodes[0]["kwargs"])
            other_kwargs = {
                key: value
                for key, value in nodes[0]["kwargs"].items()
                if not _tensor_sources(value)
            }
            calls[layer_config["name"]] = _Call(sources, other_kwargs)
            uses.update(sources)
    return calls, uses


def _why_not_foldable(bn_layer, call, uses, layers_by_name):
    """None if `bn_layer` can be folded into the layer before it, else why not."""
    if len(call.sources) != 1:
        return f"takes {len(call.sources)} input tensors, not 1"
    # training=True would make it use batch statistics even at inference.
    unusual_kwargs = {
        key: value
        for key, value in call.kwargs.items()
        if value is not None and not (key == "training" and value is False)
    }
    if unusual_kwargs:
        return f"is called with {unusual_kwargs}, which a folded layer cannot honour"

    source_name = call.sources[0]
    layer = layers_by_name.get(source_name)
    if layer is None:
        return f"follows {source_name!r}, the model input or an operation, not a layer"
    if type(layer) not in FOLDABLE_TYPES:
        return (
            f"follows {source_name!r} ({type(layer).__name__}); only "
            f"{', '.join(t.__name__ for t in FOLDABLE_TYPES)} can absorb it"
        )
    activation = layer.get_config()["activation"]
    if activation != "linear":
        return (
            f"follows {source_name!r} whose activation is {activation!r}; "
            "folding needs its linear output"
        )
    if uses[source_name] != 1:
        return (
            f"the output of {source_name!r} is used {uses[source_name]} times "
            "(by other layers or as a model output), not by this layer alone"
        )
    weight_names = sorted(weight.name for weight in layer.weights)
    if weight_names not in (["kernel"], ["bias", "kernel"]):
        return (
            f"{source_name!r} has weights {weight_names} (quantized or LoRA?), "
            "not just a kernel and bias"
        )
    output_shape = bn_layer.get_build_config()["input_shape"]
    rank = len(output_shape)
    channels_first = getattr(layer, "data_format", None) == "channels_first"
    feature_axis = 1 if channels_first else rank - 1
    axes = bn_layer.axis if isinstance(bn_layer.axis, (list, tuple)) else [bn_layer.axis]
    if sorted({axis % rank for axis in axes}) != [feature_axis]:
        return (
            f"normalises axis {bn_layer.axis} but the features of {source_name!r} "
            f"are on axis {feature_axis}"
        )
    # Keras 3's TensorFlow backend turns `ops.add(outputs, bias)` into a
    # channels-last bias_add whenever the last axis has as many entries as
    # there are channels, so such a channels_first layer adds its bias along
    # the wrong axis (an unknown width may turn out equal at run time).
    if channels_first and output_shape[-1] in (None, output_shape[1]):
        return (
            f"{source_name!r} is channels_first with output shape {tuple(output_shape)}: "
            "Keras would add a folded bias along the last axis, not the channels"
        )
    return None


def _tensor_sources(structure):
    """Names of the layers whose output tensors appear in a serialized call argument."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            return [structure["config"]["keras_history"][0]]
        return [name for value in structure.values() for name in _tensor_sources(value)]
    if isinstance(structure, (list, tuple)):
        return [name for item in structure for name in _tensor_sources(item)]
    return []


def _history_names(structure):
    """Layer names in a config's `input_layers` or `output_layers`:
    [name, node, tensor] triples, alone or nested in lists and dicts."""
    if isinstance(structure, dict):
        return [name for value in structure.values() for name in _history_names(value)]
    if len(structure) == 3 and isinstance(structure[0], str):
        return [structure[0]]
    return [name for item in structure for name in _history_names(item)]


def _to_float64(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def _report(result, folds):
    lines = [
        f"fold_batchnorm: folded {len(result.folded)} BN layer(s), "
        f"kept {len(result.kept)}"
    ]
    for name in result.folded:
        into = folds[name].into.name if name in folds else "its nested model"
        lines.append(f"  folded {name} into {into}")
    for name, reason in result.kept:
        lines.append(f"  kept   {name}: {reason}")
    return "\n".join(lines)
