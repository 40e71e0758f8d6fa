"""Batch normalization: the maths as pure functions, the bookkeeping in a layer.

`batch_norm` is the reference path, written with `tf.nn.moments` the way the
tutorials explain it. `fused_batch_norm` computes the same numbers with
TensorFlow's fused kernel (`FusedBatchNormV3`, the one cuDNN and oneDNN
accelerate). `BatchNorm` is a drop-in twin of `keras.layers.BatchNormalization`
that owns the weights and moving statistics and calls one of the two.
"""

import numbers

import keras
import tensorflow as tf

IMPLEMENTATIONS = ("auto", "fused", "moments")
RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")

# cuDNN rejects smaller epsilons in its fused kernel (CUDNN_BN_MIN_EPSILON), so
# "auto" keeps such layers on the moments path wherever they may run.
FUSED_MIN_EPSILON = 1.001e-5


def batch_moments(x, axis=-1, mask=None, synchronized=False):
    """Per-feature mean and biased variance of `x` over every axis but `axis`.

    Args:
        x: float tensor of known rank.
        axis: the feature axis, kept; all other axes are reduced.
        mask: optional tensor broadcastable to `x`; elements where it is
            false/zero are left out of both statistics.
        synchronized: under a `tf.distribute` strategy with several replicas,
            reduce over the global batch of all replicas, not the local one.

    Returns:
        `(mean, variance)`, each of shape `[x.shape[axis]]`. The variance is
        the biased one (divided by the count, not count - 1).
    """
    rank = x.shape.rank
    axis = axis % rank
    reduction_axes = [i for i in range(rank) if i != axis]
    replica_context = tf.distribute.get_replica_context() if synchronized else None
    across_replicas = (
        replica_context is not None and replica_context.num_replicas_in_sync > 1
    )
    if mask is None and not across_replicas:
        return tf.nn.moments(x, reduction_axes)
    keep = None
    if mask is not None:
        keep = tf.broadcast_to(tf.cast(mask, tf.bool), tf.shape(x))
    return _two_pass_moments(
        x, axis, reduction_axes, keep, replica_context if across_replicas else None
    )


def _two_pass_moments(x, axis, reduction_axes, keep, replica_context):
    """Mean first, then the mean squared deviation from it.

    Only sums and counts cross replicas, so the result equals one device
    seeing the global batch; the second pass avoids the cancellation of
    E[x^2] - E[x]^2 when the mean is large next to the spread.
    """

    def total(value):
        if replica_context is None:
            return value
        return replica_context.all_reduce(tf.distribute.ReduceOp.SUM, value)

    if keep is None:
        local_count = tf.cast(tf.size(x) // tf.shape(x)[axis], x.dtype)
        local_sum = tf.reduce_sum(x, reduction_axes)
    else:
        local_count = tf.reduce_sum(tf.cast(keep, x.dtype), reduction_axes)
        local_sum = tf.reduce_sum(tf.where(keep, x, 0.0), reduction_axes)
    global_sum, count = total([local_sum, local_count])
    mean = tf.math.divide_no_nan(global_sum, count)

    deviations = x - _broadcastable(mean, x.shape.rank, axis)
    if keep is not None:
        deviations = tf.where(keep, deviations, 0.0)
    squared_deviations = total(tf.reduce_sum(tf.square(deviations), reduction_axes))
    variance = tf.math.divide_no_nan(squared_deviations, count)
    return mean, variance


def _broadcastable(vector, rank, axis):
    shape = [1] * rank
    shape[axis] = -1
    return tf.reshape(vector, shape)


def normalize(x, mean, variance, gamma, beta, *, axis=-1, epsilon=1e-3):
    """`gamma * (x - mean) / sqrt(variance + epsilon) + beta` along `axis`.

    `gamma` or `beta` may be None (no scale, no offset).
    """
    rank = x.shape.rank
    if axis % rank != rank - 1:
        mean, variance = (_broadcastable(t, rank, axis) for t in (mean, variance))
        gamma, beta = (
            None if t is None else _broadcastable(t, rank, axis) for t in (gamma, beta)
        )
    return tf.nn.batch_normalization(
        x, mean, variance, offset=beta, scale=gamma, variance_epsilon=epsilon
    )


def moving_average(average, value, momentum):
    """The Keras update: momentum weights the old value."""
    return average * momentum + value * (1.0 - momentum)


def debiased_momentum(momentum, num_updates, dtype=tf.float32):
    """TF1 `ExponentialMovingAverage(momentum, num_updates)` decay.

    `min(momentum, (1 + t) / (10 + t))` where `t` is the number of updates
    already done: early averages forget their initial value quickly.
    """
    t = tf.cast(num_updates, dtype)
    return tf.minimum(tf.constant(momentum, dtype), (1.0 + t) / (10.0 + t))


def batch_norm(
    x,
    gamma,
    beta,
    moving_mean,
    moving_variance,
    *,
    axis=-1,
    epsilon=1e-3,
    momentum=0.99,
    training=False,
    mask=None,
    synchronized=False,
):
    """Batch normalization with `tf.nn.moments` (the reference path).

    In training, `x` is normalized with the statistics of this batch and the
    moving statistics move towards them; in inference, `x` is normalized with
    the moving statistics, which come back unchanged.

    Args:
        x: float tensor; `axis` is its feature axis.
        gamma, beta: per-feature scale and offset, or None for none.
        moving_mean, moving_variance: per-feature moving statistics.
        axis, epsilon, momentum: as in `BatchNorm`.
        training: use batch statistics and update the moving ones.
        mask, synchronized: see `batch_moments`.

    Returns:
        `(outputs, new_moving_mean, new_moving_variance)`.
    """
    if not training:
        outputs = normalize(
            x, moving_mean, moving_variance, gamma, beta, axis=axis, epsilon=epsilon
        )
        return outputs, moving_mean, moving_variance
    mean, variance = batch_moments(x, axis, mask, synchronized)
    outputs = normalize(x, mean, variance, gamma, beta, axis=axis, epsilon=epsilon)
    return (
        outputs,
        moving_average(moving_mean, mean, momentum),
        moving_average(moving_variance, variance, momentum),
    )


def ghost_batch_norm(
    x,
    gamma,
    beta,
    moving_mean,
    moving_variance,
    *,
    virtual_batch_size,
    axis=-1,
    epsilon=1e-3,
    momentum=0.99,
):
    """Training with ghost batches: each group of `virtual_batch_size` consecutive samples
    is normalized with its own mean and variance (over the group and every axis but
    `axis`), and the moving statistics move towards the groups' average mean and average
    variance, as Keras 2's `virtual_batch_size` did (Hoffer et al. 2017). Inference needs no
    function of its own: it is `batch_norm(..., training=False)`.

    Returns:
        `(outputs, new_moving_mean, new_moving_variance)`.
    """
    rank = x.shape.rank
    axis = axis % rank
    if axis == 0:
        raise ValueError("ghost batches split the batch axis, so `axis` cannot be 0")
    batch = x.shape[0]
    if batch is not None and batch % virtual_batch_size:
        raise ValueError(
            f"virtual_batch_size={virtual_batch_size} must divide the batch size; "
            f"received a batch of {batch}"
        )
    divides = tf.debugging.assert_equal(
        tf.shape(x)[0] % virtual_batch_size, 0,
        message=f"virtual_batch_size={virtual_batch_size} must divide the batch size",
    )
    with tf.control_dependencies([divides]):
        x = tf.identity(x)
    # [groups, virtual_batch_size, ...]: the original axis i becomes axis i + 1.
    groups = tf.reshape(x, tf.concat([[-1, virtual_batch_size], tf.shape(x)[1:]], 0))
    reduction_axes = [1] + [i + 1 for i in range(1, rank) if i != axis]
    mean, variance = tf.nn.moments(groups, reduction_axes, keepdims=True)
    grouped_axis = axis + 1
    gamma, beta = (
        None if t is None else _broadcastable(t, rank + 1, grouped_axis) for t in (gamma, beta)
    )
    outputs = tf.nn.batch_normalization(
        groups, mean, variance, offset=beta, scale=gamma, variance_epsilon=epsilon
    )
    outputs = tf.reshape(outputs, tf.shape(x))
    average_mean = tf.reshape(tf.reduce_mean(mean, axis=0), [-1])
    average_variance = tf.reshape(tf.reduce_mean(variance, axis=0), [-1])
    return (
        outputs,
        moving_average(moving_mean, average_mean, momentum),
        moving_average(moving_variance, average_variance, momentum),
    )


def fused_batch_norm(
    x,
    gamma,
    beta,
    moving_mean,
    moving_variance,
    *,
    axis=-1,
    epsilon=1e-3,
    momentum=0.99,
    training=False,
):
    """`batch_norm` through TensorFlow's fused kernel: same arguments and results.

    Any rank and axis work: the input is viewed as 4-D (features last as NHWC,
    otherwise NCHW) without copying. `x` must be float32 (or float16/bfloat16)
    and its feature dimension known.
    """
    rank = x.shape.rank
    axis = axis % rank
    channels = x.shape[axis]
    x_4d, data_format = _as_4d(x, axis)
    scale = tf.ones([channels], tf.float32) if gamma is None else gamma
    offset = tf.zeros([channels], tf.float32) if beta is None else beta
    if not training:
        outputs = tf.raw_ops.FusedBatchNormV3(
            x=x_4d,
            scale=scale,
            offset=offset,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=epsilon,
            data_format=data_format,
            is_training=False,
        )[0]
        return tf.reshape(outputs, tf.shape(x)), moving_mean, moving_variance

    # The kernel's one-pass variance loses digits when the mean is large against the spread
    # (a float32 E[x^2] - E[x]^2). Normalizing x - c instead, with c the first example's
    # per-channel mean (a constant to autodiff), changes no result in exact arithmetic and
    # keeps the kernel's error at the built-in layer's (see tests/test_layer.py).
    reduce_axes = [1, 2] if data_format == "NHWC" else [2, 3]
    shift = tf.stop_gradient(tf.reduce_mean(x_4d[:1], axis=[0, *reduce_axes]))
    no_statistics = tf.zeros([0], tf.float32)
    outputs, mean, corrected_variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x_4d - _broadcastable(shift, 4, 3 if data_format == "NHWC" else 1),
        scale=scale,
        offset=offset,
        mean=no_statistics,
        variance=no_statistics,
        epsilon=epsilon,
        data_format=data_format,
        is_training=True,
    )
    # The kernel normalizes with the biased variance but reports it
    # Bessel-corrected (times n / max(n - 1, 1)); undo that so the moving
    # variance follows the biased one, as Keras's does.
    count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
    variance = corrected_variance * (tf.maximum(count - 1.0, 1.0) / count)
    mean = mean + shift
    return (
        tf.reshape(outputs, tf.shape(x)),
        moving_average(moving_mean, mean, momentum),
        moving_average(moving_variance, variance, momentum),
    )


def _as_4d(x, axis):
    rank = x.shape.rank
    if rank == 4 and axis in (1, 3):
        return x, "NHWC" if axis == 3 else "NCHW"
    channels = x.shape[axis]
    if axis == rank - 1:
        return tf.reshape(x, [-1, 1, 1, channels]), "NHWC"
    trailing = tf.reduce_prod(tf.shape(x)[axis + 1 :])
    return tf.reshape(x, tf.stack([-1, channels, trailing, 1])), "NCHW"


def renorm_correction(mean, variance, renorm_mean, renorm_stddev, *, epsilon, clipping):
    """Batch Renormalization's `(r, d)`: batch statistics against moving ones.

    `r = stddev / renorm_stddev`, `d = (mean - renorm_mean) / renorm_stddev`,
    clipped to `[rmin, rmax]` and `[-dmax, dmax]` (Ioffe, 2017).
    """
    stddev = tf.sqrt(variance + epsilon)
    # Avoids dividing by ~0 early in training, as Keras does.
    renorm_stddev = tf.maximum(renorm_stddev, tf.sqrt(tf.cast(epsilon, mean.dtype)))
    r = stddev / renorm_stddev
    d = (mean - renorm_mean) / renorm_stddev
    if clipping.get("rmin") is not None:
        r = tf.maximum(r, clipping["rmin"])
    if clipping.get("rmax") is not None:
        r = tf.minimum(r, clipping["rmax"])
    if clipping.get("dmax") is not None:
        d = tf.clip_by_value(d, -clipping["dmax"], clipping["dmax"])
    return r, d


def _validate_renorm_clipping(renorm_clipping):
    unknown = set(renorm_clipping) - set(RENORM_CLIPPING_KEYS)
    if unknown:
        raise ValueError(
            "Received invalid keys for `renorm_clipping` argument: "
            f"renorm_clipping={renorm_clipping}. Supported keys: "
            f"{list(RENORM_CLIPPING_KEYS)}."
        )
    rmax, rmin, dmax = (renorm_clipping.get(key) for key in RENORM_CLIPPING_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            "rmax should be greater than rmin in the `renorm_clipping` "
            f"argument. Received: rmax={rmax}, rmin={rmin}."
        )
    if dmax is not None and dmax < 0:
        raise ValueError(
            "dmax should be non-negative in the `renorm_clipping` "
            f"argument. Received: dmax={dmax}."
        )


def _clone_initializer(initializer):
    """A fresh copy, so a seeded initializer used twice does not repeat itself."""
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


@keras.saving.register_keras_serializable(package="tfbn")
class BatchNorm(keras.layers.Layer):
    """Batch normalization layer, a drop-in twin of `keras.layers.BatchNormalization`.

    Same constructor arguments and defaults, same weights (`gamma`, `beta`,
    `moving_mean`, `moving_variance`, and with `renorm=True` also
    `moving_stddev`, `renorm_mean`, `renorm_stddev`, in that order), same call
    and same numbers, to float32 rounding.

    Conventions (all as in Keras 3):

    - Training (`training=True`, layer trainable): normalize with this batch's
      mean and variance over every axis but `axis`,
      `gamma * (x - mean) / sqrt(variance + epsilon) + beta`; epsilon is added
      to the variance inside the square root.
    - The batch variance is the biased one (divided by n, not n - 1), both for
      normalizing and for the moving variance.
    - Moving statistics: `moving = momentum * moving + (1 - momentum) * batch`;
      momentum weights the *old* value (0.99 keeps 99% of it per step).
    - Inference (`training=False` or None, the default, or `trainable=False`):
      normalize with the moving statistics and leave them unchanged.
    - Masked steps (`mask` false) are left out of the batch statistics.
    - float16/bfloat16 inputs are computed in float32 with float32 weights;
      the output has the layer's compute dtype.
    - `synchronized=True`: under `tf.distribute`, batch statistics are
      all-reduced over replicas (sums, counts, then squared deviations from
      the global mean), so N replicas with batch B each match one device with
      batch N*B. Unlike Keras, masks are honoured here too.

    Arguments beyond Keras's:

    - `debiased=False`: if True, the moving statistics use TF1's
      `ExponentialMovingAverage` decay with `num_updates`,
      `min(momentum, (1 + t) / (10 + t))` after `t` updates (the MNIST codelab's
      choice). With momentum 0.99 a plain average still holds 0.99**100 = 37% of
      its initial 0/1 after 100 steps, so a short run evaluates with statistics
      far from the data's; the debiased one follows the data from the first
      steps. It helps for short runs, few steps per epoch or a high momentum.
      After about 9 / (1 - momentum) steps (900 for 0.99) both use the same
      decay, and once momentum**t is negligible both averages agree. It adds
      a non-trainable int64 weight `num_updates` (last in the weights list),
      so its weights are Keras's plus that one; without it they are Keras's.
    - `virtual_batch_size=None`: ghost batches. In training each group of this many
      consecutive samples is normalized with its own statistics, and the moving
      statistics follow the groups' average (`ghost_batch_norm`); inference is
      unchanged (Keras 2 applied the groups at inference too, keras#15790). It must
      divide the training batch size (a ValueError says so otherwise); no renorm,
      synchronized statistics, masks in training or implementation="fused".
    - `implementation="auto"`: "moments" is the `tf.nn.moments` reference path
      (`batch_norm`); "fused" uses TensorFlow's fused kernel
      (`fused_batch_norm`; no masks in training, renorm or synchronized
      statistics); "auto" takes "fused" for 4-D inputs with features on axis
      1 or -1 when it applies (epsilon >= 1.001e-5, float32 compute), where it
      is faster, and "moments" elsewhere: on CPU the fused kernel has a fixed
      cost per call that dense-sized tensors do not repay.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(24, 6, use_bias=False),  # BN's beta replaces the bias
        tfbn.BatchNorm(scale=False),  # relu follows: gamma would be redundant
        keras.layers.Activation("relu"),
    ])
    model(images, training=True)  # batch statistics; moving ones updated
    model(images)                 # inference: moving statistics, no update
    ```

    Note: a batch of one in training gives `beta` (finite, since epsilon > 0),
    like Keras; with `epsilon=0` a constant feature divides zero by zero.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        debiased=False,
        implementation="auto",
        virtual_batch_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum}")
        if not 0.0 <= renorm_momentum <= 1.0:
            raise ValueError(
                "`renorm_momentum` must be in [0, 1]. "
                f"Received: renorm_momentum={renorm_momentum}"
            )
        if not epsilon >= 0.0:
            raise ValueError(f"`epsilon` must be >= 0. Received: epsilon={epsilon}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}"
            )
        if implementation == "fused" and (renorm or synchronized):
            raise ValueError(
                "implementation='fused' cannot compute renorm or synchronized "
                f"statistics. Received: renorm={renorm}, synchronized={synchronized}; "
                "use implementation='auto' or 'moments'."
            )
        if renorm_clipping is not None:
            _validate_renorm_clipping(renorm_clipping)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(
            moving_variance_initializer
        )
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.synchronized = synchronized
        self.renorm = renorm
        # Keras stores {} for "no clipping" only when renorm is on; so do we, so
        # that configs match.
        self.renorm_clipping = (renorm_clipping or {}) if renorm else renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.debiased = debiased
        self.implementation = implementation
        if virtual_batch_size is not None:
            if not isinstance(virtual_batch_size, numbers.Integral) or virtual_batch_size < 1:
                raise ValueError(
                    "`virtual_batch_size` must be a positive integer or None. "
                    f"Received: virtual_batch_size={virtual_batch_size!r}"
                )
            if renorm or synchronized or implementation == "fused":
                raise ValueError(
                    "`virtual_batch_size` (ghost batches) works with neither renorm, "
                    "synchronized statistics nor implementation='fused'. Received: "
                    f"renorm={renorm}, synchronized={synchronized}, "
                    f"implementation={implementation!r}"
                )
            virtual_batch_size = int(virtual_batch_size)
        self.virtual_batch_size = virtual_batch_size
        self.supports_masking = True

        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None
        self.num_updates = None

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"`axis` is out of range for inputs of rank {rank} "
                f"(shape {tuple(input_shape)}). Received: axis={self.axis}"
            )
        features = input_shape[self.axis]
        if features is None:
            raise ValueError(
                "The feature dimension (`axis`) of the input must be known when "
                f"the layer is built. Received: axis={self.axis}, "
                f"input shape={tuple(input_shape)}"
            )
        shape = (features,)
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )
        self.moving_mean = self._add_statistic("moving_mean", shape, self.moving_mean_initializer)
        self.moving_variance = self._add_statistic(
            "moving_variance", shape, self.moving_variance_initializer
        )
        if self.renorm:
            # Renorm tracks standard deviations, initialized as the square root
            # of the variance initializer (as in Keras and the paper).
            def stddev_initializer(shape, dtype=None):
                variance = _clone_initializer(self.moving_variance_initializer)
                return keras.ops.sqrt(variance(shape, dtype=dtype))

            self.moving_stddev = self._add_statistic("moving_stddev", shape, stddev_initializer)
            self.renorm_mean = self._add_statistic(
                "renorm_mean", shape, _clone_initializer(self.moving_mean_initializer)
            )
            self.renorm_stddev = self._add_statistic("renorm_stddev", shape, stddev_initializer)
        if self.debiased:
            # Counted once across replicas, like an optimizer's iterations.
            self.num_updates = self.add_weight(
                shape=(),
                name="num_updates",
                dtype="int64",
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
        self.input_spec = keras.layers.InputSpec(ndim=rank, axes={self.axis: features})

    def _add_statistic(self, name, shape, initializer):
        return self.add_weight(
            shape=shape, name=name, initializer=initializer, trainable=False, autocast=False
        )

    def compute_output_shape(self, input_shape):
        if not -len(input_shape) <= self.axis < len(input_shape):
            raise ValueError(
                f"`axis` is out of range for input shape {tuple(input_shape)}. "
                f"Received: axis={self.axis}"
            )
        return input_shape

    def call(self, inputs, training=None, mask=None):
        inputs = tf.convert_to_tensor(inputs)
        if not inputs.dtype.is_floating:
            raise ValueError(
                "BatchNorm needs floating-point `inputs`. "
                f"Received: inputs with dtype={inputs.dtype.name}"
            )
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(
                "The mask provided should be one dimension less than the inputs. "
                f"Received: mask.shape={mask.shape}, inputs.shape={inputs.shape}"
            )
        output_dtype = self.compute_dtype
        # float16/bfloat16 overflow in the statistics: compute in float32 (or
        # float64 for float64 inputs, which the fused kernel lacks).
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = tf.cast(inputs, compute_dtype)
        gamma = tf.cast(self.gamma, compute_dtype) if self.scale else None
        beta = tf.cast(self.beta, compute_dtype) if self.center else None
        moving_mean = tf.cast(self.moving_mean, compute_dtype)
        moving_variance = tf.cast(self.moving_variance, compute_dtype)
        # Keras's mask covers every axis but the last.
        keep = None if mask is None else tf.expand_dims(mask, -1)
        update = bool(training) and self.trainable

        if update and self.renorm:
            outputs = self._renormalize(inputs, keep, gamma, beta)
        else:
            momentum = self._momentum(compute_dtype) if update else self.momentum
            if update and self.virtual_batch_size:
                if keep is not None:
                    raise ValueError(
                        "`virtual_batch_size` (ghost batches) cannot leave masked steps "
                        "out of the statistics. Received: a mask in training"
                    )
                outputs, new_mean, new_variance = ghost_batch_norm(
                    inputs, gamma, beta, moving_mean, moving_variance,
                    virtual_batch_size=self.virtual_batch_size, axis=self.axis,
                    epsilon=self.epsilon, momentum=momentum,
                )
            elif self._use_fused(inputs, keep, update):
                outputs, new_mean, new_variance = fused_batch_norm(
                    inputs, gamma, beta, moving_mean, moving_variance,
                    axis=self.axis, epsilon=self.epsilon, momentum=momentum,
                    training=update,
                )
            else:
                outputs, new_mean, new_variance = batch_norm(
                    inputs, gamma, beta, moving_mean, moving_variance,
                    axis=self.axis, epsilon=self.epsilon, momentum=momentum,
                    training=update, mask=keep, synchronized=self.synchronized,
                )
            if update:
                self.moving_mean.assign(new_mean)
                self.moving_variance.assign(new_variance)
        if update and self.debiased:
            self.num_updates.assign_add(1)
        return tf.cast(outputs, output_dtype)

    def _momentum(self, dtype):
        if self.debiased:
            return debiased_momentum(self.momentum, self.num_updates, dtype)
        return self.momentum

    def _use_fused(self, inputs, keep, update):
        """Whether the fused kernel computes what Keras's layer would."""
        batch_statistics_need_moments = update and (keep is not None or self.synchronized)
        if self.implementation == "moments":
            return False
        if self.implementation == "fused":
            if batch_statistics_need_moments:
                raise ValueError(
                    "implementation='fused' cannot leave masked steps out of the "
                    "batch statistics. Received: a mask in training; use "
                    "implementation='auto' or 'moments'."
                )
            if inputs.dtype != tf.float32:
                raise ValueError(
                    "implementation='fused' needs float32/float16/bfloat16 inputs. "
                    f"Received: inputs with dtype={inputs.dtype.name}"
                )
            return True
        rank = inputs.shape.rank
        return (
            not batch_statistics_need_moments
            and rank == 4
            and self.axis % rank in (1, 3)
            and inputs.dtype == tf.float32
            and self.epsilon >= FUSED_MIN_EPSILON
        )

    def _renormalize(self, inputs, keep, gamma, beta):
        """Batch Renormalization, exactly as Keras 3 computes it."""
        mean, variance = batch_moments(inputs, self.axis, keep, self.synchronized)
        dtype = inputs.dtype
        r, d = renorm_correction(
            mean,
            variance,
            tf.cast(self.renorm_mean, dtype),
            tf.cast(self.renorm_stddev, dtype),
            epsilon=self.epsilon,
            clipping=self.renorm_clipping,
        )
        # (x_hat * r + d) * gamma + beta, with r and d treated as constants.
        r, d = tf.stop_gradient(r), tf.stop_gradient(d)
        effective_gamma = r if gamma is None else r * gamma
        effective_beta = d if gamma is None else d * gamma
        if beta is not None:
            effective_beta = effective_beta + beta
        self._update_renorm_statistics(mean, variance)
        return normalize(
            inputs, mean, variance, effective_gamma, effective_beta,
            axis=self.axis, epsilon=self.epsilon,
        )

    def _update_renorm_statistics(self, mean, variance):
        dtype = mean.dtype
        stddev = tf.sqrt(variance + self.epsilon)
        self.renorm_mean.assign(
            moving_average(tf.cast(self.renorm_mean, dtype), mean, self.renorm_momentum)
        )
        self.renorm_stddev.assign(
            moving_average(tf.cast(self.renorm_stddev, dtype), stddev, self.renorm_momentum)
        )
        momentum = self._momentum(dtype)
        self.moving_mean.assign(
            moving_average(tf.cast(self.moving_mean, dtype), mean, momentum)
        )
        moving_stddev = moving_average(tf.cast(self.moving_stddev, dtype), stddev, momentum)
        self.moving_stddev.assign(moving_stddev)
        # relu: rounding may push stddev**2 - epsilon below zero.
        self.moving_variance.assign(tf.nn.relu(moving_stddev * moving_stddev - self.epsilon))

    def get_config(self):
        initializers = keras.initializers
        regularizers = keras.regularizers
        constraints = keras.constraints
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "synchronized": self.synchronized,
            "renorm": self.renorm,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
            "debiased": self.debiased,
            "implementation": self.implementation,
            "virtual_batch_size": self.virtual_batch_size,
        }
        return {**super().get_config(), **config}


# The batch-normalization layers tfbn's tools know: Keras's and this module's.
BATCH_NORM_TYPES = (keras.layers.BatchNormalization, BatchNorm)
