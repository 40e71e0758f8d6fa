"""The benchmark scripts run end to end on tiny settings; their counting and models are right.

No timing is asserted: throughputs on shared CPUs say nothing in a test.
"""

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import keras
import pytest

import tfbn
from tfbn import steps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is created,
    # and profile_ops imports bench_batchnorm by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = load_script("bench_batchnorm")
profile_ops = load_script("profile_ops")


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    json_path = tmp_path_factory.mktemp("bench") / "results.json"
    config = bench.BenchmarkConfig(rounds=2, batch_size=8, tiny=True, json=str(json_path))
    log_lines = []
    results = bench.main(config, log=log_lines.append)
    return results, json.loads(json_path.read_text()), "\n".join(log_lines)


def test_tiny_run_measures_every_step_and_variant_on_both_clocks(tiny_results):
    results, _, _ = tiny_results
    for step_name in bench.STEPS:
        assert set(results["training"][step_name]) == set(bench.VARIANTS)
        assert set(results["inference"][step_name]) == {*bench.VARIANTS, bench.FOLDED}
        for section in ("training", "inference"):
            for summary in results[section][step_name].values():
                for clock in bench.CLOCKS:
                    rates = summary[clock]["per_round_images_per_second"]
                    assert len(rates) == 2
                    assert all(rate > 0 for rate in rates)


def test_ratios_are_medians_of_per_round_ratios_to_keras(tiny_results):
    results, _, _ = tiny_results
    for step_name in bench.STEPS:
        for clock in bench.CLOCKS:
            variants = {variant: summary[clock]
                        for variant, summary in results["training"][step_name].items()}
            keras_rates = variants["keras"]["per_round_images_per_second"]
            assert variants["keras"]["ratio"] == 1.0
            for summary in variants.values():
                expected = [rate / base for rate, base
                            in zip(summary["per_round_images_per_second"], keras_rates)]
                assert summary["per_round_ratios"] == pytest.approx(expected)
                assert summary["ratio"] == pytest.approx(statistics.median(expected))
                assert summary["lowest_ratio"] <= summary["ratio"] <= summary["highest_ratio"]


def test_ops_show_which_batch_norm_path_each_variant_takes(tiny_results):
    results, _, _ = tiny_results
    for step_name in bench.STEPS:
        ops = results["ops"][step_name]
        assert ops["fused"]["FusedBatchNormV3"] == 4
        assert ops["fused"]["FusedBatchNormGradV3"] == 4
        for variant in ("keras", "moments"):
            assert ops[variant]["FusedBatchNormV3"] == 0
            assert ops[variant]["SquaredDifference"] == 4


def test_folded_model_folds_every_layer_and_predicts_the_same(tiny_results):
    results, _, _ = tiny_results
    for step_name in bench.STEPS:
        folded = results["inference"][step_name][bench.FOLDED]
        assert (folded["folded_layers"], folded["kept_layers"]) == (4, 0)
        assert folded["max_abs_prediction_difference"] < 1e-5


def test_pipeline_and_flops_sections(tiny_results):
    results, _, _ = tiny_results
    for step_name in bench.STEPS:
        pipeline = results["pipeline"][step_name]
        assert pipeline["epoch_images"] == bench.TINY_TRAIN_SIZE
        for clock in bench.CLOCKS:
            assert pipeline["first_epoch_images_per_second"][clock] > 0
            assert pipeline["cached_epoch_images_per_second"][clock] > 0
            assert len(pipeline["fed_over_resident"][clock]["per_round_ratios"]) == 2
        flops = results["flops"][step_name]
        # The profiler also counts BN, activations, loss and Adam, a few percent more.
        assert (flops["analytic_training_flops_per_image"]
                <= flops["profiled_training_flops_per_image"]
                <= 1.3 * flops["analytic_training_flops_per_image"])
        for clock in bench.CLOCKS:
            training_rates = results["training"][step_name]["auto"][clock][
                "per_round_images_per_second"]
            fractions = flops[clock]["per_round_fractions_of_matmul"]
            implied_matmul_rates = [rate * flops["analytic_training_flops_per_image"] / fraction
                                    for rate, fraction in zip(training_rates, fractions)]
            # Every round divides by the same matmul measurement's rate of that round.
            assert statistics.median(implied_matmul_rates) == pytest.approx(
                flops[clock]["matmul_flops_per_second"])


def test_json_holds_the_printed_results(tiny_results):
    results, written, log = tiny_results
    assert written["training"] == results["training"]
    assert written["machine"]["cores"] >= 1
    assert "Training throughput" in log and "Achieved FLOP/s" in log


def test_analytic_flops_count_two_per_multiply_add():
    dense = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    # First layer: forward and weight gradient only.
    assert bench.analytic_training_flops_per_image(dense) == 2 * 2 * 784 * 10

    conv = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])
    conv_forward = 2 * (8 * 8) * (3 * 3 * 1 * 4)
    dense_forward = 2 * (8 * 8 * 4) * 5
    assert bench.analytic_training_flops_per_image(conv) == 2 * conv_forward + 3 * dense_forward


@pytest.mark.parametrize("step_name", list(bench.STEPS))
def test_cloned_models_match_the_librarys_custom_model(step_name):
    reference = steps.load(step_name).build_model("keras")
    cloned = bench.with_tfbn_layers(reference, "auto")
    library = steps.load(step_name).build_model("custom")
    assert ([(type(layer).__name__, layer.get_config()) for layer in cloned.layers]
            == [(type(layer).__name__, layer.get_config()) for layer in library.layers])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="rounds must be a positive integer, got 0"):
        bench.BenchmarkConfig(rounds=0)
    with pytest.raises(ValueError, match="seconds_per_timing must be positive, got -1"):
        bench.BenchmarkConfig(seconds_per_timing=-1)
    with pytest.raises(SystemExit):
        bench.parse_config(["--batch-size", "0"])
    assert bench.parse_config(["--tiny", "--rounds", "3"]) == bench.BenchmarkConfig(
        rounds=3, tiny=True)



@pytest.mark.parametrize("mode", ["train", "infer"])
def test_profile_splits_kernel_time_by_op_type_and_bn_layers(mode):
    config = profile_ops.ProfileConfig(step="4.1", mode=mode, batch_size=8, calls=1)
    profiles = profile_ops.main(config, log=lambda line: None)
    expected = {*bench.VARIANTS, bench.FOLDED} if mode == "infer" else set(bench.VARIANTS)
    assert set(profiles) == expected
    for variant, profile in profiles.items():
        op_types = set(profile["milliseconds_by_op_type"])
        ran_fused_kernel = any("FusedBatchNorm" in op_type for op_type in op_types)
        assert ran_fused_kernel == (variant == "fused")
        assert profile["total_milliseconds"] == pytest.approx(
            sum(profile["milliseconds_by_op_type"].values()))
        if variant in (bench.FOLDED, bench.NO_BN):  # no BN layer left, or none at all
            assert profile["batch_norm_milliseconds"] == 0
        else:
            assert 0 < profile["batch_norm_milliseconds"] < profile["total_milliseconds"]


def test_batch_norm_nodes_are_matched_by_whole_scope_name():
    names = {"dense1_bn"}
    assert profile_ops.is_batch_norm_node("dense_network_1/dense1_bn_1/moments/mean", names)
    assert profile_ops.is_batch_norm_node(
        "gradient_tape/dense_network_1/dense1_bn/batchnorm/mul/Mul", names)
    assert not profile_ops.is_batch_norm_node("dense_network_1/dense1/MatMul", names)
    assert not profile_ops.is_batch_norm_node("dense_network_1/dense1_bn_extra/Add", names)


def test_profile_rejects_bad_options():
    with pytest.raises(ValueError, match="mode must be one of train, infer, got 'eval'"):
        profile_ops.ProfileConfig(mode="eval")
    with pytest.raises(ValueError, match="calls must be a positive integer, got 0"):
        profile_ops.ProfileConfig(calls=0)



def test_the_codelab_moving_average_variant_trains_with_the_codelab_decay(tiny_mnist,
                                                                          monkeypatch):
    comparison = load_script("codelab_moving_average")
    lesson = steps.load("4.1")
    built = []
    build = lesson.build_model
    monkeypatch.setattr(lesson, "build_model", lambda bn: built.append(build(bn)) or built[-1])
    plain = comparison.run("4.1", 0, False, epochs=1, steps_per_epoch=2, arrays=tiny_mnist)
    codelab = comparison.run("4.1", 0, True, epochs=1, steps_per_epoch=2, arrays=tiny_mnist)
    momenta = [{(layer.momentum, layer.debiased) for layer in model.layers
                if isinstance(layer, tfbn.BatchNorm)} for model in built]
    assert momenta == [{(0.99, False)}, {(0.998, True)}]
    assert plain["steps"] == codelab["steps"] == 2
    assert plain["test_loss"] != codelab["test_loss"]


def test_bn_overhead_is_the_time_beyond_the_network_without_bn():
    rounds = {("4.2", "keras"): [100.0, 50.0], ("4.2", "auto"): [125.0, 62.5],
              ("4.2", bench.NO_BN): [200.0, 100.0]}
    summary = bench.summarize({"wall": rounds, "cpu": rounds}, "4.2", "keras")
    keras_cost, ours = summary["keras"]["cpu"], summary["auto"]["cpu"]
    # 1/100 - 1/200 = 5 ms per image, half the step; 1/125 - 1/200 = 3 ms, 0.6 of keras's.
    assert keras_cost["overhead_microseconds_per_image"] == pytest.approx(7500)  # median
    assert keras_cost["overhead_fraction_of_step"] == pytest.approx(0.5)
    assert ours["overhead_ratio"] == pytest.approx(0.6)
    assert ours["overhead_fraction_of_step"] == pytest.approx(0.375)
    assert "overhead_ratio" not in summary[bench.NO_BN]["cpu"]


time_to_accuracy = load_script("time_to_accuracy")


def write_history(directory, accuracies, cpu_per_epoch=10.0):
    directory.mkdir(parents=True)
    rows = ["epoch,val_accuracy,val_loss,seconds,cpu_seconds"]
    rows += [f"{epoch},{accuracy},0.1,{5.0 * (epoch + 1)},{cpu_per_epoch * (epoch + 1)}"
             for epoch, accuracy in enumerate(accuracies)]
    (directory / "history.csv").write_text("\n".join(rows) + "\n")


def test_time_to_accuracy_takes_the_first_epoch_at_each_threshold_and_the_seeds_median(tmp_path):
    out = tmp_path / "out"
    write_history(out / "5.0-seed0", [0.991, 0.989, 0.994, 0.996])
    write_history(out / "5.0-seed1", [0.986, 0.993, 0.995, 0.995], cpu_per_epoch=20.0)
    write_history(out / "5.0-seed2", [0.980, 0.991, 0.992, 0.994])
    summary = time_to_accuracy.summarize(out, ["5.0", "4.2"], [0, 1, 2])
    assert list(summary) == ["5.0"]  # 4.2 has no run directories
    seeds = summary["5.0"]["seeds"]
    assert seeds[0]["reached"]["0.990"] == {"epochs": 1, "cpu_seconds": 10.0, "seconds": 5.0}
    assert seeds[1]["reached"]["0.993"]["epochs"] == 2  # not fooled by seed 0's dip
    assert seeds[2]["reached"]["0.995"]["epochs"] == time_to_accuracy.NOT_REACHED
    median = summary["5.0"]["median"]
    assert median["0.985"]["epochs"] == 1 and median["0.990"]["epochs"] == 2
    # Each measure's own median: epochs 4, 3, never; CPU 40, 60, never; wall 20, 15, never.
    assert median["0.995"] == {"epochs": 4, "cpu_seconds": 60.0, "seconds": 20.0}
    table = time_to_accuracy.markdown(summary)
    assert "| 5.0 | 3 | 1 (" in table and "99.10 98.90 99.40 99.60" in table
    write_history(out / "4.2-seed0", [0.97, 0.98])
    write_history(out / "4.2-seed1", [0.97, 0.99])
    summary = time_to_accuracy.summarize(out, ["4.2"], [0, 1])
    assert "not reached" in time_to_accuracy.markdown(summary)  # the median of 2 and inf


def test_time_to_accuracy_runs_each_seed_as_tfbn_run_and_writes_the_table(tmp_path, monkeypatch):
    commands = []

    def fake_run(command):
        commands.append(command)
        logdir = Path(command[command.index("--logdir") + 1])
        write_history(logdir, [0.99, 0.996])
        return type("Finished", (), {"returncode": 0})()

    monkeypatch.setattr(time_to_accuracy.subprocess, "run", fake_run)
    out = tmp_path / "out"
    assert time_to_accuracy.main(["--runs", "4.2", "5.0 no BN", "--seeds", "0", "1",
                                  "--out", str(out), "--steps-per-epoch", "5"]) == 0
    assert len(commands) == 4
    assert commands[0][1:] == ["-m", "tfbn.cli", "run", "4.2", "--epochs", "12", "--stop-at",
                               "0.995", "--seed",
                               "0", "--logdir", str(out / "4.2-seed0"), "--verbose", "2",
                               "--steps-per-epoch", "5"]
    assert commands[3][4:8] == ["5.0", "--bn", "none", "--learning-rate-scale"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["5.0 no BN"]["median"]["0.995"]["epochs"] == 2
    assert (out / "summary.md").read_text().count("\n") == 4  # header, rule, two runs


def test_run_overhead_reports_each_variants_time_against_the_bare_step():
    run_overhead = load_script("run_overhead")
    rounds = [{"step": {"images_per_second": 1000.0, "images_per_cpu_second": 500.0},
               "logdir": {"images_per_second": 800.0, "images_per_cpu_second": 400.0}},
              {"step": {"images_per_second": 900.0, "images_per_cpu_second": 450.0},
               "logdir": {"images_per_second": 600.0, "images_per_cpu_second": 300.0}}]
    lines = run_overhead.table(rounds, ["step", "logdir"]).splitlines()
    assert lines[2] == "| step | 950 | 475 | 1.00 (1.00-1.00) |"
    assert lines[3] == "| logdir | 700 | 350 | 1.38 (1.25-1.50) |"  # 1000/800, 900/600
    with pytest.raises(SystemExit):
        run_overhead.main(["--epochs", "1"])


def test_schedule_ablation_builds_the_schedules_it_names():
    ablation = load_script("schedule_ablation")
    def parse(*chosen):
        options = dict(restarts=None, one_cycle=None, cycles=None, warmup=0.1, epochs=4)
        return argparse.Namespace(**{**options, **dict(chosen)})

    one_cycle = ablation.make_schedule(parse(("one_cycle", 0.01)), steps_per_epoch=100)
    assert float(one_cycle(0)) == pytest.approx(0.01 / 25)
    assert float(one_cycle(40)) == pytest.approx(0.01)  # the end of the 10% warm-up
    assert float(one_cycle(399)) < 1e-4
    cycles = ablation.make_schedule(parse(("cycles", "1:0.02,3:0.01")), steps_per_epoch=100)
    assert float(cycles(99)) < 1e-4 and float(cycles(100)) == pytest.approx(0.01 / 25)
    assert float(cycles(130)) == pytest.approx(0.01)
    restarts = ablation.make_schedule(parse(("restarts", "0.02,3,1.0")), steps_per_epoch=100)
    assert isinstance(restarts, keras.optimizers.schedules.CosineDecayRestarts)
    assert float(restarts(100)) == pytest.approx(0.02, rel=1e-3)
