"""slp.checkpoints: one msgpack file and a JSON sidecar, format and shapes checked on load."""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slp import checkpoints


def _tree():
    rng = np.random.default_rng(0)
    return {
        "params": {"dense": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)}},
        "steps": np.arange(5, dtype=np.int64),
        "bf16": jnp.ones((2,), jnp.bfloat16),
    }


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    tree = _tree()
    path = checkpoints.save(tmp_path / "a.msgpack", tree, {"note": "x", "n": 3})
    got, meta = checkpoints.load(path, tree)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # of the array file, as written
    assert meta == {"note": "x", "n": 3, "format": checkpoints.FORMAT, "array_sha256": digest}
    assert json.loads(path.with_suffix(".json").read_text())["format"] == checkpoints.FORMAT
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(tree), strict=True):
        assert a.dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def test_template_from_metadata(tmp_path):
    tree = {"w": np.zeros((7, 2), np.float32)}
    path = checkpoints.save(tmp_path / "a.msgpack", tree, {"rows": 7})
    got, _ = checkpoints.load(
        path, lambda meta: {"w": jax.ShapeDtypeStruct((meta["rows"], 2), jnp.float32)}
    )
    assert got["w"].shape == (7, 2)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            {"w": np.zeros((7, 3), np.float32)},
            r"\['w'\] is float32\[7, 2\], expected float32\[7, 3\]",
        ),
        ({"w": np.zeros((7, 2), np.int32)}, r"\['w'\] is float32\[7, 2\], expected int32\[7, 2\]"),
        ({"w": np.zeros((7, 2), np.float32), "b": np.zeros(2)}, "does not fit its template"),
        ({"v": np.zeros((7, 2), np.float32)}, "does not fit its template"),
    ],
)
def test_a_file_that_does_not_fit_the_template_is_refused(tmp_path, template, message):
    path = checkpoints.save(tmp_path / "a.msgpack", {"w": np.zeros((7, 2), np.float32)}, {})
    with pytest.raises(ValueError, match=message):
        checkpoints.load(path, template)


def test_missing_files_damaged_bytes_and_other_formats_are_refused(tmp_path):
    path = tmp_path / "a.msgpack"
    tree = {"w": np.zeros(3, np.float32)}
    with pytest.raises(FileNotFoundError, match="array file not found"):
        checkpoints.load(path, tree)
    checkpoints.save(path, tree, {})
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({"format": 0}))
    with pytest.raises(ValueError, match="sidecar format 0"):
        checkpoints.load(path, tree)
    sidecar.write_text('{"format": ')  # cut off while written by another program
    with pytest.raises(ValueError, match=r"sidecar .*a\.json is not valid JSON"):
        checkpoints.load(path, tree)
    sidecar.write_text(json.dumps({"format": checkpoints.FORMAT}))
    path.write_bytes(b"\xc1 not msgpack")
    with pytest.raises(ValueError, match="not a readable msgpack file|does not fit"):
        checkpoints.load(path, tree)
    sidecar.unlink()
    with pytest.raises(FileNotFoundError, match="sidecar not found"):
        checkpoints.load(path, tree)


def test_an_array_file_changed_since_it_was_written_is_refused(tmp_path):
    # A flipped byte can still be a msgpack file of the right shapes: other weights, read
    # without a word but for the SHA-256 the sidecar recorded.
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = checkpoints.save(tmp_path / "a.msgpack", tree, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # the last weight's last byte
    path.write_bytes(bytes(data))
    unchecked = tmp_path / "b.msgpack"  # the same bytes with the hash left out of the sidecar
    unchecked.write_bytes(bytes(data))
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["array_sha256"]  # a sidecar written before the hash was recorded
    unchecked.with_suffix(".json").write_text(json.dumps(meta))
    got, _ = checkpoints.load(unchecked, tree)
    assert not np.array_equal(got["w"], tree["w"])  # what the hash is there to catch
    with pytest.raises(ValueError, match=r"a\.msgpack does not match the SHA-256 its sidecar"):
        checkpoints.load(path, tree)
    path.write_bytes(bytes(data[: len(data) // 2]))  # cut off
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        checkpoints.load(path, tree)


def test_arrays_are_written_before_the_sidecar(tmp_path, monkeypatch):
    """A failure while writing the arrays leaves no sidecar pointing at them."""
    path = tmp_path / "a.msgpack"

    def boom(state):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoints.flax.serialization, "msgpack_serialize", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        checkpoints.save(path, {"w": np.zeros(3)}, {})
    assert not path.exists() and not path.with_suffix(".json").exists()
