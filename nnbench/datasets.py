"""MNIST and CIFAR-10 from their original files: located, downloaded if missing, verified, parsed.

Public API
----------
``load_mnist(data_dir=None, *, download=True)``
    -> ``x_train`` uint8 (60000, 28, 28), ``y_train`` int64 (60000,), ``x_test`` uint8
    (10000, 28, 28), ``y_test`` int64 (10000,), from the four gzipped IDX files.
``load_cifar10(data_dir=None, *, download=True)``
    -> ``x_train`` uint8 (50000, 3, 32, 32) (NCHW, RGB), ``y_train`` int64 (50000,), ``x_test``
    uint8 (10000, 3, 32, 32), ``y_test`` int64 (10000,), from the *binary* version (no pickle
    is ever loaded).
``preprocess_mnist`` / ``preprocess_cifar10`` / ``one_hot``
    The assignment's preprocessing: float images with mean 0 and std 1 computed on the TRAIN
    set only (MNIST: one scalar pair, images flattened to 784; CIFAR-10: one pair per channel,
    shape kept), one-hot labels.
``load_mnist_preprocessed`` / ``load_cifar10_preprocessed``
    The two steps in one call: what a training script wants.

Where the files live
--------------------
The root folder is the ``data_dir`` argument, else ``$NNBENCH_DATA``, else the per-user cache
``pooch.os_cache("nnbench")`` (``~/.cache/nnbench`` on Linux). Only that one folder is used;
inside it::

    mnist/train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
          t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin  test_batch.bin

Trust
-----
No byte of a file is parsed before the whole file has matched its SHA-256 in ``MNIST_FILES`` /
``CIFAR10_FILES`` (the originals; their published MD5s are noted beside them). A mismatch raises
``ChecksumError`` naming the file and both hashes, and the file is left alone for the user to
inspect. A file that passed is remembered for the life of the process by (path, device, inode,
size, mtime, ctime), so loading a second time costs only the read. The ctime is what catches a
file edited in place with its mtime set back: every write and every ``utime`` moves it, and no
user call sets it.

Downloads
---------
Missing files are fetched with pooch (streamed to a temporary file beside the target, with a
progress bar; the checksum is checked before the file is renamed into place, so a failed,
truncated or wrong download leaves nothing behind). MNIST comes file by file from ``MNIST_URL``;
CIFAR-10 comes as ``cifar-10-binary.tar.gz`` (MD5 checked) from ``CIFAR10_URL``, out of which
only the needed ``.bin`` members are copied, each by our own name (never by the archive's path,
so nothing can be written outside the folder), each checked against its SHA-256 and renamed
into place; the archive is then deleted. An archive already sitting in the root with the right
checksum is used without downloading. The base URLs can be overridden with
``$NNBENCH_DATA_URL_MNIST`` and ``$NNBENCH_DATA_URL_CIFAR10`` (a folder URL the file names are
appended to), e.g. to use another mirror or a local server. With no copy and no network,
``DatasetNotFoundError`` says which folder was looked in, why that one, and how to point
``$NNBENCH_DATA`` at a copy.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import operator
import os
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import numpy as np
import pooch

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_ARCHIVE_HASH",
    "CIFAR10_DIR",
    "CIFAR10_FILES",
    "CIFAR10_URL",
    "DATA_ENV",
    "MNIST_DIR",
    "MNIST_FILES",
    "MNIST_URL",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "MalformedFileError",
    "data_root",
    "default_cache_dir",
    "load_cifar10",
    "load_cifar10_preprocessed",
    "load_mnist",
    "load_mnist_preprocessed",
    "one_hot",
    "parse_idx",
    "preprocess_cifar10",
    "preprocess_mnist",
]

DATA_ENV = "NNBENCH_DATA"
MNIST_URL_ENV = "NNBENCH_DATA_URL_MNIST"
CIFAR10_URL_ENV = "NNBENCH_DATA_URL_CIFAR10"

# The original site (yann.lecun.com/exdb/mnist/) often refuses plain downloads; this is the
# mirror PyTorch maintains for torchvision, serving byte-identical files (checked below).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"

MNIST_DIR = "mnist"
CIFAR10_DIR = "cifar-10-batches-bin"

# SHA-256 of the original files. The functions read these dicts at call time, so tests (and
# users with another copy) can swap them.
MNIST_FILES: dict[str, str] = {
    # MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    # MD5 d53e105ee54ea40749a09fcbcd1e9432
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    # MD5 9fb629c4189551a2d022fa330f9573f3
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    # MD5 ec29112dd5afa0611ce80d1b7f02629c
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

CIFAR10_FILES: dict[str, str] = {
    # MD5 5dd7e06a14cb22eb9f671a540d1b7c25
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    # MD5 5ea93a67294ea407fff1d09f752e9692
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    # MD5 942cd6a4bcdd0dd3c604fbe906cb4421
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    # MD5 ae636b3ba5c66a11e91e8cb52e771fcb
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    # MD5 53f37980c15c3d472c316c40844f3f0d
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    # MD5 803d5f7f4d78ea53de84dbe85f74fb6d
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
# pooch's "algorithm:hex" form; only the MD5 of the archive is published.
CIFAR10_ARCHIVE_HASH = "md5:c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32  # one label byte, then 1024 R, 1024 G, 1024 B

NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 60  # connect, and then each silence between bytes, before giving up
_DOWNLOAD_CHUNK = 1 << 16
_COPY_CHUNK = 1 << 20
# Temporary files are created owner-only; public data may be shared by every user of a folder.
_PUBLIC_MODE = 0o644


# --------------------------------------------------------------------------------------------
# Errors


class DatasetError(RuntimeError):
    """Base of every error this module raises about data files."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Files are missing and could not be downloaded (offline, refused, or download=False)."""


class ChecksumError(DatasetError):
    """A file (on disk or just downloaded) is not the one expected; it was not parsed."""

    def __init__(self, what: str, expected: str, actual: str, algorithm: str, advice: str):
        self.what, self.expected, self.actual, self.algorithm = what, expected, actual, algorithm
        super().__init__(
            f"{what}: {algorithm.upper()} checksum mismatch: expected {expected}, "
            f"got {actual}. {advice}"
        )


class MalformedFileError(DatasetError):
    """A file that passed (or had no) checksum does not have the expected format."""


# --------------------------------------------------------------------------------------------
# Where the files live


def default_cache_dir() -> Path:
    """The per-user cache used when neither ``data_dir`` nor ``$NNBENCH_DATA`` is given."""
    return Path(pooch.os_cache("nnbench"))


def _locate(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The root folder and, for error messages, why it was chosen."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument"
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser(), f"${DATA_ENV}"
    return (
        default_cache_dir(),
        f"the per-user cache (no data_dir argument was given and ${DATA_ENV} is not set)",
    )


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The root folder the loaders use: ``data_dir``, else ``$NNBENCH_DATA``, else the cache."""
    return _locate(data_dir)[0]


# --------------------------------------------------------------------------------------------
# Verification

# realpath -> (device, inode, size, mtime_ns, ctime_ns, sha256) of a file whose whole content
# matched.
_verified: dict[str, tuple[int, int, int, int, int, str]] = {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    """The bytes of ``path``, after checking they hash to ``expected_sha256``.

    The hash is taken of the very bytes returned, so what is parsed is what was verified. A
    file already verified in this process, unchanged since by its stat, is not hashed again.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        data = fh.read()
    key = os.path.realpath(path)
    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected_sha256)
    if len(data) != st.st_size or _verified.get(key) != stamp:
        actual = _sha256(data)
        if actual != expected_sha256:
            _verified.pop(key, None)
            raise ChecksumError(
                str(path),
                expected_sha256,
                actual,
                "sha256",
                "The file is corrupt, truncated or not the original; it was not parsed. "
                "Delete it to have it downloaded again, or replace it with a good copy.",
            )
        _verified[key] = stamp
    return data


def _split_hash(known_hash: str) -> tuple[str, str]:
    algorithm, _, digest = known_hash.rpartition(":")
    return (algorithm or "sha256").lower(), digest.lower()


# --------------------------------------------------------------------------------------------
# Downloads


class _VerifyingDownloader:
    """pooch's HTTP downloader, then a checksum of the temporary file it wrote.

    pooch checks the hash too, but only says so in a ValueError; checking here first gives a
    ``ChecksumError`` that carries the URL and both hashes. Raised inside pooch's temporary-file
    context, it still makes pooch delete the temporary file.
    """

    def __init__(self, known_hash: str, progressbar: bool):
        self.algorithm, self.expected = _split_hash(known_hash)
        self._http = pooch.HTTPDownloader(
            progressbar=progressbar, chunk_size=_DOWNLOAD_CHUNK, timeout=DOWNLOAD_TIMEOUT_S
        )

    def __call__(self, url: str, output_file: str, pooch_instance: object) -> None:
        self._http(url, output_file, pooch_instance)
        actual = pooch.file_hash(output_file, alg=self.algorithm)
        if actual != self.expected:
            raise ChecksumError(
                f"download of {url}",
                self.expected,
                actual,
                self.algorithm,
                "The download was rejected and deleted (truncated transfer, wrong file at "
                "that URL, or a tampered mirror).",
            )


def _base_url(env: str, default: str) -> str:
    url = os.environ.get(env) or default
    return url if url.endswith("/") else url + "/"


def _download(url: str, known_hash: str, target: Path, not_found: _NotFound) -> Path:
    """Fetch ``url`` to ``target`` via a verified temporary file; nothing is left on failure."""
    try:
        fetched = pooch.retrieve(
            url,
            known_hash=known_hash,
            fname=target.name,
            path=target.parent,
            downloader=_VerifyingDownloader(known_hash, progressbar=True),
            progressbar=True,
        )
    except DatasetError:
        raise
    except OSError as exc:  # requests' errors are OSErrors too: refused, DNS, HTTP status
        raise not_found(f"Downloading {url} failed: {exc}") from exc
    with contextlib.suppress(OSError):  # best effort: a file placed there by another user
        os.chmod(fetched, _PUBLIC_MODE)
    return Path(fetched)


class _NotFound:
    """Builds the 'where I looked, how to fix it' error for one dataset."""

    def __init__(self, dataset: str, folder: Path, how: str, missing: list[str]):
        self.dataset, self.folder, self.how, self.missing = dataset, folder, how, missing

    def __call__(self, reason: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.dataset}: missing {', '.join(self.missing)} in {self.folder} "
            f"(the folder was chosen from {self.how}).\n{reason}\n"
            f"To use an existing copy, set {DATA_ENV} to the folder that holds {MNIST_DIR}/ "
            f"and {CIFAR10_DIR}/ (export {DATA_ENV}=/path/to/data) or pass data_dir=; "
            f"expected layout: {MNIST_DIR}/*.gz (the four IDX files) and "
            f"{CIFAR10_DIR}/*.bin (the binary version)."
        )


def _missing(folder: Path, names: Mapping[str, str]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def _ensure_mnist(data_dir: str | os.PathLike | None, download: bool) -> Path:
    root, how = _locate(data_dir)
    folder = root / MNIST_DIR
    missing = _missing(folder, MNIST_FILES)
    if missing:
        not_found = _NotFound("MNIST", folder, how, missing)
        if not download:
            raise not_found("Downloading is disabled (download=False).")
        base = _base_url(MNIST_URL_ENV, MNIST_URL)
        for name in missing:
            _download(base + name, f"sha256:{MNIST_FILES[name]}", folder / name, not_found)
    return folder


def _ensure_cifar10(data_dir: str | os.PathLike | None, download: bool) -> Path:
    root, how = _locate(data_dir)
    folder = root / CIFAR10_DIR
    missing = _missing(folder, CIFAR10_FILES)
    if missing:
        not_found = _NotFound("CIFAR-10", folder, how, missing)
        if not download:
            raise not_found("Downloading is disabled (download=False).")
        url = _base_url(CIFAR10_URL_ENV, CIFAR10_URL) + CIFAR10_ARCHIVE
        archive = _download(url, CIFAR10_ARCHIVE_HASH, root / CIFAR10_ARCHIVE, not_found)
        try:
            _extract_members(archive, folder, {name: CIFAR10_FILES[name] for name in missing})
        finally:
            archive.unlink(missing_ok=True)
    return folder


def _extract_members(archive: Path, folder: Path, wanted: Mapping[str, str]) -> None:
    """Copy ``<CIFAR10_DIR>/<name>`` members of ``archive`` to ``folder/<name>``, verified.

    Output paths are built from our own names only, so a hostile member path ("../x",
    absolute, links) cannot direct a write anywhere; members that are not regular files are
    refused. One sequential pass over the compressed stream.
    """
    folder.mkdir(parents=True, exist_ok=True)
    remaining = dict(wanted)
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                parent, name = posixpath.split(posixpath.normpath(member.name))
                if parent != CIFAR10_DIR or name not in remaining:
                    continue
                if not member.isreg():
                    raise MalformedFileError(
                        f"{archive}: member {member.name!r} is not a regular file "
                        "(link or special file); refusing to extract it"
                    )
                source = tar.extractfile(member)
                assert source is not None  # regular members always have data
                _write_verified(
                    source, folder / name, remaining.pop(name), f"{archive}:{member.name}"
                )
                if not remaining:
                    break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MalformedFileError(f"{archive}: not a readable tar.gz archive ({exc})") from exc
    if remaining:
        raise MalformedFileError(
            f"{archive}: no member {', '.join(f'{CIFAR10_DIR}/{n}' for n in remaining)}"
        )


def _write_verified(source: IO[bytes], target: Path, expected_sha256: str, origin: str) -> None:
    """Stream ``source`` into a temporary file beside ``target``; rename only if it verifies."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        actual = hasher.hexdigest()
        if actual != expected_sha256:
            raise ChecksumError(
                origin,
                expected_sha256,
                actual,
                "sha256",
                f"{target.name} was not extracted.",
            )
        os.chmod(tmp, _PUBLIC_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Parsing

# IDX element types (third byte of the magic number); multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode one uncompressed IDX file into a native-byte-order array that owns its memory.

    Layout: magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
    the elements, row-major. The payload must be exactly as long as the sizes say.
    Raises ``MalformedFileError`` naming ``source`` otherwise.
    """
    size = len(data)
    if size < 4:
        raise MalformedFileError(f"{source}: {size} bytes, too short for an IDX magic number")
    magic = bytes(data[:4])
    if magic[:2] != b"\x00\x00":
        raise MalformedFileError(
            f"{source}: magic number 0x{magic.hex()} is not IDX (it must start with 0x0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise MalformedFileError(
            f"{source}: unknown IDX element type 0x{type_code:02x} (known: {known})"
        )
    if ndim == 0:
        raise MalformedFileError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if size < header:
        raise MalformedFileError(
            f"{source}: {size} bytes, too short for the {header}-byte header of a "
            f"{ndim}-dimensional IDX file"
        )
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    payload = math.prod(shape) * dtype.itemsize
    if size - header != payload:
        raise MalformedFileError(
            f"{source}: header declares shape {shape} of {dtype.name} ({payload} bytes) but "
            f"{size - header} bytes follow it"
        )
    values = np.frombuffer(data, dtype, count=math.prod(shape), offset=header)
    return values.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _gunzip(data: bytes, source: Path) -> bytes:
    """One complete gzip member, nothing after it."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
    try:
        raw = inflater.decompress(data)
    except zlib.error as exc:
        raise MalformedFileError(f"{source}: not valid gzip data ({exc})") from exc
    if not inflater.eof:
        raise MalformedFileError(f"{source}: gzip stream ends early (truncated file)")
    if inflater.unused_data:
        raise MalformedFileError(f"{source}: unexpected bytes after the gzip stream")
    return raw


def _read_idx(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    return parse_idx(_gunzip(_read_verified(path, MNIST_FILES[name]), path), str(path))


def _mnist_split(folder: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, ...]:
    images = _read_idx(folder, images_name)
    labels = _read_idx(folder, labels_name)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MalformedFileError(
            f"{folder / images_name}: expected uint8 images of shape (n, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise MalformedFileError(
            f"{folder / labels_name}: expected a uint8 vector of labels, "
            f"got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise MalformedFileError(
            f"{folder}: {len(images)} images in {images_name} but {len(labels)} labels "
            f"in {labels_name}"
        )
    _check_labels(labels, folder / labels_name)
    return images, labels.astype(np.int64)


def _check_labels(labels: np.ndarray, source: Path) -> None:
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise MalformedFileError(
            f"{source}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}"
        )


def _parse_cifar_batch(data: bytes, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte + 3072 pixel bytes -> views: images (n, 3, 32, 32), labels (n,)."""
    if not data or len(data) % CIFAR10_RECORD_BYTES:
        raise MalformedFileError(
            f"{source}: {len(data)} bytes is not a whole, non-zero number of "
            f"{CIFAR10_RECORD_BYTES}-byte records"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    _check_labels(records[:, 0], source)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


def _cifar_batches(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    batches = [
        _parse_cifar_batch(_read_verified(folder / name, CIFAR10_FILES[name]), folder / name)
        for name in names
    ]
    # concatenate copies the views into fresh, writable, contiguous arrays
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches]).astype(np.int64)
    return images, labels


# --------------------------------------------------------------------------------------------
# Loaders


def load_mnist(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as ``(x_train, y_train, x_test, y_test)``.

    Images uint8 (n, 28, 28), labels int64 (n,) in 0..9; n = 60000 train, 10000 test.
    ``data_dir``: the root holding ``mnist/`` (default ``$NNBENCH_DATA``, else the cache).
    ``download=False`` raises ``DatasetNotFoundError`` instead of fetching missing files.
    """
    folder = _ensure_mnist(data_dir, download)
    x_train, y_train = _mnist_split(folder, *MNIST_TRAIN)
    x_test, y_test = _mnist_split(folder, *MNIST_TEST)
    return x_train, y_train, x_test, y_test


def load_cifar10(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)``.

    Images uint8 (n, 3, 32, 32), channels R, G, B; labels int64 (n,) in 0..9 (airplane,
    automobile, bird, cat, deer, dog, frog, horse, ship, truck); n = 50000 train (batches 1-5
    in order), 10000 test. ``data_dir`` / ``download`` as for ``load_mnist``.
    """
    folder = _ensure_cifar10(data_dir, download)
    x_train, y_train = _cifar_batches(folder, CIFAR10_TRAIN)
    x_test, y_test = _cifar_batches(folder, CIFAR10_TEST)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------
# Preprocessing (the assignment's: mean 0, std 1 from the training set; one-hot labels)

_STATS_CHUNK_ELEMENTS = 1 << 22  # float64 temporaries of ~32 MB while computing statistics


def _float_dtype(dtype: object) -> np.dtype:
    resolved = np.dtype(dtype)
    if not np.issubdtype(resolved, np.floating):
        raise TypeError(f"dtype: expected a floating dtype such as float32, got {resolved}")
    return resolved


def one_hot(
    labels: np.ndarray, classes: int = NUM_CLASSES, dtype: object = np.float32
) -> np.ndarray:
    """(n,) integer class indices in [0, classes) -> (n, classes) rows with a single 1."""
    labels = np.asarray(labels)
    classes = operator.index(classes)
    dtype = _float_dtype(dtype)
    if classes < 1:
        raise ValueError(f"classes: expected a positive number of classes, got {classes}")
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array of class indices, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"labels: expected values in [0, {classes}), got min {labels.min()} "
            f"and max {labels.max()}"
        )
    encoded = np.zeros((labels.shape[0], classes), dtype=dtype)
    encoded[np.arange(labels.shape[0]), labels] = 1
    return encoded


def _mean_std(x: np.ndarray, axis: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Population mean and std over ``axis`` (keepdims), in float64, two passes.

    Works in slices along the first axis so no float64 copy of a large uint8 array is made.
    """
    rows = max(1, _STATS_CHUNK_ELEMENTS // max(1, math.prod(x.shape[1:])))
    chunks = [x[start : start + rows] for start in range(0, len(x), rows)]
    count = x.size if axis is None else math.prod(x.shape[a] for a in axis)
    total = sum(np.sum(chunk, axis=axis, dtype=np.float64, keepdims=True) for chunk in chunks)
    mean = total / count
    squares = sum(np.sum(np.square(chunk - mean), axis=axis, keepdims=True) for chunk in chunks)
    return mean, np.sqrt(squares / count)


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = x.astype(dtype, copy=True)
    out -= mean.astype(dtype)
    out /= std.astype(dtype)
    return out


def _check_split(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, image_shapes) -> None:
    if not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[1:] not in image_shapes:
        shapes = " or ".join(str(("n", *shape)) for shape in image_shapes)
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{x_name}: expected an array of shape {shapes}, got {got}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{x_name}: expected integer or float pixels, got {x.dtype}")
    if np.shape(y) != (len(x),):
        raise ValueError(
            f"{y_name}: expected {len(x)} labels (one per row of {x_name}), got shape {np.shape(y)}"
        )


def _check_spread(std: np.ndarray, x_name: str) -> None:
    if not np.all(std > 0):
        raise ValueError(f"{x_name}: zero variance, cannot normalise to std 1")


def preprocess_mnist(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    dtype: object = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The assignment's MNIST preprocessing.

    Images (n, 28, 28) (or already (n, 784)) -> (n, 784) of ``dtype``, shifted and scaled by
    the one mean and std of ALL training pixels (so the training set has mean 0, std 1 and the
    test set is transformed identically); labels -> one-hot (n, 10) of ``dtype``.
    """
    dtype = _float_dtype(dtype)
    image_shapes = ((28, 28), (784,))
    _check_split(x_train, y_train, "x_train", "y_train", image_shapes)
    _check_split(x_test, y_test, "x_test", "y_test", image_shapes)
    flat_train = x_train.reshape(len(x_train), 784)
    flat_test = x_test.reshape(len(x_test), 784)
    return _standardise_split(flat_train, y_train, flat_test, y_test, None, dtype)


def preprocess_cifar10(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    dtype: object = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The assignment's CIFAR-10 preprocessing.

    Images (n, 3, 32, 32) keep their shape and become ``dtype``, each channel shifted and
    scaled by that channel's mean and std over all training images and pixels (training set:
    mean 0, std 1 per channel; test set transformed identically); labels -> one-hot (n, 10).
    """
    dtype = _float_dtype(dtype)
    image_shapes = ((3, 32, 32),)
    _check_split(x_train, y_train, "x_train", "y_train", image_shapes)
    _check_split(x_test, y_test, "x_test", "y_test", image_shapes)
    return _standardise_split(x_train, y_train, x_test, y_test, (0, 2, 3), dtype)


def _standardise_split(x_train, y_train, x_test, y_test, axis, dtype):
    """Both image sets shifted and scaled by the training set's mean and std over ``axis``,
    both label sets one-hot: (x_train, y_train, x_test, y_test) in ``dtype``."""
    mean, std = _mean_std(x_train, axis=axis)
    _check_spread(std, "x_train")
    return (
        _standardise(x_train, mean, std, dtype),
        one_hot(y_train, NUM_CLASSES, dtype),
        _standardise(x_test, mean, std, dtype),
        one_hot(y_test, NUM_CLASSES, dtype),
    )


def load_mnist_preprocessed(
    data_dir: str | os.PathLike | None = None,
    *,
    dtype: object = np.float32,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``preprocess_mnist(*load_mnist(data_dir))``: (n, 784) images, (n, 10) one-hot labels."""
    return preprocess_mnist(*load_mnist(data_dir, download=download), dtype=dtype)


def load_cifar10_preprocessed(
    data_dir: str | os.PathLike | None = None,
    *,
    dtype: object = np.float32,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``preprocess_cifar10(*load_cifar10(data_dir))``: (n, 3, 32, 32) images, one-hot labels."""
    return preprocess_cifar10(*load_cifar10(data_dir, download=download), dtype=dtype)
