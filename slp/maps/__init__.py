"""Attribution maps for whole data sets: every local device, every host, resumable output.

`attribute_dataset` runs any registered attribution method (`slp.available_methods`) over a
data set in batches. Within a process each batch is sharded along its batch axis over the
local devices (a one-axis `jax.sharding.Mesh` and `NamedSharding`); the parameters are
replicated. Across processes started with `jax.distributed.initialize`, the data set is cut
into chunks of ``chunk_size`` consecutive images and chunk ``k`` belongs to process
``k % process_count``: the per-example computation needs no communication, so hosts never
wait for each other inside the loop, and the chunks of all processes cover the data set
exactly once. Collectives are used only to agree at the end (a barrier, and gathering the
maps when they are returned instead of written). Each process checks only its own chunks'
receipts, so an error that some processes meet and others do not (one of their chunks was
computed from other images) stops those, and the others wait at the final barrier until
JAX's distributed timeout: fix the cause and start all processes again.

With ``out`` the maps go to a folder that numpy reads without slp::

    manifest.json          method, options, model and data fingerprints, shapes, chunks
    maps-000000.npy        maps of images [0, chunk_size), float, shape (n, *X)
    maps-000000.json       its receipt: rows, SHA-256 of its input images and of its maps
    ...

A chunk's ``.npy`` and then its receipt are each written atomically (temporary file, then
``os.replace``), so a chunk counts as done only when both are complete. A run started again
with the same arguments computes only the chunks without a receipt, and the chunks whose
``.npy`` no longer matches the SHA-256 of the maps in its receipt (changed, truncated or
replaced since it was written; also a receipt that cannot be read), each with a warning
naming the file and what did not match; arguments that differ from the manifest, or images
that differ from a receipt's, raise `ManifestMismatchError` (for an array, before any chunk
is written; an iterable of batches is checked chunk by chunk as it streams). `read_maps`
returns the maps as one array, each chunk checked against its receipt.

Per-image randomness (``key``, e.g. SmoothGrad's noise) is ``fold_in(key, i)`` for the
image's index ``i`` in the data set, so the maps do not depend on the batch size, the number
of devices or processes, or on which run computed a chunk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from slp._src import guards as _guards
from slp.attributions.registry import get_method
from slp.maps import _compute, _store
from slp.maps._store import IncompleteMapsError, ManifestMismatchError

__all__ = [
    "ChunkedMaps",
    "IncompleteMapsError",
    "ManifestMismatchError",
    "attribute_dataset",
    "read_maps",
]


class ChunkedMaps(NamedTuple):
    """What `attribute_dataset` returns when it writes to ``out``.

    Attributes:
      out: the output folder.
      num_images: N, the images in the data set.
      map_shape: ``X``, one map's shape (the maps are ``(N, *X)``).
      dtype: the maps' dtype.
      num_chunks: chunks of the data set (all processes together).
      computed: indices of the chunks this process computed in this call, ascending.
      reused: indices of this process's chunks already done by an earlier run.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> images = np.random.default_rng(0).random((10, 2), np.float32)  # 10 inputs (2,)
      >>> import tempfile
      >>> s = slp.attribute_dataset(
      ...     f, images, "gradient", batch_size=4, out=tempfile.mkdtemp(), progress=False
      ... )
      >>> s.num_images, s.map_shape, s.dtype, s.num_chunks
      (10, (2,), dtype('float32'), 3)
    """

    out: Path
    num_images: int
    map_shape: tuple[int, ...]
    dtype: np.dtype
    num_chunks: int
    computed: tuple[int, ...]
    reused: tuple[int, ...]


def attribute_dataset(
    f: Callable,
    images,
    method: str,
    *,
    batch_size: int,
    out: str | os.PathLike | None = None,
    params: Any = None,
    target=None,
    key: jax.Array | None = None,
    chunk_size: int | None = None,
    num_images: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    **options,
) -> np.ndarray | ChunkedMaps:
    """Attribution maps of ``method`` for every image of a data set, on every device.

    Each batch of ``batch_size`` images is sharded along the batch axis over ``devices``
    (padded to a multiple of their number by repeating its last image); the last batch
    of a chunk is padded to the same shape, so one program is compiled per call. Under
    `jax.distributed`, process ``p`` of ``P`` computes the chunks ``k`` with
    ``k % P == p``. Host memory holds one chunk of images and maps at a time (plus, without
    ``out``, the returned maps).

    Args:
      f: per-example network ``f(x) -> logits`` (``f(params, x)`` when ``params`` is given).
      images: float images ``(N, *X)``: a numpy or JAX array, a memory-mapped array, a path
        to a ``.npy`` file (memory-mapped), or an iterable of batches ``(b, *X)`` (read
        once, in order; under several processes every process gets the same iterable and
        skips the chunks of the others).
      method: a name from `slp.available_methods`.
      batch_size: images per compiled call on all local devices together (>= 1).
      out: output folder for resumable chunked maps (module docstring); None returns the
        maps.
      params: parameters of ``f(params, x)``, replicated over the devices and passed to
        one compiled program (a second call with other parameters of the same shapes does
        not recompile); None when ``f`` closes over its weights.
      target: None (each image's arg-max logit), a class index, or ``(N,)`` class indices,
        each in ``[0, C)`` for ``C`` logits (checked before any map is computed).
      key: a `jax.random` key for methods that take one; image ``i`` gets
        ``fold_in(key, i)``.
      chunk_size: images per output chunk and per unit of work of a process, a multiple
        of ``batch_size`` (default: ``batch_size``).
      num_images: N for an iterable of batches (for the progress bar and a check).
      devices: the local devices to shard over (default: all of `jax.local_devices`).
      progress: show a progress bar (images/s and time left) on stderr.
      **options: the method's options (see its docstring), the same for every image.

    Returns:
      Without ``out``: the maps, a numpy array ``(N, *X)`` (on every process). With
      ``out``: a `ChunkedMaps` summary; read the maps with `read_maps`.

    Raises:
      ValueError: an unknown method (listing the valid names), ``batch_size < 1``, images
        that are not floating or that ``f`` does not accept, targets of the wrong length
        or out of range (naming the first such image).
      TypeError: an option the method does not take, targets that are not integers.
      PermissionError: ``out`` cannot be written.
      ManifestMismatchError: ``out`` holds maps of other arguments or other images.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> images = np.random.default_rng(0).random((10, 2), np.float32)  # 10 inputs (2,)
      >>> slp.attribute_dataset(f, images, "gradient", batch_size=4, progress=False).shape
      (10, 2)
      >>> import tempfile
      >>> out = tempfile.mkdtemp()
      >>> run = lambda: slp.attribute_dataset(
      ...     f, images, "gradient", batch_size=4, out=out, progress=False
      ... )
      >>> done = run()
      >>> done.num_chunks, done.computed
      (3, (0, 1, 2))
      >>> again = run()
      >>> again.computed, again.reused  # a second call finds every chunk done
      ((), (0, 1, 2))
    """
    batch_size, chunk_size = _check_sizes(method, batch_size, chunk_size, options)
    source = _compute.open_images(images, chunk_size, num_images)
    x_spec, num_logits = _compute.check_images(f, params, source)
    target_arr = _compute.checked_target(target, source.num_images, num_logits)
    batches, map_shape, map_dtype = _compute.make_batches(
        f, method, options, params, key, target_arr, source, batch_size, devices
    )
    process, processes = jax.process_index(), jax.process_count()
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        _store.check_writable(out_dir)
        manifest = _store.new_manifest(
            f,
            params,
            key,
            x_spec,
            method=method,
            options=options,
            target=target,
            num_images=source.num_images,
            map_shape=map_shape,
            map_dtype=map_dtype,
            chunk_size=chunk_size,
        )
        _store.prepare_manifest(out_dir, manifest, writer=process == 0)

    def mine(k: int) -> bool:
        return k % processes == process

    # Called from here, so that their warnings point at the caller (stacklevel).
    receipts = _earlier_receipts(source, mine, out_dir)
    with _progress_bar(method, source.num_images, chunk_size, mine, receipts, progress) as bar:
        local, computed, reused, seen = _run_chunks(
            source, mine, receipts, out_dir, batches, target_arr, bar
        )
    n = source.num_images if source.repeatable else seen
    num_chunks = math.ceil(n / chunk_size)
    if out_dir is None:
        return _collect(local, num_chunks, chunk_size, n, map_shape, map_dtype)
    _complete(out_dir, manifest, num_chunks)
    return ChunkedMaps(out_dir, n, map_shape, map_dtype, num_chunks, tuple(computed), tuple(reused))


def _check_sizes(method: str, batch_size, chunk_size, options: dict) -> tuple[int, int]:
    """``(batch_size, chunk_size)`` as ints, once the method exists and the sizes fit."""
    get_method(method)  # a clear error listing the registered methods
    if not _guards.is_count(batch_size):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    chunk_size = batch_size if chunk_size is None else int(chunk_size)
    if chunk_size < batch_size or chunk_size % batch_size:
        raise ValueError(
            f"chunk_size must be a positive multiple of batch_size={batch_size}, got {chunk_size}"
        )
    if "key" in options:
        raise TypeError("pass the PRNG key as `key=`; image i gets fold_in(key, i)")
    return batch_size, chunk_size


def _progress_bar(method: str, n: int | None, chunk_size: int, mine, receipts, progress: bool):
    """A tqdm bar over the images of this process's chunks still to compute."""
    process, processes = jax.process_index(), jax.process_count()
    total = None
    if n is not None:
        starts = range(0, n, chunk_size)
        total = sum(
            min(chunk_size, n - s) for k, s in enumerate(starts) if mine(k) and k not in receipts
        )
    return tqdm(
        total=total,
        unit="img",
        desc=method + (f" (process {process}/{processes})" if processes > 1 else ""),
        disable=not progress,
        smoothing=0.1,
    )


def _collect(local: dict, num_chunks: int, chunk_size: int, n: int, map_shape, dtype):
    """The maps ``(N, *X)`` of the whole data set, on every process."""
    if jax.process_count() > 1:
        return _compute.gather(local, num_chunks, chunk_size, n, map_shape, dtype)
    return np.concatenate([local[k] for k in range(num_chunks)])


def _complete(out: Path, manifest: dict, num_chunks: int) -> None:
    """Marks the folder's manifest complete once every process has written its chunks."""
    from jax.experimental import multihost_utils

    processes = jax.process_count()
    if processes > 1:
        multihost_utils.sync_global_devices("slp.attribute_dataset: chunks written")
    if jax.process_index() == 0:
        _store.finish(out, manifest, num_chunks)
    if processes > 1:
        multihost_utils.sync_global_devices("slp.attribute_dataset: manifest complete")


def _earlier_receipts(source: _compute.Source, mine, out_dir) -> dict[int, dict]:
    """The receipts of this process's chunks that an earlier run finished, each checked
    against this call's images and against its maps before anything is written (arrays
    only: an iterable's chunks are checked as they come, in `_run_chunks`)."""
    receipts: dict[int, dict] = {}
    if out_dir is not None and source.repeatable:
        for k, start, rows_fn in source.chunks():
            if mine(k) and (r := _store.done_receipt(out_dir, k, start, rows_fn())) is not None:
                receipts[k] = r
    return receipts


def _run_chunks(source: _compute.Source, mine, receipts: dict, out_dir, batches, target_arr, bar):
    """Computes this process's chunks that no receipt covers; writes them to `out_dir` or keeps
    them. Returns ``(maps by chunk (when not written), computed, reused, images seen)``."""
    local: dict[int, np.ndarray] = {}
    computed, reused, seen = [], [], 0
    for k, start, rows_fn in source.chunks():
        if not source.repeatable:  # an iterable: its chunks are in memory already
            seen = start + len(rows_fn())
        if not mine(k):
            continue
        if out_dir is not None and not source.repeatable:
            if (r := _store.done_receipt(out_dir, k, start, rows_fn())) is not None:
                receipts[k] = r
        if k in receipts:
            reused.append(k)
            continue
        rows = rows_fn()
        if target_arr is not None and target_arr.ndim == 1 and start + len(rows) > len(target_arr):
            raise ValueError(f"target has {len(target_arr)} entries; the images go beyond")
        maps = batches(rows, start)
        bar.update(len(rows))
        if out_dir is not None:
            _store.write_chunk(out_dir, k, start, maps, _store.sha256_arrays(rows))
        else:
            local[k] = maps
        computed.append(k)
    return local, computed, reused, seen


def read_maps(out: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> np.ndarray:
    """The maps written by `attribute_dataset` to ``out``, as one array.

    Args:
      out: the output folder.
      mmap: memory-map the chunks while concatenating them (lower peak memory).
      verify: check each chunk's maps against the SHA-256 in its receipt (default). It
        costs one SHA-256 pass over the maps, about 1 s per GB on one CPU core (10,000
        MNIST-sized float32 maps, 31 MB: 0.03 s to hash, 0.05 s to read verified against
        0.006 s unverified from the page cache); ``verify=False`` skips it, and a chunk
        changed since it was written is then read as it is.

    Returns:
      The maps ``(N, *X)`` in data-set order.

    Raises:
      FileNotFoundError: no manifest in ``out``.
      ManifestMismatchError: the manifest is not one (not JSON, or without the chunk
        size, the number of images or the maps' shape and dtype), naming it.
      IncompleteMapsError: chunks are missing (the run is unfinished), listing them; or a
        chunk cannot be read, has the wrong shape or (``verify``) does not match its
        receipt, naming its file.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> images = np.random.default_rng(0).random((10, 2), np.float32)  # 10 inputs (2,)
      >>> import tempfile
      >>> out = tempfile.mkdtemp()
      >>> _ = slp.attribute_dataset(f, images, "gradient", batch_size=4, out=out, progress=False)
      >>> slp.read_maps(out).shape
      (10, 2)
    """
    out = Path(out)
    path = out / _store.MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{out} holds no {_store.MANIFEST}; not an attribute_dataset folder"
        )
    manifest = _store.read_manifest(out, ("num_images", "chunk_size", "map_shape", "map_dtype"))
    n = manifest["num_images"]
    chunk = manifest["chunk_size"]
    if n is None:
        raise IncompleteMapsError(
            f"{out}: the run over an iterable of unknown length has not finished"
        )
    num_chunks = math.ceil(n / chunk)
    receipts = [_store.read_receipt(out, k) for k in range(num_chunks)]
    missing = [k for k, r in enumerate(receipts) if r is None]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise IncompleteMapsError(
            f"{out}: {len(missing)} of {num_chunks} chunks are not done ({shown}); run "
            "attribute_dataset again with the same arguments to compute them"
        )
    again = (
        "; run attribute_dataset again with the same arguments to compute it again, or "
        "read_maps(verify=False) to read it as it is"
    )
    maps = np.empty((n, *manifest["map_shape"]), np.dtype(manifest["map_dtype"]))
    for k in range(num_chunks):
        try:
            part = np.load(_store.chunk_path(out, k), mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as err:
            raise IncompleteMapsError(
                f"{_store.chunk_path(out, k)} cannot be read as a .npy file ({type(err).__name__}: "
                f"{err}); run attribute_dataset again with the same arguments to compute it"
            ) from None
        start, stop = k * chunk, min((k + 1) * chunk, n)
        if part.shape != maps[start:stop].shape:
            raise IncompleteMapsError(
                f"{_store.chunk_path(out, k)} has shape {part.shape}, expected "
                f"{maps[start:stop].shape}; run attribute_dataset again with the same "
                "arguments to compute it again"
            )
        if verify and (why := _store.maps_mismatch(part, receipts[k], out, k)) is not None:
            raise IncompleteMapsError(f"{_store.chunk_path(out, k)}: {why}{again}")
        maps[start:stop] = part
    return maps
