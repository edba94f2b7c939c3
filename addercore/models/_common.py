"""Shared pieces of the model zoo: argument checks, the adder/multiplication layer factory,
and a max-pooling module (VGG-small, LeNet-5-BN and the ImageNet ResNets need it)."""
import numpy as np

from .. import nn
from ..ops._validate import as_pair
from ..tensor import Tensor

KINDS = ("adder", "cnn")
NORMS = ("l1", "l2")


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


def _max_pool_forward(x, kernel, stride, padding):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), argmax flat index into the padded input)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    hp, wp = h + 2 * ph, w + 2 * pw
    xp = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::sh, ::sw][:, :, :ho, :wo].reshape(n, c, ho, wo, kh * kw)
    arg = win.argmax(axis=-1)
    out = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    # flat index of the winner inside the padded (hp, wp) plane
    rows = np.arange(ho)[:, None] * sh + arg // kw
    cols = np.arange(wo)[None, :] * sw + arg % kw
    return np.ascontiguousarray(out), rows * wp + cols, (hp, wp)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling (padding with -inf, as PyTorch). x (N, C, H, W) -> (N, C, Ho, Wo)."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if x.data.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {x.data.shape}")
    out, flat, (hp, wp) = _max_pool_forward(x.data, kernel, stride, padding)

    def backward(g):
        n, c, h, w = x.data.shape
        grad = np.zeros((n * c, hp * wp), dtype=x.data.dtype)
        idx = flat.reshape(n * c, -1)
        np.add.at(grad, (np.arange(n * c)[:, None], idx), g.reshape(n * c, -1))
        grad = grad.reshape(n, c, hp, wp)[:, :, padding[0]:padding[0] + h,
                                          padding[1]:padding[1] + w]
        x._accumulate(np.ascontiguousarray(grad))

    return Tensor._from_op(out, (x,), backward, "max_pool2d")


class MaxPool2d(nn.Module):
    """Max pooling; stride defaults to the kernel size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
