"""The computation of `slp.maps.attribute_dataset`: images in chunks, batches on the devices.

Not public API. A data set (an array, a ``.npy`` file or an iterable of batches) is read
as chunks of consecutive images; each chunk is cut into batches, each batch sharded along
its batch axis over the local devices and passed to one compiled ``jit(vmap(attribute))``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from slp._src import guards as _guards
from slp.attributions.registry import attribute, check_target

# The data set as a sequence of chunks.


class Source(NamedTuple):
    """The images as chunks: ``chunks()`` yields ``(index, start, rows_fn)``.

    ``repeatable``: an array (``chunks()`` may run again; ``rows_fn`` reads lazily), not
    an iterable of batches (one pass, rows in memory already).
    """

    image_shape: tuple[int, ...]
    dtype: np.dtype
    num_images: int | None
    repeatable: bool
    chunks: Callable[[], Iterator[tuple[int, int, Callable[[], np.ndarray]]]]


def open_images(images, chunk_size: int, num_images: int | None) -> Source:
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


def _array_source(images, chunk_size: int, num_images: int | None) -> Source:
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

    return Source(tuple(arr.shape[1:]), np.dtype(arr.dtype), n, True, chunks)


def _batches_source(it: Iterator, chunk_size: int, num_images: int | None) -> Source:
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

    return Source(shape, np.dtype(dtype), num_images, False, chunks)


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


# Keyed on f (and so on the weights it closes over): a few dozen entries (every method of
# the registry on one network, or one method on a few), not a leak of models.
per_batch_cached = functools.lru_cache(maxsize=32)(_per_batch)


def _compiled(f, method, options: dict, **kw) -> Callable:
    items = tuple(sorted(options.items()))
    try:
        hash((f, items))
    except TypeError:  # an array option: compile for this call only
        return _per_batch(f, method, items, **kw)
    return per_batch_cached(f, method, items, **kw)


def check_images(f: Callable, params, source: Source) -> tuple[jax.ShapeDtypeStruct, int]:
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
        how = (
            "images are (N, *X) with X one example's shape"
            if source.repeatable
            else "an iterable is read as batches (b, *X): for a list of single examples "
            "pass np.stack(images)"
        )
        raise ValueError(
            f"f does not accept one image of shape {source.image_shape} and dtype "
            f"{source.dtype} ({how}): {type(err).__name__}: {err}"
        ) from err
    if isinstance(y, jax.ShapeDtypeStruct):
        # Here, with concrete params: inside the compiled step they are traced, and the
        # check, which evaluates f, cannot run there.
        _guards.check_one_example(logits_of, x_spec, y)
    if not isinstance(y, jax.ShapeDtypeStruct) or len(y.shape) != 1:
        raise ValueError(f"f must map one image to a vector of logits; it returns {y}")
    return x_spec, y.shape[0]


def checked_target(target, n: int | None, num_logits: int) -> np.ndarray | None:
    """``target`` as int32: None, a scalar or ``(N,)``, each in ``[0, num_logits)``."""
    if target is None:
        return None
    if isinstance(target, jax.core.Tracer):
        raise TypeError("target must be a concrete value (a NumPy or JAX array), not traced")
    check_target(target, num_logits, batched=True, num_examples=n)  # before any map
    return np.asarray(target, dtype=np.int32)


class Batches(NamedTuple):
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


def gather(local, num_chunks, chunk_size, n, map_shape, dtype) -> np.ndarray:
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


def make_batches(
    f: Callable,
    method: str,
    options: dict,
    params: Any,
    key: jax.Array | None,
    target: np.ndarray | None,
    source: Source,
    batch_size: int,
    devices: Sequence[jax.Device] | None,
) -> tuple[Batches, tuple[int, ...], np.dtype]:
    """The compiled step on a one-axis mesh of ``devices``, and the maps it returns.

    Args:
      f, method, options, params, key, batch_size, devices: `attribute_dataset`'s.
      target: `checked_target`'s array, or None.
      source: the images.

    Returns:
      ``(batches, map_shape X, map dtype)``.
    """
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
    batches = Batches(
        step,
        jax.device_put(params, replicated),
        jax.device_put(key, replicated),
        target,
        batch_sharding,
        batch_size,
        padded,
        map_dtype,
    )
    return batches, map_shape, map_dtype
