"""The ops against independent references: brute-force loops written here from the spec's
formulas, and central finite differences in float64 for every op with a true gradient.

These run on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference).
"""
import itertools

import numpy as np
import pytest

from addercore import ops

RNG = np.random.default_rng(1234)


def padded(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def loop_adder_forward(x, w, stride, padding, norm):
    """Spec §1 literally: one Python accumulation per output, taps c, i, j ascending."""
    (sh, sw), (ph, pw) = stride, padding
    xp = padded(x, ph, pw)
    n, cin, hp, wp = xp.shape
    cout, _, kh, kw = w.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n, cout, ho, wo), dtype=x.dtype)
    for b, t, h, v in itertools.product(range(n), range(cout), range(ho), range(wo)):
        acc = x.dtype.type(0)
        for c, i, j in itertools.product(range(cin), range(kh), range(kw)):
            d = xp[b, c, h * sh + i, v * sw + j] - w[t, c, i, j]
            acc = acc + (abs(d) if norm == "l1" else d * d)
        y[b, t, h, v] = -acc
    return y


def loop_adder_backward(x, w, g, stride, padding, norm, filter_grad, input_grad):
    """Spec §2 literally, in float64: D = Xp_patch - F per output element and tap."""
    (sh, sw), (ph, pw) = stride, padding
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    xp = padded(x, ph, pw)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    n, cout, ho, wo = g.shape
    _, cin, kh, kw = w.shape
    for b, t, h, v in itertools.product(range(n), range(cout), range(ho), range(wo)):
        for c, i, j in itertools.product(range(cin), range(kh), range(kw)):
            r, s = h * sh + i, v * sw + j
            d = xp[b, c, r, s] - w[t, c, i, j]
            if filter_grad == "sign":
                df = np.sign(d)
            else:
                df = 2 * d if norm == "l2" else d
            gw[t, c, i, j] += df * g[b, t, h, v]
            if input_grad == "hardtanh":
                dx = min(max(-d, -1.0), 1.0)
            elif norm == "l2" and input_grad == "exact":
                dx = -2 * d
            else:
                dx = -np.sign(d)
            gxp[b, c, r, s] += dx * g[b, t, h, v]
    h, wd = x.shape[2:]
    return gxp[:, :, ph:ph + h, pw:pw + wd], gw


GEOMETRIES = [
    # (N, Cin, H, W, Cout, kh, kw, stride, padding)
    (2, 3, 5, 6, 4, 3, 3, (1, 1), (1, 1)),
    (1, 1, 7, 5, 2, 3, 2, (2, 1), (0, 2)),  # non-square kernel, one channel, batch 1
    (2, 2, 6, 6, 3, 1, 1, (2, 2), (0, 0)),  # 1x1 stride-2 shortcut
    (1, 2, 9, 8, 2, 5, 5, (3, 3), (2, 2)),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adder_forward_matches_loop_bit_exactly(geom, norm, dtype):
    n, cin, h, w, cout, kh, kw, stride, padding = geom
    x = RNG.standard_normal((n, cin, h, w)).astype(dtype)
    wt = RNG.standard_normal((cout, cin, kh, kw)).astype(dtype)
    y = ops.adder2d_forward(x, wt, stride, padding, norm)
    expected = loop_adder_forward(x, wt, stride, padding, norm)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)  # canonical order: bit for bit


def test_adder_forward_hand_computed():
    # one 2x2 input, one 2x2 filter, padding 1 makes a 3x3 output; corner taps see zeros
    x = np.array([[[[1.0, -2.0], [3.0, 0.5]]]])
    w = np.array([[[[0.5, 1.0], [-1.0, 2.0]]]])
    y = ops.adder2d_forward(x, w, 1, 1)
    # top-left output: patch [[0,0],[0,1]] vs w -> |0-.5|+|0-1|+|0+1|+|1-2| = 3.5
    assert y[0, 0, 0, 0] == -3.5
    # centre output: patch == x -> |1-.5|+|-2-1|+|3+1|+|.5-2| = 9
    assert y[0, 0, 1, 1] == -9.0
    assert y.shape == (1, 1, 3, 3) and np.all(y <= 0)
    y2 = ops.adder2d_forward(x, w, 1, 0, norm="l2")
    assert y2[0, 0, 0, 0] == -(0.25 + 9 + 16 + 2.25)


@pytest.mark.parametrize("geom", GEOMETRIES[:3])
@pytest.mark.parametrize("norm,filter_grad,input_grad", [
    ("l1", "full", "hardtanh"), ("l1", "sign", "sign"), ("l1", "full", "exact"),
    ("l2", "full", "exact"), ("l2", "full", "hardtanh"), ("l2", "sign", "sign"),
])
def test_adder_backward_matches_loop(geom, norm, filter_grad, input_grad):
    n, cin, h, w, cout, kh, kw, stride, padding = geom
    x = RNG.standard_normal((n, cin, h, w))
    wt = RNG.standard_normal((cout, cin, kh, kw))
    y = ops.adder2d_forward(x, wt, stride, padding, norm)
    g = RNG.standard_normal(y.shape)
    gi, gw = ops.adder2d_backward(x, wt, g, stride, padding, norm, filter_grad, input_grad)
    egi, egw = loop_adder_backward(x, wt, g, stride, padding, norm, filter_grad, input_grad)
    np.testing.assert_allclose(gi, egi, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, egw, rtol=1e-10, atol=1e-10)


def test_adder_backward_defaults_and_float32():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    wt = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)
    gi, gw = ops.adder2d_backward(x, wt, g, 1, 1)  # l1: full + hardtanh
    egi, egw = loop_adder_backward(x, wt, g, (1, 1), (1, 1), "l1", "full", "hardtanh")
    assert gi.dtype == np.float32 and gw.dtype == np.float32
    np.testing.assert_allclose(gi, egi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, egw, rtol=1e-4, atol=1e-3)
    gi2, _ = ops.adder2d_backward(x, wt, g, 1, 1, norm="l2")  # l2 default: exact
    egi2, _ = loop_adder_backward(x, wt, g, (1, 1), (1, 1), "l2", "full", "exact")
    np.testing.assert_allclose(gi2, egi2, rtol=1e-4, atol=1e-3)


def test_hardtanh_clip_bounds_are_inclusive():
    # D = x - f = ±1 exactly: clip(-D) is ∓1, same as the sign gradient there
    x = np.array([[[[2.0]]]])
    w = np.array([[[[1.0]]], [[[3.0]]]])  # D = +1 and -1
    g = np.ones((1, 2, 1, 1))
    gi, gw = ops.adder2d_backward(x, w, g)
    assert gi[0, 0, 0, 0] == (-1.0) + 1.0
    np.testing.assert_array_equal(gw.ravel(), [1.0, -1.0])  # full-precision X - F


# --------------------------------------------------------------------------------------------
# Finite differences (float64) for every op with a true gradient
# --------------------------------------------------------------------------------------------
def numeric_grad(f, a, eps=1e-6):
    """Central differences of scalar f() w.r.t. array a (modified in place, then restored)."""
    grad = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def check_grads(f, pairs, rtol=1e-5, atol=1e-7):
    for analytic, array in pairs:
        np.testing.assert_allclose(analytic, numeric_grad(f, array), rtol=rtol, atol=atol)


def test_conv2d_gradients_finite_differences():
    x = RNG.standard_normal((2, 3, 5, 4))
    w = RNG.standard_normal((2, 3, 3, 2))
    stride, padding = (2, 1), (1, 0)
    g = RNG.standard_normal(ops.conv2d_forward(x, w, stride, padding).shape)

    def f():
        return np.sum(ops.conv2d_forward(x, w, stride, padding) * g)

    gi, gw = ops.conv2d_backward(x, w, g, stride, padding)
    check_grads(f, [(gi, x), (gw, w)])


def test_conv2d_matches_direct_loop():
    x = RNG.standard_normal((1, 2, 5, 5))
    w = RNG.standard_normal((3, 2, 3, 3))
    xp = padded(x, 1, 1)
    expected = np.zeros((1, 3, 3, 3))
    for t, h, v in itertools.product(range(3), range(3), range(3)):
        expected[0, t, h, v] = np.sum(xp[0, :, 2 * h:2 * h + 3, 2 * v:2 * v + 3] * w[t])
    np.testing.assert_allclose(ops.conv2d_forward(x, w, 2, 1), expected, rtol=1e-12)
    bias = RNG.standard_normal(3)
    np.testing.assert_allclose(ops.conv2d_forward(x, w, 2, 1, bias=bias),
                               expected + bias[None, :, None, None], rtol=1e-12)


def test_adder_l2_exact_gradients_finite_differences():
    x = RNG.standard_normal((2, 2, 4, 4))
    w = RNG.standard_normal((3, 2, 3, 3))
    g = RNG.standard_normal(ops.adder2d_forward(x, w, 1, 1, "l2").shape)

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 1, "l2") * g)

    gi, gw = ops.adder2d_backward(x, w, g, 1, 1, "l2", "full", "exact")
    check_grads(f, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


def test_adder_l1_true_gradient_is_sign_finite_differences():
    # away from ties (|x - f| > 0 everywhere, padding 0), the true gradient of -Σ|x - f| is
    # filter_grad="sign", input_grad="sign"
    x = RNG.standard_normal((1, 2, 4, 4))
    w = RNG.standard_normal((2, 2, 2, 2)) + 0.05
    g = RNG.standard_normal(ops.adder2d_forward(x, w, 1, 0).shape)

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 0) * g)

    gi, gw = ops.adder2d_backward(x, w, g, 1, 0, "l1", "sign", "sign")
    check_grads(f, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_finite_differences(training):
    x = RNG.standard_normal((3, 2, 3, 2)) * 5 + 2
    weight = RNG.standard_normal(2)
    bias = RNG.standard_normal(2)
    rm, rv = RNG.standard_normal(2), RNG.uniform(0.5, 2, 2)
    g = RNG.standard_normal(x.shape)

    def f():
        y, _, _ = ops.batch_norm2d_forward(x, weight, bias, rm.copy(), rv.copy(), training)
        return np.sum(y * g)

    _, mean, invstd = ops.batch_norm2d_forward(x, weight, bias, rm.copy(), rv.copy(), training)
    gi, gweight, gbias = ops.batch_norm2d_backward(x, weight, g, mean, invstd, training)
    check_grads(f, [(gi, x), (gweight, weight), (gbias, bias)], rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_and_running_update():
    x = RNG.standard_normal((4, 3, 5, 5)) * 3 + 7
    rm, rv = np.zeros(3), np.ones(3)
    y, mean, invstd = ops.batch_norm2d_forward(x, np.ones(3), np.zeros(3), rm, rv, True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # biased var normalises
    batch_var_unbiased = x.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1)
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * batch_var_unbiased, rtol=1e-12)
    # eval mode uses the running estimates
    ye, _, _ = ops.batch_norm2d_forward(x, np.ones(3), np.zeros(3), rm, rv, False)
    np.testing.assert_allclose(ye, (x - rm[None, :, None, None]) / np.sqrt(rv + 1e-5)[None, :, None, None])


def test_avg_pool_relu_linear_gradients_finite_differences():
    x = RNG.standard_normal((2, 3, 6, 4))
    g = RNG.standard_normal((2, 3, 3, 2))
    gi = ops.avg_pool2d_backward(x.shape, g, 2)
    check_grads(lambda: np.sum(ops.avg_pool2d_forward(x, 2) * g), [(gi, x)])
    np.testing.assert_allclose(ops.avg_pool2d_forward(x, (6, 4))[:, :, 0, 0], x.mean(axis=(2, 3)))

    xr = RNG.standard_normal((3, 4)) + 0.01
    gr = RNG.standard_normal((3, 4))
    check_grads(lambda: np.sum(ops.relu_forward(xr) * gr), [(ops.relu_backward(xr, gr), xr)])

    xl = RNG.standard_normal((3, 5))
    wl = RNG.standard_normal((2, 5))
    bl = RNG.standard_normal(2)
    gl = RNG.standard_normal((3, 2))
    gix, gw, gb = ops.linear_backward(xl, wl, gl)
    check_grads(lambda: np.sum(ops.linear_forward(xl, wl, bl) * gl), [(gix, xl), (gw, wl), (gb, bl)])


def test_cross_entropy_value_and_gradient():
    logits = RNG.standard_normal((4, 5))
    targets = np.array([0, 3, 4, 1])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(4), targets]))
    np.testing.assert_allclose(ops.cross_entropy_forward(logits, targets), expected, rtol=1e-12)
    grad = ops.cross_entropy_backward(logits, targets)
    check_grads(lambda: float(ops.cross_entropy_forward(logits, targets)), [(grad, logits)])
    # stable for huge logits: no overflow, loss stays finite
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert np.isfinite(ops.cross_entropy_forward(big, np.array([0, 0])))


def test_adaptive_scale_formula():
    g = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    scaled = ops.adaptive_scale(g, eta=0.2)
    expected = g.astype(np.float64) * 0.2 * np.sqrt(g.size) / np.linalg.norm(g.astype(np.float64))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)
    # the rescaled gradient's norm is η·sqrt(k), whatever the input's scale
    np.testing.assert_allclose(np.linalg.norm(ops.adaptive_scale(g * 1e4, 0.2)), 0.2 * np.sqrt(g.size), rtol=1e-5)
    # zero gradient: the 1e-12 floor keeps it zero (no NaN)
    np.testing.assert_array_equal(ops.adaptive_scale(np.zeros((2, 2)), 0.2), 0)


def test_max_pool2d_matches_direct_loop_and_routes_gradient():
    x = RNG.standard_normal((2, 3, 6, 7))
    x[0, 1, 2, 3] = x[0, 1, 2, 4] = 9.0  # a tie: the first in row-major window order wins
    y, idx = ops.max_pool2d_forward(x, (3, 2), stride=(2, 2), padding=(1, 1))
    assert y.shape == idx.shape == (2, 3, 3, 4) and idx.dtype == np.int64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for n, c, i, j in np.ndindex(*y.shape):
        window = xp[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 2]
        assert y[n, c, i, j] == window.max()
        r, q = np.unravel_index(np.argmax(window), window.shape)
        assert idx[n, c, i, j] == (2 * i + r - 1) * 7 + (2 * j + q - 1)
    g = RNG.standard_normal(y.shape)
    gx = ops.max_pool2d_backward(x.shape, g, idx)
    expected = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*y.shape):
        expected[n, c].flat[idx[n, c, i, j]] += g[n, c, i, j]
    np.testing.assert_allclose(gx, expected, rtol=1e-15)
    assert gx[0, 1, 2, 4] == 0.0  # the second of the tied maxima gets nothing


def test_max_pool2d_all_minus_inf_window_and_validation():
    x = np.full((1, 1, 2, 2), -np.inf)
    y, idx = ops.max_pool2d_forward(x, 2, stride=1, padding=1)
    assert np.all(y == -np.inf)
    assert idx.min() >= -1 and idx.max() < 4
    gx = ops.max_pool2d_backward(x.shape, np.ones_like(y), idx)
    assert gx.shape == x.shape and np.isfinite(gx).all()
    with pytest.raises(ValueError, match="padding"):
        ops.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="x must"):
        ops.max_pool2d_forward(np.zeros((4, 4)), 2)
    with pytest.raises(TypeError, match="indices"):
        ops.max_pool2d_backward((1, 1, 4, 4), np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="indices"):
        ops.max_pool2d_backward((1, 1, 4, 4), np.zeros((1, 1, 2, 2)),
                                np.full((1, 1, 2, 2), 16, dtype=np.int64))
