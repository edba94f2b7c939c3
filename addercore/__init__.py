"""addercore: adder neural networks (AdderNet, Chen et al., CVPR 2020) on CPUs.

Layers: :mod:`addercore.ops` (validated kernels on numpy arrays), :mod:`addercore.tensor` and
:mod:`addercore.functional` (autograd-lite), :mod:`addercore.nn` (modules),
:mod:`addercore.optim` (SGD with adaptive scaling, schedules).
"""
__version__ = "0.1.0"

from . import functional, nn, ops, optim
from ._backend import backend
from .tensor import Tensor, is_grad_enabled, no_grad
from .threads import get_num_threads, num_threads, set_num_threads

_LAZY_SUBMODULES = ("io", "data", "models", "profile", "golden", "train")


def __getattr__(name):
    # heavier subpackages load on first use: `addercore.data`, `addercore.models`, ...
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'addercore' has no attribute {name!r}")


__all__ = ["Tensor", "no_grad", "is_grad_enabled", "backend", "ops", "functional", "nn",
           "optim", "set_num_threads", "get_num_threads", "num_threads", "__version__"]
