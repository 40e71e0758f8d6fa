"""Checks the experiment tests share (a module of its own: `conftest` names two modules
here, this directory's and keras_suite's, and which one an import finds depends on what
pytest collected first)."""

import numpy as np
import pytest


def assert_spread_of(summary: dict, values) -> None:
    """`summary` is the `spread` of exactly `values`, one per seed."""
    assert summary["values"] == pytest.approx(list(values))
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["sd"] == pytest.approx(np.std(values, ddof=1))
