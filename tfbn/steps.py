"""The steps: the codelab's 1.0 to 4.2, then 5.0; which lesson script each one is, and the
result it aims at (the codelab's, or 5.0's targets).

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    script: str
    title: str
    codelab_accuracy: float | None = None  # the codelab's best test accuracy
    # (epoch, test accuracy) pairs a step beyond the codelab aims at: reached by that epoch.
    targets: tuple[tuple[int, float], ...] = ()
    uses_bn: bool = False

    def aim(self) -> str:
        """What the step is measured against, as `tfbn list` shows it."""
        if self.codelab_accuracy is not None:
            return f"codelab: {self.codelab_accuracy:.1%}"
        return "target: " + ", ".join(f"{accuracy:.1%} by epoch {epoch}"
                                      for epoch, accuracy in self.targets)

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
        Step(name="1.0", script="step_1_0_softmax",
             title="softmax regression, 784 -> 10, gradient descent",
             codelab_accuracy=0.927),
        Step(name="2.0", script="step_2_0_five_layers_sigmoid",
             title="five dense layers, sigmoid, Adam",
             codelab_accuracy=0.979),
        Step(name="2.1", script="step_2_1_five_layers_relu_lrdecay",
             title="ReLU instead of sigmoid, learning rate decay", codelab_accuracy=0.982),
        Step(name="2.2", script="step_2_2_five_layers_relu_lrdecay_dropout",
             title="dropout 0.25 after each layer", codelab_accuracy=0.982),
        Step(name="3.0", script="step_3_0_convolutional",
             title="three convolutional layers, dense 200",
             codelab_accuracy=0.989),
        Step(name="3.1", script="step_3_1_convolutional_bigger_dropout",
             title="bigger convolutions, dropout on the dense layer", codelab_accuracy=0.993),
        Step(name="4.0", script="step_4_0_batchnorm_five_layers_sigmoid",
             title="batch norm (scale and offset) before each sigmoid", codelab_accuracy=0.981,
             uses_bn=True),
        Step(name="4.1", script="step_4_1_batchnorm_five_layers_relu",
             title="batch norm (offset only) before each ReLU", codelab_accuracy=0.985,
             uses_bn=True),
        Step(name="4.2", script="step_4_2_batchnorm_convolutional",
             title="batch norm on every layer of the bigger conv net, dropout on dense",
             codelab_accuracy=0.995, uses_bn=True),
        Step(name="5.0", script="step_5_0_batchnorm_cosine_restarts",
             title="4.2's network in 4 epochs: a cosine schedule with one warm restart",
             targets=((1, 0.990), (4, 0.995)), uses_bn=True),
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
