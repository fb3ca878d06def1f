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

import functools
import hashlib
import itertools
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from _slp import guards as _guards
from slp.attributions.registry import attribute, check_target, get_method
from slp.data import atomic_writer

__all__ = [
    "MANIFEST",
    "ManifestMismatchError",
    "IncompleteMapsError",
    "ChunkedMaps",
    "attribute_dataset",
    "read_maps",
    "chunk_path",
]

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK_NAME = "maps-{index:06d}"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class ManifestMismatchError(ValueError):
    """An output folder holds maps computed with other arguments or from other images."""


class IncompleteMapsError(RuntimeError):
    """`read_maps` found chunks without their maps or receipts, or maps that do not match
    their receipts."""


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
    """

    out: Path
    num_images: int
    map_shape: tuple[int, ...]
    dtype: np.dtype
    num_chunks: int
    computed: tuple[int, ...]
    reused: tuple[int, ...]


def chunk_path(out: str | os.PathLike, index: int) -> Path:
    """The ``.npy`` file of chunk ``index`` in the output folder ``out``."""
    return Path(out) / (_CHUNK_NAME.format(index=index) + ".npy")


def _receipt_path(out: Path, index: int) -> Path:
    return out / (_CHUNK_NAME.format(index=index) + ".json")


# ----------------------------------------------------------------------------------
# Fingerprints: plain JSON values that are equal exactly when the arguments are.


def _sha256_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _leaf_arrays(tree) -> list[np.ndarray]:
    leaves = jax.tree.leaves(tree)
    return [np.asarray(jax.random.key_data(x)) if _is_key(x) else np.asarray(x) for x in leaves]


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _value_fingerprint(value) -> Any:
    """A JSON value standing for an option's value (arrays by their SHA-256)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_value_fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _value_fingerprint(v) for k, v in sorted(value.items())}
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(jax.random.key_data(value)) if _is_key(value) else np.asarray(value)
        if a.ndim == 0 and not _is_key(value):
            return a.item()
        return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": _sha256_arrays(a)}
    return _ADDRESS.sub("", repr(value))


def _model_fingerprint(f: Callable, params, x_spec: jax.ShapeDtypeStruct) -> str:
    """SHA-256 of f's program (its jaxpr at one image) and of every weight it uses.

    Closed-over arrays (e.g. a flax module's bound parameters) are the jaxpr's constants;
    explicit ``params`` are hashed as given. Memory addresses in the printed program
    (function objects in parameters of custom derivatives) are removed.
    """
    if params is None:
        closed = jax.make_jaxpr(f)(x_spec)
        weights = []
    else:
        closed = jax.make_jaxpr(f)(params, x_spec)
        weights = _leaf_arrays(params)
    text = _ADDRESS.sub("", str(closed.jaxpr))
    h = hashlib.sha256(text.encode())
    h.update(_sha256_arrays(*_leaf_arrays(closed.consts), *weights).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------
# The data set as a sequence of chunks.


class _Source(NamedTuple):
    """The images as chunks: ``chunks()`` yields ``(index, start, rows_fn)``.

    ``repeatable``: an array (``chunks()`` may run again; ``rows_fn`` reads lazily), not
    an iterable of batches (one pass, rows in memory already).
    """

    image_shape: tuple[int, ...]
    dtype: np.dtype
    num_images: int | None
    repeatable: bool
    chunks: Callable[[], Iterator[tuple[int, int, Callable[[], np.ndarray]]]]


def _open_images(images, chunk_size: int, num_images: int | None) -> _Source:
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.suffix != ".npy":
            raise ValueError(f"images given by path must be a .npy file, got {path}")
        images = np.load(path, mmap_mode="r")
    if isinstance(images, (np.ndarray, jax.Array)):
        return _array_source(images, chunk_size, num_images)
    if not isinstance(images, Iterable):
        raise TypeError(
            "images must be an array (N, *X), a path to a .npy file or an iterable of "
            f"batches (b, *X); got {type(images).__name__}"
        )
    return _batches_source(iter(images), chunk_size, num_images)


def _array_source(images, chunk_size: int, num_images: int | None) -> _Source:
    """Chunks of an array (N, *X) (memory-mapped or in memory), read on demand."""
    if images.ndim < 2:
        raise ValueError(f"images must be an array (N, *X) of N examples, got shape {images.shape}")
    n = int(images.shape[0])
    if num_images is not None and num_images != n:
        raise ValueError(f"num_images={num_images} but the images hold {n} examples")
    if n == 0:
        raise ValueError("the data set is empty")
    arr = images

    def chunks():
        for k, start in enumerate(range(0, n, chunk_size)):
            stop = min(start + chunk_size, n)
            yield k, start, functools.partial(lambda a, b: np.asarray(arr[a:b]), start, stop)

    return _Source(tuple(arr.shape[1:]), np.dtype(arr.dtype), n, True, chunks)


def _batches_source(it: Iterator, chunk_size: int, num_images: int | None) -> _Source:
    """Chunks re-cut from an iterator of batches (b, *X), which can be consumed only once."""
    try:
        first = np.asarray(next(it))
    except StopIteration:
        raise ValueError("the data set is empty") from None
    if first.ndim < 2:
        raise ValueError(f"each batch must be an array (b, *X), got shape {first.shape}")
    shape, dtype = tuple(first.shape[1:]), first.dtype
    used = [False]

    def chunks():
        if used[0]:
            raise RuntimeError("an iterable of batches can be consumed only once")
        used[0] = True
        buf, have, k, start = [], 0, 0, 0
        for batch in itertools.chain([first], it):
            batch = np.asarray(batch)
            if batch.shape[1:] != shape or batch.dtype != dtype:
                raise ValueError(
                    f"batch {batch.shape} {batch.dtype} differs from the first batch's "
                    f"(b, {', '.join(map(str, shape))}) {dtype}"
                )
            buf.append(batch)
            have += len(batch)
            while have >= chunk_size:
                rows = np.concatenate(buf)
                chunk, rest = rows[:chunk_size], rows[chunk_size:]
                yield k, start, functools.partial(lambda c: c, chunk)
                k, start, have, buf = k + 1, start + chunk_size, len(rest), [rest]
        if have:
            rows = np.concatenate(buf)
            yield k, start, functools.partial(lambda c: c, rows)
        if num_images is not None and start + have != num_images:
            raise ValueError(f"num_images={num_images} but the batches held {start + have}")

    return _Source(shape, np.dtype(dtype), num_images, False, chunks)


# ----------------------------------------------------------------------------------
# The compiled computation over one batch.


def _per_batch(
    f: Callable,
    method: str,
    options: tuple[tuple[str, Any], ...],
    *,
    with_params: bool,
    with_target: bool,
    with_key: bool,
    sharding: NamedSharding,
) -> Callable:
    """``jit(vmap(one image))``: ``(params, key, x_BX, target_B, index_B) -> maps_BX``."""

    def one(params, key, x, target, index):
        g = functools.partial(f, params) if with_params else f
        opts = dict(options)
        if with_key:
            opts["key"] = jax.random.fold_in(key, index)
        return attribute(g, x, method, target=target if with_target else None, **opts)

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0, 0)), out_shardings=sharding)


# Keyed on f (and so on the weights it closes over): a few entries, not a leak of models.
_per_batch_cached = functools.lru_cache(maxsize=8)(_per_batch)


def _compiled(f, method, options: dict, **kw) -> Callable:
    items = tuple(sorted(options.items()))
    try:
        hash((f, items))
    except TypeError:  # an array option: compile for this call only
        return _per_batch(f, method, items, **kw)
    return _per_batch_cached(f, method, items, **kw)


def _check_images(f: Callable, params, source: _Source) -> tuple[jax.ShapeDtypeStruct, int]:
    """One image's shape and dtype, and ``C``, once ``f`` is known to take it and return
    ``C`` logits."""
    if not jnp.issubdtype(source.dtype, jnp.floating):
        raise ValueError(
            f"images have dtype {source.dtype}; attribution maps need floating inputs "
            "(convert them as the network expects, e.g. images.astype(np.float32) / 255)"
        )
    x_spec = jax.ShapeDtypeStruct(source.image_shape, source.dtype)
    logits_of = (lambda x: f(params, x)) if params is not None else f
    if _guards.is_single_example(f):
        logits_of = _guards.single_example(logits_of)
    try:
        y = jax.eval_shape(logits_of, x_spec)
    except Exception as err:  # any failure means f does not take such an image
        raise ValueError(
            f"f does not accept one image of shape {source.image_shape} and dtype "
            f"{source.dtype} (images are (N, *X) with X one example's shape): "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(y, jax.ShapeDtypeStruct):
        # Here, with concrete params: inside the compiled step they are traced, and the
        # check, which evaluates f, cannot run there.
        _guards.check_one_example(logits_of, x_spec, y)
    if not isinstance(y, jax.ShapeDtypeStruct) or len(y.shape) != 1:
        raise ValueError(f"f must map one image to a vector of logits; it returns {y}")
    return x_spec, y.shape[0]


def _check_target(target, n: int | None, num_logits: int) -> np.ndarray | None:
    """``target`` as int32: None, a scalar or ``(N,)``, each in ``[0, num_logits)``."""
    if target is None:
        return None
    if isinstance(target, jax.core.Tracer):
        raise TypeError("target must be a concrete value (a NumPy or JAX array), not traced")
    check_target(target, num_logits, batched=True, num_examples=n)  # before any map
    return np.asarray(target, dtype=np.int32)


# ----------------------------------------------------------------------------------
# The output folder.


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PermissionError(
            f"output directory {out} is not writable ({type(err).__name__}: {err}); "
            "pass another `out` or fix its permissions"
        ) from err


def _write_json(path: Path, value: dict) -> None:
    with atomic_writer(path) as fh:
        fh.write((json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def _manifest_mismatch(found: dict, expected: dict) -> list[str]:
    skip = {"complete", "inputs_sha256", "versions"}
    if expected.get("num_images") is None:  # an iterable of unknown length
        skip.add("num_images")
    keys = [k for k in expected if k not in skip]
    return [
        f"  {k}: the folder has {json.dumps(found.get(k))}, this call gives "
        f"{json.dumps(expected[k])}"
        for k in keys
        if found.get(k) != expected[k]
    ]


def _prepare_manifest(out: Path, expected: dict, *, writer: bool) -> None:
    path = out / MANIFEST
    if path.is_file():
        found = json.loads(path.read_text())
        diffs = _manifest_mismatch(found, expected)
        if diffs:
            raise ManifestMismatchError(
                f"{path} was written by a run with other arguments; refusing to mix their "
                "maps:\n" + "\n".join(diffs) + "\nUse another `out`, or remove the folder "
                "to start again."
            )
    elif writer:
        _write_json(path, expected)


def _read_receipt(out: Path, index: int) -> dict | None:
    """The receipt of a finished chunk; None when it or its maps are missing.

    Raises:
      IncompleteMapsError: the receipt is not a JSON object with the maps' SHA-256.
    """
    receipt = _receipt_path(out, index)
    if not receipt.is_file() or not chunk_path(out, index).is_file():
        return None
    try:
        value = json.loads(receipt.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IncompleteMapsError(f"{receipt} is not a readable receipt ({err})") from None
    if not isinstance(value, dict) or not isinstance(value.get("maps_sha256"), str):
        raise IncompleteMapsError(f"{receipt} is not a receipt: it names no maps_sha256")
    return value


def _maps_mismatch(maps: np.ndarray, receipt: dict, out: Path, index: int) -> str | None:
    """What about chunk ``index``'s maps does not match its receipt; None when they match."""
    if _sha256_arrays(maps) == receipt["maps_sha256"]:
        return None
    return (
        f"its maps (shape {maps.shape}, {maps.dtype}) do not match the SHA-256 recorded in "
        f"{_receipt_path(out, index).name}: the file changed after it was written"
    )


def _chunk_mismatch(out: Path, index: int, receipt: dict) -> str | None:
    """`_maps_mismatch` of chunk ``index``'s ``.npy``, or that it cannot be read."""
    try:
        maps = np.load(chunk_path(out, index), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return f"it cannot be read as a .npy file ({type(err).__name__}: {err})"
    return _maps_mismatch(maps, receipt, out, index)


def _done_receipt(out: Path, index: int, start: int, rows: np.ndarray) -> dict | None:
    """The receipt of chunk ``index`` when an earlier run finished it and its maps still
    match; None (after a warning that names the file and what did not match) when the
    chunk must be computed again.

    Raises:
      ManifestMismatchError: the receipt is of other images (`_check_receipt`).
    """
    try:
        receipt = _read_receipt(out, index)
    except IncompleteMapsError as err:
        warnings.warn(f"{err}; computing chunk {index} again", UserWarning, stacklevel=4)
        return None
    if receipt is None:
        return None
    _check_receipt(receipt, index, start, rows, out)
    why = _chunk_mismatch(out, index, receipt)
    if why is None:
        return receipt
    warnings.warn(
        f"{chunk_path(out, index)}: {why}; computing chunk {index} again",
        UserWarning,
        stacklevel=4,
    )
    return None


def _write_chunk(out: Path, index: int, start: int, maps: np.ndarray, inputs_sha: str) -> None:
    with atomic_writer(chunk_path(out, index)) as fh:
        np.save(fh, maps, allow_pickle=False)
    receipt = {
        "index": index,
        "start": start,
        "stop": start + len(maps),
        "inputs_sha256": inputs_sha,
        "maps_sha256": _sha256_arrays(maps),
        "process": jax.process_index(),
    }
    _write_json(_receipt_path(out, index), receipt)


# ----------------------------------------------------------------------------------
# The public functions.


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
    """
    get_method(method)  # a clear error listing the registered methods
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    chunk_size = batch_size if chunk_size is None else int(chunk_size)
    if chunk_size < batch_size or chunk_size % batch_size:
        raise ValueError(
            f"chunk_size must be a positive multiple of batch_size={batch_size}, got {chunk_size}"
        )
    if "key" in options:
        raise TypeError("pass the PRNG key as `key=`; image i gets fold_in(key, i)")

    source = _open_images(images, chunk_size, num_images)
    x_spec, num_logits = _check_images(f, params, source)
    target_arr = _check_target(target, source.num_images, num_logits)
    n = source.num_images

    devices = list(jax.local_devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), ("batch",))
    batch_sharding = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    padded = math.ceil(batch_size / len(devices)) * len(devices)
    step = _compiled(
        f,
        method,
        options,
        with_params=params is not None,
        with_target=target is not None,
        with_key=key is not None,
        sharding=batch_sharding,
    )
    i_spec = jax.ShapeDtypeStruct((padded,), np.int32)
    map_spec = jax.eval_shape(
        step,
        params,
        key,
        jax.ShapeDtypeStruct((padded, *source.image_shape), source.dtype),
        i_spec,
        i_spec,
    )
    map_shape, map_dtype = tuple(map_spec.shape[1:]), np.dtype(map_spec.dtype)
    batches = _Batches(
        step,
        jax.device_put(params, replicated),
        jax.device_put(key, replicated),
        target_arr,
        batch_sharding,
        batch_size,
        padded,
        map_dtype,
    )

    process, processes = jax.process_index(), jax.process_count()
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        _check_writable(out_dir)
        manifest = {
            "format": FORMAT,
            "method": method,
            "options": _value_fingerprint(dict(options)),
            "target": _value_fingerprint(target),
            "key": _value_fingerprint(key),
            "model": _model_fingerprint(f, params, x_spec),
            "image_shape": list(source.image_shape),
            "image_dtype": source.dtype.str,
            "num_images": n,
            "map_shape": list(map_shape),
            "map_dtype": map_dtype.str,
            "chunk_size": chunk_size,
            "chunks": _CHUNK_NAME + ".npy",
            "complete": False,
            "versions": {"jax": jax.__version__},
        }
        _prepare_manifest(out_dir, manifest, writer=process == 0)

    def mine(k: int) -> bool:
        return k % processes == process

    receipts = _earlier_receipts(source, mine, out_dir)
    total = None
    if n is not None:
        starts = range(0, n, chunk_size)
        total = sum(
            min(chunk_size, n - s) for k, s in enumerate(starts) if mine(k) and k not in receipts
        )
    bar = tqdm(
        total=total,
        unit="img",
        desc=method + (f" (process {process}/{processes})" if processes > 1 else ""),
        disable=not progress,
        smoothing=0.1,
    )
    with bar:
        local, computed, reused, seen = _run_chunks(
            source, mine, receipts, out_dir, batches, target_arr, bar
        )

    if not source.repeatable:
        n = seen
    num_chunks = math.ceil(n / chunk_size)
    if processes > 1:
        from jax.experimental import multihost_utils

        if out_dir is None:
            return _gather(local, num_chunks, chunk_size, n, map_shape, map_dtype)
        multihost_utils.sync_global_devices("slp.attribute_dataset: chunks written")
    if out_dir is None:
        return np.concatenate([local[k] for k in range(num_chunks)])
    if process == 0:
        _finish(out_dir, manifest, num_chunks)
    if processes > 1:
        multihost_utils.sync_global_devices("slp.attribute_dataset: manifest complete")
    return ChunkedMaps(out_dir, n, map_shape, map_dtype, num_chunks, tuple(computed), tuple(reused))


def _earlier_receipts(source: _Source, mine, out_dir) -> dict[int, dict]:
    """The receipts of this process's chunks that an earlier run finished, each checked
    against this call's images and against its maps before anything is written (arrays
    only: an iterable's chunks are checked as they come, in `_run_chunks`)."""
    receipts: dict[int, dict] = {}
    if out_dir is not None and source.repeatable:
        for k, start, rows_fn in source.chunks():
            if mine(k) and (r := _done_receipt(out_dir, k, start, rows_fn())) is not None:
                receipts[k] = r
    return receipts


def _run_chunks(source: _Source, mine, receipts: dict, out_dir, batches, target_arr, bar):
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
            if (r := _done_receipt(out_dir, k, start, rows_fn())) is not None:
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
            _write_chunk(out_dir, k, start, maps, _sha256_arrays(rows))
        else:
            local[k] = maps
        computed.append(k)
    return local, computed, reused, seen


def _check_receipt(receipt: dict, k: int, start: int, rows: np.ndarray, out: Path) -> None:
    if receipt.get("start") != start or receipt.get("stop") != start + len(rows):
        raise ManifestMismatchError(
            f"{_receipt_path(out, k)} covers images [{receipt.get('start')}, "
            f"{receipt.get('stop')}); this call's chunk {k} is [{start}, {start + len(rows)})"
        )
    if receipt.get("inputs_sha256") != _sha256_arrays(rows):
        raise ManifestMismatchError(
            f"chunk {k} in {out} (images [{start}, {start + len(rows)})) was computed from "
            "other images than this call's; refusing to mix maps of two data sets. Use "
            "another `out`, or remove the folder to start again."
        )


class _Batches(NamedTuple):
    """The compiled step and its fixed arguments; called on one chunk, returns its maps.

    Attributes:
      step: ``(params, key, x_BX, target_B, index_B) -> maps_BX`` (`_per_batch`).
      params: the parameters, replicated over the mesh (None inside ``f``).
      key: the PRNG key, replicated (None without one).
      target: None, a class index () or per-image classes (N,), int32.
      sharding: the batch axis over the mesh's devices.
      batch_size: images per step before padding.
      padded: images per step, a multiple of the number of devices.
      dtype: the maps' dtype.
    """

    step: Callable
    params: Any
    key: Any
    target: np.ndarray | None
    sharding: NamedSharding
    batch_size: int
    padded: int
    dtype: np.dtype

    def __call__(self, rows: np.ndarray, start: int) -> np.ndarray:
        """Maps ``(c, *X)`` of ``rows (c, *X)``, images ``start..start+c-1`` of the data set.

        Each batch is dispatched before the previous one is read back, so the device
        computes while the host copies.
        """
        pending, parts = None, []
        for b in range(0, len(rows), self.batch_size):
            x = rows[b : b + self.batch_size]
            m = len(x)
            index = np.arange(start + b, start + b + self.padded, dtype=np.int32)
            index[m:] = start + b + m - 1  # padding repeats the last image, and its index
            if m < self.padded:
                x = np.concatenate([x, np.repeat(x[-1:], self.padded - m, axis=0)])
            if self.target is None:
                t = np.zeros(self.padded, np.int32)
            elif self.target.ndim == 0:
                t = np.full(self.padded, self.target, np.int32)
            else:
                t = self.target[index]
            put = functools.partial(jax.device_put, device=self.sharding)
            maps = self.step(self.params, self.key, put(x), put(t), put(index))
            if pending is not None:
                parts.append(np.asarray(pending[0])[: pending[1]])
            pending = (maps, m)
        parts.append(np.asarray(pending[0])[: pending[1]])
        return np.concatenate(parts).astype(self.dtype, copy=False)


def _gather(local, num_chunks, chunk_size, n, map_shape, dtype) -> np.ndarray:
    """Every process's chunks, gathered to every process, in data-set order."""
    from jax.experimental import multihost_utils

    processes, process = jax.process_count(), jax.process_index()
    per = math.ceil(num_chunks / processes) * chunk_size
    mine = [k for k in range(num_chunks) if k % processes == process]
    buf = np.zeros((per, *map_shape), dtype)
    at = 0
    for k in mine:
        buf[at : at + len(local[k])] = local[k]
        at += chunk_size
    everything = np.asarray(multihost_utils.process_allgather(buf, tiled=False))
    maps = np.empty((n, *map_shape), dtype)
    for k in range(num_chunks):
        start, stop = k * chunk_size, min((k + 1) * chunk_size, n)
        row = (k // processes) * chunk_size
        maps[start:stop] = everything[k % processes, row : row + stop - start]
    return maps


def _finish(out: Path, manifest: dict, num_chunks: int) -> None:
    """Marks the manifest complete once every chunk has its receipt; drops stale temp files."""
    h = hashlib.sha256()
    for k in range(num_chunks):
        r = _read_receipt(out, k)
        if r is None:
            return  # another call (e.g. with another process count) still owes chunks
        h.update(r["inputs_sha256"].encode())
    manifest = {
        **manifest,
        "num_images": int(_read_receipt(out, num_chunks - 1)["stop"]),
        "num_chunks": num_chunks,
        "complete": True,
        "inputs_sha256": h.hexdigest(),
    }
    _write_json(out / MANIFEST, manifest)
    for stale in out.glob(".*.tmp"):  # left by a killed run; every writer has finished
        stale.unlink(missing_ok=True)


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
      IncompleteMapsError: chunks are missing (the run is unfinished), listing them; or a
        chunk cannot be read, has the wrong shape or (``verify``) does not match its
        receipt, naming its file.
    """
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} holds no {MANIFEST}; not an attribute_dataset folder")
    manifest = json.loads(path.read_text())
    n = manifest["num_images"]
    chunk = manifest["chunk_size"]
    if n is None:
        raise IncompleteMapsError(
            f"{out}: the run over an iterable of unknown length has not finished"
        )
    num_chunks = math.ceil(n / chunk)
    receipts = [_read_receipt(out, k) for k in range(num_chunks)]
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
            part = np.load(chunk_path(out, k), mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as err:
            raise IncompleteMapsError(
                f"{chunk_path(out, k)} cannot be read as a .npy file ({type(err).__name__}: "
                f"{err}); run attribute_dataset again with the same arguments to compute it"
            ) from None
        start, stop = k * chunk, min((k + 1) * chunk, n)
        if part.shape != maps[start:stop].shape:
            raise IncompleteMapsError(
                f"{chunk_path(out, k)} has shape {part.shape}, expected "
                f"{maps[start:stop].shape}; run attribute_dataset again with the same "
                "arguments to compute it again"
            )
        if verify and (why := _maps_mismatch(part, receipts[k], out, k)) is not None:
            raise IncompleteMapsError(f"{chunk_path(out, k)}: {why}{again}")
        maps[start:stop] = part
    return maps
