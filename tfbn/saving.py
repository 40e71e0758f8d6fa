"""Loading saved models that hold tfbn's layers."""

from __future__ import annotations

import keras


def load_model(path, **kwargs) -> keras.Model:
    """`keras.saving.load_model(path)`, with every tfbn class registered first.

    A `.keras` file that holds `tfbn.BatchNorm` (or `tfbn.models.Bias`, or the codelab's
    learning-rate schedule) names them `tfbn>BatchNorm` and so on; Keras finds them only once
    they are registered, which importing their modules does. Without it Keras fails with a
    long message that never says so.
    """
    from tfbn import layer, models, schedules  # noqa: F401  (registers the classes)

    return keras.saving.load_model(path, **kwargs)
