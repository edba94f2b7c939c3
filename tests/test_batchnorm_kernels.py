"""Compiled BatchNorm2d / ReLU-backward kernels against the numpy reference, and their
independence from the thread count."""
import numpy as np
import pytest

import addercore
from addercore.ops import reference

pytestmark = pytest.mark.skipif(addercore.backend() != "cython",
                                reason="compiled backend not active (numpy reference only)")


def _fast():
    from addercore.ops import fast

    return fast


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_reference(dtype, rtol, training):
    rng = np.random.default_rng(3)
    # adder-like activations: large negative mean, modest spread (cancellation-prone)
    x = (rng.standard_normal((6, 5, 7, 3)) * 20 - 700).astype(dtype)
    w, b = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    rm = (rng.standard_normal(5) - 700).astype(dtype)
    rv = rng.uniform(300, 500, 5).astype(dtype)
    rm_f, rv_f, rm_r, rv_r = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    y_f, m_f, i_f = _fast().batch_norm2d_forward(x, w, b, rm_f, rv_f, training, 0.1, 1e-5)
    y_r, m_r, i_r = reference.batch_norm2d_forward(x, w, b, rm_r, rv_r, training, 0.1, 1e-5)
    scale = np.abs(y_r).max()
    np.testing.assert_allclose(y_f, y_r, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(rm_f, rm_r, rtol=rtol)
    np.testing.assert_allclose(rv_f, rv_r, rtol=rtol)
    for got, want in zip(_fast().batch_norm2d_backward(x, w, g, m_f, i_f, training),
                         reference.batch_norm2d_backward(x, w, g, m_r, i_r, training)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * 50 * np.abs(want).max())


def test_norm_kernels_bit_identical_for_any_thread_count():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)
    w, b = np.ones(6, np.float32), np.zeros(6, np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads in (1, 2, 4):
        with addercore.num_threads(threads):
            y, m, i = _fast().batch_norm2d_forward(x, w, b, None, None, True, 0.1, 1e-5)
            gx, gw, gb = _fast().batch_norm2d_backward(x, w, g, m, i, True)
            gr = _fast().relu_backward(x, g)
        results.append((y, gx, gw, gb, gr))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)
    np.testing.assert_array_equal(results[0][4], np.where(x > 0, g, 0))
