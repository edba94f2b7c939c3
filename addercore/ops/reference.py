"""Numpy reference implementation of every addercore kernel.

This module is the executable form of the method (``docs/method.md``). It is written for
clarity and for exactness, not for speed: the compiled kernels in ``addercore_ext`` are tested
against it, and the golden values for other ports are generated from it.

All functions take already-validated arrays (see :mod:`addercore.ops` for the public,
validating wrappers): C-contiguous arrays of one float dtype (float32 or float64), NCHW layout.
``stride``, ``padding`` and ``kernel`` are an int or an ``(h, w)`` pair, as in the public API;
the sliding-window ops also take the :class:`~addercore.ops.geometry.Conv2dGeometry` that
validation built (``geometry=``), so the shapes are derived once per call. Outputs have the
inputs' dtype.

The adder forward's tap loop (``c``, ``i``, ``j`` ascending, vectorised over outputs) *is* the
canonical summation order (the contract: ``docs/method.md`` §3); the other ops use numpy's own
reductions.
"""
import numpy as np

from .geometry import Conv2dGeometry, output_size, pair
from .options import default_input_grad

__all__ = [
    "output_size",
    "pad_input",
    "adder2d_forward",
    "adder2d_backward",
    "conv2d_forward",
    "conv2d_backward",
    "batch_norm2d_forward",
    "batch_norm2d_backward",
    "batch_norm2d_relu_forward",
    "batch_norm2d_relu_backward",
    "batch_norm2d_relu_apply",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "relu_forward",
    "relu_backward",
    "linear_forward",
    "linear_backward",
    "cross_entropy_forward",
    "cross_entropy_backward",
    "adaptive_scale",
]


# --------------------------------------------------------------------------------------------
# Shared geometry
# --------------------------------------------------------------------------------------------
def pad_input(x, padding):
    """Zero-pad the two spatial axes of ``x`` (N, C, H, W) by ``padding`` (int or (ph, pw))."""
    ph, pw = pair(padding)
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _tap_view(xp, i, j, stride, out_hw, dilation=(1, 1)):
    """View of ``Xp[:, :, h·sh + i·dh, w·sw + j·dw]`` for all output positions: (N, C, Ho, Wo)."""
    sh, sw = stride
    ho, wo = out_hw
    a, b = i * dilation[0], j * dilation[1]
    return xp[:, :, a : a + sh * (ho - 1) + 1 : sh, b : b + sw * (wo - 1) + 1 : sw]


def _tap_slice(i, j, geo):
    """The (rows, columns) slices of ``Xp`` that tap (i, j) reads for all output positions."""
    (sh, sw), (dh, dw), (ho, wo) = geo.stride, geo.dilation, geo.out_hw
    a, b = i * dh, j * dw
    return slice(a, a + sh * (ho - 1) + 1, sh), slice(b, b + sw * (wo - 1) + 1, sw)


def _geometry(x, weight, stride, padding, geometry):
    """The geometry validation built, or (called directly) one from the shapes."""
    if geometry is None:
        geometry = Conv2dGeometry.from_shapes(x.shape, weight.shape, stride, padding)
    return geometry


# --------------------------------------------------------------------------------------------
# Adder layer (method §2 forward, §4 backward)
# --------------------------------------------------------------------------------------------
def adder2d_forward(x, weight, stride=1, padding=0, norm="l1", geometry=None):
    """Adder forward. x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw) -> y (N, Cout, Ho, Wo).

    ``norm="l1"``: ``y = -Σ |Xp_patch - F|``; ``norm="l2"``: ``y = -Σ (Xp_patch - F)²``.
    Summed tap by tap in the canonical order (c, i, j ascending over the group's
    ``Cin/groups·kh·kw`` taps) in the arrays' dtype; dilation and groups from ``geometry``
    (method §2.6).
    """
    geo = _geometry(x, weight, stride, padding, geometry)
    xp = pad_input(x, geo.padding)
    acc = np.zeros(geo.out_shape, dtype=x.dtype)
    cg, og = geo.cin_group, geo.cout_group
    for g in range(geo.groups):
        out = acc[:, g * og : (g + 1) * og]  # (N, Cout/groups, Ho, Wo) view: this group's outputs
        w = weight[g * og : (g + 1) * og]
        for c in range(cg):
            for i in range(geo.kh):
                for j in range(geo.kw):
                    rows, cols = _tap_slice(i, j, geo)
                    patch = xp[:, g * cg + c, rows, cols]  # (N, Ho, Wo)
                    diff = patch[:, None, :, :] - w[None, :, c, i, j, None, None]
                    if norm == "l1":
                        out += np.abs(diff)
                    else:
                        out += diff * diff
    return np.negative(acc, out=acc)


def _input_grad_factor(diff, norm, input_grad):
    """∂y/∂x per tap for ``diff = Xp_patch - F`` under the chosen input-gradient rule."""
    if input_grad == "hardtanh":  # HardTanh(F - X), bounds inclusive (main paper)
        return np.clip(-diff, -1.0, 1.0)
    if norm == "l2" and input_grad == "exact":  # d/dx of -(x - f)²
        return -2.0 * diff
    # "sign", and "exact" for l1: the true gradient of -|x - f|
    return -np.sign(diff)


def _filter_grad_factor(diff, norm, filter_grad):
    """∂y/∂f per tap for ``diff = Xp_patch - F`` under the chosen filter-gradient rule."""
    if filter_grad == "sign":
        return np.sign(diff)  # true gradient of -|x - f|
    if norm == "l2":
        return 2.0 * diff  # exact gradient of -(x - f)²
    return diff  # full-precision gradient X - F (supplement Eq. 3)


def adder2d_backward(x, weight, grad_output, stride=1, padding=0, norm="l1", filter_grad="full",
                     input_grad=None, geometry=None):
    """Adder backward (substituted gradients, method §4).

    x (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw), grad_output (N, Cout, Ho, Wo) ->
    (grad_input (N, Cin, H, W), grad_weight (Cout, Cin/groups, kh, kw)); the filter gradient
    is raw, before adaptive scaling. Each group is its own layer over its channel slice. ``input_grad`` is "hardtanh", "sign" or "exact" (None: the
    norm's default, :func:`addercore.ops.options.default_input_grad`).
    """
    if input_grad is None:
        input_grad = default_input_grad(norm)
    geo = _geometry(x, weight, stride, padding, geometry)
    kh, kw = geo.kh, geo.kw
    ph, pw = geo.padding
    cg, og = geo.cin_group, geo.cout_group
    xp = pad_input(x, geo.padding)
    grad_xp = np.zeros_like(xp)
    grad_weight = np.zeros_like(weight)
    for grp in range(geo.groups):
        outs = slice(grp * og, (grp + 1) * og)
        g = grad_output[:, outs]
        for c in range(cg):
            ch = grp * cg + c
            for i in range(kh):
                for j in range(kw):
                    rows, cols = _tap_slice(i, j, geo)
                    patch = xp[:, ch, rows, cols]  # (N, Ho, Wo)
                    diff = patch[:, None, :, :] - weight[None, outs, c, i, j, None, None]
                    grad_weight[outs, c, i, j] = np.sum(
                        _filter_grad_factor(diff, norm, filter_grad) * g, axis=(0, 2, 3)
                    )
                    contrib = np.sum(_input_grad_factor(diff, norm, input_grad) * g, axis=1)
                    grad_xp[:, ch, rows, cols] += contrib
    h, w = x.shape[2:]
    grad_input = np.ascontiguousarray(grad_xp[:, :, ph : ph + h, pw : pw + w])
    return grad_input, grad_weight


def adaptive_scale(grad_weight, eta):
    """Adaptive learning-rate scaling of one adder layer's filter gradient (method §5.1).

    Returns ``g · η·sqrt(k) / max(‖g‖₂, 1e-12)`` with ``k = g.size``, in ``g``'s dtype.
    """
    g = grad_weight
    norm = np.sqrt(np.sum(np.square(g, dtype=np.float64)))
    factor = eta * np.sqrt(g.size) / max(norm, 1e-12)
    return (g * g.dtype.type(factor)).astype(g.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Multiplication convolution (im2col + GEMM)
# --------------------------------------------------------------------------------------------
def im2col(x, kernel, stride, padding, dilation=1):
    """Patch matrix of x (N, C, H, W): (N, C·kh·kw, Ho·Wo), rows ordered (c, i, j); tap
    (i, j) reads ``Xp[h·sh + i·dh, w·sw + j·dw]``."""
    n, c = x.shape[:2]
    kh, kw = pair(kernel)
    geo = Conv2dGeometry.from_shapes(x.shape, (1, c, kh, kw), stride, padding, dilation)
    ho, wo = geo.out_hw
    xp = pad_input(x, geo.padding)
    cols = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = _tap_view(xp, i, j, geo.stride, (ho, wo), geo.dilation)
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im(cols, x_shape, kernel, stride, padding, dilation=1):
    """Adjoint of :func:`im2col`: sum (N, C·kh·kw, Ho·Wo) patches back into (N, C, H, W)."""
    n, c, h, w = x_shape
    kh, kw = pair(kernel)
    geo = Conv2dGeometry.from_shapes(x_shape, (1, c, kh, kw), stride, padding, dilation)
    (ph, pw), (ho, wo) = geo.padding, geo.out_hw
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cs = _tap_slice(i, j, geo)
            xp[:, :, rows, cs] += cols[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w])


def conv2d_forward(x, weight, stride=1, padding=0, geometry=None):
    """Convolution (cross-correlation, no bias). x (N, Cin, H, W), weight
    (Cout, Cin/groups, kh, kw) -> y (N, Cout, Ho, Wo); one GEMM per group."""
    geo = _geometry(x, weight, stride, padding, geometry)
    cols = im2col(x, geo.kernel, geo.stride, geo.padding, geo.dilation)  # (N, Cin·kh·kw, P)
    if geo.groups == 1:
        y = np.matmul(weight.reshape(geo.cout, -1), cols)  # (N, Cout, P)
        return y.reshape(geo.out_shape)
    k, og = geo.k, geo.cout_group
    y = np.empty((geo.n, geo.cout, cols.shape[2]), dtype=x.dtype)
    for g in range(geo.groups):
        y[:, g * og : (g + 1) * og] = np.matmul(weight[g * og : (g + 1) * og].reshape(og, k),
                                                cols[:, g * k : (g + 1) * k])
    return y.reshape(geo.out_shape)


def conv2d_backward(x, weight, grad_output, stride=1, padding=0, geometry=None):
    """Convolution backward -> (grad_input (N, Cin, H, W), grad_weight (Cout, Cin/groups, kh,
    kw)); per group for ``groups > 1``."""
    geo = _geometry(x, weight, stride, padding, geometry)
    n, cout = geo.n, geo.cout
    cols = im2col(x, geo.kernel, geo.stride, geo.padding, geo.dilation)  # (N, Cin·kh·kw, P)
    g = grad_output.reshape(n, cout, -1)  # (N, Cout, P)
    if geo.groups == 1:
        grad_weight = np.einsum("nop,nkp->ok", g, cols).reshape(weight.shape)
        grad_cols = np.matmul(weight.reshape(cout, -1).T, g)  # (N, K, P)
    else:
        k, og = geo.k, geo.cout_group
        grad_weight = np.empty((cout, k), dtype=np.result_type(g, cols))
        grad_cols = np.empty_like(cols)
        for grp in range(geo.groups):
            outs, taps = slice(grp * og, (grp + 1) * og), slice(grp * k, (grp + 1) * k)
            grad_weight[outs] = np.einsum("nop,nkp->ok", g[:, outs], cols[:, taps])
            grad_cols[:, taps] = np.matmul(weight[outs].reshape(og, k).T, g[:, outs])
        grad_weight = grad_weight.reshape(weight.shape)
    grad_input = col2im(grad_cols, x.shape, geo.kernel, geo.stride, geo.padding, geo.dilation)
    return grad_input, grad_weight.astype(weight.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# BatchNorm2d
# --------------------------------------------------------------------------------------------
def batch_norm2d_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """BatchNorm over (N, H, W) per channel. x (N, C, H, W); weight, bias, running_* (C,).

    Training: normalises with the batch mean and the **biased** batch variance, and updates
    ``running_mean``/``running_var`` **in place** with momentum and the **unbiased** variance
    (as PyTorch does). Eval: normalises with the running estimates.
    Returns ``(y, mean, invstd)``; ``mean``/``invstd`` (C,) are what :func:`batch_norm2d_backward`
    needs.
    """
    y, mean, invstd, _ = _batch_norm_forward(x, weight, bias, running_mean, running_var,
                                             training, momentum, eps)
    return y, mean, invstd


def _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """:func:`batch_norm2d_forward`, also returning the (C,) ``var`` it normalised with."""
    axes = (0, 2, 3)
    if training:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=axes)
        centered = x - mean[None, :, None, None]  # two-pass variance: adder outputs are ~1e3
        var = np.mean(centered * centered, axis=axes)
        if running_mean is not None:
            unbiased = var * (count / max(count - 1, 1))
            running_mean *= 1.0 - momentum
            running_mean += momentum * mean
            running_var *= 1.0 - momentum
            running_var += momentum * unbiased
    else:
        mean, var = running_mean.copy(), running_var.copy()
        centered = x - mean[None, :, None, None]
    mean = mean.astype(x.dtype, copy=False)
    invstd = _invstd(var, eps, x.dtype)
    return _scale_shift(centered, invstd, weight, bias), mean, invstd, var


def _invstd(var, eps, dtype):
    return (1.0 / np.sqrt(var + eps)).astype(dtype, copy=False)


def _scale_shift(centered, invstd, weight, bias):
    """``(x - mean)·(invstd·weight) + bias`` from ``centered = x - mean``, in x's dtype."""
    y = centered * (invstd * weight)[None, :, None, None] + bias[None, :, None, None]
    return y.astype(centered.dtype, copy=False)


def batch_norm2d_backward(x, weight, grad_output, mean, invstd, training):
    """BatchNorm backward -> (grad_input (N, C, H, W), grad_weight (C,), grad_bias (C,))."""
    axes = (0, 2, 3)
    xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
    g = grad_output
    grad_bias = g.sum(axis=axes)
    grad_weight = (g * xhat).sum(axis=axes)
    scale = (weight * invstd)[None, :, None, None]
    if training:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        grad_input = scale * (
            g
            - (grad_bias / count)[None, :, None, None]
            - xhat * (grad_weight / count)[None, :, None, None]
        )
    else:
        grad_input = scale * g
    return grad_input.astype(x.dtype, copy=False), grad_weight, grad_bias


def batch_norm2d_relu_forward(x, weight, bias, running_mean, running_var, training, momentum,
                              eps, residual, return_stats=False):
    """Fused BatchNorm → (+ residual) → ReLU: ``y = max(bn(x) + residual, 0)``.

    The plain composition of :func:`batch_norm2d_forward`, an add in the arrays' dtype (when
    ``residual``, same shape as x, is not None) and :func:`relu_forward`. Running buffers are
    updated as by :func:`batch_norm2d_forward`. Returns ``(y, mean, invstd)``, plus ``stats`` =
    (mean, var) (C,) in x's dtype when ``return_stats`` (for :func:`batch_norm2d_relu_apply`).
    """
    y, mean, invstd, var = _batch_norm_forward(x, weight, bias, running_mean, running_var,
                                               training, momentum, eps)
    if residual is not None:
        y = y + residual
    out = (relu_forward(y), mean, invstd)
    return out + ((mean, var),) if return_stats else out


def batch_norm2d_relu_apply(x, weight, bias, stats, eps, residual):
    """The y of :func:`batch_norm2d_relu_forward` again from its ``stats`` = (mean, var): the
    same numpy expressions on the same arrays, so the same bits. Running buffers untouched."""
    mean, var = (s.astype(x.dtype, copy=False) for s in stats)
    y = _scale_shift(x - mean[None, :, None, None], _invstd(var, eps, x.dtype), weight, bias)
    if residual is not None:
        y = y + residual
    return relu_forward(y)


def batch_norm2d_relu_backward(x, weight, output, grad_output, mean, invstd, training,
                               residual):
    """Backward of :func:`batch_norm2d_relu_forward` from its input ``x`` and its ``output``.

    ``g = grad_output·[output > 0]`` (``output > 0`` exactly where the pre-ReLU value is > 0),
    then :func:`batch_norm2d_backward` with g. Returns ``(grad_input, grad_weight, grad_bias,
    grad_residual)``; ``grad_residual`` is g when ``residual`` is true, else None.
    """
    g = relu_backward(output, grad_output)
    grad_input, grad_weight, grad_bias = batch_norm2d_backward(x, weight, g, mean, invstd,
                                                               training)
    return grad_input, grad_weight, grad_bias, (g if residual else None)


# --------------------------------------------------------------------------------------------
# Pooling, activation, classifier
# --------------------------------------------------------------------------------------------
def avg_pool2d_forward(x, kernel, stride=None):
    """Average pooling without padding. x (N, C, H, W) -> (N, C, Ho, Wo); stride defaults to
    the kernel."""
    kh, kw = kernel = pair(kernel)
    stride = kernel if stride is None else pair(stride)
    ho = output_size(x.shape[2], kh, stride[0], 0)
    wo = output_size(x.shape[3], kw, stride[1], 0)
    acc = np.zeros(x.shape[:2] + (ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            acc += _tap_view(x, i, j, stride, (ho, wo))
    return acc / x.dtype.type(kh * kw)


def _windows_tile(x_shape, kernel, stride, ho, wo):
    """True when the pooling windows cover the (H, W) plane exactly, without overlap or gaps:
    per axis, ``out · kernel == size`` and the stride equals the kernel or there is a single
    window (ResNet's ``AvgPool2d(8, stride=1)`` on an 8×8 plane)."""
    return all(size == out * k and (out == 1 or s == k)
               for size, out, k, s in zip(x_shape[2:], (ho, wo), kernel, stride))


def avg_pool2d_backward(x_shape, grad_output, kernel, stride=None):
    """Average pooling backward -> grad_input of shape ``x_shape``."""
    kh, kw = kernel = pair(kernel)
    sh, sw = kernel if stride is None else pair(stride)
    ho, wo = grad_output.shape[2:]
    grad_input = np.zeros(x_shape, dtype=grad_output.dtype)
    share = grad_output / grad_output.dtype.type(kh * kw)
    if _windows_tile(x_shape, kernel, (sh, sw), ho, wo):
        # each input element is in exactly one window: one broadcast pass (0 + share, as the
        # loop below computes it, so -0.0 shares give +0.0 in both) instead of kh·kw strided ones
        n, c = x_shape[:2]
        grad_input.reshape(n, c, ho, kh, wo, kw)[...] += share[:, :, :, None, :, None]
        return grad_input
    for i in range(kh):
        for j in range(kw):
            grad_input[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += share
    return grad_input


def adaptive_windows(in_size, out_size):
    """PyTorch's adaptive pooling windows along one axis: output ``i`` averages input
    ``[floor(i·in/out), ceil((i+1)·in/out))``; a list of ``(start, end)``."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size))
            for i in range(out_size)]


def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling: x (N, C, H, W) -> (N, C, Ho, Wo) with ``output_size`` =
    (Ho, Wo); each output the mean of its :func:`adaptive_windows` window."""
    ho, wo = pair(output_size)
    y = np.empty(x.shape[:2] + (ho, wo), dtype=x.dtype)
    for i, (hs, he) in enumerate(adaptive_windows(x.shape[2], ho)):
        for j, (ws, we) in enumerate(adaptive_windows(x.shape[3], wo)):
            y[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / x.dtype.type(
                (he - hs) * (we - ws))
    return y


def adaptive_avg_pool2d_backward(x_shape, grad_output):
    """Adaptive average pooling backward -> grad_input of shape ``x_shape``: each output's
    gradient spread evenly over its window (overlapping windows add)."""
    ho, wo = grad_output.shape[2:]
    grad_input = np.zeros(x_shape, dtype=grad_output.dtype)
    for i, (hs, he) in enumerate(adaptive_windows(x_shape[2], ho)):
        for j, (ws, we) in enumerate(adaptive_windows(x_shape[3], wo)):
            area = grad_output.dtype.type((he - hs) * (we - ws))
            grad_input[:, :, hs:he, ws:we] += (grad_output[:, :, i, j] / area)[:, :, None, None]
    return grad_input


def max_pool2d_forward(x, kernel, stride=None, padding=0):
    """Max pooling, padding with -inf (as PyTorch). x (N, C, H, W) -> (y (N, C, Ho, Wo),
    indices (N, C, Ho, Wo) int64).

    ``indices`` is the flat position ``h·W + w`` in the input plane of each window's maximum
    (the first one in row-major window order on ties; NaN wins, as in ``np.argmax``), or -1
    when the winner is a padding cell (a window whose input values are all -inf)."""
    n, c, h, w = x.shape
    kernel = pair(kernel)
    (kh, kw), (sh, sw), (ph, pw) = kernel, kernel if stride is None else pair(stride), pair(padding)
    hp, wp = h + 2 * ph, w + 2 * pw
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    xp = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::sh, ::sw][:, :, :ho, :wo].reshape(n, c, ho, wo, kh * kw)
    arg = win.argmax(axis=-1)
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    rows = np.arange(ho)[:, None] * sh + arg // kw - ph  # input coordinates of the winner
    cols = np.arange(wo)[None, :] * sw + arg % kw - pw
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    indices = np.where(inside, rows * w + cols, -1).astype(np.int64)
    return np.ascontiguousarray(y), indices


def max_pool2d_backward(x_shape, grad_output, indices):
    """Max pooling backward: each output's gradient goes to its window's maximum (``indices``
    from :func:`max_pool2d_forward`; -1 entries are dropped) -> grad_input of ``x_shape``.
    Overlapping windows that share a maximum add their gradients (summed in float64)."""
    n, c, h, w = x_shape
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
    valid = indices >= 0
    flat = (plane + indices)[valid]
    grad = np.bincount(flat, weights=grad_output[valid].astype(np.float64), minlength=n * c * h * w)
    return grad.astype(grad_output.dtype).reshape(x_shape)


def relu_forward(x):
    """max(x, 0), elementwise."""
    return np.maximum(x, 0)


def relu_backward(x, grad_output):
    """Gradient of ReLU: passes where x > 0."""
    return np.where(x > 0, grad_output, grad_output.dtype.type(0))


def linear_forward(x, weight, bias):
    """x (N, in) @ weight.T (out, in) + bias (out,) -> (N, out). ``bias`` may be None."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(x, weight, grad_output):
    """-> (grad_input (N, in), grad_weight (out, in), grad_bias (out,))."""
    return grad_output @ weight, grad_output.T @ x, grad_output.sum(axis=0)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy_forward(logits, targets):
    """Mean cross-entropy of logits (N, classes) against integer targets (N,): a 0-d array.

    Uses a max-shifted log-softmax, so large logits do not overflow.
    """
    logp = _log_softmax(logits)
    return -np.mean(logp[np.arange(logits.shape[0]), targets])


def cross_entropy_backward(logits, targets, grad_output=1.0):
    """Gradient of :func:`cross_entropy_forward` w.r.t. logits: (softmax - onehot) / N."""
    n = logits.shape[0]
    probs = np.exp(_log_softmax(logits))
    probs[np.arange(n), targets] -= 1.0
    return (probs * (grad_output / n)).astype(logits.dtype, copy=False)
