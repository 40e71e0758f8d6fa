"""tfbn: Batch Normalization for TensorFlow/Keras, taught by running it.

`import tfbn` imports neither TensorFlow nor Keras: the names below load their module
when first used, so the `tfbn` command answers `--help` at once. Whenever TensorFlow is
imported afterwards, its start-up logs stay quiet (`tfbn.quiet`), and once Keras is loaded
tfbn's layers are registered with it, so `keras.saving.load_model` finds them.
"""

import importlib

from tfbn import quiet, saving

__version__ = "0.1.0"

_EXPORTS = {
    "BatchNorm": "tfbn.layer", "batch_norm": "tfbn.layer",
    "fold_batchnorm": "tfbn.fold", "export_inference_model": "tfbn.fold",
    "FoldResult": "tfbn.fold",
    "recalibrate_batchnorm": "tfbn.practice", "freeze_batchnorm": "tfbn.practice",
    "unfreeze_batchnorm": "tfbn.practice", "convert_batchnorm": "tfbn.practice",
    "diagnose_batchnorm": "tfbn.practice",
    "load_model": "tfbn.saving",
}
__all__ = [*_EXPORTS, "__version__"]

quiet.on_import(after_keras=saving.register_classes)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfbn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    saving.register_classes()
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})
