"""Shared pieces of the model zoo: argument checks and the adder/multiplication layer
factory."""
import numpy as np

from .. import functional as F
from .. import nn
from ..ops.options import NORMS

KINDS = ("adder", "cnn")


def check_common(num_classes, kind, norm, eta, dtype):
    """Validate the arguments every model constructor shares; returns the numpy dtype."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float))
                            or not eta > 0):
        raise ValueError(f"eta must be a positive number or None, got {eta!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def body_conv(cfg, in_channels, out_channels, kernel_size, stride=1, padding=0):
    """A replaceable layer: ``Adder2d`` (param ``adder``) for kind="adder", else a bias-free
    ``Conv2d`` (param ``weight``). ``cfg`` = dict(kind, norm, eta, rng, dtype)."""
    if cfg["kind"] == "adder":
        return nn.Adder2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                          norm=cfg["norm"], eta=cfg["eta"], rng=cfg["rng"], dtype=cfg["dtype"])
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     bias=False, rng=cfg["rng"], dtype=cfg["dtype"])


# Max pooling lives in addercore.nn / addercore.functional; re-exported here for the model zoo.
MaxPool2d = nn.MaxPool2d
max_pool2d = F.max_pool2d
