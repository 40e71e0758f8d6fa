"""The from-scratch lesson computes what the built-in layer computes."""

import numpy as np
import pytest
import tensorflow as tf

from tfbn.tutorials import bn_from_scratch as lesson

QUANTITIES = {"training output", "input gradient", "gamma gradient", "beta gradient",
              "moving_mean", "moving_variance", "inference output"}


@pytest.mark.parametrize("shape", [(32, 8), (8, 6, 6, 4)])
def test_from_scratch_bn_matches_keras_and_tfbn(shape):
    differences = lesson.largest_differences(shape)
    assert {quantity for quantity, _ in differences} == QUANTITIES
    assert {layer for _, layer in differences} == {"keras", "tfbn"}
    for (quantity, layer), relative in differences.items():
        assert relative < 1e-5, f"{quantity} differs from {layer} by {relative:.1e}"


def test_the_moving_statistics_move_towards_the_batch_with_keras_momentum():
    x = tf.constant(np.arange(8, dtype="float32").reshape(4, 2))
    zeros, ones = tf.zeros(2), tf.ones(2)
    _, moving_mean, moving_variance = lesson.batch_norm(
        x, ones, zeros, zeros, ones, epsilon=1e-3, momentum=0.9, training=True)
    np.testing.assert_allclose(moving_mean, 0.1 * np.array([3.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(moving_variance, 0.9 + 0.1 * 5.0, rtol=1e-6)
    inference, same_mean, _ = lesson.batch_norm(
        x, ones, zeros, moving_mean, moving_variance, epsilon=1e-3, momentum=0.9,
        training=False)
    assert same_mean is moving_mean
    np.testing.assert_allclose(inference, (x - moving_mean) / np.sqrt(moving_variance + 1e-3),
                               rtol=1e-6)


def test_the_lesson_runs_and_trains_both_layers(tiny_mnist, capsys):
    results = lesson.main(steps_per_epoch=3, datasets=tiny_mnist)
    printed = capsys.readouterr().out
    assert "gamma gradient" in printed and "test accuracy after one epoch with ours BN" in printed
    assert 0.0 <= results["ours"] <= 1.0 and 0.0 <= results["keras"] <= 1.0
