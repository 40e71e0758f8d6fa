"""tf.distribute on CPU: two logical devices in this process, two worker processes on loopback.

The layer-level proof (synchronized statistics equal one device on the global batch,
local ones differ) is in test_layer.py; these tests run the training paths around it.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import multi_worker_run
from tfbn import BatchNorm, devices, training
from tfbn.config import RunConfig

QUICK = RunConfig(epochs=1, steps_per_epoch=2, batch_size=16, verbose=0)
# Each worker needs about 15 s of CPU; the margin is for a heavily shared machine.
WORKER_TIMEOUT_SECONDS = 180


def test_mirrored_strategy_is_one_per_process_over_both_logical_cpus():
    strategy = devices.make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert devices.make_strategy("mirrored") is strategy


def test_mirrored_training_with_synchronized_bn_matches_one_device(
        tiny_mnist, tmp_path, capsys, monkeypatch, two_replica_strategy):
    # This process already runs the fixture's MirroredStrategy, and two in one process
    # collide (see conftest.py), so training gets that one.
    make_strategy = devices.make_strategy
    monkeypatch.setattr(devices, "make_strategy", lambda name: (
        two_replica_strategy if name == "mirrored" else make_strategy(name)))
    # Each step takes the whole training set (64 images), so both runs see the same global
    # batches whatever order their shuffles give.
    full_batches = QUICK.replace(steps_per_epoch=None, batch_size=64)
    one_device = training.train("4.1", full_batches, arrays=tiny_mnist)
    capsys.readouterr()
    mirrored = training.train("4.1", full_batches.replace(strategy="mirrored",
                                                          logdir=str(tmp_path)),
                              arrays=tiny_mnist)
    printed = capsys.readouterr().out
    assert "strategy: mirrored (2 replica(s))" in printed
    assert "batch norm: custom (statistics synchronized over the replicas)" in printed
    assert "global batch size: 64 (32 per replica)" in printed
    assert mirrored["replicas"] == 2 and one_device["replicas"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["strategy"] == "mirrored"
    assert (tmp_path / "dashboard.png").exists()  # the callbacks ran under the strategy too
    # Same global batches, same learning rate: 32 + 32 images with synchronized BN and
    # summed gradients take the steps one device takes with 64.
    assert mirrored["steps"] == one_device["steps"] == 1
    assert mirrored["test_loss"] == pytest.approx(one_device["test_loss"], rel=1e-4)
    assert mirrored["test_accuracy"] == one_device["test_accuracy"]


def test_a_non_chief_worker_leaves_the_run_directory_to_the_chief(
        tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(devices, "is_chief", lambda strategy: False)
    monkeypatch.setattr(devices, "worker_index", lambda strategy: 1)
    run_dir = tmp_path / "run"
    metrics = training.train("4.1", QUICK.replace(logdir=str(run_dir)), arrays=tiny_mnist)
    assert metrics["steps"] == 2
    assert f"this worker keeps its resume state in {run_dir / 'backup-worker-1'}" in (
        capsys.readouterr().out)
    # Its resume state was written there and removed when training finished.
    assert list(run_dir.iterdir()) == []


def test_synchronize_batch_norm_flags_every_bn_layer_nested_too():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((3,)), BatchNorm(), keras.layers.Dense(3), inner])
    assert devices.synchronize_batch_norm(model) == 2
    assert model.layers[0].synchronized and inner.layers[0].synchronized


def test_strategy_names_and_missing_tf_config(monkeypatch):
    assert devices.make_strategy("default").num_replicas_in_sync == 1
    assert devices.is_chief(devices.make_strategy("default"))
    assert devices.worker_index(devices.make_strategy("default")) == 0
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        devices.make_strategy("multiworker")
    with pytest.raises(ValueError, match="'tpu'"):
        devices.make_strategy("tpu")


def free_loopback_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(work_dir: Path, count: int = 2) -> list[str]:
    """Starts `count` multi_worker_run.py processes as one cluster; their outputs.

    A worker that fails leaves the others waiting on collectives, so the first failure
    (or the timeout) stops them all.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(count)]}
    script = Path(multi_worker_run.__file__)
    processes = []
    for index in range(count):
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        log = open(work_dir / f"worker-{index}.log", "w")
        processes.append(subprocess.Popen([sys.executable, str(script), str(work_dir)],
                                          env=environment, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
    try:
        while any(process.poll() is None for process in processes):
            failed = [p for p in processes if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = [(work_dir / f"worker-{index}.log").read_text() for index in range(count)]
    for index, process in enumerate(processes):
        assert process.returncode == 0, f"worker {index} failed:\n{logs[index][-3000:]}"
    return logs


def test_two_worker_processes_train_alike(tiny_mnist, tmp_path):
    (x_train, y_train), (x_test, y_test) = tiny_mnist
    np.savez(tmp_path / "tiny_mnist.npz", x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)
    logs = run_workers(tmp_path)

    # training.train: both workers ran the same two global steps.
    for log in logs:
        assert "strategy: multiworker (2 replica(s))" in log
        assert "global batch size: 16 (8 per replica)" in log
    metrics = [json.loads((tmp_path / f"metrics-{i}.json").read_text()) for i in range(2)]
    assert metrics[0]["steps"] == metrics[1]["steps"] == 2
    assert metrics[0]["replicas"] == metrics[1]["replicas"] == 2
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], rel=1e-6)

    # The small BN model: every weight agrees between workers; with synchronized BN they
    # also equal one device on the global batch, with local BN the statistics drift apart.
    first, second = (dict(np.load(tmp_path / f"weights-{i}.npz")) for i in range(2))
    one_device = multi_worker_run.train_small_bn_model(tf.distribute.get_strategy(), True)
    for path, expected in one_device.items():
        np.testing.assert_allclose(first[f"synchronized/{path}"], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(first[f"synchronized/{path}"],
                                      second[f"synchronized/{path}"])
        local_first, local_second = first[f"local/{path}"], second[f"local/{path}"]
        if "moving" in path:
            assert not np.allclose(local_first, local_second, atol=1e-2), path
        else:
            np.testing.assert_array_equal(local_first, local_second)
    assert not np.allclose(first["local/small_bn_model/bn/moving_mean"],
                           one_device["small_bn_model/bn/moving_mean"], atol=1e-2)
