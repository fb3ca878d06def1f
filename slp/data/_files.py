"""File helpers of the package: the path type of its arguments and atomic writes.

Not public API. Every file the package writes (dataset files, checkpoints, attribution
maps, figures) goes through `atomic_writer`: the bytes go to a temporary file in the
target's own directory and are moved into place with ``os.replace`` only once complete, so
an interrupted write never leaves a partial file under the final name. This module imports
only the standard library, so that `slp.checkpoints` can write files without the data
loaders.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeAlias

#: A file or folder argument: a string or any ``os.PathLike``.
PathLike: TypeAlias = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_writer(
    path: PathLike, *, verify: Callable[[Path], None] | None = None
) -> Iterator[BinaryIO]:
    """Opens a binary file that appears under ``path`` only once it is complete.

    The data go to a temporary file in the same directory; when the ``with`` block ends
    without an exception (and ``verify``, if given, accepts the temporary file) it is flushed
    to disk and moved onto ``path`` with ``os.replace``. On any exception the temporary file
    is removed and an existing file at ``path`` is left untouched.

    Args:
      path: the final file name; its directory is created when missing.
      verify: called with the temporary file's path before the rename; raise to reject it.

    Returns:
      A context manager yielding the open binary file object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened exclusively with mode 0o666, so the finished file gets the
    # process umask's usual permissions (mkstemp would make it private to the owner).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
