"""Layers: Adder2d (the AdderNet layer), Conv2d, BatchNorm2d, ReLU, AvgPool2d, Linear, Flatten.

Parameter names follow the authors' PyTorch code, so their state dicts load unchanged: an adder
layer's filters are ``adder``; BatchNorm has ``weight``, ``bias`` and the buffers
``running_mean``, ``running_var``, ``num_batches_tracked``.
Initialisation uses a module-level ``np.random.Generator`` (see :func:`manual_seed`) unless an
explicit ``rng`` is passed.
"""
import math
import numbers
import warnings

import numpy as np

from .. import functional as F
from ..ops._validate import as_pair, choice, conv_padding, group_count
from ..ops.options import FILTER_GRADS, INPUT_GRADS, NORMS, default_input_grad
from .module import Module, Parameter

__all__ = ["Adder2d", "Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d", "AdaptiveAvgPool2d",
           "Linear", "Flatten", "manual_seed"]

_default_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Seed the generator that initialises parameters when no ``rng`` is given."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def _rng(rng):
    return _default_rng if rng is None else rng


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_input_array(layer, x, ndim, layout, channels):
    """Check a layer's input against the layer: float dtype equal to the parameters', rank
    ``ndim`` and ``channels`` at axis 1.  Errors name the layer (its repr) and show the expected
    vs. received shape or dtype."""
    data = x.data
    where = f"{type(layer).__name__}({layer.extra_repr()})"
    dtype = data.dtype.newbyteorder("=") if data.dtype.kind == "f" else data.dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{where}: input must have dtype float32 or float64, got {data.dtype}")
    if dtype != layer.dtype:
        raise TypeError(
            f"{where}: input has dtype {data.dtype} but the layer's parameters are "
            f"{layer.dtype}; convert the input (x.astype) or the model (.to(dtype))"
        )
    if data.ndim != ndim or data.shape[1] != channels:
        raise ValueError(
            f"{where}: input must have shape {layout} with {channels} channels, "
            f"got shape {data.shape}"
        )


def _groups(groups, in_channels, out_channels):
    """``groups`` of a grouped layer: a positive int dividing both channel counts (PyTorch)."""
    groups = group_count(groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return groups


def _kaiming_uniform(shape, fan_in, rng, dtype):
    """PyTorch's default conv/linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the bound that
    kaiming_uniform with a=sqrt(5) reduces to."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Adder2d(Module):
    """Adder layer: ``y = -Σ|X_patch - F|`` (ℓ1) or ``-Σ(X_patch - F)²`` (ℓ2), plus an optional
    per-channel bias.

    Parameters: ``adder`` (out_channels, in_channels/groups, kh, kw), initialised N(0, 1)
    (method §7.2); with ``bias=True`` also ``b`` (out_channels,), initialised U(0, 1) and added
    to every output of its channel. Both names are the authors' (their adder.py: ``self.adder``,
    and ``self.b = nn.Parameter(nn.init.uniform_(torch.zeros(output_channel)))`` when
    ``bias=True``), so their state dicts load unchanged; :attr:`bias` returns ``b`` (or None),
    as ``Conv2d.bias`` does. The paper's networks put BatchNorm after every adder layer and use
    no bias. ``dilation`` and ``groups`` as in PyTorch's Conv2d (method §2.6).
    ``eta`` is the adaptive-scaling coefficient the optimiser applies to this layer's filter
    gradient (None disables it for this layer; reassigning ``eta`` or ``adder`` later takes
    effect at the next optimiser step); ``filter_grad``/``input_grad`` choose the
    substituted gradients (see :func:`addercore.ops.adder2d_backward`). ``padding``: an int, a
    pair, or PyTorch's ``"same"`` (stride 1, odd kernels) / ``"valid"``, stored as the pair.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 norm="l1", eta=0.2, filter_grad="full", input_grad=None, rng=None,
                 dtype=np.float32, *, dilation=1, groups=1):
        super().__init__()
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        # "same"/"valid" become the (ph, pw) pair here, once (ops/_validate.conv_padding)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.padding = conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.norm = choice(norm, "norm", NORMS)
        self.filter_grad = choice(filter_grad, "filter_grad", FILTER_GRADS)
        if input_grad is None:
            input_grad = default_input_grad(norm)
        self.input_grad = choice(input_grad, "input_grad", INPUT_GRADS)
        self.eta = eta
        self.groups = _groups(groups, self.in_channels, self.out_channels)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        rng = _rng(rng)
        self.adder = Parameter(rng.standard_normal(shape).astype(dtype))
        if bias:
            self.b = Parameter(rng.uniform(0.0, 1.0, size=self.out_channels).astype(dtype))

    @property
    def bias(self):
        """The per-channel bias Parameter ``b`` (out_channels,), or None without a bias."""
        return self._parameters.get("b")

    # The layer owns eta; the optimiser reads it from the filter Parameter's ``adaptive_eta``,
    # which these two setters keep equal to it whatever the user assigns, so the optimiser
    # never needs to know the layer.
    @property
    def eta(self):
        """η of the adaptive per-layer scaling of this layer's filter gradient (method §5), or
        None to train the filters with plain SGD. May be reassigned at any time."""
        return self._eta

    @eta.setter
    def eta(self, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not 0 < value < math.inf):
            raise ValueError(f"eta must be a positive number or None, got {value!r}")
        object.__setattr__(self, "_eta", value)
        self._tag_filter()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "adder":  # a new filter Parameter gets the layer's scaling
            self._tag_filter()

    def _tag_filter(self):
        adder = self.__dict__.get("adder")
        if isinstance(adder, Parameter):
            adder.adaptive_eta = self.__dict__.get("_eta")

    def _check_input(self, x):
        _check_input_array(self, x, 4, "(N, C, H, W)", self.in_channels)

    def forward(self, x):
        return F.adder2d(x, self.adder, self.stride, self.padding, self.norm, self.filter_grad,
                         self.input_grad, self.dilation, self.groups, self.bias)

    def extra_repr(self):
        bias = ", bias=True" if self.bias is not None else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, norm={self.norm!r}{bias}"
                + _group_repr(self))


def _group_repr(layer):
    """``, dilation=..., groups=...`` for the non-default values only (PyTorch's repr)."""
    return ((f", dilation={layer.dilation}" if layer.dilation != (1, 1) else "")
            + (f", groups={layer.groups}" if layer.groups != 1 else ""))


class Conv2d(Module):
    """Multiplication convolution; ``weight`` (out, in, kh, kw), optional ``bias`` (out,).
    ``padding`` as :class:`Adder2d`'s (an int, a pair, ``"same"`` or ``"valid"``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32, *, dilation=1, groups=1):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.dilation = as_pair(dilation, "dilation", 1)
        self.padding = conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.groups = _groups(groups, self.in_channels, self.out_channels)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        rng = _rng(rng)
        self.weight = Parameter(_kaiming_uniform(shape, fan_in, rng, dtype))
        self.bias = Parameter(_kaiming_uniform((self.out_channels,), fan_in, rng, dtype)) if bias else None

    def _check_input(self, x):
        _check_input_array(self, x, 4, "(N, C, H, W)", self.in_channels)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
                + _group_repr(self))


class BatchNorm2d(Module):
    """BatchNorm over (N, H, W) per channel: weight 1, bias 0, eps 1e-5, momentum 0.1.

    Training normalises with the biased batch variance and updates ``running_var`` with the
    unbiased one; ``num_batches_tracked`` (int64) counts training batches, as in PyTorch.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def _check_input(self, x):
        _check_input_array(self, x, 4, "(N, C, H, W)", self.num_features)

    def forward(self, x, residual=None, relu=False):
        """``bn(x)``; with ``relu=True`` the fused ``max(bn(x) + residual, 0)``
        (:func:`addercore.functional.batch_norm2d_relu`: one graph node, no pre-ReLU activation
        kept for backward). ``residual`` (x's shape) needs ``relu=True``."""
        if residual is not None and not relu:
            raise ValueError("BatchNorm2d: residual is only supported with relu=True "
                             "(add it yourself for BatchNorm → + residual without ReLU)")
        if self.training:
            self.num_batches_tracked = np.asarray(self.num_batches_tracked + 1, dtype=np.int64)
        if relu:
            return F.batch_norm2d_relu(x, self.weight, self.bias, self.running_mean,
                                       self.running_var, self.training, self.momentum, self.eps,
                                       residual)
        return F.batch_norm2d(x, self.weight, self.bias, self.running_mean, self.running_var,
                              self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


_warned_relu_after_adder = False
# ops whose output is <= 0 wherever their input is (looked through for the warning below)
_SIGN_KEEPING_OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "reshape")


class ReLU(Module):
    """``max(x, 0)``.

    Warns once per process (UserWarning) when, in training, its input is an adder layer's
    output (possibly pooled): that output is ``-distance <= 0``, so ReLU gives 0 everywhere
    and the network trains at chance; AdderNets put BatchNorm between the two (method §2.1, §6)."""

    def forward(self, x):
        global _warned_relu_after_adder
        # ops are recorded only with a graph (training): free to test, silent in inference.
        source = x
        while source._op in _SIGN_KEEPING_OPS:
            source = source._parents[0]
        if source._op == "adder2d" and not _warned_relu_after_adder:
            _warned_relu_after_adder = True
            warnings.warn(
                "ReLU applied directly to an adder layer's output: adder outputs are <= 0 "
                "(minus a distance), so ReLU makes them 0 everywhere and the network trains at "
                "chance. Put a BatchNorm2d between the adder layer and the ReLU.", stacklevel=2)
        return F.relu(x)


class AvgPool2d(Module):
    """Average pooling without padding; stride defaults to the kernel size."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (Ho or (Ho, Wo)) whatever the input's H×W,
    with PyTorch's windows (rows ``[floor(i·H/Ho), ceil((i+1)·H/Ho))``); ``output_size=1`` is
    the global average the ImageNet ResNets end with."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = as_pair(output_size, "output_size", 1)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class MaxPool2d(Module):
    """Max pooling (padding with -inf); stride defaults to the kernel size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Linear(Module):
    """``y = x @ weight.T + bias``; weight (out, in), bias (out,)."""

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        rng = _rng(rng)
        self.weight = Parameter(_kaiming_uniform((out_features, in_features), in_features, rng, dtype))
        self.bias = Parameter(_kaiming_uniform((out_features,), in_features, rng, dtype)) if bias else None

    def _check_input(self, x):
        _check_input_array(self, x, 2, "(N, in_features)", self.in_features)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def forward(self, x):
        return F.flatten(x)
