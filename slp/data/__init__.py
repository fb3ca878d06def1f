"""Dataset loaders: MNIST, Fashion-MNIST, CIFAR-10 and smallNORB in their official formats.

Files live in the data directory (``$SLP_DATA_DIR``, default ``~/.cache/slp``) and are fetched
there on first use where a source is reachable. ``python -m slp.data fetch mnist`` fetches
from the command line.

Every loader returns a `Dataset`: the stored uint8 images, int32 labels, where the pixels came
from and, for smallNORB, the capture parameters; ``images, labels = load_mnist("test")``
unpacks the two arrays.
"""

from slp.data._cache import CorruptDataError as CorruptDataError
from slp.data._cache import DatasetNotFoundError as DatasetNotFoundError
from slp.data._cache import data_dir as data_dir
from slp.data.cifar10 import fetch_cifar10 as fetch_cifar10
from slp.data.cifar10 import load_cifar10 as load_cifar10
from slp.data.dataset import Dataset as Dataset
from slp.data.example import ExampleDigits as ExampleDigits
from slp.data.example import example_digits as example_digits
from slp.data.example import example_model as example_model
from slp.data.idx import read_idx as read_idx
from slp.data.mnist import fetch_fashion_mnist as fetch_fashion_mnist
from slp.data.mnist import fetch_mnist as fetch_mnist
from slp.data.mnist import load_fashion_mnist as load_fashion_mnist
from slp.data.mnist import load_mnist as load_mnist
from slp.data.smallnorb import load_smallnorb as load_smallnorb

__all__ = [
    "CorruptDataError",
    "Dataset",
    "DatasetNotFoundError",
    "ExampleDigits",
    "data_dir",
    "example_digits",
    "example_model",
    "fetch_cifar10",
    "fetch_fashion_mnist",
    "fetch_mnist",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_smallnorb",
    "read_idx",
]
