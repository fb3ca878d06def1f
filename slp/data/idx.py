"""Reader for the IDX file format of MNIST and Fashion-MNIST.

An IDX file is: two zero bytes, one type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), one byte giving the number of dimensions, then each dimension as a
big-endian uint32, then the values in C order, big-endian. (LeCun & Cortes, "The MNIST database
of handwritten digits", file format section.)
"""

from __future__ import annotations

import math
import struct

import numpy as np

from slp.data._cache import CorruptDataError, read_maybe_gzip
from slp.data._files import PathLike

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}


def parse_idx(data: bytes, *, name: str = "IDX data") -> np.ndarray:
    """Parses the bytes of an (uncompressed) IDX file.

    Args:
      data: the whole file.
      name: what the bytes are (a file name), used in error messages.

    Returns:
      A writable array in native byte order with the header's dimensions and dtype.

    Raises:
      CorruptDataError: bad magic number, unknown type, or a size that disagrees with the
        header (truncated or trailing bytes).
    """
    if len(data) < 4:
        raise CorruptDataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise CorruptDataError(
            f"{name}: not an IDX file (magic number 0x{data[:4].hex()} does not start with 0000)"
        )
    if code not in IDX_TYPES:
        raise CorruptDataError(f"{name}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    return payload(data, header, dims, IDX_TYPES[code], name=name)


def payload(data: bytes, header: int, dims: tuple[int, ...], dtype: np.dtype, *, name: str):
    """The array stored after a ``header``-byte header, checked against ``dims``.

    Shared by the IDX and NORB binary-matrix readers.

    Raises:
      CorruptDataError: the file is shorter or longer than the header says.
    """
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise CorruptDataError(
            f"{name}: file {kind}: header says dims {dims} of {dtype.name} "
            f"({expected} bytes in all), file has {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file, raw or gzip-compressed (detected from the content).

    Args:
      path: the file.

    Returns:
      The array, with the dimensions and dtype given in the file's header.

    Raises:
      CorruptDataError: the file is damaged (see :func:`parse_idx`).

    Examples:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "three.idx"
      >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))  # uint8, 1 dim of 3
      >>> slp.data.read_idx(path)
      array([1, 2, 3], dtype=uint8)
    """
    return parse_idx(read_maybe_gzip(path), name=str(path))


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encodes an array as an IDX file (the inverse of :func:`parse_idx`).

    Args:
      arr: an array of one of the IDX dtypes (uint8, int8, int16, int32, float32, float64),
        at most 255 dimensions.

    Returns:
      The file's bytes.
    """
    arr = np.asarray(arr)
    key = arr.dtype.newbyteorder("=")
    if key not in _TYPE_CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    if arr.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {arr.ndim}")
    code = _TYPE_CODES[key]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes()
