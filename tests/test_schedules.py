import math

import keras
import pytest

from tfbn.schedules import DecayToFloor


def test_matches_the_codelab_formula():
    schedule = DecayToFloor(peak=0.003, floor=0.0001, decay_steps=2000)
    for step in (0, 1, 1999, 2000, 10_000):
        expected = 0.0001 + 0.003 * math.exp(-step / 2000)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
        assert schedule.value_at(step) == pytest.approx(expected, rel=1e-12)


def test_serializes_inside_an_optimizer():
    schedule = DecayToFloor(peak=0.02, floor=0.0001, decay_steps=1600)
    optimizer = keras.optimizers.Adam(schedule)
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert isinstance(restored._learning_rate, DecayToFloor)  # the schedule, not a number
    assert restored._learning_rate.get_config() == schedule.get_config()
    assert keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)).get_config() == schedule.get_config()


@pytest.mark.parametrize("kwargs", [dict(peak=-1, floor=0, decay_steps=1),
                                    dict(peak=1, floor=0, decay_steps=0)])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DecayToFloor(**kwargs)
