"""Grouped (``groups``, depthwise at groups = Cin) and dilated (``dilation``) adder and
convolution layers (method §2.6, §4.6): the numpy reference against brute-force loops over
every index written here from the formulas, central finite differences of the true gradients,
the compiled kernels against the reference (adder forward bit for bit, at 1 and 2 threads),
the validation errors, and the nn layers' shapes and PyTorch semantics.
"""
import itertools

import numpy as np
import pytest

from addercore import functional as F
from addercore import nn, ops
from addercore._backend import use_backend
from addercore.gradcheck import gradcheck
from addercore.tensor import Tensor
from addercore.threads import num_threads
from optest import check_compiled_matches_reference, needs_cython

RNG = np.random.default_rng(2024)


def out_len(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def loop_layer(x, w, stride, padding, dilation, groups, tap):
    """y[b, o, h, v] = Σ over the group's taps (c, i, j ascending) of
    ``tap(Xp[b, g·Cg + c, h·sh + i·dh, v·sw + j·dw], F[o, c, i, j])``, g = o // (Cout/groups);
    one Python accumulation per output, in x's dtype."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, cin, h_, w_ = x.shape
    cout, cg, kh, kw = w.shape
    og = cout // groups
    ho, wo = out_len(h_, kh, sh, ph, dh), out_len(w_, kw, sw, pw, dw)
    y = np.zeros((n, cout, ho, wo), dtype=x.dtype)
    for b, o, h, v in itertools.product(range(n), range(cout), range(ho), range(wo)):
        g = o // og
        acc = x.dtype.type(0)
        for c, i, j in itertools.product(range(cg), range(kh), range(kw)):
            acc = acc + tap(xp[b, g * cg + c, h * sh + i * dh, v * sw + j * dw], w[o, c, i, j])
        y[b, o, h, v] = acc
    return y


def loop_adder_forward(x, w, stride, padding, dilation, groups, norm):
    if norm == "l1":
        return -loop_layer(x, w, stride, padding, dilation, groups, lambda a, f: abs(a - f))
    return -loop_layer(x, w, stride, padding, dilation, groups, lambda a, f: (a - f) * (a - f))


def loop_backward(x, w, g, stride, padding, dilation, groups, d_input, d_filter):
    """Σ over outputs and taps of ``d_input(xp, f)·G`` into the padded input position each
    tap reads (then cropped) and ``d_filter(xp, f)·G`` into the tap's filter, in float64."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    n, cout, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    og = cout // groups
    for b, o, h, v in itertools.product(range(n), range(cout), range(ho), range(wo)):
        grp = o // og
        for c, i, j in itertools.product(range(cg), range(kh), range(kw)):
            ch, r, s = grp * cg + c, h * sh + i * dh, v * sw + j * dw
            a, f = xp[b, ch, r, s], w[o, c, i, j]
            gw[o, c, i, j] += d_filter(a, f) * g[b, o, h, v]
            gxp[b, ch, r, s] += d_input(a, f) * g[b, o, h, v]
    return gxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], gw


ADDER_RULES = {  # (norm, filter_grad, input_grad) -> (∂/∂x, ∂/∂f) per tap (method §4)
    ("l1", "full", "hardtanh"): (lambda a, f: np.clip(f - a, -1, 1), lambda a, f: a - f),
    ("l1", "sign", "sign"): (lambda a, f: -np.sign(a - f), lambda a, f: np.sign(a - f)),
    ("l2", "full", "exact"): (lambda a, f: -2 * (a - f), lambda a, f: 2 * (a - f)),
}

#: (x shape, Cout, kernel, stride, padding, dilation, groups): depthwise, grouped, dilated
#: with padding, stride 2 (padded packing), stride 3 (bounds-checked packing), non-square.
GEOMETRIES = [
    ((2, 4, 6, 7), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),   # depthwise
    ((2, 4, 6, 5), 8, (3, 3), (1, 1), (1, 1), (1, 1), 4),   # depthwise, multiplier 2
    ((2, 4, 7, 6), 6, (3, 2), (1, 1), (0, 1), (1, 1), 2),   # groups 2
    ((2, 3, 9, 8), 2, (3, 3), (1, 1), (2, 2), (2, 2), 1),   # dilation 2 with padding
    ((1, 4, 9, 9), 4, (3, 3), (2, 2), (2, 1), (2, 3), 2),   # stride 2, dilation, groups
    ((2, 6, 10, 11), 3, (2, 3), (3, 3), (1, 2), (2, 1), 3),  # stride 3: bounds path
]


def _draw(xs, cout, k, groups, dtype=np.float64):
    x = RNG.standard_normal(xs).astype(dtype)
    w = RNG.standard_normal((cout, xs[1] // groups) + k).astype(dtype)
    return x, w


# --------------------------------------------------------------------------------------------
# Reference against brute-force loops
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_adder_forward_reference_is_the_loop(geo, norm):
    xs, cout, k, s, p, d, groups = geo
    for dtype in (np.float32, np.float64):
        x, w = _draw(xs, cout, k, groups, dtype)
        with use_backend("numpy"):
            y = ops.adder2d_forward(x, w, s, p, norm, dilation=d, groups=groups)
        # canonical order in the arrays' dtype: bit for bit the one-accumulator loop
        np.testing.assert_array_equal(y, loop_adder_forward(x, w, s, p, d, groups, norm))


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("rule", sorted(ADDER_RULES))
def test_adder_backward_reference_is_the_loop(geo, rule):
    xs, cout, k, s, p, d, groups = geo
    norm, fg, ig = rule
    x, w = _draw(xs, cout, k, groups)
    with use_backend("numpy"):
        y = ops.adder2d_forward(x, w, s, p, norm, dilation=d, groups=groups)
        g = RNG.standard_normal(y.shape)
        gi, gw = ops.adder2d_backward(x, w, g, s, p, norm, fg, ig, dilation=d, groups=groups)
    d_in, d_f = ADDER_RULES[rule]
    li, lw = loop_backward(x, w, g, s, p, d, groups, d_in, d_f)
    np.testing.assert_allclose(gi, li, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, lw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_conv_reference_is_the_loop(geo):
    xs, cout, k, s, p, d, groups = geo
    x, w = _draw(xs, cout, k, groups)
    bias = RNG.standard_normal(cout)
    with use_backend("numpy"):
        y = ops.conv2d_forward(x, w, s, p, bias, dilation=d, groups=groups)
        g = RNG.standard_normal(y.shape)
        gi, gw = ops.conv2d_backward(x, w, g, s, p, dilation=d, groups=groups)
    loop_y = loop_layer(x, w, s, p, d, groups, lambda a, f: a * f) + bias[None, :, None, None]
    np.testing.assert_allclose(y, loop_y, rtol=1e-12, atol=1e-12)
    li, lw = loop_backward(x, w, g, s, p, d, groups, lambda a, f: f, lambda a, f: a)
    np.testing.assert_allclose(gi, li, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, lw, rtol=1e-12, atol=1e-12)


def test_depthwise_hand_computed():
    # one channel per group, 1x2 kernel, dilation 2: y[o, 0, v] = -(|x[v] - f0| + |x[v+2] - f1|)
    x = np.array([[[[1.0, 4.0, 2.0, 8.0]], [[0.0, 1.0, 0.0, 1.0]]]])
    w = np.array([[[[1.0, 1.0]]], [[[0.5, -1.0]]]])
    y = ops.adder2d_forward(x, w, 1, 0, dilation=(1, 2), groups=2)
    np.testing.assert_array_equal(y, [[[[-1.0, -10.0]], [[-1.5, -2.5]]]])
    c = ops.conv2d_forward(x, w, 1, 0, dilation=(1, 2), groups=2)
    np.testing.assert_array_equal(c, [[[[3.0, 12.0]], [[0.0, -0.5]]]])


# --------------------------------------------------------------------------------------------
# True gradients by central finite differences
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geo", [GEOMETRIES[1], GEOMETRIES[4]])
def test_true_gradients_finite_differences(geo):
    xs, cout, k, s, p, d, groups = geo
    x, w = _draw(xs, cout, k, groups)
    kw = dict(dilation=d, groups=groups)
    g = RNG.standard_normal(ops.adder2d_forward(x, w, s, p, "l2", **kw).shape)

    def adder_l2():
        return np.sum(ops.adder2d_forward(x, w, s, p, "l2", **kw) * g)

    gi, gw = ops.adder2d_backward(x, w, g, s, p, "l2", "full", "exact", **kw)
    gradcheck(adder_l2, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)

    def conv():
        return np.sum(ops.conv2d_forward(x, w, s, p, **kw) * g)

    gi, gw = ops.conv2d_backward(x, w, g, s, p, **kw)
    gradcheck(conv, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


def test_l1_sign_gradient_finite_differences():
    # away from ties (no padding taps, filters offset from the data), the true gradient of
    # -Σ|x - f| is filter_grad="sign", input_grad="sign"
    x = RNG.standard_normal((1, 4, 6, 6))
    w = RNG.standard_normal((4, 2, 2, 2)) + 0.05
    kw = dict(dilation=2, groups=2)
    g = RNG.standard_normal(ops.adder2d_forward(x, w, 1, 0, **kw).shape)

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 0, **kw) * g)

    gi, gw = ops.adder2d_backward(x, w, g, 1, 0, "l1", "sign", "sign", **kw)
    gradcheck(f, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Compiled kernels against the reference, thread counts
# --------------------------------------------------------------------------------------------
@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geo", GEOMETRIES + [
    ((3, 8, 14, 13), 8, (3, 3), (2, 2), (1, 1), (1, 1), 8),     # depthwise stride 2, odd width
    ((2, 16, 9, 7), 16, (3, 3), (1, 1), (2, 2), (2, 2), 16),    # depthwise dilated
    ((2, 6, 12, 12), 12, (1, 1), (1, 1), (0, 0), (1, 1), 3),    # grouped 1x1 (shuffle nets)
    ((2, 3, 11, 12), 4, (3, 2), (2, 1), (1, 2), (1, 3), 1),     # row stride 2, column
    # dilation 3, Wo = 13 >= 8: the staged-row packing (pack_source_rows) with row phases
    ((1, 2, 3, 1030), 2, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # rows wider than PACK_ROW_MAX:
    # the general plane path's whole-vector row copies
])
def test_compiled_matches_reference(geo, dtype):
    xs, cout, k, s, p, d, groups = geo
    x, w = _draw(xs, cout, k, groups, dtype)
    kw = dict(dilation=d, groups=groups)
    y = ops.adder2d_forward(x, w, s, p, **kw)
    g = RNG.standard_normal(y.shape).astype(dtype)
    for norm in ("l1", "l2"):  # forward: bit-exact (the table's promise)
        check_compiled_matches_reference("adder2d_forward", x, w, s, p, norm, **kw)
    for fg, ig in [("full", "hardtanh"), ("sign", "sign")]:
        check_compiled_matches_reference("adder2d_backward", x, w, g, s, p, "l1", fg, ig, **kw)
    check_compiled_matches_reference("adder2d_backward", x, w, g, s, p, "l2", "full", "exact",
                                     **kw)
    check_compiled_matches_reference("conv2d_forward", x, w, s, p, None, **kw)
    check_compiled_matches_reference("conv2d_backward", x, w, g, s, p, **kw)


@needs_cython
@pytest.mark.parametrize("geo", [GEOMETRIES[0], GEOMETRIES[4], GEOMETRIES[5]])
def test_compiled_same_bits_for_1_and_2_threads(geo):
    xs, cout, k, s, p, d, groups = geo
    x, w = _draw((5,) + xs[1:], cout, k, groups, np.float32)
    kw = dict(dilation=d, groups=groups)
    g = RNG.standard_normal(ops.adder2d_forward(x, w, s, p, **kw).shape).astype(np.float32)

    def run():
        return (ops.adder2d_forward(x, w, s, p, **kw),
                *ops.adder2d_backward(x, w, g, s, p, **kw),
                ops.conv2d_forward(x, w, s, p, **kw),
                *ops.conv2d_backward(x, w, g, s, p, **kw))

    with num_threads(1):
        one = run()
    with num_threads(2):
        two = run()
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@needs_cython
def test_compiled_im2col_with_dilation_matches_reference():
    from addercore.ops import fast, reference
    x = RNG.standard_normal((2, 3, 9, 10))
    for s, p, d in [((1, 1), (2, 2), (2, 2)), ((2, 3), (1, 0), (3, 2))]:
        cols = fast.im2col(x, (3, 2), s, p, d)
        np.testing.assert_array_equal(cols, reference.im2col(x, (3, 2), s, p, d))
        np.testing.assert_allclose(fast.col2im(cols, x.shape, (3, 2), s, p, d),
                                   reference.col2im(cols, x.shape, (3, 2), s, p, d),
                                   rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def test_groups_and_dilation_validation():
    x = np.zeros((1, 4, 6, 6))
    for op in (ops.adder2d_forward, ops.conv2d_forward):
        with pytest.raises(ValueError, match="groups=3 must divide"):
            op(x, np.zeros((6, 1, 3, 3)), groups=3)
        with pytest.raises(ValueError, match="groups=2 must divide.*output channels"):
            op(x, np.zeros((3, 2, 3, 3)), groups=2)
        with pytest.raises(ValueError, match=r"expects 4 per group \(groups=2; weight must "
                                             r"be \(Cout, Cin/groups, kh, kw\)\)"):
            op(x, np.zeros((4, 4, 3, 3)), groups=2)
        with pytest.raises(ValueError, match="groups must be in"):
            op(x, np.zeros((4, 4, 3, 3)), groups=0)
        with pytest.raises(TypeError, match="groups must be a positive int"):
            op(x, np.zeros((4, 4, 3, 3)), groups=True)
        with pytest.raises(TypeError, match="groups must be a positive int"):
            op(x, np.zeros((4, 4, 3, 3)), groups=2.0)
        with pytest.raises(ValueError, match="dilation must be >= 1"):
            op(x, np.zeros((4, 4, 3, 3)), dilation=0)
        with pytest.raises(ValueError, match=r"dilation \(3, 3\) \(spans 7x7\).*padded input 6x6"):
            op(x, np.zeros((4, 4, 3, 3)), dilation=3)
    op = ops.adder2d_backward
    w = np.zeros((4, 2, 3, 3))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        op(x, w, np.zeros((1, 4, 6, 6)), groups=2, dilation=2)


def test_layers_groups_dilation_pytorch_semantics():
    layer = nn.Adder2d(6, 9, 3, padding=2, dilation=2, groups=3, rng=np.random.default_rng(0))
    assert layer.adder.shape == (9, 2, 3, 3)
    assert "dilation=(2, 2), groups=3" in repr(layer)
    x = RNG.standard_normal((2, 6, 7, 7)).astype(np.float32)
    y = layer(Tensor(x))
    np.testing.assert_array_equal(
        y.data, ops.adder2d_forward(x, layer.adder.data, 1, 2, dilation=2, groups=3))
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6, rng=np.random.default_rng(0))
    assert conv.weight.shape == (6, 1, 3, 3)
    bound = float(np.abs(conv.weight.data).max())
    assert bound <= 1 / 3  # PyTorch's fan_in = Cin/groups·kh·kw = 9
    yc = conv(Tensor(x))
    ref = ops.conv2d_forward(x, conv.weight.data, 1, 1, conv.bias.data, groups=6)
    np.testing.assert_array_equal(yc.data, ref)
    assert "groups" not in repr(nn.Conv2d(2, 2, 1))
    for cls in (nn.Adder2d, nn.Conv2d):
        with pytest.raises(ValueError, match="groups=4 must divide in_channels=6"):
            cls(6, 8, 3, groups=4)
        with pytest.raises(ValueError, match="groups=4 must divide.*out_channels=6"):
            cls(8, 6, 3, groups=4)
        with pytest.raises(ValueError, match="dilation must be >= 1"):
            cls(4, 4, 3, dilation=0)
        with pytest.raises(TypeError, match="groups"):
            cls(4, 4, 3, groups=None)


def test_functional_grouped_backward_reaches_the_parameters():
    x = Tensor(RNG.standard_normal((2, 4, 5, 5)), requires_grad=True)
    w = Tensor(RNG.standard_normal((4, 1, 3, 3)), requires_grad=True)
    y = F.adder2d(x, w, 1, 2, dilation=2, groups=4)
    g = RNG.standard_normal(y.shape)
    y.backward(g)
    gi, gw = ops.adder2d_backward(x.data, w.data, g, 1, 2, dilation=2, groups=4)
    np.testing.assert_array_equal(x.grad, gi)
    np.testing.assert_array_equal(w.grad, gw)
    c = F.conv2d(Tensor(x.data), w, None, 1, 2, dilation=2, groups=4)
    np.testing.assert_array_equal(
        c.data, ops.conv2d_forward(x.data, w.data, 1, 2, dilation=2, groups=4))
