"""Differentiable ops on :class:`~addercore.tensor.Tensor`: forward via :mod:`addercore.ops`,
plus a small backward closure each (micrograd style).

Each function accepts Tensors (or numpy arrays, treated as constants) and returns a Tensor.
"""
import weakref

import numpy as np

from . import ops
from .tensor import Tensor

__all__ = [
    "adder2d",
    "conv2d",
    "batch_norm2d",
    "batch_norm2d_relu",
    "relu",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "max_pool2d",
    "linear",
    "flatten",
    "reshape",
    "cross_entropy",
    "add",
    "neg",
    "mul",
    "sum",
    "mean",
]


def _tensor(value):
    return value if isinstance(value, Tensor) else Tensor(value)


def _bias_grad(g):
    """Gradient of a per-channel bias added to an (N, C, H, W) output: the sum over N, H, W."""
    return g.sum(axis=(0, 2, 3))


def adder2d(x, weight, stride=1, padding=0, norm="l1", filter_grad="full", input_grad=None,
            dilation=1, groups=1, bias=None):
    """Adder layer (method §2, §4; grouped/dilated §2.6).

    x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout,) or None
    -> (N, Cout, Ho, Wo).

    The recorded backward uses the substituted gradients (``filter_grad``, ``input_grad``, see
    :func:`addercore.ops.adder2d_backward`); the filter gradient stored in ``weight.grad`` is
    raw — adaptive scaling belongs to the optimiser (:class:`addercore.optim.SGD`).
    """
    x, weight = _tensor(x), _tensor(weight)
    bias = None if bias is None else _tensor(bias)
    y = ops.adder2d_forward(x.data, weight.data, stride, padding, norm, dilation, groups,
                            None if bias is None else bias.data)

    def backward(g):
        grad_input, grad_weight = ops.adder2d_backward(
            x.data, weight.data, g, stride, padding, norm, filter_grad, input_grad, dilation,
            groups
        )
        x._accumulate(grad_input)
        weight._accumulate(grad_weight)
        if bias is not None:
            bias._accumulate(_bias_grad(g))

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._from_op(y, parents, backward, "adder2d")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Convolution. x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), bias (Cout,) or
    None; ``dilation``/``groups`` as in PyTorch (method §2.6)."""
    x, weight = _tensor(x), _tensor(weight)
    bias = None if bias is None else _tensor(bias)
    y = ops.conv2d_forward(x.data, weight.data, stride, padding,
                           None if bias is None else bias.data, dilation, groups)

    def backward(g):
        grad_input, grad_weight = ops.conv2d_backward(x.data, weight.data, g, stride, padding,
                                                      dilation, groups)
        x._accumulate(grad_input)
        weight._accumulate(grad_weight)
        if bias is not None:
            bias._accumulate(_bias_grad(g))

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._from_op(y, parents, backward, "conv2d")


def batch_norm2d(x, weight, bias, running_mean=None, running_var=None, training=True,
                 momentum=0.1, eps=1e-5):
    """BatchNorm2d; in training mode updates the running buffers (numpy arrays) in place."""
    x, weight, bias = _tensor(x), _tensor(weight), _tensor(bias)
    y, mean, invstd = ops.batch_norm2d_forward(
        x.data, weight.data, bias.data, running_mean, running_var, training, momentum, eps
    )

    def backward(g):
        grad_input, grad_weight, grad_bias = ops.batch_norm2d_backward(
            x.data, weight.data, g, mean, invstd, training
        )
        x._accumulate(grad_input)
        weight._accumulate(grad_weight)
        bias._accumulate(grad_bias)

    return Tensor._from_op(y, (x, weight, bias), backward, "batch_norm2d")


def batch_norm2d_relu(x, weight, bias, running_mean=None, running_var=None, training=True,
                      momentum=0.1, eps=1e-5, residual=None):
    """Fused BatchNorm2d → (+ residual) → ReLU: ``relu(batch_norm2d(x, ...) + residual)``.

    Same values and gradients as the composition, but one graph node instead of two or three:
    the backward needs only x, the output, the parameters and the (C,) statistics (the ReLU
    mask is ``output > 0``), so no pre-ReLU activation stays alive until backward.
    ``residual`` (a Tensor or array of x's shape, e.g. a ResNet shortcut) gets its gradient.

    The output can be released (:meth:`~addercore.Tensor.release_data`): it is then recomputed
    bit for bit from x, the parameters' arrays, the forward's exact batch statistics (not the
    running buffers) and the residual, with one elementwise pass, when next read.
    """
    x, weight, bias = _tensor(x), _tensor(weight), _tensor(bias)
    residual = None if residual is None else _tensor(residual)
    w, b = weight.data, bias.data  # the arrays this forward used (the optimiser steps later)
    y, mean, invstd, stats = ops.batch_norm2d_relu_forward(
        x.data, w, b, running_mean, running_var, training, momentum, eps,
        None if residual is None else residual.data, return_stats=True,
    )
    has_residual = residual is not None

    def backward(g):
        # the output Tensor through a weak reference (no reference cycle): it is alive while
        # its backward runs, and .data re-materialises it if it was released
        grad_input, grad_weight, grad_bias, grad_residual = ops.batch_norm2d_relu_backward(
            x.data, w, out_ref().data, g, mean, invstd, training, has_residual
        )
        x._accumulate(grad_input)
        weight._accumulate(grad_weight)
        bias._accumulate(grad_bias)
        if has_residual:
            residual._accumulate(grad_residual)

    def recompute():
        return ops.batch_norm2d_relu_apply(x.data, w, b, stats, eps,
                                           None if residual is None else residual.data)

    parents = (x, weight, bias) if residual is None else (x, weight, bias, residual)
    out = Tensor._from_op(y, parents, backward, "batch_norm2d_relu", recompute)
    out_ref = weakref.ref(out)
    return out


def relu(x):
    """max(x, 0)."""
    x = _tensor(x)
    y = ops.relu_forward(x.data)

    def backward(g):
        x._accumulate(ops.relu_backward(x.data, g))

    return Tensor._from_op(y, (x,), backward, "relu")


def avg_pool2d(x, kernel_size, stride=None):
    """Average pooling without padding (stride defaults to kernel_size)."""
    x = _tensor(x)
    y = ops.avg_pool2d_forward(x.data, kernel_size, stride)

    def backward(g):
        x._accumulate(ops.avg_pool2d_backward(x.data.shape, g, kernel_size, stride))

    return Tensor._from_op(y, (x,), backward, "avg_pool2d")


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling to ``output_size`` (Ho or (Ho, Wo)), PyTorch's windows (see
    :func:`addercore.ops.adaptive_avg_pool2d_forward`). x (N, C, H, W) -> (N, C, Ho, Wo)."""
    x = _tensor(x)
    y = ops.adaptive_avg_pool2d_forward(x.data, output_size)
    x_shape = x.data.shape

    def backward(g):
        x._accumulate(ops.adaptive_avg_pool2d_backward(x_shape, g))

    return Tensor._from_op(y, (x,), backward, "adaptive_avg_pool2d")


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling (padding with -inf, as PyTorch; stride defaults to kernel_size)."""
    x = _tensor(x)
    y, indices = ops.max_pool2d_forward(x.data, kernel_size, stride, padding)

    def backward(g):
        x._accumulate(ops.max_pool2d_backward(x.data.shape, g, indices))

    return Tensor._from_op(y, (x,), backward, "max_pool2d")


def linear(x, weight, bias=None):
    """x (N, in) @ weight.T + bias -> (N, out)."""
    x, weight = _tensor(x), _tensor(weight)
    bias = None if bias is None else _tensor(bias)
    y = ops.linear_forward(x.data, weight.data, None if bias is None else bias.data)

    def backward(g):
        grad_input, grad_weight, grad_bias = ops.linear_backward(x.data, weight.data, g)
        x._accumulate(grad_input)
        weight._accumulate(grad_weight)
        if bias is not None:
            bias._accumulate(grad_bias)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._from_op(y, parents, backward, "linear")


def reshape(x, shape):
    """Reshape (a view of the data); the gradient is reshaped back."""
    x = _tensor(x)
    y = x.data.reshape(shape)

    def backward(g):
        x._accumulate(g.reshape(x.data.shape))

    return Tensor._from_op(y, (x,), backward, "reshape")


def flatten(x):
    """(N, ...) -> (N, prod(...))."""
    x = _tensor(x)
    return reshape(x, (x.data.shape[0], -1))


def cross_entropy(logits, targets):
    """Mean cross-entropy of logits (N, classes) against int targets (N,): a 0-d Tensor."""
    logits = _tensor(logits)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    loss = ops.cross_entropy_forward(logits.data, targets)

    def backward(g):
        logits._accumulate(ops.cross_entropy_backward(logits.data, targets, g))

    return Tensor._from_op(np.asarray(loss, dtype=logits.data.dtype), (logits,), backward,
                           "cross_entropy")


def _unbroadcast(grad, shape):
    """Sum ``grad`` over the axes numpy broadcast to reach it from ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def add(a, b):
    """a + b with numpy broadcasting (residual connections)."""
    a, b = _tensor(a), _tensor(b)
    y = a.data + b.data

    def backward(g):
        a._accumulate(_unbroadcast(g, a.data.shape))
        b._accumulate(_unbroadcast(g, b.data.shape))

    return Tensor._from_op(y, (a, b), backward, "add")


def neg(a):
    """-a."""
    a = _tensor(a)

    def backward(g):
        a._accumulate(-g)

    return Tensor._from_op(-a.data, (a,), backward, "neg")


def mul(a, b):
    """a * b with numpy broadcasting."""
    a, b = _tensor(a), _tensor(b)
    y = a.data * b.data

    def backward(g):
        a._accumulate(_unbroadcast(g * b.data, a.data.shape))
        b._accumulate(_unbroadcast(g * a.data, b.data.shape))

    return Tensor._from_op(y, (a, b), backward, "mul")


def sum(a):  # noqa: A001 - mirrors numpy's name
    """Sum of all elements: a 0-d Tensor."""
    a = _tensor(a)

    def backward(g):
        a._accumulate(np.broadcast_to(g, a.data.shape))

    return Tensor._from_op(np.asarray(a.data.sum()), (a,), backward, "sum")


def mean(a):
    """Mean of all elements: a 0-d Tensor."""
    a = _tensor(a)
    n = a.data.size

    def backward(g):
        a._accumulate(np.broadcast_to(g / n, a.data.shape))

    return Tensor._from_op(np.asarray(a.data.mean()), (a,), backward, "mean")
