"""Checkpoints: a pytree of arrays in one msgpack file and its metadata in a JSON sidecar.

One mechanism for every network the project trains (2CONV in `slp.training`, the Pong
Q-network of the experiments):

- ``<name>.msgpack``: the tree as flax's state dict (nested dicts of arrays), msgpack-encoded;
- ``<name>.json``: the metadata (JSON), with ``format`` (`FORMAT`) and ``array_sha256`` (the
  SHA-256 of the array file) added.

`save` writes both atomically, the arrays first, so a sidecar never points at a missing or
partial array file. `load` checks the format and the array file's SHA-256 (an array file
changed or damaged since it was written is refused, not read as other weights; a sidecar
written before the hash was recorded has none, and its array file is read unchecked), then
restores the tree into a template whose shapes the caller derives from the metadata (the
network's config, its observation shape, ...): nothing here assumes a shape, and a file
whose structure, shapes or dtypes differ from the template is refused with a message that
names the first difference.

Why not orbax-checkpoint: the states here are small (at most a few hundred MB with a DQN's
optimiser), written by one process, and read back whole; a msgpack file and a JSON file
that a person can read serve that, with no further dependency.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import flax.serialization
import jax
import numpy as np

from slp.data._files import atomic_writer

if TYPE_CHECKING:
    import flax.linen as nn

__all__ = ["FORMAT", "Checkpoint", "load", "read_metadata", "save"]

FORMAT = 1
"""The checkpoint format this version writes and reads (bump when its meaning changes)."""


class Checkpoint(NamedTuple):
    """A network with the parameters of one checkpoint.

    What `slp.training.load_or_train` and `slp.data.example_model` return.

    Attributes:
      model: the flax module (TwoConv) the parameters belong to.
      params: its parameters (pytree of float32 arrays).
      metadata: the JSON sidecar: `format`, `array_sha256`, `config` (dict), `test_accuracy`
        (float or None), `history` (list of per-epoch dicts), `train_seconds`.
      path: the parameter file (`<name>.msgpack`).
      reused: True when loaded from disk, False when just trained.

    Examples:
      >>> net = slp.data.example_model()  # the bundled example is one
      >>> type(net).__name__, net.metadata["format"] == slp.checkpoints.FORMAT
      ('Checkpoint', True)
    """

    model: nn.Module
    params: Any
    metadata: dict[str, Any]
    path: Path
    reused: bool


def save(path: str | os.PathLike, tree: Any, metadata: dict[str, Any]) -> Path:
    """Writes `tree` to `path` and `metadata` to its ``.json`` sidecar, atomically.

    Args:
      path: the array file, conventionally ``<dir>/<name>.msgpack``; the sidecar is the same
        path with suffix ``.json``.
      tree: a pytree of arrays (flax parameters, optimiser states, dicts of numpy arrays).
      metadata: JSON-serialisable dict; ``format`` and ``array_sha256`` are added.

    Returns:
      The array file's path.

    Examples:
      >>> import tempfile, pathlib
      >>> folder = pathlib.Path(tempfile.mkdtemp())
      >>> path = slp.checkpoints.save(folder / "w.msgpack", {"w": np.ones(3)}, {"step": 1})
      >>> sorted(p.name for p in folder.iterdir())
      ['w.json', 'w.msgpack']
    """
    path = Path(path)
    state = flax.serialization.to_state_dict(jax.device_get(tree))
    data = flax.serialization.msgpack_serialize(state)
    recorded = {**metadata, "format": FORMAT, "array_sha256": hashlib.sha256(data).hexdigest()}
    sidecar = json.dumps(recorded, indent=2, sort_keys=True) + "\n"
    with atomic_writer(path) as fh:
        fh.write(data)
    with atomic_writer(path.with_suffix(".json")) as fh:
        fh.write(sidecar.encode())
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar's metadata of the checkpoint at `path`, its format checked.

    Args:
      path: the array file (the sidecar is the same path with suffix ``.json``).

    Returns:
      The metadata dict, with ``format`` equal to `FORMAT`.

    Raises:
      FileNotFoundError: the array file or its sidecar is missing.
      ValueError: the sidecar is not JSON, or not of `FORMAT`.

    Examples:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.msgpack"
      >>> _ = slp.checkpoints.save(path, {"w": np.ones(3)}, {"step": 1})
      >>> slp.checkpoints.read_metadata(path)["step"]
      1
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    for p, what in ((path, "array file"), (sidecar, "sidecar")):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {what} not found: {p}")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint sidecar {sidecar} is not valid JSON: {err}") from err
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise ValueError(
            f"checkpoint {path}: sidecar format {found!r}, this version of slp reads format "
            f"{FORMAT}; write it again with this version"
        )
    return metadata


def load(
    path: str | os.PathLike, template: Any | Callable[[dict[str, Any]], Any]
) -> tuple[Any, dict[str, Any]]:
    """Reads a checkpoint written by `save`.

    Args:
      path: the array file.
      template: a pytree with the structure, shapes and dtypes the file must hold (arrays or
        `jax.ShapeDtypeStruct`), or a function of the metadata that returns one.

    Returns:
      ``(tree, metadata)``: the tree as numpy arrays in the template's structure.

    Raises:
      FileNotFoundError: either file is missing.
      ValueError: the format differs; the array file does not match the SHA-256 in the
        sidecar, or is not a msgpack file (cut off, damaged); or its structure, shapes or
        dtypes differ from the template's (the message names the first difference).

    Examples:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.msgpack"
      >>> _ = slp.checkpoints.save(path, {"w": np.ones(3, np.float32)}, {"step": 1})
      >>> tree, metadata = slp.checkpoints.load(path, {"w": np.zeros(3, np.float32)})
      >>> tree["w"], metadata["step"]
      (array([1., 1., 1.], dtype=float32), 1)
      >>> slp.checkpoints.load(path, {"w": np.zeros(4, np.float32)})
      Traceback (most recent call last):
      ...
      ValueError: checkpoint ...: ['w'] is float32[3], expected float32[4]
    """
    path = Path(path)
    metadata = read_metadata(path)
    if callable(template):
        template = template(metadata)
    want = jax.tree.map(lambda s: np.zeros(np.shape(s), s.dtype), template)
    data = path.read_bytes()
    recorded = metadata.get("array_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(
            f"checkpoint {path} does not match the SHA-256 its sidecar recorded when it was "
            "written: the array file was changed or damaged since; write it again (a trained "
            "network: train again, e.g. retrain=True or --retrain; or restore the file)"
        )
    try:
        state = flax.serialization.msgpack_restore(data)
    except Exception as err:  # noqa: BLE001 - msgpack's own error types for damaged bytes
        raise ValueError(
            f"checkpoint {path} is not a readable msgpack file (cut off or damaged?): {err}"
        ) from err
    try:
        tree = flax.serialization.from_state_dict(want, state)
    except (ValueError, TypeError, KeyError) as err:  # a structure that does not fit
        raise ValueError(f"checkpoint {path} does not fit its template: {err}") from err
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for (where, got), expected in zip(leaves, jax.tree.leaves(want), strict=True):
        got = np.asarray(got)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            name = jax.tree_util.keystr(where)
            raise ValueError(
                f"checkpoint {path}: {name} is {got.dtype}{list(got.shape)}, "
                f"expected {expected.dtype}{list(expected.shape)}"
            )
    return jax.tree.map(np.asarray, tree), metadata
