"""The compiled sign filter gradient Σ_{n,p} sgn(X_patch − F)·G (filter_grad="sign", method §4.1):
the register-blocked kernel filter_grad_sign_tile_t (blocks of 2 vectors of filters, i.e. Cout
a multiple of 16 in float32 and of 8 in float64 on AVX2) and its exact direct-form fallback.

* against float64 numpy loops (independent of addercore's reference), within the tolerances of
  test_kernels.py, for layer shapes whose filters run through the blocked kernel, leftover
  filters, leftover taps (K not a multiple of the block), short filters and short tiles;
* exact equality on small-integer data with ties, including every ±0 combination (c = −0,
  w = +0 must give sgn = 0) and, in float64, subnormal differences (the kernel scales the
  difference by 2^64 so that its sign survives);
* Inf/NaN in x, w or g and overflowing partial sums: the blocked kernel hands those blocks to
  the direct form, so the result keeps the direct form's NaN/Inf pattern (checked against the
  same filters run one at a time, which always takes the direct form) and numpy's;
* bit-identical results for 1 and 2 threads.
"""
import numpy as np
import pytest

from addercore import _backend, ops
from addercore.threads import num_threads
from conftest import layer_case

if _backend.backend() != "cython":
    pytest.skip("compiled backend not active", allow_module_level=True)

from addercore.ops import fast  # noqa: E402

TOL = {np.float32: 1e-4, np.float64: 1e-10}  # as tests/test_kernels.py


def sign_grad_loops(x, w, g, stride, padding):
    """Σ_{n,h,w} sgn(Xp_patch − F)·G in float64, one numpy product per tap (np.sign: sgn(0) = 0)."""
    x, w, g = (a.astype(np.float64) for a in (x, w, g))
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = g.shape[2:]
    out = np.zeros(w.shape)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            patch = xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            d = patch[:, None] - w[None, :, :, i, j, None, None]  # (N, Cout, Cin, Ho, Wo)
            out[:, :, i, j] = np.einsum("ntchw,nthw->tc", np.sign(d), g)
    return out


def sign_grad(x, w, g, stride, padding):
    return ops.adder2d_backward(x, w, g, stride, padding, "l1", "sign", "hardtanh")[1]


def one_filter_at_a_time(x, w, g, stride, padding):
    """The same gradient with Cout = 1 per call: always the direct form (no whole block)."""
    return np.concatenate([sign_grad(x, w[t:t + 1], np.ascontiguousarray(g[:, t:t + 1]),
                                     stride, padding) for t in range(w.shape[0])])


# N, Cin, H, W, Cout, kh, kw, stride, padding
SHAPES = [
    (3, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1)),  # ResNet-20 layer shape, whole blocks
    (2, 8, 9, 7, 32, 3, 3, (2, 1), (1, 0)),  # two filter blocks (float32), four (float64)
    (2, 3, 10, 10, 20, 3, 3, (1, 1), (1, 1)),  # K = 27: leftover taps; Cout = 20: leftover filters
    (2, 5, 6, 6, 16, 1, 1, (1, 1), (0, 0)),  # K = 5: one block of 4 taps + 1
    (2, 3, 6, 6, 16, 1, 1, (1, 1), (0, 0)),  # K = 3 < SGT_MIN_K: direct form
    (1, 4, 4, 4, 24, 3, 3, (1, 1), (1, 1)),  # 16 positions, one short tile
]
IDS = ["resnet", "stride21", "leftovers", "k5", "k3", "short"]


def assert_close(actual, expected, dtype):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("tile_bytes", [None, 512], ids=["tile=image", "tile=small"])
def test_sign_filter_grad_matches_float64_loops(shape, dtype, tile_bytes, monkeypatch):
    if tile_bytes is not None:  # several tiles per image, tiles ending inside a row
        monkeypatch.setitem(fast.TILE_BYTES, "backward", tile_bytes)
        monkeypatch.setattr(fast, "TILE_MIN_BLOCKS", 1)
    x, w, g, stride, padding = layer_case(shape, dtype)
    x.flat[::5] = w.flat[3]  # ties: D == 0 on many taps of filter 0
    got = sign_grad(x, w, g, stride, padding)
    assert got.dtype == dtype and got.shape == w.shape
    assert_close(got, sign_grad_loops(x, w, g, stride, padding), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_filter_grad_exact_on_small_integers_with_signed_zeros(dtype):
    """Every sum is a small integer, exact in any order: the result must equal the loops bit for
    bit.  x and w hold +0 and −0 (c − w = −0 for c = −0, w = +0 would read as negative)."""
    rng = np.random.default_rng(1)
    x, w, g, stride, padding = layer_case((2, 4, 6, 6, 16, 3, 3, (1, 1), (1, 1)), dtype)
    x[:] = rng.integers(-2, 3, x.shape)
    w[:] = rng.integers(-2, 3, w.shape)
    g[:] = rng.integers(-3, 4, g.shape)
    x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype), int((x == 0).sum()))
    w[w == 0] = rng.choice(np.array([0.0, -0.0], dtype), int((w == 0).sum()))
    assert (np.signbit(x) & (x == 0)).any() and (~np.signbit(w) & (w == 0)).any()
    want = sign_grad_loops(x, w, g, stride, padding)
    np.testing.assert_array_equal(sign_grad(x, w, g, stride, padding), want.astype(dtype))
    # all-zero patches against all-zero filters: every term is sgn(±0 − ±0)·g = 0
    z = sign_grad(np.zeros_like(x) * -1.0, np.zeros_like(w), g, stride, padding)
    assert not z.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_filter_grad_tiny_and_subnormal_differences(dtype):
    """x and w a few units in the last place apart around 0 (subnormal differences) and
    around 1: the sign of each difference must survive (float64 reads the high half of the
    scaled difference; an unscaled subnormal difference would read as 0)."""
    tiny = np.finfo(dtype).smallest_subnormal
    rng = np.random.default_rng(2)
    x, w, g, stride, padding = layer_case((2, 4, 5, 5, 16, 3, 3, (1, 1), (1, 1)), dtype)
    base = rng.choice(np.array([0.0, 1.0, -1.0], dtype), x.shape)
    x[:] = base + (base == 0) * rng.integers(-3, 4, x.shape) * tiny
    x[:] += (base != 0) * rng.integers(-3, 4, x.shape) * np.spacing(base)
    w[:] = rng.integers(-2, 3, w.shape) * tiny
    g[:] = rng.integers(-3, 4, g.shape)
    want = sign_grad_loops(x, w, g, stride, padding)
    assert (want != sign_grad_loops(x, np.zeros_like(w), g, stride, padding)).any()
    np.testing.assert_array_equal(sign_grad(x, w, g, stride, padding), want.astype(dtype))


def _nonfinite_cases(dtype):
    x, w, g, stride, padding = layer_case((2, 3, 6, 6, 16, 3, 3, (1, 1), (1, 1)), dtype, seed=4)
    at = {"x": (1, 2, 3, 4), "w": (1, 2, 1, 2), "g": (1, 2, 3, 4)}
    cases = {}
    # (name, array, value, whether some sums become non-finite): sgn(±inf − w) is ±1 for a
    # finite w, so an infinite x or w alone leaves every sum finite
    for name, where, value, nonfinite in [
            ("x nan", "x", np.nan, True), ("x inf", "x", np.inf, False),
            ("w nan", "w", np.nan, True), ("w -inf", "w", -np.inf, False),
            ("g nan", "g", np.nan, True), ("g inf", "g", np.inf, True)]:
        a = {"x": x.copy(), "w": w.copy(), "g": g.copy()}
        a[where][at[where]] = value
        cases[name] = (a, nonfinite)
    # inf - inf = NaN on the tap where x and w hold the same infinity
    a = {"x": x.copy(), "w": w.copy(), "g": g.copy()}
    a["x"][0, 1, 2, 2] = np.inf
    a["w"][5, 1, 1, 1] = np.inf
    cases["x inf w inf"] = (a, True)
    return cases, stride, padding


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_filter_grad_nonfinite_like_direct_form_and_numpy(dtype):
    cases, stride, padding = _nonfinite_cases(dtype)
    for name, (a, nonfinite) in cases.items():
        with np.errstate(invalid="ignore"):
            got = sign_grad(a["x"], a["w"], a["g"], stride, padding)
            direct = one_filter_at_a_time(a["x"], a["w"], a["g"], stride, padding)
            want = sign_grad_loops(a["x"], a["w"], a["g"], stride, padding)
        assert np.isfinite(want).all() != nonfinite, name  # the case reaches the sums
        for other in (direct, want):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(other), err_msg=name)
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(other), err_msg=name)
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(other), err_msg=name)
            ok = np.isfinite(other)
            assert_close(got[ok], other[ok].astype(dtype), dtype)


def test_sign_filter_grad_tie_with_infinite_g_is_zero_like_direct_form():
    """sgn(0)·g is 0 even for g = inf in the kernels (the direct form masks g), where the
    doubled-sign product 0·inf of the blocked kernel would be NaN: that block falls back."""
    x, w, g, stride, padding = layer_case((1, 4, 4, 4, 16, 1, 1, (1, 1), (0, 0)), np.float32, seed=5)
    x[0, 0, 1, 1] = w[3, 0, 0, 0]  # a tie at position 5 for filter 3, tap 0
    g[0, 3, 1, 1] = np.inf  # filter 3 meets this inf at position 5 only...
    got = sign_grad(x, w, g, stride, padding)
    direct = one_filter_at_a_time(x, w, g, stride, padding)
    # ...through tap 0 it is a tie (term 0); through taps 1-3 it is ±inf
    assert np.isfinite(got[3, 0, 0, 0]) and np.isinf(got[3, 1:]).all()
    assert np.isfinite(np.delete(got, 3, axis=0)).all()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(direct))
    np.testing.assert_array_equal(np.sign(got), np.sign(direct))
    assert_close(got[np.isfinite(got)], direct[np.isfinite(direct)], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_filter_grad_overflowing_double_is_exact(dtype):
    """The blocked kernel sums 2·sgn·g: g near the largest float overflows there although the
    true sum is finite; that block falls back and the result is the finite sum."""
    big = np.finfo(dtype).max / 1.5
    x, w, g, stride, padding = layer_case((1, 4, 4, 4, 16, 1, 1, (1, 1), (0, 0)), dtype, seed=6)
    g[:] = 0
    g[0, 2, 1, 2] = big
    got = sign_grad(x, w, g, stride, padding)
    want = sign_grad_loops(x, w, g, stride, padding)
    assert np.isfinite(got).all() and np.abs(got[2]).max() == dtype(big)
    np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_filter_grad_bit_identical_for_1_and_2_threads(dtype):
    x, w, g, stride, padding = layer_case((21, 8, 6, 6, 32, 3, 3, (1, 1), (1, 1)), dtype, seed=7)
    results = []
    for threads in (1, 2):
        with num_threads(threads):
            results.append(sign_grad(x, w, g, stride, padding))
    assert results[0].tobytes() == results[1].tobytes()
