"""The BN-in-practice lesson runs its three cases on tiny data."""

from tfbn.tutorials import bn_in_practice as lesson


def test_the_lesson_runs_every_case(tiny_mnist, capsys):
    results = lesson.main(seeds=(0, 1), datasets=tiny_mnist, batch_size=32,
                          virtual_batch_size=8)
    moving, recalibrated = results["short run"]
    assert 0 <= moving <= 1 and 0 <= recalibrated <= 1
    assert set(results["large batches"]) == {"batch 32", "ghost batches of 8"}
    assert set(results["fine-tuning"]) == {"BN trained", "BN frozen"}
    for runs in [*results["large batches"].values(), *results["fine-tuning"].values()]:
        assert len(runs) == 2 and all(0 <= accuracy <= 1 for accuracy in runs)
    printed = capsys.readouterr().out
    assert "| dense1_bn |" in printed and "noise floor" in printed and " ± " in printed
