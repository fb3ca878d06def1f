"""The output folder of `slp.maps.attribute_dataset`: manifest, chunks and their receipts.

Not public API. The folder's layout is described in `slp.maps`; here are the fingerprints
that say whether a folder holds this call's maps, and every read and write of its files
(each write atomic, through `slp.data._files.atomic_writer`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slp.data._files import atomic_writer

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK_NAME = "maps-{index:06d}"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class ManifestMismatchError(ValueError):
    """An output folder holds maps computed with other arguments or from other images.

    Examples:
      >>> import tempfile
      >>> f, out = (lambda x: jnp.stack([x.sum(), -x.sum()])), tempfile.mkdtemp()
      >>> _ = slp.attribute_dataset(f, np.ones((4, 2)), "gradient", batch_size=2, out=out)
      >>> slp.attribute_dataset(f, np.ones((3, 2)), "gradient", batch_size=2, out=out)
      Traceback (most recent call last):
      ...
      slp.maps._store.ManifestMismatchError: ...manifest.json was written by a run with other...
    """


class IncompleteMapsError(RuntimeError):
    """`read_maps` found chunks without their maps or receipts, or changed maps.

    Changed: maps that do not match their receipts.

    Examples:
      >>> import tempfile, pathlib
      >>> f, out = (lambda x: jnp.stack([x.sum(), -x.sum()])), tempfile.mkdtemp()
      >>> _ = slp.attribute_dataset(f, np.ones((4, 2)), "gradient", batch_size=2, out=out)
      >>> for chunk in pathlib.Path(out).glob("*.npy"):
      ...     chunk.unlink()
      >>> slp.read_maps(out)
      Traceback (most recent call last):
      ...
      slp.maps._store.IncompleteMapsError: ...
    """


def chunk_path(out: str | os.PathLike, index: int) -> Path:
    """The ``.npy`` file of chunk ``index`` in the output folder ``out``."""
    return Path(out) / (_CHUNK_NAME.format(index=index) + ".npy")


def _receipt_path(out: Path, index: int) -> Path:
    return out / (_CHUNK_NAME.format(index=index) + ".json")


# Fingerprints: plain JSON values that are equal exactly when the arguments are.


def sha256_arrays(*arrays) -> str:
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
        return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_arrays(a)}
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
    h.update(sha256_arrays(*_leaf_arrays(closed.consts), *weights).encode())
    return h.hexdigest()


# The files of the folder.


def check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output directory {out} is a file; pass a folder as `out`")
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


def read_manifest(out: Path, required: tuple[str, ...] = ()) -> dict:
    """The manifest in ``out`` (a JSON object holding the keys `required`).

    Raises:
      ManifestMismatchError: the file is not such a JSON object (cut off or written by
        another program; attribute_dataset writes it atomically), naming it.
    """
    path = out / MANIFEST
    try:
        found = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        found, why = None, f"not JSON: {err}"
    else:
        why = "not a JSON object" if not isinstance(found, dict) else None
    if why is None and (missing := [k for k in required if k not in found]):
        why = "no " + ", ".join(missing)
    if why is not None:
        raise ManifestMismatchError(
            f"{path} is not a manifest of attribute_dataset ({why}); remove the folder to "
            "start again, or use another `out`"
        )
    return found


def prepare_manifest(out: Path, expected: dict, *, writer: bool) -> None:
    path = out / MANIFEST
    if path.is_file():
        found = read_manifest(out)
        diffs = _manifest_mismatch(found, expected)
        if diffs:
            raise ManifestMismatchError(
                f"{path} was written by a run with other arguments; refusing to mix their "
                "maps:\n" + "\n".join(diffs) + "\nUse another `out`, or remove the folder "
                "to start again."
            )
    elif writer:
        _write_json(path, expected)


def read_receipt(out: Path, index: int) -> dict | None:
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


def maps_mismatch(maps: np.ndarray, receipt: dict, out: Path, index: int) -> str | None:
    """What about chunk ``index``'s maps does not match its receipt; None when they match."""
    if sha256_arrays(maps) == receipt["maps_sha256"]:
        return None
    return (
        f"its maps (shape {maps.shape}, {maps.dtype}) do not match the SHA-256 recorded in "
        f"{_receipt_path(out, index).name}: the file changed after it was written"
    )


def _chunk_mismatch(out: Path, index: int, receipt: dict) -> str | None:
    """`maps_mismatch` of chunk ``index``'s ``.npy``, or that it cannot be read."""
    try:
        maps = np.load(chunk_path(out, index), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return f"it cannot be read as a .npy file ({type(err).__name__}: {err})"
    return maps_mismatch(maps, receipt, out, index)


def done_receipt(out: Path, index: int, start: int, rows: np.ndarray) -> dict | None:
    """The receipt of chunk ``index`` when an earlier run finished it and its maps still
    match; None (after a warning that names the file and what did not match) when the
    chunk must be computed again.

    Raises:
      ManifestMismatchError: the receipt is of other images (`_check_receipt`).
    """
    try:
        receipt = read_receipt(out, index)
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


def _check_receipt(receipt: dict, k: int, start: int, rows: np.ndarray, out: Path) -> None:
    if receipt.get("start") != start or receipt.get("stop") != start + len(rows):
        raise ManifestMismatchError(
            f"{_receipt_path(out, k)} covers images [{receipt.get('start')}, "
            f"{receipt.get('stop')}); this call's chunk {k} is [{start}, {start + len(rows)})"
        )
    if receipt.get("inputs_sha256") != sha256_arrays(rows):
        raise ManifestMismatchError(
            f"chunk {k} in {out} (images [{start}, {start + len(rows)})) was computed from "
            "other images than this call's; refusing to mix maps of two data sets. Use "
            "another `out`, or remove the folder to start again."
        )


def write_chunk(out: Path, index: int, start: int, maps: np.ndarray, inputs_sha: str) -> None:
    with atomic_writer(chunk_path(out, index)) as fh:
        np.save(fh, maps, allow_pickle=False)
    receipt = {
        "index": index,
        "start": start,
        "stop": start + len(maps),
        "inputs_sha256": inputs_sha,
        "maps_sha256": sha256_arrays(maps),
        "process": jax.process_index(),
    }
    _write_json(_receipt_path(out, index), receipt)


def finish(out: Path, manifest: dict, num_chunks: int) -> None:
    """Marks the manifest complete once every chunk has its receipt; drops stale temp files."""
    h = hashlib.sha256()
    for k in range(num_chunks):
        r = read_receipt(out, k)
        if r is None:
            return  # another call (e.g. with another process count) still owes chunks
        h.update(r["inputs_sha256"].encode())
    manifest = {
        **manifest,
        "num_images": int(read_receipt(out, num_chunks - 1)["stop"]),
        "num_chunks": num_chunks,
        "complete": True,
        "inputs_sha256": h.hexdigest(),
    }
    _write_json(out / MANIFEST, manifest)
    for stale in out.glob(".*.tmp"):  # left by a killed run; every writer has finished
        stale.unlink(missing_ok=True)


def new_manifest(
    f: Callable,
    params: Any,
    key: jax.Array | None,
    x_spec: jax.ShapeDtypeStruct,
    *,
    method: str,
    options: dict,
    target: Any,
    num_images: int | None,
    map_shape: tuple[int, ...],
    map_dtype: np.dtype,
    chunk_size: int,
) -> dict:
    """The manifest of one call of `attribute_dataset`, not yet complete.

    Args:
      f, params, key, method, options, target, chunk_size: the call's arguments.
      x_spec: one image's shape ``X`` and dtype.
      num_images: N, or None for an iterable of batches of unknown length.
      map_shape, map_dtype: one map's shape and dtype.

    Returns:
      A JSON object; `prepare_manifest` compares it key by key with a folder's.
    """
    return {
        "format": FORMAT,
        "method": method,
        "options": _value_fingerprint(dict(options)),
        "target": _value_fingerprint(target),
        "key": _value_fingerprint(key),
        "model": _model_fingerprint(f, params, x_spec),
        "image_shape": list(x_spec.shape),
        "image_dtype": np.dtype(x_spec.dtype).str,
        "num_images": num_images,
        "map_shape": list(map_shape),
        "map_dtype": np.dtype(map_dtype).str,
        "chunk_size": chunk_size,
        "chunks": _CHUNK_NAME + ".npy",
        "complete": False,
        "versions": {"jax": jax.__version__},
    }
