"""TensorBoard logging for a run: Keras's own callback plus what the BN lesson needs.

Keras's `TensorBoard` callback already writes, once per epoch, under `<logdir>/train` and
`<logdir>/validation`:

- scalars `epoch_loss` and `epoch_accuracy` (train, and test as "validation"), and
  `epoch_learning_rate`, the optimizer's schedule evaluated at its current step;
- a histogram of every weight, tagged `<layer>/<weight>/histogram`, which includes the BN
  layers' gamma, beta, moving_mean and moving_variance;
- the conceptual model graph (tag `keras`).

`BatchNormInspection` writes what Keras does not, under `<logdir>/inspection`:

- the op graph of a training forward pass (Keras 3's callback no longer writes one);
- for each BN layer, histograms of the values entering it (the pre-activations, before
  normalisation) and leaving it (after), tagged `<layer>/input_before_normalization` and
  `<layer>/output_after_normalization` (names that TensorBoard's alphabetical order shows
  before then after), computed on a fixed sample batch in inference mode, so they
  use the moving statistics, as the trained model does when it is used;
- an image `misclassified_digits`: the sample digits the model gets wrong, with their true
  and predicted labels.

Open it all with `tensorboard --logdir <logdir>`.
"""

import io
import math
import os

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfbn.digits import DIGIT_SIDE, digit_mosaic, ink, tile_corner
from tfbn.layer import BATCH_NORM_TYPES

INSPECTION_RUN = "inspection"
MISCLASSIFIED_TAG = "misclassified_digits"
BEFORE_TAG = "input_before_normalization"
AFTER_TAG = "output_after_normalization"


def tensorboard_callbacks(logdir, sample_images, sample_labels):
    """The callbacks that log a run to TensorBoard under `logdir`.

    `sample_images` (float32, shaped as the model takes them) and `sample_labels` (ints) are
    the fixed batch on which BN distributions and misclassified digits are shown each epoch.
    """
    return [
        keras.callbacks.TensorBoard(
            log_dir=str(logdir), histogram_freq=1, write_graph=True, update_freq="epoch"
        ),
        BatchNormInspection(logdir, sample_images, sample_labels),
    ]


def batch_norm_layers(model):
    """The model's top-level batch-normalisation layers, Keras's or tfbn's, in order."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, BATCH_NORM_TYPES)
    ]


HISTOGRAM_VALUES = 200_000


class BatchNormInspection(keras.callbacks.Callback):
    """Each epoch, logs BN input/output histograms and misclassified digits on a fixed batch.

    See the module docstring for the tags. Steps are epochs, as in Keras's callback, so a
    resumed run (`fit(..., initial_epoch=k)`) continues the same curves.
    """

    def __init__(self, logdir, sample_images, sample_labels, max_digits_shown=32):
        super().__init__()
        sample_images = np.asarray(sample_images, dtype=np.float32)
        sample_labels = np.asarray(sample_labels).astype(np.int64).reshape(-1)
        if len(sample_images) == 0:
            raise ValueError("sample_images is empty: BatchNormInspection needs digits to show")
        if len(sample_images) != len(sample_labels):
            raise ValueError(
                f"sample_images has {len(sample_images)} digits but sample_labels has "
                f"{len(sample_labels)} labels"
            )
        if sample_images[0].size != DIGIT_SIDE * DIGIT_SIDE:
            raise ValueError(
                f"sample_images must hold 28x28 digits; got shape {sample_images.shape}"
            )
        self.logdir = str(logdir)
        self.sample_images = sample_images
        self.sample_labels = sample_labels
        self.max_digits_shown = max_digits_shown
        self._writer = None
        self._probe = None
        self._bn_names = []

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, INSPECTION_RUN))
        bn_layers = batch_norm_layers(self.model)
        self._bn_names = [layer.name for layer in bn_layers]
        # One forward pass gives every BN layer's input and output and the predictions.
        probe_outputs = [t for layer in bn_layers for t in (layer.input, layer.output)]
        inputs = self.model.inputs[0] if len(self.model.inputs) == 1 else self.model.inputs
        self._probe = keras.Model(inputs, probe_outputs + list(self.model.outputs))
        with self._writer.as_default():
            tf.summary.graph(training_forward_graph(self.model))
        self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        outputs = self._probe(self.sample_images, training=False)
        # A model without BN gives a probe with one output, returned bare, not in a list.
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        outputs = [np.asarray(output) for output in outputs]
        predictions = outputs[-1].argmax(axis=-1)
        with self._writer.as_default(step=epoch):
            for index, name in enumerate(self._bn_names):
                tf.summary.histogram(f"{name}/{BEFORE_TAG}", histogram_sample(outputs[2 * index]))
                tf.summary.histogram(f"{name}/{AFTER_TAG}",
                                     histogram_sample(outputs[2 * index + 1]))
            figure = render_misclassified(
                self.sample_images,
                self.sample_labels,
                predictions,
                title=f"epoch {epoch + 1}",
                max_digits_shown=self.max_digits_shown,
            )
            tf.summary.image(MISCLASSIFIED_TAG, figure_to_image_tensor(figure))
        self._writer.flush()

    def on_train_end(self, logs=None):
        self._writer.close()


def histogram_sample(values: np.ndarray, limit: int = None) -> np.ndarray:
    """At most `limit` of `values`, evenly strided through them (all channels and positions).

    TensorBoard's histogram op one-hot encodes every value into its 30 buckets: the 18.8
    million values of step 4.2's first BN layer on 1,000 digits took 2.3 GB per histogram
    (a 3-step run of 4.2 peaked at 7.5 GB instead of 1.2). A strided sample of 200,000 values
    draws the same histogram.
    """
    limit = HISTOGRAM_VALUES if limit is None else limit
    flat = np.asarray(values).reshape(-1)
    if flat.size <= limit:
        return flat
    return flat[::-(-flat.size // limit)]


def training_forward_graph(model):
    """The TensorFlow graph of `model` called in training mode (BN uses batch statistics).

    Only traced, never run, so the moving statistics are not touched.
    """
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in model.inputs]
    forward = tf.function(
        lambda *inputs: model(list(inputs) if len(inputs) > 1 else inputs[0], training=True)
    )
    return forward.get_concrete_function(*specs).graph


def render_misclassified(images, labels, predictions, title="", max_digits_shown=32):
    """A figure of the digits whose prediction differs from the label, captioned true → predicted.

    The digits are drawn as one mosaic (`tfbn.digits`, as on the dashboard) with each caption
    in its tile's corner: one axes, not one per digit, cheap enough to run every epoch.
    """
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    heading = f"Misclassified: {len(wrong)} of {len(images)} sample digits"
    if title:
        heading = f"{heading} ({title})"
    shown = wrong[:max_digits_shown]
    if len(shown) == 0:
        figure = Figure(figsize=(6, 1.2), dpi=100)
        figure.text(0.5, 0.5, heading, ha="center", va="center", fontsize=12)
        return figure
    caption = "true → predicted"
    if len(wrong) > len(shown):
        caption = f"first {len(shown)} shown, {caption}"
    columns = min(8, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(max(0.9 * columns, 5.0), 0.9 * rows + 0.7), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 0.9 * rows / (0.9 * rows + 0.7)))
    axes.imshow(digit_mosaic(ink(images)[shown], np.ones(len(shown), bool), columns),
                interpolation="nearest")
    for position, index in enumerate(shown):
        axes.text(*tile_corner(position, columns), f"{labels[index]} → {predictions[index]}",
                  ha="left", va="top", fontsize=8, fontweight="bold", color="darkred")
    axes.set_axis_off()
    figure.suptitle(f"{heading}\n{caption}", fontsize=11)
    return figure


def figure_to_image_tensor(figure):
    """A [1, height, width, 4] uint8 tensor of `figure` rendered as PNG, for tf.summary.image."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return tf.expand_dims(tf.image.decode_png(buffer.getvalue(), channels=4), 0)
