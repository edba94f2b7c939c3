"""Integer ℓ1 adder: compiled SAD kernels == numpy reference == a plain-Python count, exactly,
for 1 and 2 threads, odd shapes, strides 1/2, padding, zeros, range extremes and ties."""
import numpy as np
import pytest

import addercore
from addercore.quant import kernels, reference

DTYPES = [np.uint8, np.int8, np.uint16, np.int16]
SHAPES = [  # N, C, H, W, Cout, kh, kw, stride, padding
    (2, 3, 7, 9, 5, 3, 3, 1, 1),
    (3, 16, 8, 8, 17, 3, 3, 2, 1),
    (1, 5, 6, 5, 3, 1, 1, 2, 0),
    (2, 64, 8, 8, 9, 3, 3, 1, 1),
    (2, 7, 5, 6, 9, 2, 3, (1, 2), (2, 0)),
    (1, 33, 4, 4, 4, 3, 3, 1, 1),
    # the 8-bit SIMD blocks: 1..5 groups of 4 (ymm) or 8 (zmm) filters, position tails, short
    # runs (L < 8), ResNet-20 shapes
    (1, 16, 10, 19, 24, 3, 3, 1, 1),
    (1, 8, 6, 17, 40, 1, 1, 1, 0),
    (2, 16, 9, 9, 64, 3, 3, 2, 1),
    (1, 2, 5, 13, 33, 3, 3, 1, 1),
    (2, 16, 12, 12, 32, 1, 1, 2, 0),
]


def _python_sad(x, f, stride, padding, pad_value):
    """Independent triple loop in Python ints (no numpy arithmetic)."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    n, c, h, w = x.shape
    cout, _, kh, kw = f.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xl, fl = x.tolist(), f.tolist()
    out = np.zeros((n, cout, ho, wo), np.int64)
    for b in range(n):
        for t in range(cout):
            for oh in range(ho):
                for ow in range(wo):
                    s = 0
                    for ci in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                r, q = oh * sh + i - ph, ow * sw + j - pw
                                v = xl[b][ci][r][q] if 0 <= r < h and 0 <= q < w else pad_value
                                s += abs(v - fl[t][ci][i][j])
                    out[b, t, oh, ow] = s
    return out


def _codes(rng, dtype, shape, kind):
    lo, hi = reference.code_range(dtype)
    if kind == "random":
        return rng.integers(lo, hi + 1, size=shape).astype(dtype)
    if kind == "extremes":
        return rng.choice(np.array([lo, hi], dtype=dtype), size=shape)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    return rng.integers(lo, lo + 3, size=shape).astype(dtype)  # "ties": many equal operands


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_reference_exactly(dtype, shape):
    n, c, h, w, cout, kh, kw, stride, padding = shape
    rng = np.random.default_rng(abs(hash((np.dtype(dtype).name, shape))) % 2**32)
    for kind in ("random", "extremes", "zeros", "ties"):
        x = _codes(rng, dtype, (n, c, h, w), kind)
        f = _codes(rng, dtype, (cout, c, kh, kw), kind if kind != "zeros" else "extremes")
        lo, hi = reference.code_range(dtype)
        pad = int(rng.choice([lo, 0, hi]))
        ref = reference.adder2d_int(x, f, stride, padding, pad)
        assert ref.dtype == np.int32
        for threads in (1, 2):
            with addercore.num_threads(threads):
                out = kernels.adder2d_int(x, f, stride, padding, pad)
            assert out.dtype == np.int32 and np.array_equal(out, ref), (kind, threads)
        # the channel-last entry point gives the same numbers
        nhwc = kernels.adder2d_int_nhwc(x.transpose(0, 2, 3, 1), f.transpose(0, 2, 3, 1),
                                        stride, padding, pad)
        assert np.array_equal(nhwc.transpose(0, 3, 1, 2), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_equals_python_count(dtype):
    rng = np.random.default_rng(5)
    x = _codes(rng, dtype, (2, 3, 5, 4), "random")
    f = _codes(rng, dtype, (2, 3, 3, 2), "random")
    lo, hi = reference.code_range(dtype)
    for stride, padding, pad in ((1, 1, 0), (2, (1, 2), hi), ((2, 1), 0, lo)):
        want = _python_sad(x, f, stride, padding, pad)
        assert np.array_equal(reference.adder2d_int(x, f, stride, padding, pad), want)
        assert np.array_equal(kernels.adder2d_int(x, f, stride, padding, pad), want)


def test_hand_computed_case():
    # one 2x2 image, 1 channel, a 2x2 filter, padding 0: |1-0|+|2-3|+|250-255|+|0-7| = 14
    x = np.array([[[[1, 2], [250, 0]]]], np.uint8)
    f = np.array([[[[0, 3], [255, 7]]]], np.uint8)
    assert kernels.adder2d_int(x, f).tolist() == [[[[14]]]]
    # signed: the +128 shift must not change |x - f|: |-128 - 127| = 255
    xs = np.array([[[[-128]]]], np.int8)
    fs = np.array([[[[127]]]], np.int8)
    assert kernels.adder2d_int(xs, fs).tolist() == [[[[255]]]]
    # a padded tap reads pad_value (the code of 0): 3x3 filter of 5s at the corner of a 1x1 x=5,
    # padding 1: 8 padded taps |z - 5| with z = 0 -> 40; with z = 5 -> 0
    x1 = np.full((1, 1, 1, 1), 5, np.uint8)
    f1 = np.full((1, 1, 3, 3), 5, np.uint8)
    assert kernels.adder2d_int(x1, f1, 1, 1, 0).item() == 40
    assert kernels.adder2d_int(x1, f1, 1, 1, 5).item() == 0


def test_large_k_16bit_near_overflow_bound():
    # K = 64·9 = 576 taps of |0 - 65535| = 37,748,160: exact in int32, not in float32
    x = np.zeros((1, 64, 3, 3), np.uint16)
    f = np.full((2, 64, 3, 3), 65535, np.uint16)
    out = kernels.adder2d_int(x, f)
    assert out.item(0) == 576 * 65535 and np.array_equal(out, reference.adder2d_int(x, f))


def test_bad_operands():
    x = np.zeros((1, 2, 4, 4), np.uint8)
    f = np.zeros((3, 2, 3, 3), np.uint8)
    with pytest.raises(TypeError, match="xq must have dtype"):
        kernels.adder2d_int(x.astype(np.float32), f)
    with pytest.raises(TypeError, match="same dtype"):
        kernels.adder2d_int(x, f.astype(np.int8))
    with pytest.raises(ValueError, match="fq must have shape"):
        kernels.adder2d_int(x, np.zeros((3, 5, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="pad_value must lie"):
        kernels.adder2d_int(x, f, padding=1, pad_value=256)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.adder2d_int(x, np.zeros((3, 2, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="overflows"):
        kernels.adder2d_int(np.zeros((1, 40000, 1, 1), np.uint16),
                            np.zeros((1, 40000, 1, 1), np.uint16))


@pytest.mark.skipif(not kernels.compiled(), reason="compiled integer kernels not built")
def test_raw_driver_checks_geometry():
    from addercore_ext import _adder_int

    xp = np.zeros((1, 5, 5, 4), np.uint8)
    w = np.zeros((2, 3, 3, 4), np.uint8)
    with pytest.raises(ValueError, match="y must have shape"):
        _adder_int.adder_int_nhwc(xp, w, np.zeros((1, 4, 3, 2), np.int32), 1, 1, 1)
    with pytest.raises(ValueError, match="filters must have shape"):
        _adder_int.adder_int_nhwc(xp, np.zeros((2, 3, 3, 5), np.uint8),
                                  np.zeros((1, 3, 3, 2), np.int32), 1, 1, 1)
    with pytest.raises(TypeError):
        _adder_int.adder_int_nhwc(xp, w.astype(np.uint16), np.zeros((1, 3, 3, 2), np.int32),
                                  1, 1, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _adder_int.adder_int_nhwc(xp, w, np.zeros((1, 3, 3, 2), np.int32), 1, 1, 0)


@pytest.mark.parametrize("out_dtype, vmax", [(np.uint8, 255), (np.uint8, 15), (np.uint16, 4095),
                                             (np.int32, 2**31 - 1)])
@pytest.mark.parametrize("nsrc", [1, 2, 3, 4])
def test_compiled_glue_equals_int64_formula(out_dtype, vmax, nsrc):
    # clip((Σ_k mult·src_k + bias + 2^(shift-1)) >> shift, 0, vmax) in numpy int64 (arithmetic
    # shift = floor, negative sums included) against the compiled glue (glue_int.h), which
    # clamps before a logical shift; 3 views with different shifts, 1 and 2 threads
    ext = kernels._ext()
    if ext is None:
        pytest.skip("compiled integer kernels not built (numpy backend)")
    rng = np.random.default_rng(nsrc * 7 + int(vmax % 97))
    P, C, V = 203, 24, 3
    # int32 accumulators and, as the identity residual is, uint8 / uint16 codes
    kinds = [(np.int32, -2**20, 2**20), (np.uint8, 0, 256), (np.uint16, 0, 2**16),
             (np.int32, -2**20, 2**20)]
    srcs = [rng.integers(lo, hi, (P, C)).astype(dt) for dt, lo, hi in kinds[:nsrc]]
    mult = rng.integers(-2**24, 2**24, (V, nsrc, C)).astype(np.int32)
    bias = rng.integers(-2**40, 2**40, (V, C)).astype(np.int64)
    shift = np.array([40, 1, 62], np.int32) if nsrc % 2 else np.array([44, 17, 62], np.int32)
    vmaxs = np.array([vmax, vmax // 3, vmax], np.int32)
    for v in range(V):
        acc = bias[v] + sum(mult[v, k].astype(np.int64) * s for k, s in enumerate(srcs))
        ref = np.clip((acc + (np.int64(1) << (int(shift[v]) - 1))) >> int(shift[v]), 0,
                      int(vmaxs[v]))
        if v < 2:  # negative sums (clipped) and positive ones occur
            assert 0 < (ref == 0).mean() < 1
        for threads in (1, 2):
            outs = [np.full((P, C), 77, out_dtype) for _ in range(V)]
            ext.glue_fixed(srcs, mult, bias, shift, vmaxs, outs, threads)
            assert np.array_equal(outs[v].astype(np.int64), ref), (v, threads)
    with pytest.raises(ValueError, match="does not fit"):
        ext.glue_fixed(srcs, mult, bias, shift, np.array([300, 1, 1], np.int32),
                       [np.empty((P, C), np.uint8)] * 3, 1)
