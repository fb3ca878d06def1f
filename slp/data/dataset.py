"""The record every loader of `slp.data` returns: one split of a labelled image data set."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split of a labelled image data set, as its files store it.

    ``images, labels = load_mnist("test")`` unpacks the two arrays every data set has; the
    other fields say where the pixels came from and what else the files hold.

    Attributes:
      images: uint8 ``(N, *image_shape)``, the stored pixel values: MNIST and Fashion-MNIST
        ``(N, 28, 28)``, CIFAR-10 ``(N, 32, 32, 3)`` (RGB), smallNORB ``(N, 2, 96, 96)`` (the
        two cameras of each stereo pair).
      labels: int32 ``(N,)``, class indices in the order of the data set's class names.
      source: where the pixels were read from: ``"official"`` (the published files, checked)
        or ``"images:<path>"`` (a copy stored as image files, CIFAR-10 only).
      lossy: True when the images were decoded from JPEG files and so differ from the
        official pixels by a few intensity levels.
      info: smallNORB's capture parameters, int32 ``(N, 4)``: instance (0..9), elevation
        (0..8, i.e. 30 to 70 degrees in steps of 5), azimuth (0, 2, ..., 34; times 10 gives
        degrees), lighting (0..5). None for the other data sets.

    Examples:
      >>> data = slp.data.Dataset(np.zeros((2, 28, 28), np.uint8), np.array([3, 5], np.int32))
      >>> images, labels = data
      >>> images.shape, labels, data.source
      ((2, 28, 28), array([3, 5], dtype=int32), 'official')
    """

    images: np.ndarray
    labels: np.ndarray
    source: str = "official"
    lossy: bool = False
    info: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yields ``images`` then ``labels``, so that ``images, labels = dataset`` works."""
        return iter((self.images, self.labels))


__all__ = ["Dataset"]
