"""Data sets and input pipeline: CIFAR-10/100 and MNIST readers, augmentation, batch loader.

>>> from addercore.data import load_cifar10, BatchLoader
>>> x, y = load_cifar10(train=True)              # uint8 (50000, 3, 32, 32), int64 (50000,)
>>> loader = BatchLoader(x, y, 256, shuffle=True, augment=True, seed=0)
>>> for xb, yb in loader: ...                    # float32 (256, 3, 32, 32) normalised, int64
"""
from .cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100
from .download import DataNotFoundError, DownloadError, default_cache_dir
from .loader import BatchLoader
from .mnist import load_mnist, read_idx
from .transforms import (
    CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, MNIST_MEAN, MNIST_STD,
    normalize, random_crop_flip,
)

__all__ = [
    "load_cifar10", "load_cifar100", "load_mnist", "read_idx", "CIFAR10_CLASSES",
    "DataNotFoundError", "DownloadError", "default_cache_dir",
    "BatchLoader", "normalize", "random_crop_flip",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "MNIST_MEAN", "MNIST_STD",
]
