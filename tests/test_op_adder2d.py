"""adder2d (method §2, §4): the reference against brute-force loops written here from the
formulas of docs/method.md, hand-computed values, central finite differences where the gradient is
true, the adaptive scaling formula, and the compiled kernels against the reference.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import itertools

import numpy as np
import pytest

from addercore import ops
from addercore.gradcheck import gradcheck
from addercore.ops import reference
from optest import check_compiled_matches_reference, needs_cython

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


def test_adder_l2_exact_gradients_finite_differences():
    x = RNG.standard_normal((2, 2, 4, 4))
    w = RNG.standard_normal((3, 2, 3, 3))
    g = RNG.standard_normal(ops.adder2d_forward(x, w, 1, 1, "l2").shape)

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 1, "l2") * g)

    gi, gw = ops.adder2d_backward(x, w, g, 1, 1, "l2", "full", "exact")
    gradcheck(f, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


def test_adder_l1_true_gradient_is_sign_finite_differences():
    # away from ties (|x - f| > 0 everywhere, padding 0), the true gradient of -Σ|x - f| is
    # filter_grad="sign", input_grad="sign"
    x = RNG.standard_normal((1, 2, 4, 4))
    w = RNG.standard_normal((2, 2, 2, 2)) + 0.05
    g = RNG.standard_normal(ops.adder2d_forward(x, w, 1, 0).shape)

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 0) * g)

    gi, gw = ops.adder2d_backward(x, w, g, 1, 0, "l1", "sign", "sign")
    gradcheck(f, [(gi, x), (gw, w)], rtol=1e-5, atol=1e-6)


def test_adder_bias_adds_per_channel():
    x = RNG.standard_normal((2, 3, 5, 5))
    w = RNG.standard_normal((4, 3, 3, 3))
    b = np.array([0.5, -1.0, 2.0, 0.0])
    for norm in ("l1", "l2"):
        y0 = loop_adder_forward(x, w, (1, 1), (1, 1), norm)
        y = ops.adder2d_forward(x, w, 1, 1, norm, bias=b)
        for c in range(4):  # each channel shifted by its own b[c], nothing else touched
            np.testing.assert_array_equal(y[:, c], y0[:, c] + b[c])
    # hand-computed: x = [[1, 2]], f = [[0.5]], b = 3 -> -(|1-0.5|) + 3, -(|2-0.5|) + 3
    y = ops.adder2d_forward(np.array([[[[1.0, 2.0]]]]), np.array([[[[0.5]]]]), bias=np.array([3.0]))
    np.testing.assert_array_equal(y, [[[[2.5, 1.5]]]])
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(3,\)"):
        ops.adder2d_forward(x, w, 1, 1, bias=np.zeros(3))
    with pytest.raises(TypeError, match=r"arrays must share one dtype"):
        ops.adder2d_forward(x, w, 1, 1, bias=np.zeros(4, np.float32))


def test_adder_bias_gradient_finite_differences():
    """The autograd node's bias (and filter, input) gradients against central differences,
    with the true gradients of the ℓ2 layer (filter_grad "full", input_grad "exact")."""
    from addercore import functional as F
    from addercore.tensor import Tensor

    x = RNG.standard_normal((2, 2, 4, 4))
    w = RNG.standard_normal((3, 2, 3, 3))
    b = RNG.standard_normal(3)
    g = RNG.standard_normal((2, 3, 4, 4))

    def f():
        return np.sum(ops.adder2d_forward(x, w, 1, 1, "l2", bias=b) * g)

    xt, wt, bt = (Tensor(a.copy(), requires_grad=True) for a in (x, w, b))
    y = F.adder2d(xt, wt, 1, 1, "l2", "full", "exact", bias=bt)
    F.sum(F.mul(y, g)).backward()
    gradcheck(f, [(bt.grad, b), (wt.grad, w), (xt.grad, x)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bt.grad, g.sum(axis=(0, 2, 3)), rtol=1e-12)


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



def test_reference_accepts_int_geometry_like_the_public_api():
    """Issue 12 item 9: ``reference.adder2d_forward(x, w, 1, 1)`` takes ints, as ops does."""
    x = RNG.standard_normal((2, 3, 5, 4))
    w = RNG.standard_normal((2, 3, 3, 3))
    y = reference.adder2d_forward(x, w, 1, 1)
    np.testing.assert_array_equal(y, loop_adder_forward(x, w, (1, 1), (1, 1), "l1"))
    np.testing.assert_array_equal(reference.adder2d_forward(x, w, (2, 1), 1, "l2"),
                                  loop_adder_forward(x, w, (2, 1), (1, 1), "l2"))
    g = RNG.standard_normal(y.shape)
    for a, b in zip(reference.adder2d_backward(x, w, g, 1, 1),
                    loop_adder_backward(x, w, g, (1, 1), (1, 1), "l1", "full", "hardtanh")):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@needs_cython
@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_matches_reference(geom, dtype):
    n, cin, h, w, cout, kh, kw, stride, padding = geom
    x = RNG.standard_normal((n, cin, h, w)).astype(dtype)
    wt = RNG.standard_normal((cout, cin, kh, kw)).astype(dtype)
    g = RNG.standard_normal(ops.adder2d_forward(x, wt, stride, padding).shape).astype(dtype)
    for norm in ("l1", "l2"):
        check_compiled_matches_reference("adder2d_forward", x, wt, stride, padding, norm)
        for fg, ig in (("full", None), ("sign", "sign"), ("full", "exact")):
            check_compiled_matches_reference("adder2d_backward", x, wt, g, stride, padding,
                                             norm, fg, ig)
