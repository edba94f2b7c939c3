"""Kernel API of addercore: validated functions on plain numpy arrays (NCHW, float32/float64).

Every function checks its arguments, then runs the compiled kernel (``addercore.ops.fast``,
backed by ``addercore_ext``) when the Cython backend is active and the op table lists one, or
the numpy reference (:mod:`addercore.ops.reference`) otherwise. Both give the same results: the
adder forward bit for bit, the rest within rounding. Outputs have the inputs' dtype.

Each function is registered in the op table (:mod:`addercore.ops.table`) by the
``@register(...)`` line above it: its family, whether it has a compiled kernel (and if not,
why), what compiled and reference promise to agree on, and its golden kind.
:func:`compiled_ops` lists the ops running compiled code now; ``python -m addercore ops``
prints the table; ``docs/adding-an-op.md`` walks through adding an op.

``stride``, ``padding`` and ``dilation`` are an int or a pair ``(h, w)``; kernels may be
non-square. The adder layer and the convolution also take PyTorch's ``padding="same"`` (stride
1, odd ``dilation·(k − 1)``: see :func:`._validate.conv_padding`) and ``"valid"`` (no padding).
``groups`` (adder and convolution layers) splits the channels into groups that see only their
own slice (``groups = Cin`` is the depthwise layer): weight ``(Cout, Cin/groups, kh, kw)``, both
channel counts divisible by ``groups`` (method §2.6).

Validation (see ``docs/robustness.md``): bad types/dtypes raise ``TypeError``, bad shapes and
values ``ValueError``, each naming the argument with the expected and received shape/dtype.
Views of any layout are accepted (copied to C order); an empty batch (N = 0) gives empty
results of the right shape; NaN/Inf are not checked and propagate as in numpy.
"""
import numpy as np

from . import reference
from ._validate import (as_pair, choice, conv_geometry, conv_padding, expect_shape, float_array,
                        real_scalar, same_dtype, shape_tuple)
from .geometry import Conv2dGeometry, output_size
from .options import FILTER_GRADS, INPUT_GRADS, NORMS, default_input_grad
from .table import compiled_ops, describe, implementation as _impl, register

# ``__all__`` (the public ops) is built from the op table at the end of this module.


def _conv_args(x, weight, stride, padding, dilation=1, groups=1):
    """Validated (x, weight, geometry) of a sliding-window layer call."""
    x = float_array(x, "x", 4, "(N, Cin, H, W)")
    weight = float_array(weight, "weight", 4, "(Cout, Cin/groups, kh, kw)")
    same_dtype(x=x, weight=weight)
    stride = as_pair(stride, "stride", 1)
    dilation = as_pair(dilation, "dilation", 1)
    padding = conv_padding(padding, weight.shape[2:], stride, dilation)
    return x, weight, conv_geometry(x, weight, stride, padding, dilation=dilation, groups=groups)


def _add_channel_bias(y, bias, x, weight):
    """``y[:, c] += bias[c]`` in place (the bias path of the adder layer and the convolution);
    ``bias`` None leaves ``y`` as it is. bias: (Cout,), x's dtype."""
    if bias is None:
        return y
    bias = float_array(bias, "bias", 1, "(Cout,)")
    same_dtype(x=x, bias=bias)
    if bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    y += bias[None, :, None, None]
    return y


def _grad_output(grad_output, x, geometry):
    g = float_array(grad_output, "grad_output", 4, "(N, Cout, Ho, Wo)")
    expect_shape(g, "grad_output", geometry.out_shape)
    same_dtype(x=x, grad_output=g)
    return g


# --------------------------------------------------------------------------------------------
# Adder layer
# --------------------------------------------------------------------------------------------
@register("adder2d", agreement="bit-exact", golden="adder2d")
def adder2d_forward(x, weight, stride=1, padding=0, norm="l1", dilation=1, groups=1, bias=None):
    """Adder layer forward (method §2; grouped/dilated §2.6).

    x: (N, Cin, H, W); weight: (Cout, Cin/groups, kh, kw), same float dtype; bias: (Cout,) or
    None. Returns y: (N, Cout, Ho, Wo) with ``y = -Σ|Xp_patch - F|`` (``norm="l1"``) or
    ``-Σ(Xp_patch - F)²`` (``norm="l2"``), summed in the canonical order (c, i, j ascending over
    the group's ``K = Cin/groups·kh·kw`` taps), plus ``bias[c]`` added afterwards to every
    output of channel c (the authors' optional ``b``, as in their adder.py; its gradient is
    ``grad_output.sum(axis=(0, 2, 3))``). Raises ValueError when ``groups`` does not divide Cin
    and Cout or the weight is not (Cout, Cin/groups, kh, kw).
    """
    x, weight, geo = _conv_args(x, weight, stride, padding, dilation, groups)
    choice(norm, "norm", NORMS)
    y = _impl("adder2d_forward")(x, weight, geo.stride, geo.padding, norm, geometry=geo)
    return _add_channel_bias(y, bias, x, weight)


@register("adder2d", golden="adder2d")
def adder2d_backward(x, weight, grad_output, stride=1, padding=0, norm="l1",
                     filter_grad="full", input_grad=None, dilation=1, groups=1):
    """Adder layer backward with the substituted gradients of method §4.

    x: (N, Cin, H, W); weight: (Cout, Cin/groups, kh, kw); grad_output: (N, Cout, Ho, Wo);
    ``dilation``/``groups`` as in :func:`adder2d_forward` (gradients: method §4.6).
    filter_grad: "full" (``Σ (X - F)·G``, default; for ℓ2 the exact ``Σ 2(X - F)·G``) or
    "sign" (``Σ sgn(X - F)·G``). input_grad: "hardtanh" (``Σ_t clip(F - X, -1, 1)·G``), "sign"
    (``Σ_t -sgn(X - F)·G``) or "exact"; default "hardtanh" for ℓ1 and "exact" for ℓ2.
    Returns (grad_input (N, Cin, H, W), grad_weight (Cout, Cin/groups, kh, kw)); the filter
    gradient is raw, before :func:`adaptive_scale`.
    """
    x, weight, geo = _conv_args(x, weight, stride, padding, dilation, groups)
    choice(norm, "norm", NORMS)
    choice(filter_grad, "filter_grad", FILTER_GRADS)
    if input_grad is None:
        input_grad = default_input_grad(norm)
    choice(input_grad, "input_grad", INPUT_GRADS)
    g = _grad_output(grad_output, x, geo)
    return _impl("adder2d_backward")(x, weight, g, geo.stride, geo.padding, norm, filter_grad,
                                     input_grad, geometry=geo)


@register("adder2d", compiled=False, golden="adder2d",
          no_compiled="one vectorised numpy pass over the filter gradient is memory-bound")
def adaptive_scale(grad_weight, eta=0.2):
    """Adaptive per-layer scaling: ``g · η·sqrt(g.size) / max(‖g‖₂, 1e-12)`` (same dtype)."""
    g = float_array(grad_weight, "grad_weight")
    eta = real_scalar(eta, "eta", low=0.0, low_open=True)
    return _impl("adaptive_scale")(g, eta)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
@register("conv2d", golden="conv2d")
def conv2d_forward(x, weight, stride=1, padding=0, bias=None, dilation=1, groups=1):
    """Convolution (cross-correlation): im2col + GEMM in the numpy reference; the compiled
    backend runs it in the adder kernels' tiled OpenMP drivers with a multiply-add per tap.

    x: (N, Cin, H, W); weight: (Cout, Cin/groups, kh, kw); bias: (Cout,) or None
    -> (N, Cout, Ho, Wo). ``dilation``/``groups`` as in :func:`adder2d_forward`.
    """
    x, weight, geo = _conv_args(x, weight, stride, padding, dilation, groups)
    y = _impl("conv2d_forward")(x, weight, geo.stride, geo.padding, geometry=geo)
    return _add_channel_bias(y, bias, x, weight)


@register("conv2d", golden="conv2d")
def conv2d_backward(x, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
    """Convolution backward -> (grad_input (N, Cin, H, W), grad_weight (Cout, Cin/groups, kh,
    kw)).

    The bias gradient, if any, is ``grad_output.sum(axis=(0, 2, 3))``.
    """
    x, weight, geo = _conv_args(x, weight, stride, padding, dilation, groups)
    g = _grad_output(grad_output, x, geo)
    if x.shape[0] == 0:  # empty batch: same answer on every backend
        return np.zeros_like(x), np.zeros_like(weight)
    return _impl("conv2d_backward")(x, weight, g, geo.stride, geo.padding, geometry=geo)


# --------------------------------------------------------------------------------------------
# BatchNorm, pooling, activation, classifier, loss
# --------------------------------------------------------------------------------------------
def _channel_vector(a, name, channels, dtype):
    a = float_array(a, name, 1, "(C,)")
    expect_shape(a, name, (channels,))
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like x, got {a.dtype}")
    return a


def _batch_norm_forward_args(x, weight, bias, running_mean, running_var, training, momentum,
                             eps):
    x = float_array(x, "x", 4, "(N, C, H, W)")
    c = x.shape[1]
    weight = _channel_vector(weight, "weight", c, x.dtype)
    bias = _channel_vector(bias, "bias", c, x.dtype)
    for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
        if buf is not None:
            if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
                raise TypeError(f"{name} must be a C-contiguous numpy.ndarray (updated in place)")
            _channel_vector(buf, name, c, x.dtype)
    momentum = real_scalar(momentum, "momentum", low=0.0, high=1.0)
    eps = real_scalar(eps, "eps", low=0.0, low_open=True)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("training=False needs running_mean and running_var")
    if training and x.shape[0] * x.shape[2] * x.shape[3] < 2:
        raise ValueError(
            f"training BatchNorm needs more than one value per channel, got x shape {x.shape}"
        )
    return (x, weight, bias, running_mean, running_var, bool(training), float(momentum),
            float(eps))


def _like_x(a, name, x):
    """An (N, C, H, W) array argument with exactly the shape and dtype of ``x``."""
    a = float_array(a, name, 4, "(N, C, H, W) like x")
    expect_shape(a, name, x.shape)
    if a.dtype != x.dtype:
        raise TypeError(f"{name} must have dtype {x.dtype} like x, got {a.dtype}")
    return a


def _batch_norm_backward_args(x, weight, grad_output, mean, invstd):
    x = float_array(x, "x", 4, "(N, C, H, W)")
    g = float_array(grad_output, "grad_output", 4, "(N, C, H, W)")
    expect_shape(g, "grad_output", x.shape)
    same_dtype(x=x, grad_output=g)
    c = x.shape[1]
    weight = _channel_vector(weight, "weight", c, x.dtype)
    mean = _channel_vector(mean, "mean", c, x.dtype)
    invstd = _channel_vector(invstd, "invstd", c, x.dtype)
    return x, weight, g, mean, invstd


@register("batch_norm2d", golden="batch_norm2d")
def batch_norm2d_forward(x, weight, bias, running_mean=None, running_var=None, training=True,
                         momentum=0.1, eps=1e-5):
    """BatchNorm2d. x: (N, C, H, W); weight, bias, running_mean, running_var: (C,).

    training=True normalises with batch statistics (biased variance) and, when running
    buffers are given, updates them **in place** (momentum, unbiased variance); training=False
    uses the running buffers. Returns ``(y, mean, invstd)`` for :func:`batch_norm2d_backward`.
    """
    args = _batch_norm_forward_args(x, weight, bias, running_mean, running_var, training,
                                    momentum, eps)
    return _impl("batch_norm2d_forward")(*args)


@register("batch_norm2d", golden="batch_norm2d")
def batch_norm2d_backward(x, weight, grad_output, mean, invstd, training=True):
    """BatchNorm2d backward -> (grad_input (N, C, H, W), grad_weight (C,), grad_bias (C,))."""
    x, weight, g, mean, invstd = _batch_norm_backward_args(x, weight, grad_output, mean, invstd)
    return _impl("batch_norm2d_backward")(x, weight, g, mean, invstd, bool(training))


@register("batch_norm2d")
def batch_norm2d_relu_forward(x, weight, bias, running_mean=None, running_var=None,
                              training=True, momentum=0.1, eps=1e-5, residual=None,
                              return_stats=False):
    """Fused BatchNorm2d → (+ residual) → ReLU: ``y = max(bn(x) + residual, 0)`` in one op.

    Arguments as :func:`batch_norm2d_forward`, plus ``residual``: None or an (N, C, H, W)
    array of x's shape and dtype (a ResNet block's shortcut), added before the ReLU. The
    pre-ReLU sum is never returned: :func:`batch_norm2d_relu_backward` needs only x and the
    output. Returns ``(y, mean, invstd)``; with ``return_stats=True`` ``(y, mean, invstd,
    stats)``, where ``stats`` = (mean, var) (C,) exactly as the backend normalised with
    (float64 for the compiled kernels, x's dtype for the reference; copies, never the running
    buffers): :func:`batch_norm2d_relu_apply` rebuilds y from them bit for bit.
    """
    args = _batch_norm_forward_args(x, weight, bias, running_mean, running_var, training,
                                    momentum, eps)
    if residual is not None:
        residual = _like_x(residual, "residual", args[0])
    return _impl("batch_norm2d_relu_forward")(*args, residual, return_stats=bool(return_stats))


@register("batch_norm2d")
def batch_norm2d_relu_apply(x, weight, bias, stats, eps=1e-5, residual=None):
    """Recompute the output of :func:`batch_norm2d_relu_forward` from the same ``x``,
    ``weight``, ``bias``, ``eps`` and ``residual`` and the ``stats`` it returned with
    ``return_stats=True``: bit-identical to that forward's y (training or eval mode), on the
    backend that made ``stats``. Running buffers are neither read nor updated.

    Autograd uses it to rebuild a released activation (:meth:`addercore.Tensor.release_data`)
    instead of keeping it until backward."""
    x = float_array(x, "x", 4, "(N, C, H, W)")
    c = x.shape[1]
    weight = _channel_vector(weight, "weight", c, x.dtype)
    bias = _channel_vector(bias, "bias", c, x.dtype)
    if not isinstance(stats, tuple) or len(stats) != 2:
        raise TypeError("stats must be the (mean, var) pair returned by "
                        "batch_norm2d_relu_forward(..., return_stats=True)")
    mean = float_array(stats[0], "stats[0] (mean)", 1, "(C,)")
    var = float_array(stats[1], "stats[1] (var)", 1, "(C,)")
    expect_shape(mean, "stats[0] (mean)", (c,))
    expect_shape(var, "stats[1] (var)", (c,))
    eps = real_scalar(eps, "eps", low=0.0, low_open=True)
    if residual is not None:
        residual = _like_x(residual, "residual", x)
    return _impl("batch_norm2d_relu_apply")(x, weight, bias, (mean, var), float(eps), residual)


@register("batch_norm2d")
def batch_norm2d_relu_backward(x, weight, output, grad_output, mean, invstd, training=True,
                               residual=False):
    """Backward of :func:`batch_norm2d_relu_forward` from its input ``x`` and its ``output``
    (both (N, C, H, W)): ``grad_output`` is masked by ``output > 0``, then goes through the
    BatchNorm backward. ``residual=True`` when the forward had a residual.

    Returns ``(grad_input (N, C, H, W), grad_weight (C,), grad_bias (C,), grad_residual)``;
    ``grad_residual`` (N, C, H, W) is the masked grad_output, or None when ``residual`` is
    False.
    """
    x, weight, g, mean, invstd = _batch_norm_backward_args(x, weight, grad_output, mean, invstd)
    output = _like_x(output, "output", x)
    if not isinstance(residual, (bool, np.bool_)):
        raise TypeError(f"residual must be a bool (whether the forward had a residual), "
                        f"got {type(residual).__name__} {residual!r}")
    return _impl("batch_norm2d_relu_backward")(x, weight, output, g, mean, invstd,
                                               bool(training), bool(residual))


@register("avg_pool2d", compiled=False,
          no_compiled="8x8 global pooling once per network: numpy strided sums suffice")
def avg_pool2d_forward(x, kernel_size, stride=None):
    """Average pooling, no padding. x: (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to kernel."""
    x = float_array(x, "x", 4, "(N, C, H, W)")
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ValueError(f"kernel_size {kernel} is larger than the input {x.shape[2:]}")
    return _impl("avg_pool2d_forward")(x, kernel, stride)


def _pool_out_shape(x_shape, kernel, stride):
    """(N, C, Ho, Wo) of pooling ``x_shape`` without padding."""
    n, c, h, w = x_shape
    return (n, c, output_size(h, kernel[0], stride[0], 0), output_size(w, kernel[1], stride[1], 0))


@register("avg_pool2d", compiled=False,
          no_compiled="8x8 global pooling once per network: numpy strided sums suffice")
def avg_pool2d_backward(x_shape, grad_output, kernel_size, stride=None):
    """Average pooling backward -> grad_input of shape ``x_shape``."""
    x_shape = shape_tuple(x_shape, "x_shape", 4, "(N, C, H, W)")
    g = float_array(grad_output, "grad_output", 4, "(N, C, Ho, Wo)")
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    if kernel[0] > x_shape[2] or kernel[1] > x_shape[3]:
        raise ValueError(f"kernel_size {kernel} is larger than the input {x_shape[2:]}")
    expect_shape(g, "grad_output", _pool_out_shape(x_shape, kernel, stride))
    return _impl("avg_pool2d_backward")(x_shape, g, kernel, stride)


_NO_COMPILED_ADAPTIVE = "global pooling once per network: numpy window sums suffice"


@register("avg_pool2d", compiled=False, no_compiled=_NO_COMPILED_ADAPTIVE)
def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling, as PyTorch's: x (N, C, H, W) -> (N, C, Ho, Wo) for
    ``output_size`` = Ho (square) or (Ho, Wo). Output ``(i, j)`` is the mean of input rows
    ``[floor(i·H/Ho), ceil((i+1)·H/Ho))`` and the same columns for ``j``; ``output_size`` 1
    is the global average. Same dtype as x."""
    x = float_array(x, "x", 4, "(N, C, H, W)")
    out = as_pair(output_size, "output_size", 1)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have non-zero height and width, got shape {x.shape}")
    return _impl("adaptive_avg_pool2d_forward")(x, out)


@register("avg_pool2d", compiled=False, no_compiled=_NO_COMPILED_ADAPTIVE)
def adaptive_avg_pool2d_backward(x_shape, grad_output):
    """Adaptive average pooling backward: grad_output (N, C, Ho, Wo) -> grad_input of shape
    ``x_shape`` (N, C, H, W); the output size is grad_output's."""
    x_shape = shape_tuple(x_shape, "x_shape", 4, "(N, C, H, W)")
    g = float_array(grad_output, "grad_output", 4, "(N, C, Ho, Wo)")
    if x_shape[2] < 1 or x_shape[3] < 1 or g.shape[2] < 1 or g.shape[3] < 1:
        raise ValueError(f"x_shape {x_shape} and grad_output {g.shape} need non-zero H and W")
    expect_shape(g, "grad_output", x_shape[:2] + g.shape[2:])
    return _impl("adaptive_avg_pool2d_backward")(x_shape, g)


def _max_pool_args(kernel_size, stride, padding):
    kernel = as_pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel}")
    return kernel, stride, padding


@register("max_pool2d", compiled=False,
          no_compiled="only the ImageNet stem uses it, once per network")
def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling (padding with -inf). x: (N, C, H, W) -> (y (N, C, Ho, Wo), indices
    (N, C, Ho, Wo) int64: flat ``h·W + w`` of each window's maximum, -1 for a padding cell);
    stride defaults to the kernel; padding at most half the kernel, as in PyTorch."""
    x = float_array(x, "x", 4, "(N, C, H, W)")
    kernel, stride, padding = _max_pool_args(kernel_size, stride, padding)
    if (kernel[0] > x.shape[2] + 2 * padding[0]) or (kernel[1] > x.shape[3] + 2 * padding[1]):
        raise ValueError(f"kernel_size {kernel} is larger than the padded input {x.shape[2:]}")
    return _impl("max_pool2d_forward")(x, kernel, stride, padding)


@register("max_pool2d", compiled=False,
          no_compiled="only the ImageNet stem uses it, once per network")
def max_pool2d_backward(x_shape, grad_output, indices):
    """Max pooling backward -> grad_input of shape ``x_shape`` (gradient routed to each
    window's maximum through ``indices`` from :func:`max_pool2d_forward`)."""
    x_shape = shape_tuple(x_shape, "x_shape", 4, "(N, C, H, W)")
    g = float_array(grad_output, "grad_output", 4, "(N, C, Ho, Wo)")
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got {indices.dtype}")
    expect_shape(indices, "indices", g.shape)
    if indices.size and (indices.max() >= x_shape[2] * x_shape[3] or indices.min() < -1):
        raise ValueError("indices must lie in [-1, H·W) (use max_pool2d_forward's indices)")
    if g.shape[:2] != x_shape[:2]:
        raise ValueError(f"grad_output must have N, C = {x_shape[:2]}, got {g.shape[:2]}")
    return _impl("max_pool2d_backward")(x_shape, g, indices.astype(np.int64, copy=False))


@register("relu", compiled=False,
          no_compiled="np.maximum is one memory-bound pass; the networks fuse ReLU into BatchNorm")
def relu_forward(x):
    """max(x, 0), elementwise, any shape."""
    return _impl("relu_forward")(float_array(x, "x"))


@register("relu", agreement="bit-exact")
def relu_backward(x, grad_output):
    """grad_output where x > 0, else 0."""
    x = float_array(x, "x")
    g = float_array(grad_output, "grad_output")
    expect_shape(g, "grad_output", x.shape)
    same_dtype(x=x, grad_output=g)
    return _impl("relu_backward")(x, g)


@register("linear", compiled=False, no_compiled="a BLAS GEMM already")
def linear_forward(x, weight, bias=None):
    """x: (N, in); weight: (out, in); bias: (out,) or None -> (N, out)."""
    x = float_array(x, "x", 2, "(N, in_features)")
    weight = float_array(weight, "weight", 2, "(out_features, in_features)")
    same_dtype(x=x, weight=weight)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but weight expects {weight.shape[1]}")
    if bias is not None:
        bias = float_array(bias, "bias", 1, "(out_features,)")
        same_dtype(x=x, bias=bias)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return _impl("linear_forward")(x, weight, bias)


@register("linear", compiled=False, no_compiled="a BLAS GEMM already")
def linear_backward(x, weight, grad_output):
    """-> (grad_input (N, in), grad_weight (out, in), grad_bias (out,))."""
    x = float_array(x, "x", 2, "(N, in_features)")
    weight = float_array(weight, "weight", 2, "(out_features, in_features)")
    g = float_array(grad_output, "grad_output", 2, "(N, out_features)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but weight expects {weight.shape[1]}")
    expect_shape(g, "grad_output", (x.shape[0], weight.shape[0]))
    same_dtype(x=x, weight=weight, grad_output=g)
    return _impl("linear_backward")(x, weight, g)


def _targets(targets, logits):
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array of class indices, got dtype {t.dtype}")
    if t.shape != (logits.shape[0],):
        raise ValueError(f"targets must have shape ({logits.shape[0]},), got {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got range [{t.min()}, {t.max()}]")
    return t.astype(np.intp, copy=False)


@register("cross_entropy", compiled=False,
          no_compiled="(N, classes) logits: negligible cost")
def cross_entropy_forward(logits, targets):
    """Mean cross-entropy: logits (N, classes) float, targets (N,) int -> 0-d array."""
    logits = float_array(logits, "logits", 2, "(N, classes)")
    if logits.shape[0] == 0:
        raise ValueError("cross_entropy needs at least one sample, got logits shape (0, ...)")
    return _impl("cross_entropy_forward")(logits, _targets(targets, logits))


@register("cross_entropy", compiled=False,
          no_compiled="(N, classes) logits: negligible cost")
def cross_entropy_backward(logits, targets, grad_output=1.0):
    """Gradient of the mean cross-entropy w.r.t. logits: (N, classes)."""
    logits = float_array(logits, "logits", 2, "(N, classes)")
    if logits.shape[0] == 0:
        raise ValueError("cross_entropy needs at least one sample, got logits shape (0, ...)")
    grad_output = real_scalar(grad_output, "grad_output", finite=False)
    return _impl("cross_entropy_backward")(logits, _targets(targets, logits), grad_output)


# --------------------------------------------------------------------------------------------
# The public names: every op of the table, plus the shared pieces
# --------------------------------------------------------------------------------------------
from .table import OPS as _OPS  # noqa: E402  (filled by the @register lines above)

__all__ = list(_OPS) + ["output_size", "Conv2dGeometry", "compiled_ops", "describe", "NORMS",
                        "FILTER_GRADS", "INPUT_GRADS", "default_input_grad"]
