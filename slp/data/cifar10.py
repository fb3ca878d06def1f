"""CIFAR-10 from the official python batches, or from a copy stored as image files.

Two sources, tried in this order when ``source`` is None:

1. The official python version (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):
   ``<data dir>/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}``, or the archive
   ``<data dir>/cifar10/cifar-10-python.tar.gz`` (its batches are extracted next to it on
   first use). When neither is there and ``download`` is true, the archive is fetched from the
   official site. Archive and batches are checked against their published MD5s.
2. An image copy: a zip file or a folder laid out as ``[prefix/]train|test/<class>/<name>``
   with ``.png``, ``.jpg`` or ``.jpeg`` files and the ten official class names as folder
   names (alphabetical order is the official label order). Given by the ``images_path``
   argument or the ``SLP_CIFAR10_ZIP`` environment variable. Decoding 60,000 small images
   takes a while, so the decoded arrays are cached as ``.npz`` in ``<data dir>/cifar10/``,
   keyed by the SHA-256 of the zip (for a folder: of its file names, sizes and mtimes).
   JPEG copies are lossy: the result's ``lossy`` field says so. Images are ordered by class,
   then by file name (numbers in names compared as numbers); this is not the official order.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from slp.data import _cache
from slp.data._cache import CorruptDataError, DatasetNotFoundError
from slp.data._files import PathLike
from slp.data.dataset import Dataset

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLITS = ("train", "test")
SOURCES = ("official", "images")
ENV_IMAGES = "SLP_CIFAR10_ZIP"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
# Published MD5s of the official archive and of the batch files inside it (the values the
# dataset's users, e.g. torchvision, have checked for years).
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_IMAGE_SUFFIXES = {".png": False, ".jpg": True, ".jpeg": True}  # suffix -> lossy
_CACHE_VERSION = 1


def load_cifar10(
    split: str = "train",
    *,
    data_dir: PathLike | None = None,
    download: bool = True,
    source: str | None = None,
    images_path: PathLike | None = None,
) -> Dataset:
    """Loads CIFAR-10 (Krizhevsky 2009): the official batches, else an image copy.

    Args:
      split: "train" (50,000 images) or "test" (10,000 images).
      data_dir: the data directory; default ``$SLP_DATA_DIR`` or ``~/.cache/slp``; CIFAR-10
        files and caches are in its ``cifar10/`` folder.
      download: fetch the official archive when it is not in the data directory.
      source: "official" (batches only), "images" (image copy only) or None (official when
        available, else the image copy; the choice is printed to stderr).
      images_path: a zip file or folder holding the image copy (see the module docstring);
        default ``$SLP_CIFAR10_ZIP``.

    Returns:
      Dataset: images uint8 (N, 32, 32, 3), labels int32 (N,), source (``"official"`` or
      ``"images:<path>"``), lossy.

    Raises:
      DatasetNotFoundError: no usable source (the message says what was tried).
      CorruptDataError: a file is damaged, has the wrong checksum or the wrong layout.

    Examples:
      >>> images, labels = slp.data.load_cifar10("test")  # doctest: +SKIP
      >>> images.shape  # doctest: +SKIP
      (10000, 32, 32, 3)
      >>> import tempfile
      >>> slp.data.load_cifar10("test", data_dir=tempfile.mkdtemp(), download=False)
      Traceback (most recent call last):
      ...
      slp.data._cache.DatasetNotFoundError: CIFAR-10 is not available. ...
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} or None, got {source!r}")
    folder = _cache.data_dir(data_dir) / "cifar10"
    if images_path is None and os.environ.get(ENV_IMAGES):
        images_path = os.environ[ENV_IMAGES]

    tried = []
    if source in (None, "official"):
        try:
            images, labels = _load_official(folder, split, download)
            return Dataset(images=images, labels=labels)
        except DatasetNotFoundError as e:
            if source == "official":
                raise
            tried.append(str(e))
    if images_path is None:
        tried.append(f"image copy: none given (images_path argument or ${ENV_IMAGES})")
        raise DatasetNotFoundError(
            "CIFAR-10 is not available.\n"
            + "\n".join(f"  - {t}" for t in tried)
            + f"\nPlace {ARCHIVE_NAME} (from {ARCHIVE_URL}) or its {BATCH_DIR}/ folder in "
            f"{folder}/, or give an image copy laid out as train|test/<class>/*.png|jpg."
        )
    path = Path(images_path).expanduser()
    if source is None:
        _cache.log(f"CIFAR-10: official batches unavailable; using the image copy {path}")
    images, labels, lossy = _load_images(path, folder, split)
    return Dataset(images=images, labels=labels, source=f"images:{path}", lossy=lossy)


def fetch_cifar10(
    *,
    data_dir: PathLike | None = None,
    images_path: PathLike | None = None,
) -> Path:
    """Prepares both splits in the data directory (official if possible, else the image cache).

    Args:
      data_dir: the data directory (default ``$SLP_DATA_DIR`` or ``~/.cache/slp``).
      images_path: an image copy to fall back on (default ``$SLP_CIFAR10_ZIP``).

    Returns:
      The ``cifar10`` folder of the data directory.

    Examples:
      >>> slp.data.fetch_cifar10()  # doctest: +SKIP
      PosixPath('/home/me/.cache/slp/cifar10')
    """
    for split in SPLITS:
        load_cifar10(split, data_dir=data_dir, images_path=images_path)
    return _cache.data_dir(data_dir) / "cifar10"


# ----------------------------------------------------------------------------- official


def _load_official(folder: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    batch_dir = folder / BATCH_DIR
    names = BATCHES[split]
    if any(not (batch_dir / n).is_file() for n in names):
        archive = folder / ARCHIVE_NAME
        if not archive.is_file():
            if not download:
                raise DatasetNotFoundError(
                    f"official batches: not in {batch_dir}/ and no {archive} (download=False)"
                )
            _download_archive(archive)
        _extract_batches(archive, batch_dir)
    images, labels = [], []
    for name in names:
        x, y = parse_batch((batch_dir / name).read_bytes(), name=str(batch_dir / name))
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _download_archive(archive: Path) -> None:
    start = time.perf_counter()
    try:
        _cache.download_file(
            ARCHIVE_URL,
            archive,
            verify=lambda tmp: _check_file_md5(tmp, ARCHIVE_MD5, archive.name),
        )
    except Exception as e:  # noqa: BLE001 - reported as the reason this source failed
        raise DatasetNotFoundError(
            f"official batches: not in {archive.parent}/; fetching {ARCHIVE_URL} failed "
            f"({type(e).__name__}: {e})"
        ) from e
    took = time.perf_counter() - start
    _cache.log(f"CIFAR-10 fetched from {ARCHIVE_URL} in {took:.1f} s into {archive}")


def _check_file_md5(path: Path, expected: str, name: str) -> None:
    got = _cache.file_digest(path, "md5")
    if got != expected:
        raise CorruptDataError(f"{name}: md5 {got}, expected {expected}")


def _extract_batches(archive: Path, batch_dir: Path) -> None:
    """Writes the six batch files of the official archive into batch_dir, verified."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for name, md5 in _BATCH_MD5.items():
                data = _cache.tar_member_bytes(tar, f"{BATCH_DIR}/{name}", archive=str(archive))
                _cache.atomic_write_bytes(batch_dir / name, data, md5=md5)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptDataError(f"{archive}: cannot read the archive ({e})") from e


def parse_batch(data: bytes, *, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """Parses one official python batch file (a pickled dict with ``data`` and ``labels``).

    ``data`` is uint8 (n, 3072): per image 1024 red, then 1024 green, then 1024 blue values,
    each plane row-major 32x32.

    Args:
      data: the file's bytes; checked against the published MD5 when ``name`` ends with an
        official batch name.
      name: the file's name or path, for the checksum lookup and messages.

    Returns:
      images uint8 (n, 32, 32, 3) and labels int32 (n,).
    """
    base = PurePosixPath(name).name
    if base in _BATCH_MD5:
        _cache.check_digest(data, _BATCH_MD5[base], algorithm="md5", name=name)
    obj = _cache.load_data_pickle(data, name=name)
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{name}: expected a pickled dict, got {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise CorruptDataError(f"{name}: no 'data' and 'labels' entries")
    x = np.asarray(obj["data"])
    y = np.asarray(obj["labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise CorruptDataError(f"{name}: data must be uint8 (n, 3072), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise CorruptDataError(f"{name}: labels must be {x.shape[0]} integers in 0..9")
    images = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), y.astype(np.int32)


# ----------------------------------------------------------------------------- image copy


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class _Member(NamedTuple):
    label: int
    key: list[object]
    name: str  # member name in the zip, or path relative to the folder


def _list_members(names: Iterator[str], split: str, where: Path) -> list[_Member]:
    members = []
    other_classes = set()
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) < 3 or parts[-3] != split:
            continue
        if parts[-1].startswith(".") or "__MACOSX" in parts:  # resource forks, hidden files
            continue
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in _IMAGE_SUFFIXES:
            continue
        cls = parts[-2]
        if cls not in CLASSES:
            other_classes.add(cls)
            continue
        members.append(_Member(CLASSES.index(cls), _natural_key(parts[-1]), name))
    if other_classes:
        raise CorruptDataError(
            f"{where}: unknown class folders {sorted(other_classes)} under {split}/; "
            f"expected {list(CLASSES)}"
        )
    if not members:
        raise CorruptDataError(f"{where}: no images under {split}/<class>/")
    missing = set(range(len(CLASSES))) - {m.label for m in members}
    if missing:
        raise CorruptDataError(
            f"{where}: no {split} images for classes {[CLASSES[i] for i in sorted(missing)]}"
        )
    return sorted(members, key=lambda m: (m.label, m.key))


def _decode(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CorruptDataError(f"{name}: cannot decode the image ({e})") from e
    if arr.shape != (32, 32, 3):
        raise CorruptDataError(f"{name}: expected a 32x32 image, got {arr.shape[1::-1]}")
    return arr


def _images_key(path: Path) -> str:
    if path.is_file():
        return _cache.file_digest(path, "sha256")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load_images(path: Path, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, bool]:
    if not path.exists():
        raise DatasetNotFoundError(f"CIFAR-10 image copy {path} does not exist")
    cache = folder / f"images-{_images_key(path)}-{split}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if int(z["version"]) == _CACHE_VERSION:
                return z["images"], z["labels"], bool(z["lossy"])

    start = time.perf_counter()
    if path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise CorruptDataError(f"{path}: not a zip file ({e})") from e
        with archive:
            names = (i.filename for i in archive.infolist() if not i.is_dir())
            members = _list_members(names, split, path)
            images = np.stack([_decode(archive.read(m.name), m.name) for m in members])
    else:
        names = (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        members = _list_members(names, split, path)
        images = np.stack([_decode((path / m.name).read_bytes(), m.name) for m in members])
    labels = np.array([m.label for m in members], dtype=np.int32)
    lossy = any(_IMAGE_SUFFIXES[PurePosixPath(m.name).suffix.lower()] for m in members)
    took = time.perf_counter() - start
    _cache.log(f"CIFAR-10 {split}: decoded {len(members)} images from {path} in {took:.1f} s")

    with _cache.atomic_writer(cache) as f:
        np.savez(f, images=images, labels=labels, lossy=lossy, version=_CACHE_VERSION)
    return images, labels, lossy
