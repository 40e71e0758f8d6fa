"""Experiments 4, 5 and 7 (dropout, weight_decay, d2l_lenet), on tiny MNIST-shaped data."""

import contextlib
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from spread_checks import assert_spread_of

from tfbn import BatchNorm, cli, data, models, steps
from tfbn.practice import recalibrate_batchnorm
from tfbn.experiments import common, d2l_lenet, dropout, weight_decay

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def load_tutorial(name: str):
    path = TUTORIALS / f"experiment_{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FitRecord:
    """What each `fit` call is given, in the order they come: the labels of its first epoch
    and the model's initial weights."""

    def __init__(self):
        self.orders: list[np.ndarray] = []
        self.initial_weights: list[list[np.ndarray]] = []


@contextlib.contextmanager
def recording_fits():
    record = FitRecord()
    fit = keras.Model.fit

    def recording_fit(self, dataset, *args, **kwargs):
        record.orders.append(np.concatenate([labels.numpy() for _, labels in dataset]))
        record.initial_weights.append(self.get_weights())
        return fit(self, dataset, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keras.Model, "fit", recording_fit)
        yield record


@pytest.fixture
def first_epoch_orders():
    """The labels of the first epoch each `fit` call is given, in the order they come."""
    with recording_fits() as record:
        yield record.orders


def assert_same_order_for_all(orders: list, runs: int) -> None:
    """Every run of an experiment trains on the same sequence of batches."""
    assert len(orders) == runs
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])


def read_outputs(outdir: Path) -> dict:
    assert (outdir / "figure.png").stat().st_size > 10_000
    return json.loads((outdir / "metrics.json").read_text())


def assert_same_weights(first: list, second: list) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second):
        np.testing.assert_array_equal(one, other)


def assert_same_start(fits, first: int, second: int) -> None:
    """The `first` and `second` recorded fits began from the same weights and batches."""
    assert_same_weights(fits.initial_weights[first], fits.initial_weights[second])
    np.testing.assert_array_equal(fits.orders[first], fits.orders[second])


def assert_different_weights(first: list, second: list) -> None:
    assert any(not np.array_equal(one, other) for one, other in zip(first, second))


# ---------------------------------------------------------------------------------------
# dropout


@pytest.fixture(scope="module")
def dropout_run(tiny_mnist, tmp_path_factory):
    """The dropout lesson on tiny data: two variants of the same shapes, two seeds each, and
    what each `fit` was given (bn's seeds 0 and 1, then dropout_before_bn's)."""
    outdir = tmp_path_factory.mktemp("dropout")
    config = dropout.Config(epochs=2, train_size=48, evaluation_size=16, seeds=2,
                            variants="dropout_before_bn,bn", outdir=str(outdir), verbose=0)
    with recording_fits() as fits:
        metrics = load_tutorial("dropout").main(config, datasets=tiny_mnist)
    return metrics, fits, outdir


def test_dropout_tutorial_smoke(dropout_run):
    metrics, _, outdir = dropout_run
    assert list(metrics["variants"]) == ["bn", "dropout_before_bn"]
    assert [metrics[key] for key in ("train_size", "test_size", "evaluation_size")] == [48, 32, 16]
    assert metrics["seeds"] == [0, 1]
    for result in metrics["variants"].values():
        assert [len(curve) for curve in result["sampled_test_accuracy_per_epoch"]] == [2, 2]
        assert all(0 <= accuracy <= 1 for accuracy in result["test_accuracy"]["values"])
        assert np.all(np.isfinite(result["test_loss"]["values"]))
    written = read_outputs(outdir)
    assert written["variants"] == metrics["variants"]
    assert written["config"]["variants"] == "dropout_before_bn,bn"


def test_dropout_summarizes_every_seed(dropout_run):
    metrics, _, _ = dropout_run
    for result in metrics["variants"].values():
        for key in dropout.FINAL_NUMBERS:
            assert len(result[key]["values"]) == 2
            assert_spread_of(result[key], result[key]["values"])
        train, test = (np.array(result[key]["values"]) for key in ("train_accuracy",
                                                                    "test_accuracy"))
        assert_spread_of(result["accuracy_gap"], train - test)
        train, test = (np.array(result[key]["values"]) for key in ("train_loss", "test_loss"))
        assert_spread_of(result["loss_gap"], test - train)
    best = max(result["test_accuracy"]["mean"] for result in metrics["variants"].values())
    assert metrics["noise_floor"] == pytest.approx(common.noise_floor(best, 32))


def test_dropout_variants_start_equal_for_a_seed_and_seeds_differ(dropout_run):
    metrics, fits, _ = dropout_run
    bn_0, bn_1, dropout_before_bn_0, dropout_before_bn_1 = range(4)
    assert len(fits.initial_weights) == 4
    # For one seed, the same initial weights and batches with and without dropout ...
    assert_same_start(fits, bn_0, dropout_before_bn_0)
    assert_same_start(fits, bn_1, dropout_before_bn_1)
    # ... and other ones for another seed, so that the runs differ.
    assert_different_weights(fits.initial_weights[bn_0], fits.initial_weights[bn_1])
    assert not np.array_equal(fits.orders[bn_0], fits.orders[bn_1])
    for result in metrics["variants"].values():
        first, second = result["test_loss"]["values"]
        assert first != second


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
    ({"seeds": 0}, "seeds"),
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


@pytest.fixture(scope="module")
def weight_decay_run(tiny_mnist, tmp_path_factory):
    """The weight_decay lesson on tiny data: two strengths, two seeds each, and what each
    `fit` was given (5e-4's seeds 0 and 1, then 1e-4's)."""
    outdir = tmp_path_factory.mktemp("weight_decay")
    config = weight_decay.Config(epochs=2, train_size=64, evaluation_size=16, seeds=2,
                                 include_zero=False, outdir=str(outdir), verbose=0)
    with recording_fits() as fits:
        metrics = load_tutorial("weight_decay").main(config, datasets=tiny_mnist)
    return metrics, fits, outdir


def test_weight_decay_tutorial_smoke(weight_decay_run):
    metrics, _, outdir = weight_decay_run
    runs = metrics["runs"]
    assert [run["weight_decay"] for run in runs] == pytest.approx([5e-4, 1e-4])
    assert metrics["steps"] == 2 * 1  # 64 images in one batch of 100, two epochs
    assert metrics["seeds"] == [0, 1] and metrics["test_size"] == 32
    for run, strength in zip(runs, (5e-4, 1e-4)):
        # Initial weights, then each epoch; one curve per seed.
        assert [len(norms) for norms in run["kernel_norm_per_epoch"]] == [3, 3]
        assert [len(curve) for curve in run["sampled_test_accuracy_per_epoch"]] == [2, 2]
        assert run["kernel_norm"]["values"] == [norms[-1] for norms in
                                                run["kernel_norm_per_epoch"]]
        # Keras's loss minus the cross-entropy is the L2 term of the final kernels.
        for l2_term, norm in zip(run["l2_term"]["values"], run["kernel_norm"]["values"]):
            assert l2_term == pytest.approx(strength / 2 * norm ** 2, rel=1e-3)
        for key in ("train_cross_entropy", "test_cross_entropy"):
            assert min(run[key]["values"]) > 0
    assert read_outputs(outdir)["runs"] == runs


def test_weight_decay_summarizes_every_seed(weight_decay_run):
    metrics, _, _ = weight_decay_run
    for run in metrics["runs"]:
        for key in weight_decay.FINAL_NUMBERS:
            assert len(run[key]["values"]) == 2
            assert_spread_of(run[key], run[key]["values"])
    best = max(run["test_accuracy"]["mean"] for run in metrics["runs"])
    assert metrics["noise_floor"] == pytest.approx(common.noise_floor(best, 32))


def test_weight_decay_strengths_start_equal_for_a_seed_and_seeds_differ(weight_decay_run):
    metrics, fits, _ = weight_decay_run
    usual_0, usual_1, reduced_0, reduced_1 = range(4)
    assert len(fits.initial_weights) == 4
    # For one seed, the same initial weights and batches at every strength ...
    assert_same_start(fits, usual_0, reduced_0)
    assert_same_start(fits, usual_1, reduced_1)
    usual, reduced = metrics["runs"]
    for seed in (0, 1):
        assert usual["kernel_norm_per_epoch"][seed][0] == pytest.approx(
            reduced["kernel_norm_per_epoch"][seed][0])
    # ... and other ones for another seed, so that the runs differ.
    assert_different_weights(fits.initial_weights[usual_0], fits.initial_weights[usual_1])
    assert not np.array_equal(fits.orders[usual_0], fits.orders[usual_1])
    first, second = usual["kernel_norm_per_epoch"]
    assert first[0] != pytest.approx(second[0])


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
    ({"seeds": 0}, "seeds"),
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
    config = d2l_lenet.Config(epochs=2, batch_size=32, seeds=2, outdir=str(tmp_path),
                              verbose=0)
    metrics = tutorial.main(config, datasets=tiny_mnist)

    networks = metrics["networks"]
    assert list(networks) == ["scratch", "builtin", "none"]
    assert metrics["seeds"] == [0, 1]
    # Per seed, the three networks see the same batches; the two seeds see different ones.
    assert len(first_epoch_orders) == 6
    for seed in range(2):
        assert_same_order_for_all(first_epoch_orders[seed::2], runs=3)
    assert not np.array_equal(first_epoch_orders[0], first_epoch_orders[1])
    assert [networks[name]["d2l_test_accuracy"] for name in networks] == [0.883, 0.884, 0.811]
    assert networks["none"]["learning_rate"] == 0.9 and networks["scratch"]["learning_rate"] == 1.0
    assert list(networks["none"]["test_accuracy"]) == ["moving"]
    for name in ("scratch", "builtin"):
        assert list(networks[name]["test_accuracy"]) == ["moving", "recalibrated", "per_batch"]
    for result in networks.values():
        for evaluation, curves in result["test_accuracy_per_epoch"].items():
            assert [len(curve) for curve in curves] == [2, 2]
            summary = result["test_accuracy"][evaluation]
            assert summary["values"] == [curve[-1] for curve in curves]
            assert summary["mean"] == pytest.approx(np.mean(summary["values"]))
    assert read_outputs(tmp_path)["networks"] == networks


def test_d2l_epoch_evaluations_match_keras_and_leave_the_model_as_it_was(tiny_mnist):
    (x_train, _), (x_test, y_test) = tiny_mnist
    test_images, recalibration_images = (data.normalize_images(x_test),
                                         data.normalize_images(x_train[:64]))
    keras.utils.set_random_seed(0)
    model = d2l_lenet.build_network("scratch")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    for layer in model.layers:  # moving statistics unlike any batch's
        if isinstance(layer, BatchNorm):
            layer.moving_mean.assign(layer.moving_mean + 3.0)
    evaluations = d2l_lenet.EpochEvaluations(test_images, y_test.astype(np.int64),
                                             recalibration_images, batch_size=16)
    evaluations.set_model(model)
    before = [variable.numpy() for variable in model.variables]

    moving = evaluations.accuracy("moving")
    assert moving == pytest.approx(model.evaluate(test_images, y_test, verbose=0)[1])
    per_batch = [evaluations.accuracy("per_batch")]
    expected = np.mean(np.concatenate([
        np.argmax(model(test_images[start:start + 16], training=True), axis=1)
        == y_test[start:start + 16] for start in range(0, len(y_test), 16)]))
    for variable, value in zip(model.variables, before):
        variable.assign(value)  # the check itself moved the statistics
    assert per_batch == [pytest.approx(expected)]
    recalibrated = evaluations.accuracy("recalibrated")
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)
    recalibrate_batchnorm(model, recalibration_images, batch_size=16)
    assert recalibrated == pytest.approx(model.evaluate(test_images, y_test, verbose=0)[1])
    conv1_bn = model.get_layer("conv1_bn")
    assert np.all(conv1_bn.moving_mean.numpy() < 2.0)  # the shifted means were replaced


def test_largest_swing_is_the_largest_change_between_epochs():
    assert d2l_lenet.largest_swing([0.5, 0.8, 0.6, 0.65]) == pytest.approx(0.3)
    assert d2l_lenet.largest_swing([0.7]) == 0.0


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


def test_d2l_fixed_batches_keep_each_batch_and_shuffle_their_order(tiny_mnist):
    dataset = d2l_lenet.fixed_batches(tiny_mnist, batch_size=16, seed=0)
    epochs = [[labels.numpy().tobytes() for _, labels in dataset] for _ in range(3)]
    (_, y_train), _ = tiny_mnist
    first_batches = [y_train[start:start + 16].astype(np.int32).tobytes()
                     for start in range(0, len(y_train), 16)]
    for batches in epochs:
        assert sorted(batches) == sorted(first_batches)  # the dataset's own batches
    assert epochs[0] != epochs[1] != epochs[2]  # in a new order every epoch


def test_d2l_trains_only_the_chosen_networks_with_fixed_batches(tiny_mnist, tmp_path):
    config = d2l_lenet.Config(epochs=1, batch_size=32, seeds=1, networks="builtin",
                              pipeline="fixed_batches", outdir=str(tmp_path), verbose=0)
    metrics = d2l_lenet.run(config, arrays=tiny_mnist)
    assert list(metrics["networks"]) == ["builtin"]
    assert read_outputs(tmp_path)["config"]["pipeline"] == "fixed_batches"
    with pytest.raises(ValueError, match="networks must name some of scratch, builtin, none"):
        d2l_lenet.Config(networks="scratch,lenet")
