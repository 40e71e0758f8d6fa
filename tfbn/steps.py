"""The codelab's steps, 1.0 to 4.2: which lesson script each one is, and the codelab's result.

The lesson itself (the model, the optimizer and schedule, `model.fit`) is the step's script
in `tutorials/`, installed as the module `tfbn.tutorials.<script>`: `tfbn run STEP` imports
that module and calls its `main`, so the file a learner reads is the code that runs.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    script: str
    title: str
    codelab_accuracy: float
    uses_bn: bool = False

    def module(self) -> ModuleType:
        """The step's lesson script, `tutorials/<script>.py`, as a module."""
        return importlib.import_module(f"tfbn.tutorials.{self.script}")

    def epochs(self) -> int:
        """The lesson's `EPOCHS`, read from its source: no TensorFlow import (`tfbn list`)."""
        spec = importlib.util.find_spec(f"tfbn.tutorials.{self.script}")
        tree = ast.parse(Path(spec.origin).read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "EPOCHS"):
                return ast.literal_eval(node.value)
        raise LookupError(f"{spec.origin} sets no EPOCHS")


STEPS = {
    step.name: step for step in [
        Step("1.0", "step_1_0_softmax", "softmax regression, 784 -> 10, gradient descent",
             codelab_accuracy=0.927),
        Step("2.0", "step_2_0_five_layers_sigmoid", "five dense layers, sigmoid, Adam",
             codelab_accuracy=0.979),
        Step("2.1", "step_2_1_five_layers_relu_lrdecay",
             "ReLU instead of sigmoid, learning rate decay", codelab_accuracy=0.982),
        Step("2.2", "step_2_2_five_layers_relu_lrdecay_dropout",
             "dropout 0.25 after each layer", codelab_accuracy=0.982),
        Step("3.0", "step_3_0_convolutional", "three convolutional layers, dense 200",
             codelab_accuracy=0.989),
        Step("3.1", "step_3_1_convolutional_bigger_dropout",
             "bigger convolutions, dropout on the dense layer", codelab_accuracy=0.993),
        Step("4.0", "step_4_0_batchnorm_five_layers_sigmoid",
             "batch norm (scale and offset) before each sigmoid", codelab_accuracy=0.981,
             uses_bn=True),
        Step("4.1", "step_4_1_batchnorm_five_layers_relu",
             "batch norm (offset only) before each ReLU", codelab_accuracy=0.985,
             uses_bn=True),
        Step("4.2", "step_4_2_batchnorm_convolutional",
             "batch norm on every layer of the bigger conv net, dropout on dense",
             codelab_accuracy=0.995, uses_bn=True),
    ]
}


def get(name: str) -> Step:
    """The step called `name` ("4.2"); a ValueError listing the known steps otherwise."""
    try:
        return STEPS[name]
    except KeyError:
        known = ", ".join(STEPS)
        raise ValueError(f"unknown step {name!r}; known steps: {known}") from None


def load(name: str) -> ModuleType:
    """The lesson module of step `name`: its `build_model(bn)`, `make_optimizer()`,
    `EPOCHS` and `main(config)`."""
    return get(name).module()
