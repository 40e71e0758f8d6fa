"""Experiments 4, 5 and 7 (dropout, weight_decay, d2l_lenet), on tiny MNIST-shaped data."""

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tfbn import BatchNorm, cli, models, steps
from tfbn.experiments import common, d2l_lenet, dropout, weight_decay

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def load_tutorial(name: str):
    path = TUTORIALS / f"experiment_{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def first_epoch_orders(monkeypatch):
    """The labels of the first epoch each `fit` call is given, in the order they come."""
    orders = []
    fit = keras.Model.fit

    def recording_fit(self, dataset, *args, **kwargs):
        orders.append(np.concatenate([labels.numpy() for _, labels in dataset]))
        return fit(self, dataset, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    return orders


def assert_same_order_for_all(orders: list, runs: int) -> None:
    """Every run of an experiment trains on the same sequence of batches."""
    assert len(orders) == runs
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])


def read_outputs(outdir: Path) -> dict:
    assert (outdir / "figure.png").stat().st_size > 10_000
    return json.loads((outdir / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------
# dropout


def test_dropout_tutorial_smoke(tiny_mnist, tmp_path, first_epoch_orders):
    tutorial = load_tutorial("dropout")
    config = dropout.Config(epochs=2, train_size=48, evaluation_size=16,
                            variants="dropout_before_bn,neither", outdir=str(tmp_path),
                            verbose=0)
    metrics = tutorial.main(config, datasets=tiny_mnist)

    assert list(metrics["variants"]) == ["neither", "dropout_before_bn"]
    assert_same_order_for_all(first_epoch_orders, runs=2)
    assert metrics["train_size"] == 48 and metrics["evaluation_size"] == 16
    for result in metrics["variants"].values():
        assert len(result["sampled_test_accuracy_per_epoch"]) == 2
        assert 0 <= result["test_accuracy"] <= 1 and np.isfinite(result["test_loss"])
    written = read_outputs(tmp_path)
    assert written["variants"] == metrics["variants"]
    assert written["config"]["variants"] == "dropout_before_bn,neither"


@pytest.mark.parametrize("name", ["neither", "dropout", "bn", "dropout_after_bn"])
def test_dropout_variants_without_the_new_placement_are_step_4_2s_network(name):
    variant = next(v for v in dropout.VARIANTS if v.name == name)
    ours = dropout.build_model(variant, bn="keras", dropout_rate=0.25)
    reference = models.conv_network(models.CONV_4_2, bn="keras" if variant.uses_bn else "none",
                                    dropout_rate=0.25 if variant.dropout else 0.0)
    assert [type(layer) for layer in ours.layers] == [type(layer) for layer in reference.layers]
    assert ours.count_params() == reference.count_params()


def test_dropout_before_bn_feeds_the_dropped_out_sums_to_bn():
    variant = next(v for v in dropout.VARIANTS if v.name == "dropout_before_bn")
    model = dropout.build_model(variant, bn="custom", dropout_rate=0.5)
    names = [layer.name for layer in model.layers]
    assert names.index("dense") + 1 == names.index("dense_dropout")
    assert names.index("dense_dropout") + 1 == names.index("dense_bn")
    assert isinstance(model.get_layer("dense_bn"), BatchNorm)
    assert not model.get_layer("dense").use_bias


def test_dropout_schedule_is_step_3s_compressed_to_the_run():
    assert dropout.compressed_schedule(10_000).decay_steps == steps.load("3.1").LEARNING_RATE.decay_steps
    schedule = dropout.compressed_schedule(300)
    assert schedule.value_at(0) == pytest.approx(steps.load("3.1").LEARNING_RATE.value_at(0))
    assert schedule.value_at(300) == pytest.approx(steps.load("3.1").LEARNING_RATE.value_at(10_000))


@pytest.mark.parametrize("changes, field", [
    ({"bn_momentum": 1.0}, "bn_momentum"),
    ({"variants": "bn,batchnorm"}, "variants"),
    ({"variants": " , "}, "variants"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
    ({"train_size": 0}, "train_size"),
    ({"bn": "none"}, "bn"),
])
def test_dropout_config_rejects_bad_values_by_name(changes, field):
    with pytest.raises(ValueError, match=field):
        dropout.Config(**changes)


def test_dropout_rejects_a_train_size_larger_than_the_data(tiny_mnist, tmp_path):
    with pytest.raises(ValueError, match="train_size"):
        dropout.run(dropout.Config(train_size=65, outdir=str(tmp_path)), arrays=tiny_mnist)


def test_training_subset_is_a_seeded_sample_without_repeats():
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1)
    labels = np.arange(100) % 10
    subset, subset_labels = common.training_subset(images, labels, 30, seed=3)
    chosen = subset[:, 0, 0]
    assert len(np.unique(chosen)) == 30
    np.testing.assert_array_equal(subset_labels, chosen % 10)
    again, _ = common.training_subset(images, labels, 30, seed=3)
    other, _ = common.training_subset(images, labels, 30, seed=4)
    np.testing.assert_array_equal(again, subset)
    assert not np.array_equal(other, subset)
    whole, _ = common.training_subset(images, labels, 100, seed=3)
    assert whole is images


# ---------------------------------------------------------------------------------------
# weight_decay


def test_weight_decay_tutorial_smoke(tiny_mnist, tmp_path, first_epoch_orders):
    tutorial = load_tutorial("weight_decay")
    config = weight_decay.Config(epochs=2, train_size=64, evaluation_size=16,
                                 include_zero=False, outdir=str(tmp_path), verbose=0)
    metrics = tutorial.main(config, datasets=tiny_mnist)

    runs = metrics["runs"]
    assert_same_order_for_all(first_epoch_orders, runs=2)
    assert [run["weight_decay"] for run in runs] == pytest.approx([5e-4, 1e-4])
    assert metrics["steps"] == 2 * 1  # 64 images in one batch of 100, two epochs
    for run, strength in zip(runs, (5e-4, 1e-4)):
        assert len(run["kernel_norm_per_epoch"]) == 3  # initial weights, then each epoch
        # Keras's loss minus the cross-entropy is the L2 term of the final kernels.
        assert run["l2_term"] == pytest.approx(strength / 2 * run["kernel_norm"] ** 2, rel=1e-3)
        assert run["train_cross_entropy"] > 0 and run["test_cross_entropy"] > 0
        assert run["kernel_norm"] == run["kernel_norm_per_epoch"][-1]
        assert len(run["sampled_test_accuracy_per_epoch"]) == 2
    # The same initial weights for every strength: only the training differs.
    assert runs[0]["kernel_norm_per_epoch"][0] == pytest.approx(
        runs[1]["kernel_norm_per_epoch"][0])
    assert read_outputs(tmp_path)["runs"] == runs


def test_weight_decay_strengths():
    config = weight_decay.Config(weight_decay=1e-3, reduction=4.0)
    assert config.strengths() == pytest.approx([1e-3, 2.5e-4, 0.0])
    assert weight_decay.Config(include_zero=False).strengths() == pytest.approx([5e-4, 1e-4])


@pytest.mark.parametrize("changes, field", [
    ({"weight_decay": 0.0}, "weight_decay"),
    ({"reduction": 1.0}, "reduction"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
    ({"epochs": 0}, "epochs"),
])
def test_weight_decay_config_rejects_bad_values_by_name(changes, field):
    with pytest.raises(ValueError, match=field):
        weight_decay.Config(**changes)


def _small_network():
    keras.utils.set_random_seed(1)
    return models.conv_network(((3, 3, 1), (4, 3, 2)), dense_units=8, bn="custom")


def _kernels(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights if v.path.endswith("kernel")]


def test_kernel_norm_matches_numpy():
    model = _small_network()
    kernels = _kernels(model)
    assert len(kernels) == 4  # two convolutions, the dense layer, the logits
    expected = np.sqrt(sum(np.sum(k.astype(np.float64) ** 2) for k in kernels))
    assert weight_decay.kernel_norm(model) == pytest.approx(expected, rel=1e-6)


def test_with_kernel_l2_adds_half_the_strength_times_the_squared_kernels():
    model = weight_decay.with_kernel_l2(_small_network(), 0.02)
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    model(images, training=True)
    expected = 0.01 * sum(np.sum(k.astype(np.float64) ** 2) for k in _kernels(model))
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert total == pytest.approx(expected, rel=1e-5)
    assert len(model.losses) == 4  # kernels only: not BN's offsets, not the logits' bias
    assert model.count_params() == _small_network().count_params()


def test_with_kernel_l2_of_zero_adds_no_loss():
    model = weight_decay.with_kernel_l2(_small_network(), 0.0)
    model(np.zeros((2, 28, 28, 1), np.float32))
    assert model.losses == []


# ---------------------------------------------------------------------------------------
# d2l_lenet


def test_d2l_lenet_tutorial_smoke(tiny_mnist, tmp_path, first_epoch_orders):
    tutorial = load_tutorial("d2l_lenet")
    config = d2l_lenet.Config(epochs=2, batch_size=32, outdir=str(tmp_path), verbose=0)
    metrics = tutorial.main(config, datasets=tiny_mnist)

    networks = metrics["networks"]
    assert list(networks) == ["scratch", "builtin", "none"]
    assert_same_order_for_all(first_epoch_orders, runs=3)
    assert [networks[name]["d2l_test_accuracy"] for name in networks] == [0.883, 0.884, 0.811]
    assert networks["none"]["learning_rate"] == 0.9 and networks["scratch"]["learning_rate"] == 1.0
    for result in networks.values():
        assert len(result["test_accuracy_per_epoch"]) == 2
        assert result["test_accuracy"] == result["test_accuracy_per_epoch"][-1]
    assert networks["none"]["test_accuracy_recalibrated"] is None
    for name in ("scratch", "builtin"):
        assert 0.0 <= networks[name]["test_accuracy_recalibrated"] <= 1.0
    assert read_outputs(tmp_path)["networks"] == networks


def test_d2l_networks_have_d2ls_shapes_and_parameter_counts():
    # d2l's LeNet: 156 + 2,416 + 48,120 + 10,164 + 850 weights.
    plain = d2l_lenet.build_network("none")
    assert plain.get_layer("flatten").output.shape[1:] == (16 * 5 * 5,)
    assert plain.count_params() == 61_706
    for name in ("scratch", "builtin"):
        bn_net = d2l_lenet.build_network(name)
        assert bn_net.get_layer("flatten").output.shape[1:] == (16 * 4 * 4,)
        # 156 + 2,416 + 30,840 + 10,164 + 850, plus 4 numbers per BN feature (226 features).
        assert bn_net.count_params() == 44_426 + 4 * 226
        assert bn_net.compute_output_shape((None, 28, 28, 1)) == (None, 10)


def test_d2l_bn_layers_use_d2ls_settings():
    scratch = d2l_lenet.build_network("scratch").get_layer("conv1_bn")
    builtin = d2l_lenet.build_network("builtin").get_layer("conv1_bn")
    assert isinstance(scratch, BatchNorm)
    assert (scratch.momentum, scratch.epsilon) == (0.9, 1e-5)
    assert type(builtin) is keras.layers.BatchNormalization
    assert (builtin.momentum, builtin.epsilon) == (0.99, 1e-3)
    with pytest.raises(ValueError, match="network"):
        d2l_lenet.build_network("batchnorm")


@pytest.mark.parametrize("name, module", [("dropout", dropout), ("weight_decay", weight_decay),
                                          ("d2l_lenet", d2l_lenet)])
def test_tutorial_options_reach_the_config(name, module):
    tutorial = load_tutorial(name)
    assert tutorial.CONFIG == module.Config()
    parsed = cli.parse_experiment_options(name, tutorial.CONFIG,
                                          ["--epochs", "4", "--seed", "7", "--outdir", "x"])
    assert (parsed.epochs, parsed.seed, parsed.outdir) == (4, 7, "x")
    with pytest.raises(SystemExit):
        cli.parse_experiment_options(name, tutorial.CONFIG, ["--epochs", "0"])
