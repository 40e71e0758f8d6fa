"""Ghost batches, tfbn.BatchNorm(virtual_batch_size=G), against NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfbn

EPSILON = 1e-3


def numpy_ghost_batch_norm(x, group, gamma, beta):
    """Each group of `group` samples normalized by its own statistics, features last."""
    axes = (1,) + tuple(range(2, x.ndim + 1))[:-1]
    groups = x.reshape((-1, group) + x.shape[1:])
    mean = groups.mean(axis=axes, keepdims=True)
    variance = groups.var(axis=axes, keepdims=True)
    outputs = gamma * (groups - mean) / np.sqrt(variance + EPSILON) + beta
    return outputs.reshape(x.shape), mean.reshape(-1, x.shape[-1]), variance.reshape(
        -1, x.shape[-1])


@pytest.mark.parametrize("shape, group", [((8, 3), 4), ((8, 3), 2), ((6, 2, 2, 3), 3)])
@pytest.mark.parametrize("compiled", [False, True])
def test_each_group_is_normalized_by_its_own_statistics(shape, group, compiled):
    rng = np.random.default_rng(0)
    x = (5 + 3 * rng.standard_normal(shape)).astype("float32")
    layer = tfbn.BatchNorm(virtual_batch_size=group, momentum=0.9)
    layer.build(shape)
    gamma = rng.uniform(0.5, 2, shape[-1]).astype("float32")
    beta = rng.standard_normal(shape[-1]).astype("float32")
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    call = tf.function(lambda t: layer(t, training=True)) if compiled else (
        lambda t: layer(t, training=True))
    outputs = call(tf.constant(x))
    expected, means, variances = numpy_ghost_batch_norm(x.astype("float64"), group, gamma, beta)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean, 0.1 * means.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, 0.9 + 0.1 * variances.mean(axis=0),
                               rtol=1e-5)


def test_ghost_batches_differ_from_whole_batch_statistics_and_inference_is_unchanged():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((8, 4)) + np.repeat([[0.0], [3.0]], 4, axis=0),
                    tf.float32)
    ghost, whole = tfbn.BatchNorm(virtual_batch_size=4), tfbn.BatchNorm()
    assert np.abs(ghost(x, training=True) - whole(x, training=True)).max() > 0.5
    ghost.moving_mean.assign(whole.moving_mean)
    ghost.moving_variance.assign(whole.moving_variance)
    np.testing.assert_array_equal(ghost(x), whole(x))


def test_gradients_flow_through_the_groups():
    x = tf.constant(np.random.default_rng(2).standard_normal((8, 3)), tf.float32)
    layer = tfbn.BatchNorm(virtual_batch_size=4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, training=True) ** 3)
    dx, dgamma = tape.gradient(loss, [x, layer.gamma])
    # Per group, a normalized output's gradient sums to zero over the group.
    np.testing.assert_allclose(tf.reduce_sum(tf.reshape(dx, (2, 4, 3)), axis=1), 0, atol=1e-4)
    assert np.all(np.isfinite(dgamma)) and np.abs(dgamma).max() > 0


def test_a_batch_the_group_does_not_divide_is_refused():
    layer = tfbn.BatchNorm(virtual_batch_size=3)
    with pytest.raises(ValueError, match="virtual_batch_size=3 must divide the batch size; "
                                         "received a batch of 8"):
        layer(tf.zeros((8, 2)), training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must divide the batch size"):
        tf.function(lambda t: layer(t, training=True),
                    input_signature=[tf.TensorSpec((None, 2))])(tf.zeros((8, 2)))
    layer(tf.zeros((8, 2)))  # inference takes any batch


@pytest.mark.parametrize("arguments, message", [
    ({"virtual_batch_size": 0}, "must be a positive integer"),
    ({"virtual_batch_size": 4, "renorm": True}, "neither renorm"),
    ({"virtual_batch_size": 4, "synchronized": True}, "neither renorm"),
    ({"virtual_batch_size": 4, "implementation": "fused"}, "neither renorm"),
])
def test_bad_combinations_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        tfbn.BatchNorm(**arguments)


def test_saved_and_loaded_with_its_groups(tmp_path):
    model = keras.Sequential([keras.Input((3,)), tfbn.BatchNorm(virtual_batch_size=4)])
    model.save(tmp_path / "ghost.keras")
    loaded = tfbn.load_model(tmp_path / "ghost.keras")
    assert loaded.layers[0].virtual_batch_size == 4
    assert tfbn.BatchNorm.from_config(model.layers[0].get_config()).virtual_batch_size == 4
