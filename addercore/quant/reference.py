"""Numpy integer reference of the ℓ1 adder layer on quantised codes (spec §6).

``adder2d_int(xq, fq)`` returns the exact int32 sums ``S = Σ_{c,i,j} |Xq_patch − Fq|``: the
positive distance, not negated. With a shared scale ``r`` (activations and filters,
``x = r·xq``, ``f = r·fq``) the float layer output is ``y = −r·S`` (docs/method.md §11.1).

Operands are integer codes of one dtype: uint8/int8 for ≤ 8-bit codes, uint16/int16 for 9..16
bits. Every difference and sum is formed in int32/int64 and is exact, so the tap order does
not matter and the compiled kernels (``addercore_ext._adder_int``) must equal this function
bit for bit.

Padding: a padded tap reads ``pad_value``, the code of the real number 0 (the quantised zero,
i.e. the zero point). With the unsigned codes of :mod:`addercore.quant` (zero point 0) it is 0.
"""
import numpy as np

from ..ops._validate import as_pair

__all__ = ["INT_DTYPES", "check_codes", "adder2d_int", "code_range"]

#: operand dtypes: ≤ 8-bit codes in one byte, 9..16-bit codes in two
INT_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16))


def code_range(dtype):
    """(min, max) of an operand dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def check_codes(xq, fq, stride, padding, pad_value, layout="nchw"):
    """Validate the operands of :func:`adder2d_int`; returns
    ``(xq, fq, stride, padding, pad_value, (Ho, Wo))`` with C-contiguous arrays.

    Raises TypeError (not an ndarray, dtype not one of uint8/int8/uint16/int16, dtypes differ,
    pad_value not an int) and ValueError (ranks, channel mismatch, kernel larger than the padded
    input, pad_value outside the dtype's range, K·(range) overflowing int32).
    ``layout="nhwc"``: xq is (N, H, W, Cin) and fq (Cout, kh, kw, Cin); the arrays are returned
    C-contiguous in that layout (no transposing copy).
    """
    nhwc = layout == "nhwc"
    hints = ("(N, H, W, Cin)", "(Cout, kh, kw, Cin)") if nhwc else ("(N, Cin, H, W)",
                                                                    "(Cout, Cin, kh, kw)")
    for name, a, hint in (("xq", xq, hints[0]), ("fq", fq, hints[1])):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype.newbyteorder("=") not in INT_DTYPES:
            raise TypeError(f"{name} must have dtype uint8, int8, uint16 or int16, got {a.dtype}")
        if a.ndim != 4:
            raise ValueError(f"{name} must have 4 dimensions {hint}, got shape {a.shape}")
    if xq.dtype.newbyteorder("=") != fq.dtype.newbyteorder("="):
        raise TypeError(f"xq and fq must have the same dtype, got {xq.dtype} and {fq.dtype}")
    dtype = xq.dtype.newbyteorder("=")
    xq = np.ascontiguousarray(xq, dtype=dtype)
    fq = np.ascontiguousarray(fq, dtype=dtype)
    # geometry in NCHW terms, whatever the layout
    xs = (xq.shape[0], xq.shape[3], xq.shape[1], xq.shape[2]) if nhwc else xq.shape
    fs = (fq.shape[0], fq.shape[3], fq.shape[1], fq.shape[2]) if nhwc else fq.shape
    if xs[1] != fs[1]:
        want = f"(Cout, kh, kw, {xs[1]})" if nhwc else f"(Cout, {xs[1]}, kh, kw)"
        raise ValueError(f"fq must have shape {want} to match xq {xq.shape}, got {fq.shape}")
    if fs[0] < 1 or fs[2] < 1 or fs[3] < 1 or xs[1] < 1:
        raise ValueError(f"fq must have Cout, Cin, kh, kw >= 1, got shape {fq.shape}")
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    if isinstance(pad_value, (bool, np.bool_)) or not isinstance(pad_value, (int, np.integer)):
        raise TypeError(f"pad_value must be an int, got {pad_value!r}")
    lo, hi = code_range(dtype)
    if not lo <= int(pad_value) <= hi:
        raise ValueError(f"pad_value must lie in [{lo}, {hi}] for {dtype}, got {pad_value}")
    kh, kw = fs[2:]
    hp, wp = xs[2] + 2 * padding[0], xs[3] + 2 * padding[1]
    if hp < kh or wp < kw:
        raise ValueError(f"kernel ({kh}, {kw}) larger than the padded input ({hp}, {wp})")
    k = fs[1] * kh * kw
    if k * (hi - lo) >= 2**31:
        raise ValueError(f"K·(code range) = {k}·{hi - lo} overflows the int32 accumulator")
    out_hw = ((hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1)
    return xq, fq, stride, padding, int(pad_value), out_hw


def adder2d_int(xq, fq, stride=1, padding=0, pad_value=0):
    """Exact ``S[n, t, h, w] = Σ_{c,i,j} |Xp[n, c, h·sh + i, w·sw + j] − fq[t, c, i, j]|``.

    xq: (N, Cin, H, W) and fq: (Cout, Cin, kh, kw) integer codes of one dtype (uint8, int8,
    uint16 or int16); ``Xp`` is xq padded with ``pad_value`` (the code of 0).
    Returns int32 (N, Cout, Ho, Wo). Errors: see :func:`check_codes`.
    """
    xq, fq, stride, padding, pad_value, (ho, wo) = check_codes(xq, fq, stride, padding,
                                                               pad_value)
    return _adder2d_int(xq, fq, stride, padding, pad_value, (ho, wo))


def _adder2d_int(xq, fq, stride, padding, pad_value, out_hw):
    n, cin = xq.shape[:2]
    cout, _, kh, kw = fq.shape
    ho, wo = out_hw
    sh, sw = stride
    ph, pw = padding
    xp = np.full((n, cin, xq.shape[2] + 2 * ph, xq.shape[3] + 2 * pw), pad_value, np.int32)
    xp[:, :, ph:ph + xq.shape[2], pw:pw + xq.shape[3]] = xq
    f32 = fq.astype(np.int32)
    acc = np.zeros((n, cout, ho, wo), dtype=np.int32)
    for c in range(cin):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, c, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                acc += np.abs(patch[:, None] - f32[None, :, c, i, j, None, None])
    return acc
