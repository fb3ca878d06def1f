"""slp.attribute_dataset on several devices and processes, its resumable output and errors.

The reference everywhere is a plain single-device ``jax.vmap`` of ``slp.attribute`` over
the whole data set (per-image keys ``fold_in(key, i)`` written out), never the function's
own output. Multi-device and multi-process runs happen in subprocesses: the device count
is fixed when JAX starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp import maps as slp_maps
from slp import training

REPO = Path(__file__).resolve().parents[2]
N, SHAPE = 23, (6, 6, 1)  # 23: a multiple of neither the batch (6) nor 4 devices
METHODS = {
    "insens": {},
    "gradient_x_input": {"target": 2},
    "smoothgrad": {"key": 7, "samples": 4},
}

# A tiny ReLU network and data set built the same way in every process.
NETWORK = """
import jax, jax.numpy as jnp, numpy as np

def network():
    rng = np.random.RandomState(0)
    w1 = rng.normal(size=(36, 12)).astype(np.float32) / 6
    b1 = rng.normal(size=12).astype(np.float32) / 4
    w2 = rng.normal(size=(12, 5)).astype(np.float32) / 3
    def f(x):
        return jnp.maximum(x.reshape(-1) @ w1 + b1, 0.0) @ w2
    return f

def images(n=23, seed=1):
    return np.random.RandomState(seed).uniform(size=(n, 6, 6, 1)).astype(np.float32)

def options(spec):
    spec = dict(spec)
    if "key" in spec:
        spec["key"] = jax.random.key(spec["key"])
    return spec
"""
_ns: dict = {}
exec(NETWORK, _ns)  # noqa: S102
network, make_images, make_options = _ns["network"], _ns["images"], _ns["options"]


def reference(f, x, method, spec) -> np.ndarray:
    """Single-device vmap of slp.attribute, image i with key fold_in(key, i)."""
    opts = make_options(spec)
    key = opts.pop("key", None)
    target = opts.pop("target", None)

    def one(xi, i):
        extra = {} if key is None else {"key": jax.random.fold_in(key, i)}
        return slp.attribute(f, xi, method, target=target, **extra, **opts)

    return np.asarray(jax.jit(jax.vmap(one))(x, jnp.arange(len(x), dtype=jnp.int32)))


def float32_close(a, b):
    scale = float(np.abs(b).max())
    np.testing.assert_allclose(a, b, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)


def run_python(code: str, *, env=None, timeout=180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def references():
    f, x = network(), make_images()
    return {m: reference(f, x, m, spec) for m, spec in METHODS.items()}


# --------------------------------------------------------------------------------------
# Several devices, several processes.


@pytest.mark.slow
def test_four_fake_devices_equal_single_device_vmap(tmp_path, references):
    code = NETWORK + textwrap.dedent(
        f"""
        import json, sys
        import slp
        assert jax.local_device_count() == 4, jax.local_devices()
        f, x = network(), images()
        for method, spec in {METHODS!r}.items():
            opts = options(spec)
            for batch in (6, 8):  # padded to 8 on 4 devices; chunks of 2 batches
                maps = slp.attribute_dataset(
                    f, x, method, batch_size=batch, chunk_size=2 * batch, progress=False, **opts
                )
                np.save(sys.argv[-1] + f"/{{method}}-{{batch}}.npy", maps)
            # chunked output, and the data set as an iterable of batches of 5
            slp.attribute_dataset(
                f, (x[i : i + 5] for i in range(0, len(x), 5)), method, batch_size=6,
                out=sys.argv[-1] + f"/{{method}}-out", progress=False, num_images=len(x), **opts,
            )
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env={**os.environ, **env},
        check=True, timeout=240,
    )  # fmt: skip
    for method, ref in references.items():
        for batch in (6, 8):
            float32_close(np.load(tmp_path / f"{method}-{batch}.npy"), ref)
        float32_close(slp.read_maps(tmp_path / f"{method}-out"), ref)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_cover_the_data_set_exactly_once(tmp_path, references):
    port = _free_port()
    code = NETWORK + textwrap.dedent(
        f"""
        import sys
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", 2)
        pid = int(sys.argv[-1])
        jax.distributed.initialize("localhost:{port}", num_processes=2, process_id=pid)
        import slp
        assert jax.process_count() == 2 and jax.local_device_count() == 2
        f, x = network(), images()
        out = {str(tmp_path)!r}
        for method, spec in {METHODS!r}.items():
            opts = options(spec)
            maps = slp.attribute_dataset(f, x, method, batch_size=3, progress=False, **opts)
            np.save(f"{{out}}/{{method}}-memory-{{pid}}.npy", maps)
            run = slp.attribute_dataset(
                f, x, method, batch_size=3, out=f"{{out}}/{{method}}", progress=False, **opts
            )
            np.save(f"{{out}}/{{method}}-computed-{{pid}}.npy", np.array(run.computed))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(pid)],
            cwd=REPO,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    for p in procs:
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log[-3000:]
    for method, ref in references.items():
        for pid in (0, 1):  # gathered: every process returns all maps
            float32_close(np.load(tmp_path / f"{method}-memory-{pid}.npy"), ref)
        computed = [set(np.load(tmp_path / f"{method}-computed-{pid}.npy")) for pid in (0, 1)]
        assert computed[0] and computed[1] and not computed[0] & computed[1]
        assert computed[0] | computed[1] == set(range(8))  # ceil(23 / 3) chunks
        rows = []
        for k in range(8):
            receipt = json.loads((tmp_path / method / f"maps-{k:06d}.json").read_text())
            assert k in computed[receipt["process"]]
            rows += range(receipt["start"], receipt["stop"])
        assert rows == list(range(N))  # no image missing or twice
        float32_close(slp.read_maps(tmp_path / method), ref)
        assert json.loads((tmp_path / method / "manifest.json").read_text())["complete"]


# --------------------------------------------------------------------------------------
# In this process (one device).


@pytest.mark.parametrize("method", list(METHODS))
def test_one_device_equals_vmap_and_numpy_reads_the_chunks(tmp_path, references, method):
    f, x = network(), make_images()
    opts = make_options(METHODS[method])
    maps = slp.attribute_dataset(f, x, method, batch_size=5, progress=False, **opts)
    float32_close(maps, references[method])
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    run = slp.attribute_dataset(
        f, npy, method, batch_size=5, chunk_size=10, out=tmp_path / "o", progress=False, **opts
    )
    assert run.num_chunks == 3 and run.computed == (0, 1, 2) and run.map_shape == SHAPE
    files = sorted((tmp_path / "o").glob("maps-*.npy"))
    float32_close(np.concatenate([np.load(p) for p in files]), references[method])


def test_explicit_params_and_per_image_targets():
    x = make_images()
    rng = np.random.RandomState(3)
    w = rng.normal(size=(36, 5)).astype(np.float32)
    targets = rng.randint(0, 5, size=N)

    def apply(p, xi):
        return jnp.maximum(xi.reshape(-1) @ p["w"], 0.0) @ p["v"]

    hits = slp_maps._compute.per_batch_cached.cache_info().hits
    for scale in (1.0, -2.0):  # second call: other weights, same compiled program
        p = {"w": w * scale, "v": np.eye(5, dtype=np.float32)}
        got = slp.attribute_dataset(
            apply, x, "gradient", params=p, target=targets, batch_size=4, progress=False
        )
        # d relu(x w)_t / dx = w[:, t] where the unit is active, written out
        active = (x.reshape(N, -1) @ p["w"])[np.arange(N), targets] > 0
        want = (p["w"][:, targets].T * active[:, None]).reshape(N, *SHAPE)
        float32_close(got, want)
    assert slp_maps._compute.per_batch_cached.cache_info().hits == hits + 1


# --------------------------------------------------------------------------------------
# Killed and resumed.

KILLED_RUN = NETWORK + textwrap.dedent(
    """
    import sys, time
    import slp
    f, x = network(), images(40)

    def slow_batches():
        for i in range(0, len(x), 4):
            time.sleep(0.4)  # slow enough for the test to kill the run between chunks
            yield x[i : i + 4]

    slp.attribute_dataset(
        f, slow_batches(), "gradient_x_input", batch_size=4, num_images=len(x),
        out=sys.argv[-1], progress=False,
    )
    """
)


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_chunks(tmp_path):
    out = tmp_path / "maps"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(out)],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(out.glob("maps-*.json"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the run wrote no chunks"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()

    done = {int(p.stem[5:]) for p in out.glob("maps-*.json")}
    assert 3 <= len(done) < 10, done  # killed mid-way
    before = {k: os.stat(slp_maps._store.chunk_path(out, k)) for k in done}
    # A chunk half-written when the kill came: bytes under the final name, no receipt.
    half = max(set(range(10)) - done)
    slp_maps._store.chunk_path(out, half).write_bytes(b"\x93NUMPY half")
    (out / f".maps-{half:06d}.npy.abc.tmp").write_bytes(b"partial")

    f, x = network(), make_images(40)
    run = slp.attribute_dataset(f, x, "gradient_x_input", batch_size=4, out=out, progress=False)
    assert set(run.computed) == set(range(10)) - done and set(run.reused) == done
    for k in done:  # finished chunks were neither rewritten nor touched
        after = os.stat(slp_maps._store.chunk_path(out, k))
        assert (after.st_ino, after.st_mtime_ns) == (before[k].st_ino, before[k].st_mtime_ns)
    assert not list(out.glob(".*.tmp"))

    whole = slp.attribute_dataset(
        f, x, "gradient_x_input", batch_size=4, out=tmp_path / "whole", progress=False
    )
    assert whole.computed == tuple(range(10))
    for k in range(10):  # identical bytes to an uninterrupted run
        assert (
            slp_maps._store.chunk_path(out, k).read_bytes()
            == slp_maps._store.chunk_path(tmp_path / "whole", k).read_bytes()
        )
    float32_close(slp.read_maps(out, verify=True), reference(f, x, "gradient_x_input", {}))
    again = slp.attribute_dataset(f, x, "gradient_x_input", batch_size=4, out=out, progress=False)
    assert again.computed == () and again.reused == tuple(range(10))


def test_reader_names_the_missing_chunks(tmp_path):
    f, x = network(), make_images()
    slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    (tmp_path / "maps-000002.json").unlink()
    with pytest.raises(slp_maps.IncompleteMapsError, match=r"1 of 5 chunks .*\(2\)"):
        slp.read_maps(tmp_path)


def test_resume_recomputes_chunks_that_do_not_match_their_receipts(tmp_path):
    """A finished chunk changed afterwards is computed again on resume (with a warning
    naming it), and read_maps, which verifies by default, refuses one changed after that."""
    f, x = network(), make_images()
    want = reference(f, x, "gradient", {})
    run = slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    assert run.computed == tuple(range(5))
    p1, p3 = slp_maps._store.chunk_path(tmp_path, 1), slp_maps._store.chunk_path(tmp_path, 3)
    np.save(p1, np.load(p1) * 2)  # same shape and dtype, other values
    p3.write_bytes(p3.read_bytes()[:100])  # truncated
    receipt4 = tmp_path / "maps-000004.json"
    receipt4.write_text("{not json")
    untouched = os.stat(slp_maps._store.chunk_path(tmp_path, 0))

    with pytest.warns(UserWarning) as caught:
        again = slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3, messages
    assert (
        "maps-000001.npy: its maps (shape (5, 6, 6, 1), float32) do not match the SHA-256 "
        "recorded in maps-000001.json" in messages[0]
    )
    assert "maps-000003.npy: it cannot be read" in messages[1]
    assert "maps-000004.json is not a readable receipt" in messages[2]
    assert all("computing chunk" in m for m in messages)
    # each warning points at the call of attribute_dataset, not into slp
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]
    assert again.computed == (1, 3, 4) and again.reused == (0, 2)
    after = os.stat(slp_maps._store.chunk_path(tmp_path, 0))
    assert (after.st_ino, after.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    float32_close(slp.read_maps(tmp_path), want)
    float32_close(np.load(p1), want[5:10])

    np.save(p1, np.load(p1) + 1.0)  # changed after the run finished
    with pytest.raises(slp_maps.IncompleteMapsError, match=r"maps-000001\.npy: its maps .*SHA"):
        slp.read_maps(tmp_path)
    unverified = slp.read_maps(tmp_path, verify=False)  # the opt-out reads it as it is
    float32_close(unverified[5:10], want[5:10] + 1.0)
    p3.write_bytes(b"\x93NUMPY")
    with pytest.raises(slp_maps.IncompleteMapsError, match=r"maps-000003\.npy cannot be read"):
        slp.read_maps(tmp_path, verify=False)


def test_resume_of_an_iterable_checks_the_maps_too(tmp_path):
    f, x = network(), make_images()
    slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    p2 = slp_maps._store.chunk_path(tmp_path, 2)
    np.save(p2, -np.load(p2))
    batches = (x[i : i + 4] for i in range(0, len(x), 4))
    with pytest.warns(UserWarning, match=r"maps-000002\.npy: its maps .*computing chunk 2"):
        run = slp.attribute_dataset(
            f, batches, "gradient", batch_size=5, num_images=N, out=tmp_path, progress=False
        )
    assert run.computed == (2,) and run.reused == (0, 1, 3, 4)
    float32_close(slp.read_maps(tmp_path), reference(f, x, "gradient", {}))


# --------------------------------------------------------------------------------------
# Clear errors.


def test_mismatched_manifest(tmp_path):
    f, x = network(), make_images()
    slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    with pytest.raises(slp.ManifestMismatchError, match=r"method: .*\"gradient\".*\"deconvnet\""):
        slp.attribute_dataset(f, x, "deconvnet", batch_size=5, out=tmp_path, progress=False)
    with pytest.raises(slp.ManifestMismatchError, match=r"target: .*null.*3"):
        slp.attribute_dataset(
            f, x, "gradient", target=3, batch_size=5, out=tmp_path, progress=False
        )

    def other(xi):  # same program, other weights
        return f(xi) * 2.0

    with pytest.raises(slp.ManifestMismatchError, match="model: "):
        slp.attribute_dataset(other, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    with pytest.raises(slp.ManifestMismatchError, match="chunk_size: .*5.*10"):
        slp.attribute_dataset(f, x, "gradient", batch_size=10, out=tmp_path, progress=False)
    y = x.copy()
    y[7, 0, 0, 0] += 0.5  # one pixel of one image: chunk 1
    with pytest.raises(slp.ManifestMismatchError, match=r"chunk 1 .*other images"):
        slp.attribute_dataset(f, y, "gradient", batch_size=5, out=tmp_path, progress=False)
    assert len(list(tmp_path.glob("maps-*.npy"))) == 5  # nothing was added or rewritten


def test_a_manifest_that_is_not_one_is_named(tmp_path):
    # attribute_dataset writes its manifest atomically; one cut off or written by another
    # program is named, for the reader and for a resumed run, instead of a bare JSON error.
    f, x = network(), make_images()
    slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path, progress=False)
    manifest = tmp_path / "manifest.json"
    text = manifest.read_text()
    for broken, why in [
        (text[: len(text) // 2], r"not JSON"),
        ("[1, 2]", r"not a JSON object"),
        ("{}", r"no num_images, chunk_size, map_shape, map_dtype"),
    ]:
        manifest.write_text(broken)
        pattern = rf"manifest.json is not a manifest of attribute_dataset \({why}"
        with pytest.raises(slp.ManifestMismatchError, match=pattern):
            slp.read_maps(tmp_path)
        if broken != "{}":  # an empty object is read as other arguments (every key differs)
            with pytest.raises(slp.ManifestMismatchError, match=pattern):
                slp.attribute_dataset(f, x, "gradient", batch_size=5, out=tmp_path)
    manifest.write_text(text)
    assert slp.read_maps(tmp_path).shape == x.shape


def test_output_directory_not_writable(tmp_path):
    f, x = network(), make_images()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="not writable"):
        slp.attribute_dataset(f, x, "gradient", batch_size=5, out=blocker / "maps")
    with pytest.raises(FileExistsError, match="a_file is a file; pass a folder"):
        slp.attribute_dataset(f, x, "gradient", batch_size=5, out=blocker)
    assert blocker.read_text() == ""
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="not writable"):
            slp.attribute_dataset(f, x, "gradient", batch_size=5, out=ro)


def test_images_of_the_wrong_shape_or_dtype(tmp_path):
    f = network()
    # a list of single images is an iterable of batches: the message says how to pass it
    with pytest.raises(ValueError, match=r"read as batches .* np.stack\(images\)"):
        slp.attribute_dataset(f, list(make_images()[:3]), "gradient", batch_size=2)
    with pytest.raises(ValueError, match=r"does not accept one image of shape \(5, 5, 1\)"):
        slp.attribute_dataset(f, np.zeros((4, 5, 5, 1), np.float32), "gradient", batch_size=2)
    with pytest.raises(ValueError, match="dtype uint8.*floating"):
        slp.attribute_dataset(f, np.zeros((4, *SHAPE), np.uint8), "gradient", batch_size=2)
    with pytest.raises(ValueError, match=r"\(N, \*X\)"):
        slp.attribute_dataset(f, np.zeros(36, np.float32), "gradient", batch_size=2)

    def batches():
        yield np.zeros((3, *SHAPE), np.float32)
        yield np.zeros((3, 5, 5, 1), np.float32)

    with pytest.raises(ValueError, match="differs from the first batch"):
        slp.attribute_dataset(f, batches(), "gradient", batch_size=2, progress=False)


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown attribution method 'insense'.*insens.*gradient"):
        slp.attribute_dataset(network(), make_images(), "insense", batch_size=2)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_below_one(batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {batch_size}"):
        slp.attribute_dataset(network(), make_images(), "gradient", batch_size=batch_size)


def test_unknown_option_names_the_methods_options():
    with pytest.raises(TypeError, match="unknown option"):
        slp.attribute_dataset(network(), make_images(), "gradient", batch_size=2, step=3)


# --------------------------------------------------------------------------------------
# The command line.


def test_command_line_help_lists_every_flag_with_defaults():
    proc = run_python("import sys; from slp.__main__ import main; main(['maps', '--help'])")
    text = " ".join(proc.stdout.split())
    for flag in (
        "--method", "--checkpoint", "--data", "--out", "--batch-size", "--chunk-size",
        "--option", "--target", "--seed", "--limit", "--coordinator-address",
        "--num-processes", "--process-id", "--distributed", "--cpu-collectives", "--traceback",
    ):  # fmt: skip
        assert flag in text
    assert "(default: 256)" in text and "(default: insens)" in text
    assert "(default: mnist:test)" in text


@pytest.mark.slow
def test_command_line_maps_of_a_npy_file(tmp_path, capsys):
    from slp.__main__ import main

    config = training.TrainConfig(features=(2, 3), hidden=8, input_shape=(6, 6, 1))
    params = training.init_params(config)
    ckpt = training.save_checkpoint(tmp_path / "tiny.msgpack", params, {"config": config.to_dict()})
    x = make_images()
    np.save(tmp_path / "x.npy", x)
    argv = [
        "maps", "--method", "gradient_x_input", "--target", "2",
        "--checkpoint", str(ckpt), "--data", str(tmp_path / "x.npy"), "--limit", "20",
        "--out", str(tmp_path / "maps"), "--batch-size", "8", "--no-progress",
    ]  # fmt: skip
    main(argv)
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_images"] == 20 and summary["computed_chunks"] == 3
    model = training.make_model(config)
    ref = reference(
        lambda xi: model.apply(params, xi[None])[0], x[:20], "gradient_x_input", {"target": 2}
    )
    float32_close(slp.read_maps(tmp_path / "maps"), ref)
    main(argv)
    assert json.loads(capsys.readouterr().out)["reused_chunks"] == 3


# --------------------------------------------------------------------------------------
# The benchmark script.


@pytest.mark.slow
def test_bench_dataset_smoke(tmp_path):
    args = [
        "--num-images", "6", "--batch-size", "4", "--methods", "gradient", "--repeats", "1",
        "--fake-devices", "2", "--features", "2", "3", "--hidden", "8",
        "--out", str(tmp_path), "--tag", "smoke",
    ]  # fmt: skip
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "bench_dataset.py"), *args],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True, timeout=240,
        capture_output=True,
    )  # fmt: skip
    saved = json.loads((tmp_path / "bench_dataset_smoke.json").read_text())
    configs = [r["config"] for r in saved["results"]]
    assert configs == ["plain", "devices=1", "devices=2", "devices=1, out", "devices=2, out"]
    assert saved["config"]["local_devices"] == 2 and saved["config"]["fake_devices"]
    for r in saved["results"]:
        assert r["images_per_second"] > 0 and r["max_abs_difference_to_plain"] == 0.0
    assert "add no compute" in (tmp_path / "bench_dataset_smoke.md").read_text()
