"""The numerics contract of the compiled full filter gradient at the edge of its range
(docs/robustness.md, "Range of the compiled full filter gradient").

The compiled kernel computes ``Σ X·G − F·Σ G`` where the reference computes ``Σ (X − F)·G``.
Both agree within ``2·(M + 20)·eps·S`` (M = N·Ho·Wo terms, S = factor·(Σ|X|·|G| + |F|·Σ|G|))
as long as S stays below the dtype's largest finite value. Beyond it the compiled products
overflow: the result may be ±inf or NaN where the reference is finite; wherever the compiled
result is finite it still agrees. Infinite ``grad_output`` gives non-finite filter gradients in
both, but NaN in the compiled one where the reference has ±inf.
"""
import numpy as np
import pytest

from addercore import ops
from addercore._backend import use_backend
from addercore.ops import reference

cython_only = pytest.mark.skipif(
    not hasattr(__import__("addercore")._backend, "fast_module")
    or __import__("addercore")._backend.fast_module() is None,
    reason="compiled backend not built")


def _problem(dtype, a, b, seed=0):
    """x ≈ a, weight ≈ a (so X − F is ~1% of a), grad_output ≈ b; N=2, 3x3 image, 2x2 kernel."""
    rng = np.random.default_rng(seed)
    x = (a * (1 + 0.01 * rng.standard_normal((2, 1, 3, 3)))).astype(dtype)
    w = (a * (1 + 0.01 * rng.standard_normal((2, 1, 2, 2)))).astype(dtype)
    g = (b * (1 + 0.01 * rng.standard_normal((2, 2, 2, 2)))).astype(dtype)
    return x, w, g


def _scale(x, w, g, factor):
    """S per filter element: factor·(Σ_{n,p} |X|·|G| + |F|·Σ|G|), in float64."""
    cols = np.abs(reference.im2col(x.astype(np.float64), (2, 2), (1, 1), (0, 0)))
    cols = cols.reshape(x.shape[0], 4, 4)                       # (N, K, P)
    ag = np.abs(g.astype(np.float64)).reshape(2, 2, 4)         # (N, Cout, P)
    aw = np.abs(w.astype(np.float64)).reshape(2, 4)            # (Cout, K)
    return factor * (np.einsum("nkp,ntp->tk", cols, ag) + aw * ag.sum(axis=(0, 2))[:, None])


def _run(x, w, g, norm):
    args = (x, w, g, (1, 1), (0, 0), norm, "full", "hardtanh")
    with use_backend("cython"):
        _, got = ops.adder2d_backward(*args)
    _, want = reference.adder2d_backward(*args)
    return got.reshape(2, 4), want.reshape(2, 4)


def _agree(got, want, scale, dtype, where):
    tol = 2.0 * (8 + 20) * float(np.finfo(dtype).eps) * scale
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert np.all(err[where] <= tol[where]), (err[where].max(), tol[where].min())


@cython_only
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_filter_gradient_agrees_just_inside_the_range(dtype, norm):
    big = float(np.finfo(dtype).max)
    factor = 2.0 if norm == "l2" else 1.0
    # 16 products of a·b per element (8 in Σ X·G, 8 in F·Σ G): S = 16·factor·a·b ≈ 0.5·max
    a = b = np.sqrt(0.5 * big / (16 * factor)) / 1.05
    x, w, g = _problem(dtype, a, b)
    scale = _scale(x, w, g, factor)
    assert scale.max() < 0.6 * big and scale.max() > 0.3 * big  # really at the edge
    got, want = _run(x, w, g, norm)
    assert np.all(np.isfinite(want)) and np.all(np.isfinite(got))
    _agree(got, want, scale, dtype, np.ones(got.shape, bool))


@cython_only
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_filter_gradient_beyond_the_range_is_finite_only_where_right(dtype):
    big = float(np.finfo(dtype).max)
    a = b = np.sqrt(big / 2)  # S ≈ 8x the largest finite value: Σ X·G overflows
    x, w, g = _problem(dtype, a, b)
    got, want = _run(x, w, g, "l1")
    assert np.all(np.isfinite(want))  # (X − F)·G is ~1% of X·G: the reference stays finite
    finite = np.isfinite(got)
    # the documented deviation: compiled may be ±inf/NaN here; where it is finite it is right
    _agree(got, want, _scale(x, w, g, 1.0), dtype, finite)


@cython_only
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf − inf is the point
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_grad_output_gives_nonfinite_filter_gradient_in_both(dtype):
    x, w, g = _problem(dtype, 1.0, 1.0)
    g[0, 1, 0, 0] = np.inf  # channel 1 only
    got, want = _run(x, w, g, "l1")
    # channel 1 reads the inf: the reference gives ±inf (NaN where X == F), the compiled
    # inf − inf = NaN; channel 0 is untouched and agrees as usual
    assert not np.any(np.isfinite(want[1])) and not np.any(np.isfinite(got[1]))
    assert np.all(np.isfinite(got[0])) and np.all(np.isfinite(want[0]))
    _agree(got, want, _scale(x, w, np.where(np.isinf(g), 0, g), 1.0), dtype,
           np.array([[True] * 4, [False] * 4]))
