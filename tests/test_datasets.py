"""nnbench.datasets: the loaders on the shared copy, preprocessing, verification, downloads.

Facts come from ../shared/data/README.md. Downloads are tested against an http.server on
127.0.0.1 (ephemeral port, shut down after each test) serving copies made in tmp_path; nothing
here touches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from nnbench import datasets
from tests.data_fixtures import DATASETS, dataset_root

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
REPO = Path(__file__).resolve().parents[1]
MNIST_MEAN, MNIST_STD = 0.130660, 0.308108  # of train pixels / 255, README gives 6 decimals
CIFAR_MEANS = (0.49139968, 0.48215841, 0.44653091)  # per channel, train pixels / 255
CIFAR_STDS = (0.24703223, 0.24348513, 0.26158784)
LABELS_FILE = "train-labels-idx1-ubyte.gz"  # the smallest MNIST file: the one tests break


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 (n, c, ...) images, from integer sums."""
    flat = images.reshape(len(images), images.shape[1], -1)
    count = flat.shape[0] * flat.shape[2]
    sums = flat.sum(axis=(0, 2), dtype=np.int64)
    squares = np.einsum("ncp,ncp->c", flat, flat, dtype=np.int64)
    means = [int(s) / count for s in sums]
    stds = [((count * int(q) - int(s) ** 2) / count**2) ** 0.5 for s, q in zip(sums, squares)]
    return np.array(means), np.array(stds)


def float_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and std of a float array, accumulated in float64."""
    means = np.array([x[:, c].mean(dtype=np.float64) for c in range(x.shape[1])])
    stds = np.array([x[:, c].std(dtype=np.float64) for c in range(x.shape[1])])
    return means, stds


# --------------------------------------------------------------------------------------------
# The loaders on the shared copy


@pytest.fixture(scope="session")
def mnist_root(data_dir) -> Path:
    """The data folder, known to hold MNIST (the test is skipped, saying so, if it does not)."""
    return dataset_root(data_dir, "mnist")


@pytest.fixture(scope="session")
def cifar10_root(data_dir) -> Path:
    """The data folder, known to hold CIFAR-10 (else the test is skipped, saying so)."""
    return dataset_root(data_dir, "cifar10")


@pytest.fixture(scope="session")
def mnist(mnist_root):
    return datasets.load_mnist(mnist_root, download=False)


@pytest.fixture(scope="session")
def cifar10(cifar10_root):
    return datasets.load_cifar10(cifar10_root, download=False)


def test_mnist_shapes_and_dtypes(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert (x_train.shape, x_train.dtype) == ((60000, 28, 28), np.uint8)
    assert (y_train.shape, y_train.dtype) == ((60000,), np.int64)
    assert (x_test.shape, x_test.dtype) == ((10000, 28, 28), np.uint8)
    assert (y_test.shape, y_test.dtype) == ((10000,), np.int64)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in mnist)


def test_mnist_label_histograms(mnist):
    _, y_train, _, y_test = mnist
    assert np.bincount(y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixel_statistics(mnist):
    mean, std = pixel_moments(mnist[0][:, None])
    assert mean[0] / 255 == pytest.approx(MNIST_MEAN, abs=1e-6)
    assert std[0] / 255 == pytest.approx(MNIST_STD, abs=1e-6)


def test_cifar10_shapes_and_dtypes(cifar10):
    x_train, y_train, x_test, y_test = cifar10
    assert (x_train.shape, x_train.dtype) == ((50000, 3, 32, 32), np.uint8)
    assert (y_train.shape, y_train.dtype) == ((50000,), np.int64)
    assert (x_test.shape, x_test.dtype) == ((10000, 3, 32, 32), np.uint8)
    assert (y_test.shape, y_test.dtype) == ((10000,), np.int64)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in cifar10)


def test_cifar10_label_histograms(cifar10):
    _, y_train, _, y_test = cifar10
    assert np.bincount(y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10


def test_cifar10_channel_statistics(cifar10):
    means, stds = pixel_moments(cifar10[0])
    np.testing.assert_allclose(means / 255, CIFAR_MEANS, rtol=0, atol=1e-8)
    np.testing.assert_allclose(stds / 255, CIFAR_STDS, rtol=0, atol=1e-8)


def test_cifar10_first_images(cifar10):
    x_train, y_train, x_test, y_test = cifar10
    assert x_train[0, :, 0, 0].tolist() == [59, 62, 63]  # R, G, B of the top-left pixel
    assert x_test[0, :, 0, 0].tolist() == [158, 112, 49]
    assert (y_train[0], y_test[0]) == (6, 3)  # a frog and a cat


def test_loaders_use_nnbench_data_when_no_argument(mnist_root, mnist, monkeypatch):
    monkeypatch.setenv("NNBENCH_DATA", str(mnist_root))
    assert datasets.data_root() == Path(mnist_root)
    _, y_train, _, _ = datasets.load_mnist(download=False)
    np.testing.assert_array_equal(y_train, mnist[1])


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("NNBENCH_DATA", str(tmp_path / "from-env"))
    assert datasets.data_root(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert datasets.data_root() == tmp_path / "from-env"
    monkeypatch.delenv("NNBENCH_DATA")
    assert datasets.data_root() == datasets.default_cache_dir()


# --------------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_preprocess_mnist(mnist, dtype):
    x_train, y_train, x_test, y_test = datasets.preprocess_mnist(*mnist, dtype=dtype)
    assert (x_train.shape, x_test.shape) == ((60000, 784), (10000, 784))
    assert (y_train.shape, y_test.shape) == ((60000, 10), (10000, 10))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(dtype)}
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert x_train.mean(dtype=np.float64) == pytest.approx(0, abs=tol)
    assert x_train.std(dtype=np.float64) == pytest.approx(1, abs=tol)
    # the test set goes through the TRAIN statistics, not its own
    expected = (mnist[2].reshape(-1, 784) / 255 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(x_test, expected, rtol=0, atol=1e-4)
    for labels, encoded in ((mnist[1], y_train), (mnist[3], y_test)):
        np.testing.assert_array_equal(encoded.sum(axis=1), 1)
        np.testing.assert_array_equal(encoded.argmax(axis=1), labels)


def test_preprocess_cifar10(cifar10):
    x_train, y_train, x_test, y_test = datasets.preprocess_cifar10(*cifar10)
    assert (x_train.shape, x_test.shape) == ((50000, 3, 32, 32), (10000, 3, 32, 32))
    assert (y_train.shape, y_test.shape) == ((50000, 10), (10000, 10))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.float32)}
    means, stds = float_moments(x_train)
    np.testing.assert_allclose(means, 0, atol=1e-5)
    np.testing.assert_allclose(stds, 1, atol=1e-5)
    # the test set goes through the TRAIN statistics, not its own
    scale = 255 * np.array(CIFAR_STDS)[:, None, None]
    expected = (cifar10[2][:100] - 255 * np.array(CIFAR_MEANS)[:, None, None]) / scale
    np.testing.assert_allclose(x_test[:100], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(y_train.sum(axis=1), 1)
    np.testing.assert_array_equal(y_train.argmax(axis=1), cifar10[1])
    np.testing.assert_array_equal(y_test.argmax(axis=1), cifar10[3])


def test_preprocess_cifar10_float64_on_a_subset(cifar10):
    subset = (cifar10[0][:5000], cifar10[1][:5000], cifar10[2][:1000], cifar10[3][:1000])
    wide = datasets.preprocess_cifar10(*subset, dtype=np.float64)
    assert {a.dtype for a in wide} == {np.dtype(np.float64)}
    means, stds = float_moments(wide[0])
    np.testing.assert_allclose(means, 0, atol=1e-12)
    np.testing.assert_allclose(stds, 1, atol=1e-12)
    for got, narrow in zip(wide, datasets.preprocess_cifar10(*subset, dtype=np.float32)):
        np.testing.assert_allclose(got, narrow, rtol=0, atol=1e-5)


def test_load_preprocessed_is_load_then_preprocess(data_dir, mnist, cifar10, monkeypatch):
    expected = datasets.preprocess_mnist(*mnist)
    for got, want in zip(datasets.load_mnist_preprocessed(data_dir, download=False), expected):
        np.testing.assert_array_equal(got, want)
    # CIFAR-10 in float64 on all 60000 images would take 2.4 GB: check the wiring on a subset
    subset = (cifar10[0][:300], cifar10[1][:300], cifar10[2][:100], cifar10[3][:100])
    calls = []
    monkeypatch.setattr(datasets, "load_cifar10", lambda *a, **k: calls.append((a, k)) or subset)
    got = datasets.load_cifar10_preprocessed(data_dir, dtype=np.float64, download=False)
    assert calls == [((data_dir,), {"download": False})]
    for got_array, want in zip(got, datasets.preprocess_cifar10(*subset, dtype=np.float64)):
        np.testing.assert_array_equal(got_array, want)


def test_one_hot():
    encoded = datasets.one_hot(np.array([3, 0, 9, 3]), classes=10)
    assert (encoded.shape, encoded.dtype) == ((4, 10), np.float32)
    np.testing.assert_array_equal(encoded.argmax(axis=1), [3, 0, 9, 3])
    np.testing.assert_array_equal(encoded.sum(axis=1), 1)
    assert datasets.one_hot(np.array([1], dtype=np.uint8), 2, np.float64).tolist() == [[0, 1]]
    assert datasets.one_hot(np.zeros(0, dtype=np.int64)).shape == (0, 10)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "message"),
    [
        (np.array([0.0, 1.0]), {}, TypeError, "labels: expected an integer dtype"),
        (np.array([[0, 1]]), {}, ValueError, "labels: expected a 1-D array"),
        (np.array([0, 10]), {}, ValueError, r"labels: expected values in \[0, 10\)"),
        (np.array([-1, 2]), {}, ValueError, r"labels: expected values in \[0, 10\)"),
        (np.array([0, 2]), {"classes": 2}, ValueError, r"labels: expected values in \[0, 2\)"),
        (np.array([0]), {"classes": 0}, ValueError, "classes: expected a positive number"),
        (np.array([0]), {"dtype": np.int32}, TypeError, "dtype: expected a floating dtype"),
    ],
    ids=["float-labels", "2d", "too-large", "negative", "classes-2", "classes-0", "int-dtype"],
)
def test_one_hot_rejects(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.one_hot(labels, **kwargs)


def _tiny_mnist(rng, n=20):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return images, np.arange(n) % 10, images[:5].copy(), np.arange(5)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda s: (s[0][:, :27], *s[1:]), ValueError, "x_train: expected an array of shape"),
        (lambda s: (s[0], s[1][:-1], *s[2:]), ValueError, "y_train: expected 20 labels"),
        (lambda s: (*s[:2], s[2][:, None], s[3]), ValueError, "x_test: expected an array"),
        (lambda s: (*s[:3], s[3][:, None]), ValueError, "y_test: expected 5 labels"),
        (lambda s: (s[0].tolist(), *s[1:]), ValueError, "x_train: expected an array"),
        (lambda s: (s[0] > 0, *s[1:]), TypeError, "x_train: expected integer or float"),
        (lambda s: (np.zeros_like(s[0]), *s[1:]), ValueError, "x_train: zero variance"),
    ],
    ids=["short-rows", "few-labels", "x_test-rank", "y_test-2d", "list", "bool", "constant"],
)
def test_preprocess_rejects(rng, change, error, message):
    with pytest.raises(error, match=message):
        datasets.preprocess_mnist(*change(_tiny_mnist(rng)))


def test_preprocess_accepts_flat_mnist_and_rejects_int_dtype(rng):
    split = _tiny_mnist(rng)
    flat = (split[0].reshape(20, 784), split[1], split[2].reshape(5, 784), split[3])
    for got, want in zip(datasets.preprocess_mnist(*flat), datasets.preprocess_mnist(*split)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="dtype: expected a floating dtype"):
        datasets.preprocess_cifar10(*split, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The IDX parser


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize(
    ("type_code", "dtype", "shape"),
    [
        (0x08, np.uint8, (3, 4, 5)),
        (0x09, np.int8, (7,)),
        (0x0B, np.int16, (2, 3)),
        (0x0C, np.int32, (2, 2, 2, 2)),
        (0x0D, np.float32, (4, 1)),
        (0x0E, np.float64, (0, 3)),
    ],
    ids=["uint8[3,4,5]", "int8[7]", "int16[2,3]", "int32[2,2,2,2]", "float32[4,1]", "float64[0,3]"],
)
def test_parse_idx_roundtrip(rng, type_code, dtype, shape):
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    parsed = datasets.parse_idx(idx_bytes(array, type_code))
    assert parsed.dtype == np.dtype(dtype) and parsed.dtype.isnative
    assert parsed.flags.writeable
    np.testing.assert_array_equal(parsed, array)


GOOD_IDX = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3), 0x08)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short for an IDX magic number"),
        (b"\x00\x00\x08", "too short for an IDX magic number"),
        (b"\x1f\x8b" + GOOD_IDX[2:], "magic number 0x1f8b0802 is not IDX"),
        (GOOD_IDX[:2] + b"\x07" + GOOD_IDX[3:], "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (GOOD_IDX[:9], "too short for the 12-byte header"),
        (GOOD_IDX[:-1], r"declares shape \(2, 3\) of uint8 \(6 bytes\) but 5 bytes follow"),
        (GOOD_IDX + b"\x00", "but 7 bytes follow"),
    ],
    ids=["empty", "3-bytes", "gzip-magic", "bad-type", "0-dims", "short-header", "short", "long"],
)
def test_parse_idx_rejects_malformed(data, message):
    with pytest.raises(datasets.MalformedFileError, match=rf"^some\.idx: .*{message}"):
        datasets.parse_idx(data, source="some.idx")


def copy_mnist(source: Path, root: Path, skip: tuple[str, ...] = ()) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in datasets.MNIST_FILES:
        if name not in skip:
            shutil.copyfile(source / "mnist" / name, folder / name)
    return folder


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (gzip.compress(GOOD_IDX)[:-9], "gzip stream ends early"),
        (gzip.compress(GOOD_IDX) + b"junk", "unexpected bytes after the gzip stream"),
        (GOOD_IDX, "not valid gzip data"),
        (gzip.compress(GOOD_IDX), "expected a uint8 vector of labels"),
        (gzip.compress(idx_bytes(np.full(60000, 12, np.uint8), 0x08)), "label 12 out of"),
        (gzip.compress(idx_bytes(np.zeros(9, np.uint8), 0x08)), "60000 images in train-images"),
    ],
    ids=["truncated-gzip", "trailing-bytes", "not-gzip", "labels-2d", "label-12", "count"],
)
def test_malformed_file_with_matching_checksum(mnist_root, tmp_path, monkeypatch, payload, message):
    # The checksum is pointed at the malformed bytes so that the parser is what must object.
    folder = copy_mnist(mnist_root, tmp_path, skip=(LABELS_FILE,))
    (folder / LABELS_FILE).write_bytes(payload)
    files = {**datasets.MNIST_FILES, LABELS_FILE: sha256_of(payload)}
    monkeypatch.setattr(datasets, "MNIST_FILES", files)
    with pytest.raises(datasets.MalformedFileError, match=message) as caught:
        datasets.load_mnist(tmp_path, download=False)
    assert str(folder) in str(caught.value)


# --------------------------------------------------------------------------------------------
# Local verification


def record_calls(monkeypatch, name: str) -> list:
    """Wrap ``datasets.<name>`` so each call appends its first argument to the returned list."""
    calls = []
    real = getattr(datasets, name)

    def recording(*args):
        calls.append(args[0] if len(args) == 1 else args[1])
        return real(*args)

    monkeypatch.setattr(datasets, name, recording)
    return calls


@pytest.mark.parametrize("name", list(datasets.MNIST_FILES), ids=lambda n: n.split("-idx")[0])
def test_corrupted_mnist_file_is_named_and_never_parsed(
    mnist_root, tmp_path, monkeypatch, http_server, name
):
    folder = copy_mnist(mnist_root, tmp_path)
    corrupt = bytearray((folder / name).read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (folder / name).write_bytes(corrupt)
    unzipped = record_calls(monkeypatch, "_gunzip")  # (data, path): records the path
    # a server with the good file is reachable: a bad local copy must still be an error
    http_server.serve_mnist(mnist_root)
    with pytest.raises(datasets.ChecksumError) as caught:
        datasets.load_mnist(tmp_path)
    message = str(caught.value)
    assert str(folder / name) in message
    assert datasets.MNIST_FILES[name] in message
    assert sha256_of(bytes(corrupt)) in message
    assert folder / name not in unzipped
    assert (folder / name).read_bytes() == corrupt  # left in place for the user to inspect
    assert http_server.requests == []


def test_corrupted_cifar10_file_is_named_and_never_parsed(cifar10_root, tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    bad = "data_batch_3.bin"
    for name in datasets.CIFAR10_FILES:
        if name != bad:
            (folder / name).symlink_to(cifar10_root / "cifar-10-batches-bin" / name)
    corrupt = bytearray((cifar10_root / "cifar-10-batches-bin" / bad).read_bytes())
    corrupt[12345] ^= 0x01
    (folder / bad).write_bytes(corrupt)
    parsed = record_calls(monkeypatch, "_parse_cifar_batch")  # (data, path): records the path
    with pytest.raises(datasets.ChecksumError) as caught:
        datasets.load_cifar10(tmp_path)
    message = str(caught.value)
    assert str(folder / bad) in message
    assert datasets.CIFAR10_FILES[bad] in message and sha256_of(bytes(corrupt)) in message
    assert parsed == [folder / "data_batch_1.bin", folder / "data_batch_2.bin"]


def test_verification_is_cached_until_the_file_changes(mnist_root, tmp_path, monkeypatch):
    folder = copy_mnist(mnist_root, tmp_path)
    hashed = record_calls(monkeypatch, "_sha256")
    datasets.load_mnist(tmp_path, download=False)
    assert len(hashed) == 4
    datasets.load_mnist(tmp_path, download=False)
    assert len(hashed) == 4  # nothing hashed the second time
    labels = folder / LABELS_FILE
    stat = labels.stat()
    corrupt = bytearray(labels.read_bytes())
    corrupt[-1] ^= 0xFF
    labels.write_bytes(corrupt)  # same size; give it a new mtime for certain
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(datasets.ChecksumError, match=LABELS_FILE):
        datasets.load_mnist(tmp_path, download=False)
    assert len(hashed) == 5


def test_an_edit_in_place_with_the_mtime_set_back_is_not_trusted(mnist_root, tmp_path):
    """Same inode, size and mtime after the edit: only the ctime tells, and the cache sees it."""
    labels = tmp_path / LABELS_FILE
    shutil.copyfile(mnist_root / "mnist" / LABELS_FILE, labels)
    expected = datasets.MNIST_FILES[LABELS_FILE]
    good = datasets._read_verified(labels, expected)  # verified, and remembered
    before = labels.stat()
    time.sleep(0.05)  # the ctime clock ticks coarsely (jiffies): let it pass the copy's
    labels.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    os.utime(labels, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = labels.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    with pytest.raises(datasets.ChecksumError, match=LABELS_FILE):
        datasets._read_verified(labels, expected)


# --------------------------------------------------------------------------------------------
# A data folder with one of the two datasets

#: Tests that need each dataset (and nothing slower than a skip when it is missing).
NEEDS = {
    "mnist": [
        "tests/test_datasets.py::test_mnist_shapes_and_dtypes",
        "tests/test_datasets.py::test_mnist_download_fetches_only_missing_files",
        "tests/test_accuracy.py::test_smoke_run_learns_and_writes_results[mnist]",
    ],
    "cifar10": [
        "tests/test_datasets.py::test_cifar10_shapes_and_dtypes",
        "tests/test_datasets.py::test_corrupted_cifar10_file_is_named_and_never_parsed",
        "tests/test_accuracy.py::test_smoke_run_learns_and_writes_results[cifar10]",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize(("present", "missing"), [("mnist", "cifar10"), ("cifar10", "mnist")])
def test_the_tests_of_a_missing_dataset_skip_saying_which(data_dir, tmp_path, present, missing):
    for dataset in DATASETS:
        dataset_root(data_dir, dataset)  # the partial copy is made from a full one
    folder, _ = DATASETS[present]
    (tmp_path / folder).symlink_to(data_dir / folder)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *NEEDS[missing]],
        check=False,
        cwd=REPO,
        env={**os.environ, "NNBENCH_DATA": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(NEEDS[missing])} skipped in" in done.stdout, done.stdout
    missing_folder, title = DATASETS[missing]
    assert f"no {title} copy: {tmp_path / missing_folder} is missing" in done.stdout


# --------------------------------------------------------------------------------------------
# Missing files, offline


def bypass_proxies(monkeypatch) -> None:
    """requests would send even 127.0.0.1 through an HTTP(S)_PROXY of the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


LOADERS = {"mnist": datasets.load_mnist, "cifar10": datasets.load_cifar10}
FOLDERS = {"mnist": "mnist", "cifar10": "cifar-10-batches-bin"}


@pytest.mark.parametrize("dataset", LOADERS)
def test_missing_without_download_says_where_and_how(tmp_path, dataset):
    root = tmp_path / "nowhere"
    with pytest.raises(datasets.DatasetNotFoundError) as caught:
        LOADERS[dataset](root, download=False)
    message = str(caught.value)
    assert str(root / FOLDERS[dataset]) in message
    assert "data_dir argument" in message and "download=False" in message
    assert "export NNBENCH_DATA=" in message
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, RuntimeError)
    assert not root.exists()


@pytest.mark.parametrize("dataset", LOADERS)
def test_missing_and_offline_says_where_and_how(tmp_path, monkeypatch, dataset):
    bypass_proxies(monkeypatch)
    url = closed_port_url()
    monkeypatch.setenv("NNBENCH_DATA_URL_MNIST", url)
    monkeypatch.setenv("NNBENCH_DATA_URL_CIFAR10", url)
    monkeypatch.setenv("NNBENCH_DATA", str(tmp_path))
    with pytest.raises(datasets.DatasetNotFoundError) as caught:
        LOADERS[dataset]()
    message = str(caught.value)
    assert str(tmp_path / FOLDERS[dataset]) in message and "$NNBENCH_DATA" in message
    assert f"Downloading {url}" in message and "export NNBENCH_DATA=" in message
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / FOLDERS[dataset]])


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CACHE_HOME steers the cache on Linux")
def test_missing_in_cache_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("NNBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(datasets.DatasetNotFoundError) as caught:
        datasets.load_mnist(download=False)
    message = str(caught.value)
    assert str(tmp_path / "nnbench" / "mnist") in message and "per-user cache" in message


# --------------------------------------------------------------------------------------------
# Downloads from a local server


@dataclass
class Route:
    body: bytes
    status: int = 200
    declared_length: int | None = None  # a Content-Length larger than body: dropped transfer


@dataclass
class FileServer:
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, folder: str) -> str:
        return f"http://127.0.0.1:{self.port}/{folder}/"

    def serve(self, path: str, body: bytes, **kwargs) -> None:
        self.routes[path] = Route(body, **kwargs)

    def serve_mnist(self, data_dir: Path) -> None:
        for name in datasets.MNIST_FILES:
            self.serve(f"/mnist/{name}", (data_dir / "mnist" / name).read_bytes())


def _handler_for(files: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread for long

        def do_GET(self):  # the name http.server dispatches GET to
            files.requests.append(self.path)
            route = files.routes.get(self.path, Route(b"not found", status=404))
            self.send_response(route.status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(route.declared_length or len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)
            self.close_connection = True

        def log_message(self, format, *args):  # keep the test output quiet
            pass

    return Handler


@pytest.fixture
def http_server(monkeypatch):
    files = FileServer()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(files))
    files.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    bypass_proxies(monkeypatch)
    monkeypatch.setenv("NNBENCH_DATA_URL_MNIST", files.url("mnist"))
    monkeypatch.setenv("NNBENCH_DATA_URL_CIFAR10", files.url("cifar"))
    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT_S", 10)
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_mnist_download(mnist_root, tmp_path, http_server, mnist):
    http_server.serve_mnist(mnist_root)
    downloaded = datasets.load_mnist(tmp_path)
    for got, want in zip(downloaded, mnist):
        np.testing.assert_array_equal(got, want)
    files = list((tmp_path / "mnist").iterdir())
    assert sorted(p.name for p in files) == sorted(datasets.MNIST_FILES)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o644}  # readable by the folder's users
    assert sorted(http_server.requests) == sorted(f"/mnist/{n}" for n in datasets.MNIST_FILES)
    datasets.load_mnist(tmp_path)
    assert len(http_server.requests) == 4  # present and verified: not fetched again


def test_mnist_download_fetches_only_missing_files(mnist_root, tmp_path, http_server):
    copy_mnist(mnist_root, tmp_path, skip=(LABELS_FILE,))
    http_server.serve_mnist(mnist_root)
    datasets.load_mnist(tmp_path)
    assert http_server.requests == [f"/mnist/{LABELS_FILE}"]


def _bad_labels(good: bytes, case: str) -> dict:
    return {
        "truncated": {"body": good[: len(good) // 2]},
        "wrong-file": {"body": gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00")},
        "dropped-connection": {"body": good[: len(good) // 2], "declared_length": len(good)},
        "http-404": {"body": b"gone", "status": 404},
    }[case]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("truncated", datasets.ChecksumError),
        ("wrong-file", datasets.ChecksumError),
        ("dropped-connection", datasets.DatasetNotFoundError),
        ("http-404", datasets.DatasetNotFoundError),
    ],
)
def test_bad_mnist_download_is_rejected_and_leaves_nothing(
    mnist_root, tmp_path, http_server, case, error
):
    folder = copy_mnist(mnist_root, tmp_path, skip=(LABELS_FILE,))
    good = (mnist_root / "mnist" / LABELS_FILE).read_bytes()
    http_server.serve(f"/mnist/{LABELS_FILE}", **_bad_labels(good, case))
    with pytest.raises(error) as caught:
        datasets.load_mnist(tmp_path)
    url = http_server.url("mnist") + LABELS_FILE
    assert url in str(caught.value)
    if error is datasets.ChecksumError:
        served = http_server.routes[f"/mnist/{LABELS_FILE}"].body
        assert datasets.MNIST_FILES[LABELS_FILE] in str(caught.value)
        assert sha256_of(served) in str(caught.value)
    # no partial file and no temporary file: only the three good copies
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        n for n in datasets.MNIST_FILES if n != LABELS_FILE
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]


# CIFAR-10 through its archive. The real cifar-10-binary.tar.gz (170 MB) is not on disk, so
# these tests build a small archive of synthetic .bin files of the same record format and point
# the module's expected hashes (archive MD5, member SHA-256s) at what was built; the code path
# is the one a real download takes.


def synthetic_cifar(rng) -> dict[str, bytes]:
    records = dict(zip(datasets.CIFAR10_FILES, (4, 3, 5, 2, 6, 7)))
    files = {}
    for name, count in records.items():
        labels = rng.integers(0, 10, (count, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        files[name] = np.hstack([labels, pixels]).tobytes()
    return files


def tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def archive_members(files: dict[str, bytes]) -> dict[str, bytes]:
    members = {f"cifar-10-batches-bin/{name}": data for name, data in files.items()}
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return members


def expect_archive(monkeypatch, files: dict[str, bytes], archive: bytes) -> None:
    hashes = {name: sha256_of(data) for name, data in files.items()}
    monkeypatch.setattr(datasets, "CIFAR10_FILES", hashes)
    monkeypatch.setattr(datasets, "CIFAR10_ARCHIVE_HASH", f"md5:{hashlib.md5(archive).hexdigest()}")


def as_arrays(files: dict[str, bytes], names) -> tuple[np.ndarray, np.ndarray]:
    records = np.frombuffer(b"".join(files[n] for n in names), np.uint8).reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def test_cifar10_download_extracts_verified_members(rng, tmp_path, monkeypatch, http_server):
    files = synthetic_cifar(rng)
    archive = tar_gz(archive_members(files))
    expect_archive(monkeypatch, files, archive)
    http_server.serve("/cifar/cifar-10-binary.tar.gz", archive)
    x_train, y_train, x_test, y_test = datasets.load_cifar10(tmp_path)
    want_x, want_y = as_arrays(files, [f"data_batch_{i}.bin" for i in range(1, 6)])
    np.testing.assert_array_equal(x_train, want_x)
    np.testing.assert_array_equal(y_train, want_y)
    want_x, want_y = as_arrays(files, ["test_batch.bin"])
    np.testing.assert_array_equal(x_test, want_x)
    np.testing.assert_array_equal(y_test, want_y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]  # archive gone
    folder = tmp_path / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert http_server.requests == ["/cifar/cifar-10-binary.tar.gz"]


def test_cifar10_download_replaces_only_missing_members(rng, tmp_path, monkeypatch, http_server):
    files = synthetic_cifar(rng)
    archive = tar_gz(archive_members(files))
    expect_archive(monkeypatch, files, archive)
    http_server.serve("/cifar/cifar-10-binary.tar.gz", archive)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, data in files.items():
        if name != "data_batch_4.bin":
            (folder / name).write_bytes(data)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    datasets.load_cifar10(tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert {name: after[name] for name in before} == before
    assert (folder / "data_batch_4.bin").read_bytes() == files["data_batch_4.bin"]


def test_cifar10_uses_archive_already_in_root(rng, tmp_path, monkeypatch):
    files = synthetic_cifar(rng)
    archive = tar_gz(archive_members(files))
    expect_archive(monkeypatch, files, archive)
    monkeypatch.setenv("NNBENCH_DATA_URL_CIFAR10", closed_port_url())
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(archive)
    assert datasets.load_cifar10(tmp_path)[0].shape == (20, 3, 32, 32)


def _bad_archive(files: dict[str, bytes], case: str) -> tuple[bytes, bytes | None]:
    """(archive served, archive whose hash is expected; None: the served one)."""
    good = tar_gz(archive_members(files))
    members = archive_members(files)
    if case == "truncated":
        return good[: len(good) // 2], good
    if case == "wrong-archive":
        return tar_gz({**members, "cifar-10-batches-bin/extra": b"x"}), good
    if case == "member-corrupt":
        name = "cifar-10-batches-bin/data_batch_2.bin"
        return tar_gz({**members, name: members[name][:-1] + b"\x00"}), None
    if case == "member-missing":
        return tar_gz({k: v for k, v in members.items() if "test_batch" not in k}), None
    if case == "member-is-symlink":
        name = "cifar-10-batches-bin/data_batch_1.bin"
        others = {k: v for k, v in members.items() if k != name}
        return tar_gz(others, links={name: "/etc/passwd"}), None
    if case == "path-traversal":
        # our names live only under ../ or absolute paths: none may be used
        hostile = {f"../{n}": d for n, d in files.items()}
        hostile.update({f"/tmp/{n}": d for n, d in files.items()})
        hostile.update({f"cifar-10-batches-bin/../../{n}": d for n, d in files.items()})
        return tar_gz(hostile), None
    if case == "not-gzip":
        return b"PK\x03\x04 this is no tar.gz", None
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("truncated", datasets.ChecksumError, "download of http://127.0.0.1"),
        ("wrong-archive", datasets.ChecksumError, "MD5 checksum mismatch"),
        ("member-corrupt", datasets.ChecksumError, "data_batch_2.bin was not extracted"),
        ("member-missing", datasets.MalformedFileError, "no member cifar-10-batches-bin/test"),
        ("member-is-symlink", datasets.MalformedFileError, "not a regular file"),
        ("path-traversal", datasets.MalformedFileError, "no member"),
        ("not-gzip", datasets.MalformedFileError, "not a readable tar.gz archive"),
    ],
)
def test_bad_cifar10_archive_is_rejected_and_leaves_nothing(
    rng, tmp_path, monkeypatch, http_server, case, error, message
):
    files = synthetic_cifar(rng)
    served, expected = _bad_archive(files, case)
    expect_archive(monkeypatch, files, served if expected is None else expected)
    http_server.serve("/cifar/cifar-10-binary.tar.gz", served)
    root = tmp_path / "root"
    with pytest.raises(error, match=message):
        datasets.load_cifar10(root)
    # No archive, no partial member, no temporary file, nothing outside the folder: at most
    # the members that were complete and verified before the failure.
    folder = root / "cifar-10-batches-bin"
    for path in (p for p in tmp_path.rglob("*") if not p.is_dir()):
        assert path.parent == folder and path.read_bytes() == files[path.name], path
