"""smallNORB (LeCun, Huang & Bottou 2004) from its official binary matrix files.

The six files (``smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat`` and
``smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat``, raw or ``.gz``) live in
``<data dir>/smallnorb/`` and are fetched from https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/
when missing. No checksums of these files are hard-coded (none could be verified); instead
every file's structure (type, shape, label range) is checked.

Binary matrix format (from the dataset's page): little-endian int32 magic number giving the
element type (0x1E3D4C51 float32, 0x1E3D4C52 packed, 0x1E3D4C53 float64, 0x1E3D4C54 int32,
0x1E3D4C55 uint8, 0x1E3D4C56 int16), int32 ndim, then max(3, ndim) int32 dimensions (only the
first ndim are used), then the values in C order, little-endian.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np

from slp.data import _cache, idx
from slp.data._cache import CorruptDataError, DatasetNotFoundError
from slp.data._files import PathLike
from slp.data.dataset import Dataset

CLASSES = ("animal", "human", "airplane", "truck", "car")
SPLITS = ("train", "test")
KINDS = ("dat", "cat", "info")
BASE_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
_STEMS = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing",
}
NORB_TYPES: dict[int, np.dtype] = {
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C55: np.dtype("u1"),
    0x1E3D4C56: np.dtype("<i2"),
}
_PACKED_MAGIC = 0x1E3D4C52
_MAX_NDIM = 32


def file_names(split: str) -> tuple[str, str, str]:
    """The official (uncompressed) file names of a split: dat, cat, info."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(f"{_STEMS[split]}-{kind}.mat" for kind in KINDS)  # type: ignore[return-value]


def parse_norb_matrix(data: bytes, *, name: str = "matrix") -> np.ndarray:
    """Parses the bytes of an (uncompressed) NORB binary matrix file.

    Args:
      data: the whole file.
      name: what the bytes are (a file name), for error messages.

    Returns:
      A writable native-byte-order array with the header's first ndim dimensions.

    Raises:
      CorruptDataError: unknown magic number, bad ndim, or a size that disagrees with the header.
    """
    if len(data) < 8:
        raise CorruptDataError(f"{name}: {len(data)} bytes is too short for a NORB header")
    magic, ndim = struct.unpack("<iI", data[:8])
    if magic == _PACKED_MAGIC:
        raise CorruptDataError(f"{name}: packed NORB matrices are not supported")
    if magic not in NORB_TYPES:
        raise CorruptDataError(
            f"{name}: not a NORB binary matrix (magic number 0x{magic & 0xFFFFFFFF:08X})"
        )
    if ndim > _MAX_NDIM:
        raise CorruptDataError(f"{name}: implausible number of dimensions {ndim}")
    stored = max(3, ndim)
    header = 8 + 4 * stored
    if len(data) < header:
        raise CorruptDataError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f"<{stored}i", data[8:header])[:ndim]
    if any(d < 0 for d in dims):
        raise CorruptDataError(f"{name}: negative dimension in {dims}")
    return idx.payload(data, header, dims, NORB_TYPES[magic], name=name)


def read_norb_matrix(path: PathLike) -> np.ndarray:
    """Reads a NORB binary matrix file, raw or gzip-compressed (detected from the content).

    Args:
      path: the file.

    Returns:
      The array (see :func:`parse_norb_matrix`).
    """
    return parse_norb_matrix(_cache.read_maybe_gzip(path), name=str(path))


def load_smallnorb(
    split: str = "train", *, data_dir: PathLike | None = None, download: bool = True
) -> Dataset:
    """Loads smallNORB from the official binary files (24,300 pairs per split).

    Args:
      split: "train" or "test".
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``. The files
        are in its ``smallnorb/`` folder.
      download: fetch missing files from the official site.

    Returns:
      Dataset: images uint8 (N, 2, 96, 96), labels int32 (N,), info int32 (N, 4) (see
      `Dataset`), source ``"official"``.

    Raises:
      DatasetNotFoundError: files missing and not obtainable (the message says what was
        tried and where to put the files by hand).
      CorruptDataError: a file is damaged or has the wrong type or shape.

    Examples:
      >>> pairs = slp.data.load_smallnorb("test")  # doctest: +SKIP
      >>> pairs.images.shape, pairs.info.shape  # doctest: +SKIP
      ((24300, 2, 96, 96), (24300, 4))
      >>> import tempfile
      >>> slp.data.load_smallnorb("test", data_dir=tempfile.mkdtemp(), download=False)
      Traceback (most recent call last):
      ...
      slp.data._cache.DatasetNotFoundError: smallNORB test files missing (download=False). ...
    """
    names = file_names(split)
    folder = _cache.data_dir(data_dir) / "smallnorb"
    missing = [n for n in names if _locate(folder, n) is None]
    if missing:
        if not download:
            raise DatasetNotFoundError(
                f"smallNORB {split} files missing (download=False). " + _manual_hint(folder)
            )
        _fetch(folder, missing)
    dat, cat, info = (read_norb_matrix(_locate(folder, n)) for n in names)  # type: ignore[arg-type]
    _check(dat, cat, info, folder / names[0])
    return Dataset(images=dat, labels=cat.astype(np.int32), info=info.astype(np.int32))


def _check(dat: np.ndarray, cat: np.ndarray, info: np.ndarray, where: Path) -> None:
    if dat.dtype != np.uint8 or dat.ndim != 4 or dat.shape[1:] != (2, 96, 96):
        raise CorruptDataError(
            f"{where}: expected uint8 (N, 2, 96, 96), got {dat.dtype} {dat.shape}"
        )
    n = dat.shape[0]
    if cat.dtype != np.int32 or cat.shape != (n,):
        raise CorruptDataError(f"{where}: expected cat int32 ({n},), got {cat.dtype} {cat.shape}")
    if n and (cat.min() < 0 or cat.max() >= len(CLASSES)):
        raise CorruptDataError(f"{where}: category labels outside 0..{len(CLASSES) - 1}")
    if info.dtype != np.int32 or info.shape != (n, 4):
        raise CorruptDataError(
            f"{where}: expected info int32 ({n}, 4), got {info.dtype} {info.shape}"
        )


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _manual_hint(folder: Path) -> str:
    names = [n for split in SPLITS for n in file_names(split)]
    return (
        f"To place the files by hand, put {', '.join(names)} (raw, or each with .gz) from "
        f"{BASE_URL} into {folder}/ (set SLP_DATA_DIR to use another data directory)."
    )


def _verify_kind(name: str):
    expected = {"dat": (np.uint8, 4), "cat": (np.int32, 1), "info": (np.int32, 2)}
    dtype, ndim = expected[name.rsplit("-", 1)[1].removesuffix(".mat")]

    def verify(tmp: Path) -> None:
        arr = parse_norb_matrix(_cache.read_maybe_gzip(tmp), name=name)
        if arr.dtype != dtype or arr.ndim != ndim:
            raise CorruptDataError(f"{name}: unexpected {arr.dtype} array of shape {arr.shape}")

    return verify


def _download(url: str, target: Path, name: str) -> None:
    _cache.download_file(url, target, verify=_verify_kind(name))


def _fetch(folder: Path, names: list[str]) -> None:
    start = time.perf_counter()
    for name in names:
        url = f"{BASE_URL}{name}.gz"
        try:
            _download(url, folder / f"{name}.gz", name)
        except Exception as e:  # noqa: BLE001 - the reason goes into the message
            raise DatasetNotFoundError(
                "smallNORB could not be fetched. Sources tried, in order:\n"
                f"  - the official site, {url}: {type(e).__name__}: {e}\n"
                "(no mirror or package of smallNORB is known to this loader)\n"
                + _manual_hint(folder)
            ) from e
    _cache.log(f"smallNORB fetched from {BASE_URL} in {time.perf_counter() - start:.1f} s")
