"""Loading saved models that hold tfbn's layers."""

from __future__ import annotations

import sys


def register_classes() -> None:
    """Registers tfbn's Keras classes (`tfbn>BatchNorm`, `tfbn>Bias`, the codelab's
    learning-rate schedule) with Keras's serialization, which importing their modules does.

    `import tfbn` calls it once Keras is loaded, and again after each lazy name it imports.
    While a tfbn module is still being imported (Keras loaded from inside it) it waits for
    the next call: importing the others then would meet that module half-made.
    """
    if any(getattr(getattr(module, "__spec__", None), "_initializing", False)
           for name, module in list(sys.modules.items()) if name.startswith("tfbn.")):
        return
    from tfbn import layer, models, schedules  # noqa: F401


def load_model(path, **kwargs):
    """`keras.saving.load_model(path)`, with every tfbn class registered first.

    A `.keras` file that holds `tfbn.BatchNorm` (or `tfbn.models.Bias`, or the codelab's
    learning-rate schedule) names them `tfbn>BatchNorm` and so on; Keras finds them only once
    they are registered. Without it Keras fails with a long message that never says so.
    """
    import keras

    register_classes()
    return keras.saving.load_model(path, **kwargs)
