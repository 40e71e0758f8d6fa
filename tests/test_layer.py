"""tfbn.BatchNorm against keras.layers.BatchNormalization, and its own promises.

The parity tests record the largest absolute difference they see; run with
`-s` to have it printed at the end of the module:

    pytest tests/test_layer.py -s
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfbn.layer import BatchNorm, batch_norm, debiased_momentum, fused_batch_norm

STEPS = 3
# Differences are measured relative to max(1, largest |value| compared).
largest_difference = {"relative": 0.0, "absolute": 0.0, "where": "every difference was exactly 0"}


@pytest.fixture(scope="module", autouse=True)
def report_largest_difference():
    yield
    print(
        "\nlargest |tfbn - keras| difference in the parity tests, relative to "
        f"max(1, |values|): {largest_difference['relative']:.3g} (absolute "
        f"{largest_difference['absolute']:.3g}; {largest_difference['where']})"
    )


def assert_close(ours, theirs, where, tolerance=1e-5):
    """Equal to float32 rounding, relative to the size of the values compared."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    difference = float(np.max(np.abs(ours - theirs), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    if difference / scale > largest_difference["relative"]:
        largest_difference.update(
            relative=difference / scale,
            absolute=difference,
            where=f"{where}, values up to {scale:.3g}",
        )
    assert difference <= tolerance * scale, f"{where}: differs by {difference:.3g}"


def random_batches(shape, count=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.constant(3.0 + 2.0 * rng.standard_normal(shape), tf.float32) for _ in range(count)
    ]


def twin_layers(our_kwargs=None, **kwargs):
    """A Keras layer and ours with the same arguments and, once built, weights."""
    gamma = keras.initializers.RandomNormal(1.0, 0.3, seed=1)
    beta = keras.initializers.RandomNormal(0.0, 0.3, seed=2)
    kwargs = {"gamma_initializer": gamma, "beta_initializer": beta, **kwargs}
    return keras.layers.BatchNormalization(**kwargs), BatchNorm(**kwargs, **(our_kwargs or {}))


def build_alike(theirs, ours, shape):
    theirs.build(shape)
    ours.build(shape)
    ours.set_weights(theirs.get_weights())


def make_step(layer, loss_weights, training, compiled):
    """One forward pass and the gradients of a weighted sum of its outputs."""

    def step(x, mask=None):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, training=training, mask=mask)
            loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * loss_weights)
        return outputs, tape.gradient(loss, [x, *layer.trainable_weights])

    return tf.function(step) if compiled else step


def compare_runs(theirs, ours, batches, where, compiled, masks=None, tolerance=1e-5):
    """Train both layers on `batches`, then infer; compare everything on the way."""
    masks = masks or [None] * len(batches)
    loss_weights = tf.constant(
        np.random.default_rng(3).standard_normal(batches[0].shape), tf.float32
    )
    for training in (True, False):
        their_step = make_step(theirs, loss_weights, training, compiled)
        our_step = make_step(ours, loss_weights, training, compiled)
        for index, (x, mask) in enumerate(zip(batches, masks)):
            label = f"{where}, {'training' if training else 'inference'} step {index}"
            their_outputs, their_gradients = their_step(x, mask)
            our_outputs, our_gradients = our_step(x, mask)
            assert_close(our_outputs, their_outputs, f"{label}, outputs", tolerance)
            names = ["inputs", *(weight.name for weight in theirs.trainable_weights)]
            for name, ours_gradient, theirs_gradient in zip(
                names, our_gradients, their_gradients, strict=True
            ):
                assert_close(ours_gradient, theirs_gradient, f"{label}, d/d{name}", tolerance)
        for name in ("moving_mean", "moving_variance"):
            assert_close(getattr(ours, name), getattr(theirs, name), f"{where}, {name}", tolerance)


PARITY_CASES = {
    "dense": ((32, 6), -1, {}),
    "dense_features_first": ((6, 32), 0, {}),
    "sequence": ((4, 7, 5), -1, {"center": False}),
    "sequence_axis1": ((4, 5, 7), 1, {"scale": False}),
    "conv_nhwc": ((4, 6, 6, 3), -1, {}),
    "conv_nchw": ((4, 3, 6, 6), 1, {"momentum": 0.9, "epsilon": 1e-5}),
    "conv_axis2": ((4, 6, 3, 6), 2, {"momentum": 0.5}),
    "volume": ((2, 3, 4, 4, 2), 4, {"center": False, "scale": False}),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("implementation", ["moments", "fused", "auto"])
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_parity_with_keras(case, implementation, compiled):
    shape, axis, kwargs = PARITY_CASES[case]
    theirs, ours = twin_layers({"implementation": implementation}, axis=axis, **kwargs)
    build_alike(theirs, ours, shape)
    compare_runs(theirs, ours, random_batches(shape), f"{case}/{implementation}", compiled)


def test_parity_in_float64():
    shape = (4, 5, 5, 3)
    theirs, ours = twin_layers(dtype="float64")
    build_alike(theirs, ours, shape)
    compare_runs(theirs, ours, random_batches(shape), "float64", compiled=False, tolerance=1e-12)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_parity_with_masks(compiled):
    shape = (4, 6, 3)
    theirs, ours = twin_layers(momentum=0.8)
    build_alike(theirs, ours, shape)
    rng = np.random.default_rng(4)
    masks = [tf.constant(rng.random(shape[:-1]) > 0.4) for _ in range(STEPS)]
    compare_runs(theirs, ours, random_batches(shape), "masked", compiled, masks)


@pytest.mark.parametrize("clipping", [None, {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5}])
def test_parity_with_renorm(clipping):
    shape = (16, 4)
    theirs, ours = twin_layers(renorm=True, renorm_clipping=clipping, renorm_momentum=0.6)
    build_alike(theirs, ours, shape)
    compare_runs(theirs, ours, random_batches(shape), "renorm", compiled=True)
    for name in ("moving_stddev", "renorm_mean", "renorm_stddev"):
        assert_close(getattr(ours, name), getattr(theirs, name), f"renorm, {name}")


def test_pure_functions_agree():
    shape = (8, 5, 5, 4)
    x = random_batches(shape, count=1)[0]
    gamma, beta = tf.fill([4], 1.5), tf.fill([4], -0.5)
    mean, variance = tf.zeros([4]), tf.ones([4])
    for training in (True, False):
        reference = batch_norm(x, gamma, beta, mean, variance, axis=-1, training=training)
        fused = fused_batch_norm(x, gamma, beta, mean, variance, axis=-1, training=training)
        for name, ours, theirs in zip(("outputs", "mean", "variance"), fused, reference):
            assert_close(ours, theirs, f"fused vs moments function, {name}")
    outputs, new_mean, new_variance = reference
    assert new_mean is mean and new_variance is variance, "inference must not move statistics"


def test_weights_match_keras_names_and_order():
    for kwargs in ({}, {"renorm": True}, {"center": False}):
        theirs, ours = twin_layers(**kwargs)
        build_alike(theirs, ours, (None, 3))
        assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
        assert [w.trainable for w in ours.weights] == [w.trainable for w in theirs.weights]
    debiased = BatchNorm(debiased=True)
    debiased.build((None, 3))
    assert [w.name for w in debiased.weights][-1] == "num_updates"
    assert len(debiased.weights) == 5


def test_auto_picks_fused_for_conv_and_moments_elsewhere():
    def kernels(layer, shape, **call_kwargs):
        layer.build(shape)
        graph = (
            tf.function(lambda x: layer(x, **call_kwargs))
            .get_concrete_function(tf.TensorSpec(shape, tf.float32))
            .graph
        )
        return {op.type for op in graph.get_operations()}

    assert "FusedBatchNormV3" in kernels(BatchNorm(), (4, 5, 5, 3), training=True)
    assert "FusedBatchNormV3" in kernels(BatchNorm(axis=1), (4, 3, 5, 5), training=False)
    assert "FusedBatchNormV3" not in kernels(BatchNorm(), (4, 3), training=True)
    assert "FusedBatchNormV3" not in kernels(BatchNorm(synchronized=True), (4, 5, 5, 3), training=True)
    assert "FusedBatchNormV3" not in kernels(BatchNorm(epsilon=1e-7), (4, 5, 5, 3), training=True)
    assert "FusedBatchNormV3" in kernels(BatchNorm(implementation="fused"), (4, 3), training=True)
    assert "FusedBatchNormV3" not in kernels(
        BatchNorm(implementation="moments"), (4, 5, 5, 3), training=True
    )


def test_config_round_trip_keeps_every_argument():
    layer = BatchNorm(
        axis=1,
        momentum=0.9,
        epsilon=1e-4,
        center=False,
        gamma_regularizer="l2",
        beta_constraint="non_neg",
        renorm=True,
        renorm_clipping={"rmax": 2.0},
        renorm_momentum=0.8,
        synchronized=True,
        debiased=True,
        implementation="moments",
        name="bn",
    )
    config = layer.get_config()
    assert BatchNorm.from_config(config).get_config() == config
    keras_config = keras.layers.BatchNormalization(
        axis=1, momentum=0.9, epsilon=1e-4, center=False, gamma_regularizer="l2",
        beta_constraint="non_neg", renorm=True, renorm_clipping={"rmax": 2.0},
        renorm_momentum=0.8, synchronized=True, name="bn",
    ).get_config()
    assert {k: v for k, v in config.items() if k in keras_config} == keras_config
    assert set(config) - set(keras_config) == {"debiased", "implementation", "virtual_batch_size"}


@pytest.mark.parametrize("debiased", [False, True])
def test_keras_file_round_trip_keeps_moving_statistics(tmp_path, debiased):
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), BatchNorm(momentum=0.5, debiased=debiased)]
    )
    for x in random_batches((8, 4, 4, 2)):
        model(x, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0], BatchNorm)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    for saved, restored in zip(model.layers[0].weights, loaded.layers[0].weights):
        assert saved.name == restored.name
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    if debiased:
        assert int(loaded.layers[0].num_updates.numpy()) == STEPS
    x = random_batches((8, 4, 4, 2), count=1, seed=9)[0]
    np.testing.assert_array_equal(model(x), loaded(x))


def test_not_trainable_means_inference_and_no_updates():
    layer = BatchNorm(momentum=0.5, debiased=True)
    x = random_batches((16, 3), count=1)[0]
    layer(x, training=True)
    layer.trainable = False
    before = [w.numpy().copy() for w in layer.weights]
    outputs = layer(x, training=True)
    np.testing.assert_array_equal(outputs, layer(x, training=False))
    for old, weight in zip(before, layer.weights):
        np.testing.assert_array_equal(old, weight.numpy())


def test_training_none_means_inference():
    layer = BatchNorm()
    x = random_batches((16, 3), count=1)[0]
    np.testing.assert_array_equal(layer(x), layer(x, training=False))
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(3))


def test_masked_steps_are_left_out_of_the_statistics():
    x = np.random.default_rng(5).normal(2.0, 3.0, (4, 6, 3)).astype("float32")
    mask = np.ones((4, 6), bool)
    mask[:, 4:] = False
    x_with_garbage = x.copy()
    x_with_garbage[~mask] = 1e6
    for implementation in ("auto", "moments"):
        layer = BatchNorm(momentum=0.0, implementation=implementation)
        outputs = layer(x_with_garbage, training=True, mask=mask)
        kept = x[mask]
        np.testing.assert_allclose(layer.moving_mean, kept.mean(0), rtol=1e-5)
        np.testing.assert_allclose(layer.moving_variance, kept.var(0), rtol=1e-5)
        expected = (kept - kept.mean(0)) / np.sqrt(kept.var(0) + 1e-3)
        np.testing.assert_allclose(np.asarray(outputs)[mask], expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("shape", [(64, 5), (8, 4, 4, 5)], ids=["dense", "conv"])
def test_mixed_precision(policy, shape):
    theirs, ours = twin_layers(dtype=policy, momentum=0.5)
    build_alike(theirs, ours, shape)
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    assert all(w.dtype == "float32" for w in ours.weights)
    # float16 holds 1e4 but not its square: statistics must be float32.
    rng = np.random.default_rng(8)
    large = [tf.cast(1e4 * rng.standard_normal(shape), compute_dtype) for _ in range(STEPS)]
    for x in large:
        their_outputs = theirs(x, training=True)
        our_outputs = ours(x, training=True)
        assert our_outputs.dtype == compute_dtype
        assert np.all(np.isfinite(np.asarray(tf.cast(our_outputs, tf.float32))))
        assert_close(
            tf.cast(our_outputs, tf.float32), tf.cast(their_outputs, tf.float32),
            f"{policy}, outputs", tolerance=1e-2,
        )
    assert ours.moving_variance.dtype == "float32"
    assert np.all(np.isfinite(ours.moving_variance.numpy()))
    assert np.max(ours.moving_variance.numpy()) > 1e7
    assert_close(ours.moving_variance, theirs.moving_variance, f"{policy}, moving_variance")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", ["dense", "sequence_axis1"])
def test_mixed_precision_values_and_gradients(case, policy, compiled):
    shape, axis, kwargs = PARITY_CASES[case]
    theirs, ours = twin_layers(dtype=policy, axis=axis, **kwargs)
    build_alike(theirs, ours, shape)
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    batches = [tf.cast(x, compute_dtype) for x in random_batches(shape)]
    # bfloat16 keeps 8 significant bits (rounding 4e-3): compare to a few of those.
    compare_runs(theirs, ours, batches, f"{case}/{policy}", compiled, tolerance=1e-2)


@pytest.mark.parametrize("mean_over_spread", [0, 30, 1000])
def test_the_fused_path_trains_no_less_accurately_than_keras_against_float64(mean_over_spread):
    """Normwise error of the training outputs and input gradient, against float64; a large
    channel mean is where a one-pass variance loses digits."""
    rng = np.random.default_rng(0)
    channels = 8
    x = (rng.standard_normal((16, 6, 6, channels))
         + mean_over_spread * (1 + rng.random(channels))).astype(np.float32)
    upstream = rng.standard_normal(x.shape)

    def outputs_and_gradient(layer, dtype):
        inputs = tf.constant(x, dtype)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = tf.reduce_sum(y * tf.constant(upstream, dtype))
        return y.numpy().astype(np.float64), tape.gradient(loss, inputs).numpy().astype(np.float64)

    reference = outputs_and_gradient(BatchNorm(implementation="moments", dtype="float64"),
                                     tf.float64)

    def error(layer):
        return max(np.linalg.norm(got - want) / np.linalg.norm(want)
                   for got, want in zip(outputs_and_gradient(layer, tf.float32), reference))

    fused = error(BatchNorm(implementation="fused"))
    keras_error = error(keras.layers.BatchNormalization())
    assert fused <= max(keras_error, 1e-6), (fused, keras_error)
    # Shifted by the first example's channel means, the kernel's error does not grow with
    # the mean (unshifted, it reached 2.5e-4 here at 1000; Keras's reaches 1.9e-4).
    assert fused < 1e-6, fused


@pytest.mark.parametrize("implementation", ["moments", "fused", "auto"])
@pytest.mark.parametrize("shape", [(1, 4), (1, 1, 1, 4)], ids=["dense", "conv"])
def test_batch_of_one_is_finite_and_matches_keras(implementation, shape):
    theirs, ours = twin_layers({"implementation": implementation}, momentum=0.5)
    build_alike(theirs, ours, shape)
    x = random_batches(shape, count=1)[0]
    for compiled in (False, True):
        call = (lambda f: tf.function(f)) if compiled else (lambda f: f)
        our_outputs = call(lambda x: ours(x, training=True))(x)
        their_outputs = call(lambda x: theirs(x, training=True))(x)
        assert np.all(np.isfinite(our_outputs))
        assert_close(our_outputs, their_outputs, f"batch of one/{implementation}")
    assert np.all(np.isfinite(ours.moving_variance.numpy()))
    assert_close(ours.moving_variance, theirs.moving_variance, "batch of one, moving_variance")


@pytest.mark.parametrize(
    "implementation, dtype", [("moments", "float32"), ("fused", "float32"), ("auto", "float64")]
)
def test_debiased_decay_follows_tf1_exponential_moving_average(implementation, dtype):
    momentum, shape = 0.99, (4, 3, 3, 2)
    layer = BatchNorm(
        momentum=momentum, debiased=True, implementation=implementation, dtype=dtype
    )
    expected_mean, expected_variance = np.zeros(2), np.ones(2)
    for t, x in enumerate(random_batches(shape, count=5)):
        layer(x, training=True)
        decay = min(momentum, (1.0 + t) / (10.0 + t))
        values = np.asarray(x, np.float64)
        expected_mean = decay * expected_mean + (1 - decay) * values.mean((0, 1, 2))
        expected_variance = decay * expected_variance + (1 - decay) * values.var((0, 1, 2))
    assert int(layer.num_updates.numpy()) == 5
    np.testing.assert_allclose(layer.moving_mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, expected_variance, rtol=1e-5)
    # The plain average still sits near its initial zeros after five steps.
    assert np.all(np.abs(layer.moving_mean.numpy()) > 5 * 0.05 * 3.0)


def test_debiased_momentum_formula():
    for t in (0, 1, 10, 1000):
        assert float(debiased_momentum(0.99, t)) == pytest.approx(min(0.99, (1 + t) / (10 + t)))


BAD_ARGUMENTS = [
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"momentum": -0.1}, "momentum=-0.1"),
    ({"epsilon": -1e-3}, "epsilon=-0.001"),
    ({"axis": 1.5}, "axis=1.5"),
    ({"renorm_momentum": 2.0}, "renorm_momentum=2.0"),
    ({"renorm": True, "renorm_clipping": {"rmx": 1.0}}, "renorm_clipping=.*rmx"),
    ({"renorm_clipping": {"rmx": 1.0}}, "renorm_clipping=.*rmx"),
    ({"renorm": True, "renorm_clipping": {"rmax": 0.5, "rmin": 1.0}}, "rmax=0.5, rmin=1.0"),
    ({"renorm": True, "renorm_clipping": {"dmax": -1.0}}, "dmax=-1.0"),
    ({"implementation": "cudnn"}, "implementation='cudnn'"),
    ({"implementation": "fused", "renorm": True}, "renorm=True"),
    ({"implementation": "fused", "synchronized": True}, "synchronized=True"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ARGUMENTS)
def test_bad_constructor_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm(**kwargs)


def test_bad_build_and_call_inputs_are_named():
    with pytest.raises(ValueError, match=r"axis=.*input shape=\(None, None\)"):
        BatchNorm().build((None, None))
    with pytest.raises(ValueError, match=r"axis=3"):
        BatchNorm(axis=3).build((None, 4))
    with pytest.raises(ValueError, match=r"axis=-3"):
        BatchNorm(axis=-3).build((None, 4))
    with pytest.raises(ValueError, match="dtype=int32"):
        BatchNorm()(tf.constant([[1, 2], [3, 4]]), training=True)
    with pytest.raises(ValueError, match="mask.shape"):
        BatchNorm()(tf.ones([2, 3, 4]), mask=tf.ones([2]), training=True)
    with pytest.raises(ValueError, match="implementation='fused'.*mask"):
        BatchNorm(implementation="fused")(
            tf.ones([2, 3, 4]), mask=tf.ones([2, 3]), training=True
        )
    with pytest.raises(ValueError, match="dtype=float64"):
        BatchNorm(implementation="fused", dtype="float64")(tf.ones([2, 3], tf.float64))


@pytest.mark.parametrize("shape", [(8, 3), (8, 2, 2, 3)], ids=["dense", "conv"])
def test_synchronized_statistics_equal_one_device_on_the_global_batch(two_replica_strategy, shape):
    strategy = two_replica_strategy
    rng = np.random.default_rng(6)
    # The replicas see different data, so local statistics differ from global ones.
    half = (shape[0] // 2, *shape[1:])
    global_batch = np.concatenate(
        [rng.normal(0.0, 1.0, half), rng.normal(5.0, 3.0, half)]
    ).astype("float32")
    loss_weights = rng.standard_normal(shape).astype("float32")

    single = BatchNorm(momentum=0.5)
    with tf.GradientTape() as tape:
        x = tf.constant(global_batch)
        tape.watch(x)
        single_outputs = single(x, training=True)
        loss = tf.reduce_sum(single_outputs * loss_weights)
    single_gradients = tape.gradient(loss, x)

    results = {}
    for synchronized in (True, False):
        with strategy.scope():
            layer = BatchNorm(momentum=0.5, synchronized=synchronized)
            layer.build(shape)

        def replica_step(x, weights, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = layer(x, training=True)
                loss = tf.reduce_sum(outputs * weights)
            return outputs, tape.gradient(loss, x)

        dataset = tf.data.Dataset.from_tensor_slices((global_batch, loss_weights))
        batch = next(iter(strategy.experimental_distribute_dataset(dataset.batch(shape[0]))))
        outputs, gradients = tf.function(lambda x, w: strategy.run(replica_step, (x, w)))(*batch)
        results[synchronized] = (
            np.concatenate(strategy.experimental_local_results(outputs)),
            np.concatenate(strategy.experimental_local_results(gradients)),
            [v.numpy() for v in layer.moving_mean.value.values],
            [v.numpy() for v in layer.moving_variance.value.values],
        )

    outputs, gradients, replica_means, replica_variances = results[True]
    assert_close(outputs, single_outputs, "synchronized, outputs")
    assert_close(gradients, single_gradients, "synchronized, d/dinputs")
    for mean, variance in zip(replica_means, replica_variances):
        assert_close(mean, single.moving_mean, "synchronized, moving_mean")
        assert_close(variance, single.moving_variance, "synchronized, moving_variance")

    outputs, gradients, replica_means, replica_variances = results[False]
    assert not np.allclose(outputs, single_outputs, atol=1e-2)
    for replica, (mean, variance) in enumerate(zip(replica_means, replica_variances)):
        local = global_batch[replica * half[0] : (replica + 1) * half[0]]
        axes = tuple(range(local.ndim - 1))
        np.testing.assert_allclose(mean, 0.5 * local.mean(axes), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(variance, 0.5 + 0.5 * local.var(axes), rtol=1e-4)
        assert not np.allclose(mean, single.moving_mean, atol=1e-2)


def test_synchronized_variance_is_stable_for_large_means(two_replica_strategy):
    strategy = two_replica_strategy
    # Mean 1e4, spread 1: E[x^2] - E[x]^2 in float32 loses every digit here.
    data = (1e4 + np.random.default_rng(7).standard_normal((64, 2))).astype("float32")
    with strategy.scope():
        layer = BatchNorm(momentum=0.0, synchronized=True)
        layer.build((None, 2))
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(data).batch(64)
    )))

    def replica_step(x):
        return layer(x, training=True)

    tf.function(lambda x: strategy.run(replica_step, (x,)))(batch)
    np.testing.assert_allclose(layer.moving_variance.numpy(), data.astype(np.float64).var(0), rtol=1e-3)
