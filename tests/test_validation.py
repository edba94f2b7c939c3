"""Input validation at the public boundary (issue 6): bad arguments raise a TypeError/ValueError
that names the argument and shows expected vs. received; views, empty batches and NaN/Inf are
handled (docs/robustness.md lists which behaviour each case gets)."""
import re

import numpy as np
import pytest

import addercore
from addercore import nn, ops
from addercore._backend import use_backend
from addercore.ops import reference

BACKENDS = ["numpy"] + (["cython"] if addercore.backend() == "cython" else [])
needs_cython = pytest.mark.skipif(addercore.backend() != "cython",
                                  reason="compiled extension addercore_ext not built/active")

rng = np.random.default_rng(6)
X = rng.standard_normal((2, 3, 5, 5))
W = rng.standard_normal((4, 3, 3, 3))
G = rng.standard_normal((2, 4, 3, 3))  # grad_output for stride 1, padding 0
LX = rng.standard_normal((2, 5))  # linear: x (N, in)
LW = rng.standard_normal((4, 5))  # linear: weight (out, in)


def f32(a):
    return a.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Bad arguments: (call, exception, regex the message must match)
# ---------------------------------------------------------------------------------------------
BAD = {
    # rank
    "x rank 3": (lambda: ops.adder2d_forward(X[0], W), ValueError,
                 r"x must have 4 dimensions \(N, Cin, H, W\), got shape \(3, 5, 5\)"),
    "weight rank 5": (lambda: ops.adder2d_forward(X, W[None]), ValueError,
                      r"weight must have 4 dimensions .*got shape \(1, 4, 3, 3, 3\)"),
    "grad_output rank 3": (lambda: ops.adder2d_backward(X, W, G[0]), ValueError,
                           r"grad_output must have 4 dimensions"),
    "linear x rank 3": (lambda: ops.linear_forward(X[0], W[:, 0, 0]), ValueError,
                        r"x must have 2 dimensions \(N, in_features\), got shape \(3, 5, 5\)"),
    # channels / shapes
    "channels": (lambda: ops.adder2d_forward(X[:, :2], W), ValueError,
                 r"x has 2 channels but weight expects 3 \(x shape \(2, 2, 5, 5\), "
                 r"weight shape \(4, 3, 3, 3\)\)"),
    "conv channels": (lambda: ops.conv2d_forward(X, W[:, :2]), ValueError,
                      r"x has 3 channels but weight expects 2"),
    "grad_output shape": (lambda: ops.adder2d_backward(X, W, G[:, :, :2]), ValueError,
                          r"grad_output must have shape \(2, 4, 3, 3\), got \(2, 4, 2, 3\)"),
    "grad_output batch": (lambda: ops.adder2d_backward(X, W, G[:1]), ValueError,
                          r"grad_output must have shape \(2, 4, 3, 3\), got \(1, 4, 3, 3\)"),
    "kernel > padded input": (lambda: ops.adder2d_forward(X, rng.standard_normal((4, 3, 8, 2)), padding=1),
                              ValueError, r"kernel 8x2 is larger than the padded input 7x7 .*"
                              r"padding \(1, 1\)"),
    "zero-size weight": (lambda: ops.adder2d_forward(X, W[:0]), ValueError,
                         r"weight must have non-zero dimensions, got shape \(0, 3, 3, 3\)"),
    "zero-size Cin": (lambda: ops.adder2d_forward(X[:, :0], W[:, :0]), ValueError,
                      r"weight must have non-zero dimensions"),
    "zero height x": (lambda: ops.adder2d_forward(X[:, :, :0], W, padding=2), ValueError,
                      r"x must have non-zero height and width .*got shape \(2, 3, 0, 5\)"),
    "bias shape": (lambda: ops.conv2d_forward(X, W, bias=np.zeros(3)), ValueError,
                   r"bias must have shape \(4,\), got \(3,\)"),
    "linear features": (lambda: ops.linear_forward(LX, LW[:, :2]), ValueError,
                        r"x has 5 features but weight expects 2"),
    "linear_backward grad shape": (lambda: ops.linear_backward(LX, LW, np.zeros((2, 3))), ValueError,
                                   r"grad_output must have shape \(2, 4\), got \(2, 3\)"),
    "relu_backward shape": (lambda: ops.relu_backward(X, X[:1]), ValueError,
                            r"grad_output must have shape \(2, 3, 5, 5\), got \(1, 3, 5, 5\)"),
    "bn weight shape": (lambda: ops.batch_norm2d_forward(X, np.ones(4), np.zeros(3)), ValueError,
                        r"weight must have shape \(3,\), got \(4,\)"),
    "bn_backward grad shape": (lambda: ops.batch_norm2d_backward(X, np.ones(3), X[:1], np.zeros(3),
                                                                 np.ones(3)), ValueError,
                               r"grad_output must have shape \(2, 3, 5, 5\), got \(1, 3, 5, 5\)"),
    "avg_pool kernel > input": (lambda: ops.avg_pool2d_forward(X, 6), ValueError,
                                r"kernel_size \(6, 6\) is larger than the input \(5, 5\)"),
    "avg_pool_backward x_shape rank": (lambda: ops.avg_pool2d_backward((2, 3, 4), G, 2), ValueError,
                                       r"x_shape must be a tuple of 4 non-negative ints"),
    "avg_pool_backward x_shape type": (lambda: ops.avg_pool2d_backward(5, G, 2), TypeError,
                                       r"x_shape must be a tuple of 4 ints"),
    "avg_pool_backward grad shape": (lambda: ops.avg_pool2d_backward((2, 4, 8, 8), G, 2),
                                     ValueError,
                                     r"grad_output must have shape \(2, 4, 4, 4\), got \(2, 4, 3, 3\)"),
    # stride / padding
    "stride 0": (lambda: ops.adder2d_forward(X, W, stride=0), ValueError, r"stride must be >= 1, got 0"),
    "stride -1": (lambda: ops.adder2d_forward(X, W, stride=-1), ValueError, r"stride must be >= 1"),
    "stride (1, 0)": (lambda: ops.adder2d_forward(X, W, stride=(1, 0)), ValueError,
                      r"stride must be >= 1, got \(1, 0\)"),
    "stride 1.5": (lambda: ops.adder2d_forward(X, W, stride=1.5), TypeError,
                   r"stride must be an int or a pair of ints, got 1.5"),
    "stride 2.0": (lambda: ops.adder2d_forward(X, W, stride=2.0), TypeError, r"stride must be an int"),
    "stride True": (lambda: ops.adder2d_forward(X, W, stride=True), TypeError, r"stride must be an int"),
    "stride '1'": (lambda: ops.adder2d_forward(X, W, stride="1"), TypeError, r"stride must be an int"),
    "stride None": (lambda: ops.adder2d_forward(X, W, stride=None), TypeError, r"stride must be an int"),
    "stride triple": (lambda: ops.adder2d_forward(X, W, stride=(1, 1, 1)), ValueError,
                      r"stride must be an int or a pair of ints, got \(1, 1, 1\)"),
    "stride > int32": (lambda: ops.adder2d_forward(X, W, stride=2**40), ValueError,
                       r"stride must be <= 2147483647"),
    "padding -1": (lambda: ops.adder2d_forward(X, W, padding=-1), ValueError,
                   r"padding must be >= 0, got -1"),
    "padding 0.5": (lambda: ops.adder2d_forward(X, W, padding=0.5), TypeError,
                    r"padding must be an int or a pair of ints, got 0.5"),
    "padding (0, -2)": (lambda: ops.conv2d_forward(X, W, padding=(0, -2)), ValueError,
                        r"padding must be >= 0, got \(0, -2\)"),
    "padding > int32": (lambda: ops.adder2d_forward(X, W, padding=2**31), ValueError,
                        r"padding must be <= 2147483647"),
    "padded size > int32": (lambda: ops.adder2d_forward(X, W, padding=2**30), ValueError,
                            r"padding \(1073741824, 1073741824\) makes the padded input"),
    "avg_pool stride 0": (lambda: ops.avg_pool2d_forward(X, 2, 0), ValueError, r"stride must be >= 1"),
    "avg_pool kernel 0": (lambda: ops.avg_pool2d_forward(X, 0), ValueError, r"kernel_size must be >= 1"),
    # dtypes
    "mixed x/weight": (lambda: ops.adder2d_forward(f32(X), W), TypeError,
                       r"arrays must share one dtype, got x: float32, weight: float64"),
    "mixed grad_output": (lambda: ops.adder2d_backward(X, W, f32(G)), TypeError,
                          r"x: float64, grad_output: float32"),
    "mixed conv bias": (lambda: ops.conv2d_forward(X, W, bias=np.zeros(4, np.float32)), TypeError,
                        r"x: float64, bias: float32"),
    "mixed relu_backward": (lambda: ops.relu_backward(X, f32(X)), TypeError,
                            r"x: float64, grad_output: float32"),
    "mixed linear_backward": (lambda: ops.linear_backward(LX, LW, np.zeros((2, 4), np.float32)),
                              TypeError,
                              r"grad_output: float32"),
    "mixed bn_backward": (lambda: ops.batch_norm2d_backward(X, np.ones(3), f32(X), np.zeros(3),
                                                            np.ones(3)), TypeError,
                          r"x: float64, grad_output: float32"),
    "mixed bn weight": (lambda: ops.batch_norm2d_forward(X, np.ones(3, np.float32), np.zeros(3)),
                        TypeError, r"weight must have dtype float64 like x, got float32"),
    "int x": (lambda: ops.adder2d_forward(X.astype(np.int32), W), TypeError,
              r"x must have dtype float32 or float64, got int32"),
    "int weight": (lambda: ops.adder2d_forward(X, W.astype(np.int64)), TypeError,
                   r"weight must have dtype float32 or float64, got int64"),
    "bool x": (lambda: ops.adder2d_forward(X > 0, W), TypeError,
               r"x must have dtype float32 or float64, got bool"),
    "float16 x": (lambda: ops.adder2d_forward(X.astype(np.float16), W.astype(np.float16)),
                  TypeError, r"x must have dtype float32 or float64, got float16"),
    "complex x": (lambda: ops.adder2d_forward(X.astype(complex), W.astype(complex)), TypeError,
                  r"got complex128"),
    "object x": (lambda: ops.adder2d_forward(X.astype(object), W), TypeError, r"got object"),
    "list x": (lambda: ops.adder2d_forward(X.tolist(), W), TypeError,
               r"x must be a numpy.ndarray, got list"),
    "scalar x": (lambda: ops.relu_forward(1.0), TypeError, r"x must be a numpy.ndarray, got float"),
    "int grad_weight": (lambda: ops.adaptive_scale(np.ones(3, int)), TypeError,
                        r"grad_weight must have dtype float32 or float64, got int64"),
    "float targets": (lambda: ops.cross_entropy_forward(np.zeros((2, 3)), np.zeros(2)), TypeError,
                      r"targets must be an integer array of class indices, got dtype float64"),
    "bool targets": (lambda: ops.cross_entropy_forward(np.zeros((2, 3)), np.zeros(2, bool)),
                     TypeError, r"got dtype bool"),
    # option strings and scalars
    "norm": (lambda: ops.adder2d_forward(X, W, norm="l3"), ValueError,
             r"norm must be one of \['l1', 'l2'\], got 'l3'"),
    "norm list": (lambda: ops.adder2d_forward(X, W, norm=["l1"]), ValueError, r"norm must be one of"),
    "filter_grad": (lambda: ops.adder2d_backward(X, W, G, filter_grad="exact"), ValueError,
                    r"filter_grad must be one of \['full', 'sign'\], got 'exact'"),
    "input_grad": (lambda: ops.adder2d_backward(X, W, G, input_grad="clip"), ValueError,
                   r"input_grad must be one of"),
    "targets range": (lambda: ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3])),
                      ValueError, r"targets must lie in \[0, 3\), got range \[0, 3\]"),
    "targets shape": (lambda: ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0])),
                      ValueError, r"targets must have shape \(2,\), got \(1,\)"),
    "empty cross_entropy": (lambda: ops.cross_entropy_forward(np.zeros((0, 3)), np.zeros(0, int)),
                            ValueError, r"at least one sample"),
    "empty cross_entropy_backward": (lambda: ops.cross_entropy_backward(np.zeros((0, 3)),
                                                                        np.zeros(0, int)),
                                     ValueError, r"at least one sample"),
    "ce grad_output vector": (lambda: ops.cross_entropy_backward(np.zeros((2, 3)), np.zeros(2, int),
                                                                 np.ones(3)), TypeError,
                              r"grad_output must be a real number, got ndarray"),
    "ce grad_output str": (lambda: ops.cross_entropy_backward(np.zeros((2, 3)), np.zeros(2, int), "1"),
                           TypeError, r"grad_output must be a real number, got str"),
    "eta 0": (lambda: ops.adaptive_scale(np.ones(3), 0.0), ValueError, r"eta must be > 0.0, got 0.0"),
    "eta nan": (lambda: ops.adaptive_scale(np.ones(3), float("nan")), ValueError, r"eta must be finite"),
    "eta inf": (lambda: ops.adaptive_scale(np.ones(3), float("inf")), ValueError, r"eta must be finite"),
    "eta str": (lambda: ops.adaptive_scale(np.ones(3), "0.2"), TypeError, r"eta must be a real number"),
    "bn momentum str": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3), momentum="a"),
                        TypeError, r"momentum must be a real number, got str 'a'"),
    "bn momentum 2": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3), momentum=2.0),
                      ValueError, r"momentum must be <= 1.0, got 2.0"),
    "bn eps -1": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3), eps=-1.0),
                  ValueError, r"eps must be > 0.0, got -1.0"),
    "bn eps nan": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3), eps=float("nan")),
                   ValueError, r"eps must be finite"),
    "bn eval without buffers": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3),
                                                                 training=False),
                                ValueError, r"training=False needs running_mean and running_var"),
    "bn training one value": (lambda: ops.batch_norm2d_forward(X[:1, :, :1, :1], np.ones(3),
                                                               np.zeros(3)), ValueError,
                              r"more than one value per channel, got x shape \(1, 3, 1, 1\)"),
    "bn running_var view": (lambda: ops.batch_norm2d_forward(X, np.ones(3), np.zeros(3), np.zeros(3),
                                                             np.ones(6)[::2]), TypeError,
                            r"running_var must be a C-contiguous numpy.ndarray \(updated in place\)"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_argument_raises_clear_error(case, backend):
    call, exc, pattern = BAD[case]
    with use_backend(backend), pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc, f"{case}: got {type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value)), f"{case}: message {str(info.value)!r}"


def test_numpy_integer_geometry_accepted():
    a = ops.adder2d_forward(X, W, stride=np.int64(2), padding=(np.int32(1), 1))
    b = ops.adder2d_forward(X, W, stride=2, padding=1)
    assert np.array_equal(a, b)


def test_stride_larger_than_input_is_one_output():
    """Not an error: (H + 2p - k) // s + 1 = 1 whenever the kernel fits."""
    for backend in BACKENDS:
        with use_backend(backend):
            y = ops.adder2d_forward(X, W, stride=100, padding=1)
        assert y.shape == (2, 4, 1, 1)
        assert np.array_equal(y, reference.adder2d_forward(X, W, (100, 100), (1, 1), "l1"))


# ---------------------------------------------------------------------------------------------
# Views: accepted and computed on the values the view shows (equal to its contiguous copy)
# ---------------------------------------------------------------------------------------------
def _views(a):
    """(name, view) pairs showing the same values as ``a`` in other memory layouts."""
    big = np.zeros((a.shape[0], a.shape[1], 2 * a.shape[2], 2 * a.shape[3]), a.dtype)
    big[:, :, ::2, ::2] = a
    flipped = np.ascontiguousarray(a[:, :, ::-1, ::-1])
    readonly = a.copy()
    readonly.flags.writeable = False
    return [
        ("strided", big[:, :, ::2, ::2]),
        ("negative strides", flipped[:, :, ::-1, ::-1]),
        ("negative batch stride", np.ascontiguousarray(a[::-1])[::-1]),
        ("fortran", np.asfortranarray(a)),
        ("transposed", np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)),
        ("read-only", readonly),
        ("byte-swapped", a.astype(a.dtype.newbyteorder(">"))),
        ("broadcast", np.broadcast_to(a[:1], (1,) + a.shape[1:]) if a.shape[0] == 1 else
         np.broadcast_to(a[:1], a.shape)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("which", ["x", "weight", "grad_output"])
def test_views_equal_contiguous_copy(which, dtype, backend):
    x, w = X.astype(dtype), W.astype(dtype)
    g = rng.standard_normal((2, 4, 3, 3)).astype(dtype)  # stride 2, padding 1
    base = {"x": x, "weight": w, "grad_output": g}
    for name, view in _views(base[which]):
        args = dict(base)
        args[which] = view
        copy = dict(base)
        copy[which] = np.ascontiguousarray(view, dtype=dtype)
        if which == "x" and name == "broadcast":
            copy["x"] = np.array(view, dtype=dtype)
        with use_backend(backend):
            for norm in ("l1", "l2"):
                got = ops.adder2d_forward(args["x"], args["weight"], 2, 1, norm)
                want = ops.adder2d_forward(copy["x"], copy["weight"], 2, 1, norm)
                assert np.array_equal(got, want), (name, norm)
                got = ops.adder2d_backward(args["x"], args["weight"], args["grad_output"], 2, 1, norm)
                want = ops.adder2d_backward(copy["x"], copy["weight"], copy["grad_output"], 2, 1, norm)
                for a, b in zip(got, want):
                    assert np.array_equal(a, b), (name, norm)
            got = ops.conv2d_forward(args["x"], args["weight"], 2, 1)
            want = ops.conv2d_forward(copy["x"], copy["weight"], 2, 1)
            assert np.array_equal(got, want), name
        # and the view itself was not modified
        assert np.array_equal(np.asarray(view, dtype=dtype), copy[which])


def test_views_do_not_alias_outputs():
    """Outputs are fresh arrays: writing to them never changes the inputs."""
    x, w = X.copy(), W.copy()
    y = ops.adder2d_forward(x, w, 1, 1)
    gi, gw = ops.adder2d_backward(x, w, np.ones_like(y), 1, 1)
    for out in (y, gi, gw):
        out[...] = 7.0
    assert np.array_equal(x, X) and np.array_equal(w, W)


# ---------------------------------------------------------------------------------------------
# Zero-size batches: empty outputs of the right shape, identical on both backends
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_empty_batch_adder(norm, dtype):
    x = np.zeros((0, 3, 7, 6), dtype)
    w = W[:, :, :3, :2].astype(dtype)
    results = {}
    for backend in BACKENDS:
        with use_backend(backend):
            y = ops.adder2d_forward(x, w, (2, 1), (1, 0), norm)
            assert y.shape == (0, 4, 4, 5) and y.dtype == dtype
            for fg in ("full", "sign"):
                gi, gw = ops.adder2d_backward(x, w, y, (2, 1), (1, 0), norm, fg)
                assert gi.shape == x.shape and gi.dtype == dtype
                assert gw.shape == w.shape and gw.dtype == dtype
                assert not gw.any()  # a sum over no samples
                results[backend, fg] = (gi, gw)
    for fg in ("full", "sign"):
        for a, b in zip(results["numpy", fg], results[BACKENDS[-1], fg]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_other_ops(backend):
    x = np.zeros((0, 3, 6, 6))
    with use_backend(backend):
        y = ops.conv2d_forward(x, W, 1, 1, bias=np.ones(4))
        assert y.shape == (0, 4, 6, 6)
        gi, gw = ops.conv2d_backward(x, W, y, 1, 1)
        assert gi.shape == x.shape and gw.shape == W.shape and not gw.any()
        assert ops.relu_forward(x).shape == x.shape
        assert ops.relu_backward(x, x).shape == x.shape
        p = ops.avg_pool2d_forward(x, 2)
        assert p.shape == (0, 3, 3, 3)
        assert ops.avg_pool2d_backward(x.shape, p, 2).shape == x.shape
        lin = ops.linear_forward(np.zeros((0, 5)), np.ones((2, 5)), np.ones(2))
        assert lin.shape == (0, 2)
        gx, gw, gb = ops.linear_backward(np.zeros((0, 5)), np.ones((2, 5)), lin)
        assert gx.shape == (0, 5) and not gw.any() and not gb.any()
        yb, _, _ = ops.batch_norm2d_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3),
                                            training=False)
        assert yb.shape == x.shape


@needs_cython
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch_compiled_kernels_directly(dtype):
    """The Cython entry points themselves (no public wrapper in between) accept N = 0."""
    from addercore.ops import fast

    x = np.zeros((0, 3, 5, 5), dtype)
    w = W.astype(dtype)
    for norm in ("l1", "l2"):
        assert fast.adder2d_forward(x, w, (1, 1), (1, 1), norm).shape == (0, 4, 5, 5)
        gi, gw = fast.adder2d_backward(x, w, np.zeros((0, 4, 5, 5), dtype), (1, 1), (1, 1), norm,
                                       "full", "hardtanh")
        assert gi.shape == x.shape and not gw.any()
    assert fast.im2col(x, (3, 3), (1, 1), (1, 1)).shape == (0, 27, 25)
    assert fast.col2im(np.zeros((0, 27, 25), dtype), x.shape, (3, 3), (1, 1), (1, 1)).shape == x.shape


def test_empty_batch_module_and_engine():
    layer = nn.Adder2d(3, 4, 3, padding=1, dtype=np.float64)
    x = addercore.Tensor(np.zeros((0, 3, 5, 5)), requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    assert layer.adder.grad.shape == (4, 3, 3, 3) and not layer.adder.grad.any()


# ---------------------------------------------------------------------------------------------
# Module inputs: checked against the layer, the error names the layer
# ---------------------------------------------------------------------------------------------
MODULE_BAD = [
    (lambda: nn.Adder2d(3, 8, 3), np.zeros((2, 4, 8, 8), np.float32), ValueError,
     r"Adder2d\(3, 8, kernel_size=\(3, 3\).*\): input must have shape \(N, C, H, W\) with 3 "
     r"channels, got shape \(2, 4, 8, 8\)"),
    (lambda: nn.Adder2d(3, 8, 3), np.zeros((3, 8, 8), np.float32), ValueError,
     r"Adder2d\(3, 8.*got shape \(3, 8, 8\)"),
    (lambda: nn.Adder2d(3, 8, 3), np.zeros((2, 3, 8, 8)), TypeError,
     r"Adder2d\(3, 8.*input has dtype float64 but the layer's parameters are float32"),
    (lambda: nn.Adder2d(3, 8, 3), np.zeros((2, 3, 8, 8), np.int64), TypeError,
     r"Adder2d\(3, 8.*input must have dtype float32 or float64, got int64"),
    (lambda: nn.Conv2d(3, 8, 3), np.zeros((2, 1, 8, 8), np.float32), ValueError,
     r"Conv2d\(3, 8.*with 3 channels, got shape \(2, 1, 8, 8\)"),
    (lambda: nn.BatchNorm2d(16), np.zeros((2, 8, 4, 4), np.float32), ValueError,
     r"BatchNorm2d\(16, .*with 16 channels, got shape \(2, 8, 4, 4\)"),
    (lambda: nn.Linear(64, 10), np.zeros((2, 32), np.float32), ValueError,
     r"Linear\(64, 10.*\(N, in_features\) with 64 channels, got shape \(2, 32\)"),
    (lambda: nn.Linear(64, 10), np.zeros((2, 64), bool), TypeError,
     r"Linear\(64, 10.*got bool"),
    (lambda: nn.Adder2d(3, 8, 5), np.zeros((1, 3, 2, 2), np.float32), ValueError,
     r"kernel 5x5 is larger than the padded input 2x2"),
]


@pytest.mark.parametrize("index", range(len(MODULE_BAD)))
def test_module_input_checked_against_layer(index):
    make, x, exc, pattern = MODULE_BAD[index]
    with pytest.raises(exc) as info:
        make()(x)
    assert type(info.value) is exc
    assert re.search(pattern, str(info.value)), str(info.value)


def test_module_constructor_arguments():
    with pytest.raises(ValueError, match=r"stride must be >= 1, got 0"):
        nn.Adder2d(3, 8, 3, stride=0)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got 1.5"):
        nn.Adder2d(3, 8, 1.5)
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        nn.Conv2d(3, 8, 3, padding=-1)
    with pytest.raises(ValueError, match=r"in_channels must be a positive int, got 0"):
        nn.Adder2d(0, 8, 3)
    with pytest.raises(ValueError, match=r"norm must be one of"):
        nn.Adder2d(3, 8, 3, norm="l0")
    with pytest.raises(TypeError, match=r"bias must be a bool, got 'yes'"):
        nn.Adder2d(3, 8, 3, bias="yes")


def test_module_float64_after_to():
    layer = nn.Adder2d(3, 4, 3).to(np.float64)
    assert layer(np.zeros((1, 3, 4, 4))).dtype == np.float64


# ---------------------------------------------------------------------------------------------
# NaN / Inf: not checked; they propagate like numpy, to exactly the dependent outputs
# ---------------------------------------------------------------------------------------------
STRIDE, PAD = (2, 1), (1, 2)


def _problem(dtype):
    r = np.random.default_rng(66)
    x = r.standard_normal((3, 2, 7, 6)).astype(dtype)
    w = r.standard_normal((4, 2, 3, 2)).astype(dtype)
    ho = (7 + 2 * PAD[0] - 3) // STRIDE[0] + 1
    wo = (6 + 2 * PAD[1] - 2) // STRIDE[1] + 1
    g = r.standard_normal((3, 4, ho, wo)).astype(dtype)
    return x, w, g


def _reads(x_shape, kernel, pos):
    """cols[n, k, p] != 0 iff output position p reads input element ``pos`` through tap k."""
    ind = np.zeros(x_shape)
    ind[pos] = 1.0
    return reference.im2col(ind, kernel, STRIDE, PAD) != 0  # (N, K, P)


def _expected_nan(source, pos, x, w, g):
    """Masks of outputs that depend on the NaN at ``source[pos]``: (y, grad_input, grad_weight)."""
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    ho, wo = g.shape[2:]
    y = np.zeros((n, cout, ho * wo), bool)
    gi = np.zeros(x.shape, bool)
    gw = np.zeros((cout, cin * kh * kw), bool)
    if source == "x":
        reads = _reads(x.shape, (kh, kw), pos)
        y[:] = reads.any(axis=1)[:, None, :]
        gw[:] = reads.any(axis=(0, 2))[None, :]
        gi[pos] = reads.any()
    elif source == "weight":
        t, k = pos[0], np.ravel_multi_index(pos[1:], (cin, kh, kw))
        y[:, t] = True
        gw[t, k] = True
        cols = np.zeros((n, cin * kh * kw, ho * wo))
        cols[:, k] = 1.0
        gi = reference.col2im(cols, x.shape, (kh, kw), STRIDE, PAD) != 0
    else:  # grad_output[nn, t, hh, ww]
        b, t, hh, ww = pos
        gw[t] = True
        cols = np.zeros((n, cin * kh * kw, ho * wo))
        cols[b, :, hh * wo + ww] = 1.0
        gi = reference.col2im(cols, x.shape, (kh, kw), STRIDE, PAD) != 0
    return y.reshape(n, cout, ho, wo), gi, gw.reshape(w.shape)


NAN_SOURCES = {"x": (1, 1, 3, 0), "weight": (2, 1, 2, 1), "grad_output": (2, 3, 1, 2)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("source", sorted(NAN_SOURCES))
def test_nan_propagates_exactly_to_dependent_outputs(source, norm, dtype, backend):
    x, w, g = _problem(dtype)
    arrays = {"x": x, "weight": w, "grad_output": g}
    pos = NAN_SOURCES[source]
    arrays[source][pos] = np.nan
    want_y, want_gi, want_gw = _expected_nan(source, pos, x, w, g)
    failures = []
    with use_backend(backend), np.errstate(invalid="ignore"):
        if source != "grad_output":
            y = ops.adder2d_forward(x, w, STRIDE, PAD, norm)
            assert np.array_equal(np.isnan(y), want_y)
            assert np.isfinite(y[~want_y]).all()
        for fg in ("full", "sign"):
            for ig in ("hardtanh", "sign", "exact"):
                gi, gw = ops.adder2d_backward(x, w, g, STRIDE, PAD, norm, fg, ig)
                exact_ig = "sign" if (norm == "l1" and ig == "exact") else ig
                for what, got, want, mode in (("input_grad", gi, want_gi, exact_ig),
                                              ("filter_grad", gw, want_gw, fg)):
                    ok = np.array_equal(np.isnan(got), want) and np.isfinite(got[~want]).all()
                    if not ok:
                        failures.append(f"{what} ({fg}/{ig}): NaN at {np.argwhere(np.isnan(got))[:4].tolist()}"
                                        f" expected {np.argwhere(want)[:4].tolist()}")
    assert not failures, failures


@needs_cython
@pytest.mark.parametrize("mode", ["hardtanh-input", "sign-input", "sign-filter"])
def test_cython_backward_keeps_nan_through_clip_and_sign(mode):
    x, w, g = _problem(np.float64)
    x[1, 1, 3, 0] = np.nan
    fg = "sign" if mode == "sign-filter" else "full"
    ig = "sign" if mode == "sign-input" else "hardtanh"
    with np.errstate(invalid="ignore"):
        with use_backend("numpy"):
            ref = ops.adder2d_backward(x, w, g, STRIDE, PAD, "l1", fg, ig)
        with use_backend("cython"):
            got = ops.adder2d_backward(x, w, g, STRIDE, PAD, "l1", fg, ig)
    index = 1 if mode == "sign-filter" else 0
    assert np.array_equal(np.isnan(got[index]), np.isnan(ref[index]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inf_in_input_gives_minus_inf_or_nan_like_numpy(backend, dtype):
    """|inf - f| = inf, so dependent outputs are -inf; inf - inf (input and filter both inf on
    one tap) is NaN.  Same on both backends, bit for bit (the ℓ1 forward is bit-exact)."""
    x, w, _ = _problem(dtype)
    x[0, 0, 2, 2] = np.inf
    with use_backend(backend), np.errstate(invalid="ignore"):
        y = ops.adder2d_forward(x, w, STRIDE, PAD, "l1")
    mask = _expected_nan("x", (0, 0, 2, 2), x, w, np.zeros((3, 4) + y.shape[2:]))[0]
    assert (y[mask] == -np.inf).all() and np.isfinite(y[~mask]).all()
    assert np.array_equal(y, reference.adder2d_forward(x, w, STRIDE, PAD, "l1"))
    w2 = w.copy()
    w2[:, 0] = np.inf
    with use_backend(backend), np.errstate(invalid="ignore"):
        y2 = ops.adder2d_forward(x, w2, STRIDE, PAD, "l1")
    assert np.isnan(y2[mask]).all()
    assert (y2[~mask] == -np.inf).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_does_not_leak_across_batch(backend):
    """One bad image never contaminates the other images' outputs or gradients w.r.t. them."""
    x, w, g = _problem(np.float32)
    x[0] = np.nan
    with use_backend(backend), np.errstate(invalid="ignore"):
        y = ops.adder2d_forward(x, w, STRIDE, PAD, "l1")
        gi, _ = ops.adder2d_backward(x, w, g, STRIDE, PAD, "l2")
    assert np.isnan(y[0]).any() and np.isfinite(y[1:]).all()  # (all-padding windows stay finite)
    assert np.isfinite(gi[1:]).all()


# ---------------------------------------------------------------------------------------------
# padding="same" / "valid" (PyTorch's strings), resolved in one place: _validate.conv_padding
# ---------------------------------------------------------------------------------------------
def test_conv_padding_same_valid_pairs():
    from addercore.ops._validate import conv_padding

    assert conv_padding("valid", (3, 5), (2, 1)) == (0, 0)
    assert conv_padding("same", (3, 5), (1, 1)) == (1, 2)
    assert conv_padding("same", (1, 7), (1, 1)) == (0, 3)
    # dilation d spreads the taps over d·(k − 1) + 1 rows: padding d·(k − 1) / 2 per side
    assert conv_padding("same", (3, 3), (1, 1), dilation=(2, 3)) == (2, 3)
    assert conv_padding("same", (2, 3), (1, 1), dilation=(2, 1)) == (1, 1)  # 2·(2−1) is even
    assert conv_padding((2, 0), (3, 3), (1, 1)) == (2, 0) and conv_padding(1, (3, 3), (2, 2)) == (1, 1)
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1 .*got stride \(2, 1\)"):
        conv_padding("same", (3, 3), (2, 1))
    with pytest.raises(ValueError, match=r"padding='same' with kernel \(3, 4\).*\(2, 3\) padding"
                                         r".*bottom/right.*symmetrically"):
        conv_padding("same", (3, 4), (1, 1))
    with pytest.raises(ValueError, match=r"padding must be an int, a pair of ints or one of "
                                         r"\('same', 'valid'\), got 'full'"):
        conv_padding("full", (3, 3), (1, 1))


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 3), (3, 7)])
def test_ops_padding_same_keeps_size_and_equals_explicit_padding(kernel):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 6, 9))
    w = rng.standard_normal((4, 3) + kernel)
    explicit = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    y = ops.adder2d_forward(x, w, 1, "same")
    assert y.shape == (2, 4, 6, 9)
    np.testing.assert_array_equal(y, ops.adder2d_forward(x, w, 1, explicit))
    g = rng.standard_normal(y.shape)
    for a, b in zip(ops.adder2d_backward(x, w, g, 1, "same"),
                    ops.adder2d_backward(x, w, g, 1, explicit)):
        np.testing.assert_array_equal(a, b)
    yc = ops.conv2d_forward(x, w, 1, "same")
    assert yc.shape == (2, 4, 6, 9)
    np.testing.assert_array_equal(yc, ops.conv2d_forward(x, w, 1, explicit))
    for a, b in zip(ops.conv2d_backward(x, w, g, 1, "same"),
                    ops.conv2d_backward(x, w, g, 1, explicit)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ops.conv2d_forward(x, w, 2, "valid"), ops.conv2d_forward(x, w, 2, 0))
    np.testing.assert_array_equal(ops.adder2d_forward(x, w, 2, "valid"), ops.adder2d_forward(x, w, 2, 0))


def test_layers_padding_same_and_valid():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 7, 5)).astype(np.float32)
    for cls in (nn.Adder2d, nn.Conv2d):
        same = cls(2, 3, (3, 5), padding="same", rng=np.random.default_rng(0))
        assert same.padding == (1, 2) and same(x).shape == (1, 3, 7, 5)
        valid = cls(2, 3, 3, stride=2, padding="valid", rng=np.random.default_rng(0))
        assert valid.padding == (0, 0) and valid(x).shape == (1, 3, 3, 2)
        with pytest.raises(ValueError, match=r"padding='same' needs stride 1"):
            cls(2, 3, 3, stride=2, padding="same")
        with pytest.raises(ValueError, match=r"padding='same' with kernel \(2, 2\)"):
            cls(2, 3, 2, padding="same")
    with pytest.raises(ValueError, match=r"padding='same' with kernel \(4, 3\)"):
        ops.adder2d_forward(x, np.zeros((3, 2, 4, 3), np.float32), 1, "same")
