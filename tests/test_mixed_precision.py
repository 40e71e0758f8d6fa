"""Mixed precision: bfloat16 on a CPU, BN statistics and weights in float32, finite training.

The layer against Keras's under both policies (output dtype, float32 weights, 1e4-scale
inputs) is in test_layer.py; these tests take the model and the `tfbn run` path.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbn import BatchNorm, cli, data, devices, steps

# Raw pixels times 100: the first convolution's outputs reach ~1e4, whose squares
# (~1e8) float16 cannot hold (its largest value is 65504).
LARGE_INPUT_SCALE = 100.0


@pytest.mark.skipif(devices.accelerator() == "GPU", reason="a GPU gets mixed_float16")
def test_mixed_precision_is_bfloat16_on_a_cpu():
    assert devices.mixed_precision_policy(True) == "mixed_bfloat16"
    assert devices.mixed_precision_policy(False) == "float32"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_bn_of_the_4_2_model_keeps_float32_statistics_on_large_inputs(policy, tiny_mnist):
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    with devices.precision_policy(policy):
        model = steps.load("4.2").build_model("custom")
    bn_layers = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    assert len(bn_layers) == 4
    for layer in bn_layers:
        assert layer.compute_dtype == compute_dtype
        assert layer.output.dtype == compute_dtype
        assert all(weight.dtype == "float32" for weight in layer.weights)
    assert model.output.dtype == "float32"  # the softmax, so the loss is exact

    first_bn = model.get_layer("conv1_bn")
    probe = keras.Model(model.inputs, [first_bn.input, first_bn.output, model.output])
    images = tiny_mnist[0][0][:16, :, :, None].astype("float32") * LARGE_INPUT_SCALE
    bn_inputs, bn_outputs, probabilities = probe([images], training=True)
    if policy == "mixed_float16":
        # What the layer avoids: the same statistics computed in float16 overflow.
        assert not np.all(np.isfinite(tf.nn.moments(bn_inputs, [0, 1, 2])[1].numpy()))
    assert bn_outputs.dtype == compute_dtype
    bn_outputs = tf.cast(bn_outputs, tf.float32).numpy()
    assert np.all(np.isfinite(bn_outputs))
    # No scale on conv BN (ReLU follows) and beta starts at 0: standardised outputs.
    np.testing.assert_allclose(bn_outputs.mean(axis=(0, 1, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(bn_outputs.std(axis=(0, 1, 2)), 1.0, atol=0.05)
    moving_variance = first_bn.moving_variance.numpy()
    assert np.all(np.isfinite(moving_variance))
    # One update from the initial 1: the batch variance it took in exceeds float16's range.
    batch_variance = (moving_variance - first_bn.momentum) / (1 - first_bn.momentum)
    assert batch_variance.max() > 65504
    assert np.all(np.isfinite(probabilities.numpy()))


def test_tfbn_run_4_2_with_mixed_precision_trains_finite_and_restores_the_policy(
        tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "load_mnist", lambda: tiny_mnist)
    assert cli.main(["run", "4.2", "--mixed-precision", "--epochs", "1", "--steps-per-epoch",
                     "2", "--batch-size", "16", "--verbose", "0", "--logdir", str(tmp_path)]) == 0
    expected = devices.mixed_precision_policy(True)
    assert f"precision: {expected}" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["precision"] == expected and metrics["steps"] == 2
    assert np.isfinite(metrics["test_loss"])
    assert keras.config.dtype_policy().name == "float32"


def test_the_policy_is_restored_when_the_block_fails():
    with pytest.raises(RuntimeError):
        with devices.precision_policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("training failed")
    assert keras.config.dtype_policy().name == "float32"
