"""batch_norm2d (and the fused BatchNorm → + residual → ReLU): statistics and running
updates against numpy, central finite differences, and the compiled kernels against the
reference. The fused op's own suite: tests/test_fused_norm.py.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np
import pytest

from addercore import ops
from addercore.gradcheck import gradcheck
from optest import check_compiled_matches_reference, needs_cython

RNG = np.random.default_rng(1234)


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
    gradcheck(f, [(gi, x), (gweight, weight), (gbias, bias)], rtol=1e-5, atol=1e-6)


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



@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_compiled_matches_reference(dtype, training):
    x = (RNG.standard_normal((3, 4, 5, 6)) * 30 - 800).astype(dtype)
    w, b = RNG.uniform(0.5, 1.5, 4).astype(dtype), RNG.standard_normal(4).astype(dtype)
    rm = (RNG.standard_normal(4) - 800).astype(dtype)
    rv = RNG.uniform(500, 1500, 4).astype(dtype)
    g = RNG.standard_normal(x.shape).astype(dtype)
    res = RNG.standard_normal(x.shape).astype(dtype)
    check_compiled_matches_reference("batch_norm2d_forward", x, w, b, rm, rv, training)
    check_compiled_matches_reference("batch_norm2d_relu_forward", x, w, b, rm, rv, training,
                                     residual=res)
    _, mean, invstd = ops.batch_norm2d_forward(x, w, b, rm.copy(), rv.copy(), training)
    check_compiled_matches_reference("batch_norm2d_backward", x, w, g, mean, invstd, training)
    y = ops.batch_norm2d_relu_forward(x, w, b, rm.copy(), rv.copy(), training, residual=res)[0]
    check_compiled_matches_reference("batch_norm2d_relu_backward", x, w, y, g, mean, invstd,
                                     training, residual=True)


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if ops.compiled_ops() else []))
@pytest.mark.parametrize("training", [True, False])
def test_relu_apply_rebuilds_forward_bit_for_bit(backend, training):
    """batch_norm2d_relu_apply promises the bits of its own backend's forward (the compiled
    stats are float64, the reference's x's dtype: each backend rebuilds its own y)."""
    from addercore._backend import use_backend

    rng = np.random.default_rng(5)  # its own draws: the same inputs whichever tests ran before
    x = (rng.standard_normal((2, 3, 4, 5)) * 30 - 800).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    rm, rv = (rng.standard_normal(3) - 800).astype(np.float32), np.full(3, 900, np.float32)
    res = rng.standard_normal(x.shape).astype(np.float32)
    with use_backend(backend):
        y, _, _, stats = ops.batch_norm2d_relu_forward(x, w, b, rm, rv, training, residual=res,
                                                       return_stats=True)
        again = ops.batch_norm2d_relu_apply(x, w, b, stats, residual=res)
    np.testing.assert_array_equal(again, y)
    assert 0.1 < (y > 0).mean() < 0.9  # the ReLU masks some, not all
