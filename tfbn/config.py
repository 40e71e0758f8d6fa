"""The run configuration: one small typed object, and the command line made from it.

Every option of `tfbn run STEP` and of `python tutorials/<script>.py` is a field of
`RunConfig`; `add_arguments` turns the fields of any such dataclass (experiments have their
own) into argparse options, so the two can never drift apart. Values are checked in
`__post_init__` (`check_fields` does the types and choices), whatever their origin.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Optional

BN_CHOICES = ("custom", "keras", "none")
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")


def option(help_text: str, choices: tuple[str, ...] | None = None, **metadata):
    """A field's metadata as `add_arguments` reads it: the option's help and choices."""
    return {"help": help_text, "choices": choices, **metadata}


@dataclasses.dataclass
class RunConfig:
    """Options of one training run. `None` means "the step's own default"."""

    epochs: Optional[int] = dataclasses.field(
        default=None, metadata=option("epochs to train (default: the step's)"))
    steps_per_epoch: Optional[int] = dataclasses.field(
        default=None, metadata=option("batches per epoch (default: the whole training set)"))
    batch_size: int = dataclasses.field(
        default=100, metadata=option("training batch size (global, over all replicas)"))
    bn: Optional[str] = dataclasses.field(
        default=None,
        metadata=option("batch norm layer: tfbn.BatchNorm (custom), keras's built-in, or none "
                        "(default: custom on BN steps, none elsewhere)", BN_CHOICES))
    learning_rate_scale: float = dataclasses.field(
        default=1.0, metadata=option("multiply the step's learning-rate schedule by this"))
    stop_at: Optional[float] = dataclasses.field(
        default=None,
        metadata=option("stop after the first epoch whose test accuracy reaches this (0.995)"))
    logdir: Optional[str] = dataclasses.field(
        default=None,
        metadata=option("run directory: metrics, TensorBoard logs, dashboard, resume state"))
    seed: int = dataclasses.field(default=0, metadata=option("random seed"))
    mixed_precision: bool = dataclasses.field(
        default=False,
        metadata=option("mixed_float16 on a GPU, mixed_bfloat16 on a CPU"))
    xla: bool = dataclasses.field(default=False, metadata=option("compile with XLA"))
    strategy: str = dataclasses.field(
        default="default",
        metadata=option("tf.distribute strategy (multiworker reads TF_CONFIG)",
                        STRATEGY_CHOICES))
    live: bool = dataclasses.field(
        default=False, metadata=option("show the dashboard live when a display exists"))
    export: Optional[str] = dataclasses.field(
        default=None,
        metadata=option("write the BN-folded inference model (.keras and SavedModel) here"))
    verbose: int = dataclasses.field(
        default=1, metadata=option("Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch"))
    restart: bool = dataclasses.field(
        default=False,
        metadata=option("archive the run the --logdir holds (in its archive/) and start over"))

    def __post_init__(self):
        check_fields(self)
        check_positive_integers(self, "epochs", "steps_per_epoch", "batch_size")
        check_positive(self, "learning_rate_scale")
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise ValueError(f"stop_at is a test accuracy in (0, 1], got {self.stop_at!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed!r}")
        check_verbose(self)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_fields(config) -> None:
    """Checks each field of a config dataclass against its annotation and its choices."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        _check_type(field.name, value, _field_type(type(config), field))
        choices = field.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise ValueError(f"{field.name} must be one of {', '.join(map(str, choices))}; "
                             f"got {value!r}")


def check_positive_integers(config, *names: str) -> None:
    """Each of the fields `names` is at least 1 (or None: "the default")."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_positive(config, *names: str) -> None:
    """Each of the number fields `names` is greater than 0, and finite."""
    for name in names:
        value = getattr(config, name)
        if not 0 < value < math.inf:
            raise ValueError(f"{name} must be positive and finite, got {value!r}")


def check_fraction(config, *names: str) -> None:
    """Each of the fields `names` is in [0, 1) (a rate or a momentum)."""
    for name in names:
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_divides(config, divisor: str, total: str) -> None:
    """The field `divisor` divides the field `total` (records fall on whole steps)."""
    if getattr(config, total) % getattr(config, divisor):
        raise ValueError(f"{divisor} must divide {total} ({getattr(config, total)}), "
                         f"got {getattr(config, divisor)!r}")


def check_verbose(config) -> None:
    if config.verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {config.verbose!r}")


def _field_type(config_class: type, field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(config_class)[field.name]
    arguments = [a for a in typing.get_args(hint) if a is not type(None)]
    return arguments[0] if arguments else hint


def _check_type(name: str, value, expected: type) -> None:
    if value is None:
        return
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if expected is int and isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ValueError(f"{name} must be {expected.__name__}, got {value!r}")


def add_arguments(parser: argparse.ArgumentParser, defaults=None, config_class: type = None):
    """Adds one `--option` per field of a config dataclass (RunConfig unless `config_class`
    or `defaults` says otherwise); `defaults` sets what an omitted option means."""
    config_class = config_class or (type(defaults) if defaults is not None else RunConfig)
    defaults = defaults if defaults is not None else config_class()
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kind = _field_type(config_class, field)
        help_text = field.metadata.get("help", field.name.replace("_", " "))
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        if default is not None:
            help_text = f"{help_text} [{default}]"
        parser.add_argument(flag, dest=field.name, type=kind, default=default,
                            choices=field.metadata.get("choices"),
                            metavar=None if field.metadata.get("choices") else field.name.upper(),
                            help=help_text)


def from_arguments(namespace: argparse.Namespace, config_class: type = None):
    """The config dataclass (RunConfig by default) the parsed options describe."""
    config_class = config_class or RunConfig
    return config_class(**{field.name: getattr(namespace, field.name)
                           for field in dataclasses.fields(config_class)})
