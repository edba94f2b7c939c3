"""Integer ℓ1 adder forward: the compiled SAD kernels (``addercore_ext._adder_int``) when the
Cython backend is active, the numpy reference (:mod:`.reference`) otherwise. Both return the
same int32 sums bit for bit, for any thread count.

Two entry points:

* :func:`adder2d_int` — NCHW operands, as the reference and the golden cases use them.
* :func:`adder2d_int_nhwc` — channel-last operands, what :class:`~addercore.quant.model.QuantizedResNet`
  runs on (no transposes between layers; the kernel reads the padded input in place).

Signed codes (int8/int16) are shifted into the unsigned range by flipping the top bit of both
operands (x + 128 mod 256): ``|x − f|`` is unchanged. The padded taps read ``pad_value``.
"""
import numpy as np

from .. import _backend
from ..threads import get_num_threads
from . import reference

__all__ = ["adder2d_int", "adder2d_int_nhwc", "compiled", "simd_name"]

_EXT = None


def _ext():
    """The compiled module, or None (numpy backend, or the extension not built)."""
    global _EXT
    if _backend.backend() != "cython":
        return None
    if _EXT is None:
        try:
            from addercore_ext import _adder_int
        except ImportError:
            _EXT = False
        else:
            _EXT = _adder_int
    return _EXT or None


def compiled():
    """True when the compiled integer kernels are in use."""
    return _ext() is not None


def simd_name():
    """"avx512bw", "avx2", "scalar" (compiled) or "numpy" (reference)."""
    ext = _ext()
    return ext.simd_name() if ext is not None else "numpy"


def _unsigned(a):
    """Unsigned view of the codes: int8 -> uint8 with the top bit flipped (+128 mod 256)."""
    if a.dtype == np.int8:
        return a.view(np.uint8) ^ np.uint8(0x80)
    if a.dtype == np.int16:
        return a.view(np.uint16) ^ np.uint16(0x8000)
    return a


def _pad_nhwc(x, padding, pad_value):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(x)
    n, h, w, c = x.shape
    xp = np.empty((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    xp[:, :ph] = pad_value
    xp[:, h + ph:] = pad_value
    xp[:, ph:h + ph, :pw] = pad_value
    xp[:, ph:h + ph, w + pw:] = pad_value
    xp[:, ph:h + ph, pw:w + pw] = x
    return xp


def _run_nhwc(ext, x, w, stride, padding, pad_value, out_hw):
    """x (N, H, W, C), w (Cout, kh, kw, C) of one validated dtype -> int32 (N, Ho, Wo, Cout)."""
    dtype = x.dtype
    if dtype == np.int8:
        pad_value = (pad_value + 0x80) & 0xFF  # the same top-bit flip as the operands
    elif dtype == np.int16:
        pad_value = (pad_value + 0x8000) & 0xFFFF
    xu, wu = _unsigned(x), np.ascontiguousarray(_unsigned(w))
    xp = _pad_nhwc(xu, padding, pad_value)
    y = np.empty((x.shape[0],) + tuple(out_hw) + (w.shape[0],), dtype=np.int32)
    return ext.adder_int_nhwc(xp, wu, y, stride[0], stride[1], get_num_threads())


def adder2d_int(xq, fq, stride=1, padding=0, pad_value=0):
    """Exact int32 ``S = Σ |Xq_patch − Fq|`` (NCHW): see :func:`.reference.adder2d_int`.

    xq (N, Cin, H, W), fq (Cout, Cin, kh, kw): integer codes of one dtype (uint8, int8,
    uint16, int16); returns int32 (N, Cout, Ho, Wo). Errors as the reference's.
    """
    xq, fq, stride, padding, pad_value, out_hw = reference.check_codes(xq, fq, stride, padding,
                                                                       pad_value)
    ext = _ext()
    if ext is None:
        return reference._adder2d_int(xq, fq, stride, padding, pad_value, out_hw)
    y = _run_nhwc(ext, xq.transpose(0, 2, 3, 1), fq.transpose(0, 2, 3, 1), stride, padding,
                  pad_value, out_hw)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def adder2d_int_nhwc(xq, fq, stride=1, padding=0, pad_value=0):
    """Channel-last :func:`adder2d_int`: xq (N, H, W, Cin), fq (Cout, kh, kw, Cin) codes of one
    integer dtype -> int32 (N, Ho, Wo, Cout)."""
    xq, fq, stride, padding, pad_value, out_hw = reference.check_codes(
        xq, fq, stride, padding, pad_value, layout="nhwc")
    ext = _ext()
    if ext is None:
        y = reference._adder2d_int(xq.transpose(0, 3, 1, 2), fq.transpose(0, 3, 1, 2), stride,
                                   padding, pad_value, out_hw)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    return _run_nhwc(ext, xq, fq, stride, padding, pad_value, out_hw)
