"""tfbn: Batch Normalization for TensorFlow/Keras, taught by running it."""

from tfbn.quiet import import_tensorflow

import_tensorflow()  # before anything imports TensorFlow loudly (see tfbn.quiet)

# isort: split

from tfbn.fold import FoldResult, export_inference_model, fold_batchnorm
from tfbn.layer import BatchNorm, batch_norm
from tfbn.practice import (convert_batchnorm, diagnose_batchnorm, freeze_batchnorm,
                           recalibrate_batchnorm, unfreeze_batchnorm)
from tfbn.saving import load_model

__version__ = "0.1.0"

__all__ = ["BatchNorm", "batch_norm", "fold_batchnorm", "export_inference_model",
           "FoldResult", "load_model", "recalibrate_batchnorm", "freeze_batchnorm",
           "unfreeze_batchnorm", "convert_batchnorm", "diagnose_batchnorm", "__version__"]
