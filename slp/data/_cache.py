"""The data directory, checksums and small download helpers of the data loaders.

Every dataset file the loaders write goes through `slp.data._files.atomic_writer` (moved
into place only once complete and verified, where a checksum is known), so an interrupted
fetch never leaves a partial file under the final name.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slp.data._files import PathLike, atomic_writer

ENV_DATA_DIR = "SLP_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/slp")
DOWNLOAD_TIMEOUT_S = 5.0
_CHUNK = 1 << 20


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither in the data directory nor obtainable from any source.

    Examples:
      >>> import tempfile
      >>> try:
      ...     slp.data.load_mnist("test", data_dir=tempfile.mkdtemp(), download=False)
      ... except slp.data.DatasetNotFoundError as e:
      ...     print(str(e).split(":")[0])
      MNIST test files missing from ...
    """


class CorruptDataError(ValueError):
    """A dataset file is malformed, truncated or fails its checksum.

    Examples:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "short.idx"
      >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3]))  # 4 values promised
      >>> slp.data.read_idx(path)
      Traceback (most recent call last):
      ...
      slp.data._cache.CorruptDataError: ...short.idx: file truncated: header says dims (4,) ...
    """


def data_dir(path: PathLike | None = None) -> Path:
    """Returns the data directory, creating it when missing.

    Args:
      path: an explicit directory; when None, the ``SLP_DATA_DIR`` environment variable,
        and when that is unset or empty, ``~/.cache/slp``.

    Returns:
      The absolute directory (it exists on return).

    Examples:
      >>> import tempfile, pathlib
      >>> folder = tempfile.mkdtemp()
      >>> slp.data.data_dir(folder) == pathlib.Path(folder).resolve()
      True
    """
    if path is None:
        path = os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    out = Path(path).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def log(message: str) -> None:
    """Prints a progress line of the data loaders to stderr."""
    print(f"slp.data: {message}", file=sys.stderr, flush=True)


def short_reason(error: BaseException, limit: int = 80) -> str:
    """``Type: message`` of an exception on one line, cut to about ``limit`` characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def atomic_write_bytes(path: PathLike, data: bytes, *, md5: str | None = None) -> Path:
    """Writes ``data`` to ``path`` atomically, checking its MD5 first when one is given.

    Args:
      path: the final file name.
      data: the file's complete contents.
      md5: the expected hex MD5 of ``data``; a mismatch raises and writes nothing.

    Returns:
      ``path`` as a Path.
    """
    if md5 is not None:
        check_digest(data, md5, algorithm="md5", name=str(path))
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def digest(data: bytes, algorithm: str = "sha256") -> str:
    """Returns the hex digest of ``data`` (``algorithm``: any hashlib name, e.g. md5)."""
    return hashlib.new(algorithm, data).hexdigest()


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """Returns the hex digest of a file's bytes, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_digest(data: bytes, expected: str, *, algorithm: str = "md5", name: str = "data") -> None:
    """Raises CorruptDataError unless ``data`` has the hex digest ``expected``.

    Args:
      data: the bytes to check.
      expected: the expected hex digest (case-insensitive).
      algorithm: a hashlib algorithm name.
      name: what the bytes are, for the message.
    """
    got = digest(data, algorithm)
    if got != expected.lower():
        raise CorruptDataError(
            f"{name}: {algorithm} checksum mismatch (expected {expected}, got {got}); "
            "the file is corrupt or not the official one"
        )


def tar_member_bytes(tar: tarfile.TarFile, member: str, *, archive: str) -> bytes:
    """The bytes of regular file ``member`` of an open tar archive (named ``archive`` in
    messages); CorruptDataError when it is missing or not a regular file."""
    try:
        f = tar.extractfile(member)
    except KeyError:
        f = None
    if f is None:
        raise CorruptDataError(f"{archive} has no file {member}")
    return f.read()


def read_maybe_gzip(path: PathLike) -> bytes:
    """Returns a file's bytes, decompressed when the file is gzip (by content, not name).

    Raises:
      CorruptDataError: the gzip stream is truncated or damaged.
    """
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise CorruptDataError(f"{path}: damaged or truncated gzip file ({e})") from e


def download_file(
    url: str,
    path: PathLike,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Streams ``url`` to ``path`` atomically; ``verify`` may reject the temporary file.

    Args:
      url: the address (http or https).
      path: the final file name.
      timeout: seconds to connect and between reads.
      verify: called with the complete temporary file before the rename.

    Returns:
      ``path`` as a Path.
    """
    from tqdm import tqdm  # noqa: PLC0415 - only needed while downloading

    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
        size = response.headers.get("Content-Length")
        total = int(size) if size and size.isdigit() else None
        # A bar on terminals only (disable=None), for files that take a moment.
        with (
            atomic_writer(path, verify=verify) as f,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=Path(path).name,
                leave=False,
                disable=None if total is None or total > _CHUNK else True,
            ) as bar,
        ):
            for block in iter(lambda: response.read(_CHUNK // 16), b""):
                f.write(block)
                bar.update(len(block))
    return Path(path)


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed = {
        "_reconstruct": multiarray._reconstruct,
        "scalar": multiarray.scalar,
        "_frombuffer": getattr(numeric, "_frombuffer", None),
    }
    table: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray}
    table[("numpy", "dtype")] = np.dtype
    # Python 3 pickles of protocol <= 2 spell bytes as _codecs.encode(str, "latin1").
    table[("_codecs", "encode")] = codecs.encode
    for core in ("numpy.core", "numpy._core"):
        for name, obj in allowed.items():
            if obj is not None:
                mod = "numeric" if name == "_frombuffer" else "multiarray"
                table[(f"{core}.{mod}", name)] = obj
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and plain Python data, and nothing else."""

    _table = None

    def find_class(self, module: str, name: str) -> object:
        if _NumpyOnlyUnpickler._table is None:
            _NumpyOnlyUnpickler._table = _numpy_pickle_globals()
        try:
            return _NumpyOnlyUnpickler._table[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a data pickle (only numpy arrays)"
            ) from None


def load_data_pickle(data: bytes, *, name: str = "pickle") -> object:
    """Unpickles a data file holding only numpy arrays and plain Python containers.

    Python 2 pickles (the classic MNIST and CIFAR files) are read with ``latin1`` strings.
    Any other global (functions, classes) is refused, so a tampered file cannot run code.

    Args:
      data: the pickle's bytes.
      name: what the bytes are, for error messages.

    Returns:
      The unpickled object.
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CorruptDataError(f"{name}: cannot read the pickle ({e})") from e
