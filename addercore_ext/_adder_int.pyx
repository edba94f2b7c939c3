# cython: language_level=3
"""Parallel drivers of the integer ℓ1 adder kernels (adder_int.h): exact int32 Σ|xq - fq|.

Design
------
1. Operands are unsigned codes in channel-last order: a padded input batch (N, Hp, Wp, C) and
   filters (Cout, kh, kw, C), both uint8 (8-bit path, psadbw) or both uint16 (9..16 bits).
   Padding, signed-to-unsigned shifting and the NCHW <-> NHWC transposes are the caller's
   (``addercore.quant.kernels``); this module only sums.
2. Work is split between OpenMP threads with ``prange(schedule="static")`` over output rows
   (one unit = one (image, output row) pair).  Each output is summed by one thread, and integer
   sums are exact, so the result is the same for any thread count and equals the numpy
   reference (``addercore.quant.reference``) bit for bit.
3. No per-thread buffers: the kernels read the padded input in place ("implicit im2col",
   adder_int.h).  The 8-bit SIMD path reads the filters packed 8 taps x 4 or 8 filters per
   vector (adder_int.h design point 3); they are packed once per call, before the parallel
   loop, into one shared read-only buffer.
4. The drivers trust their arguments inside the nogil loop, so every size they index with is
   checked first (``_check``), including the int32 overflow bound K·(2^bits - 1) < 2^31.
"""
import numpy as np

from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t

cdef extern from "adder_int.h" nogil:
    const char *adder_int_simd_name()
    long adder_int_packed_size_u8(int Cout, int kh, long L)
    void adder_int_pack_u8(const uint8_t *w, int Cout, int kh, long L, uint8_t *wp)
    void adder_int_row_u8(const uint8_t *xp, int Wp, int C, int kh, int kw, int sh, int sw,
                          int ho, int Wo, const uint8_t *w, const uint8_t *wp, int Cout,
                          int32_t *y)
    void adder_int_row_u16(const uint16_t *xp, int Wp, int C, int kh, int kw, int sh, int sw,
                           int ho, int Wo, const uint16_t *w, int Cout, int32_t *y)


def simd_name():
    """Instruction set of the integer kernels: "avx512bw", "avx2" or "scalar"."""
    return adder_int_simd_name().decode()


cdef _check(tuple xshape, tuple wshape, tuple yshape, int sh, int sw, int num_threads,
            long vmax):
    cdef long N = xshape[0], Hp = xshape[1], Wp = xshape[2], C = xshape[3]
    cdef long Cout = wshape[0], kh = wshape[1], kw = wshape[2]
    if wshape[3] != C:
        raise ValueError(f"filters must have shape (Cout, kh, kw, {C}), got {wshape}")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or C < 1 or Cout < 1:
        raise ValueError(f"kernel, stride, channels must be >= 1: kernel ({kh}, {kw}), "
                         f"stride ({sh}, {sw}), C {C}, Cout {Cout}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if Hp < kh or Wp < kw:
        raise ValueError(f"padded input ({Hp}, {Wp}) smaller than the kernel ({kh}, {kw})")
    cdef long Ho = (Hp - kh) // sh + 1, Wo = (Wp - kw) // sw + 1
    if yshape != (N, Ho, Wo, Cout):
        raise ValueError(f"y must have shape {(N, Ho, Wo, Cout)}, got {yshape}")
    if kh * kw * C * vmax >= 2 ** 31:
        raise ValueError(f"K·(2^bits - 1) = {kh * kw * C} x {vmax} overflows int32")


def adder_int_nhwc(xp, w, y, int sh, int sw, int num_threads):
    """y[n, ho, wo, t] = Σ_{i,j,c} |xp[n, ho·sh + i, wo·sw + j, c] - w[t, i, j, c]| (int32).

    xp: (N, Hp, Wp, C) padded input, w: (Cout, kh, kw, C); both C-contiguous uint8 or both
    uint16. y: (N, Ho, Wo, Cout) int32, C-contiguous, overwritten. Raises ValueError on a
    geometry mismatch, TypeError on other dtypes.
    """
    if xp.dtype != w.dtype or xp.dtype.name not in ("uint8", "uint16"):
        raise TypeError(f"xp and w must both be uint8 or both uint16, got {xp.dtype}, {w.dtype}")
    if y.dtype.name != "int32":
        raise TypeError(f"y must be int32, got {y.dtype}")
    for name, a in (("xp", xp), ("w", w), ("y", y)):
        if a.ndim != 4 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous 4-d array, got shape {a.shape}")
    _check(xp.shape, w.shape, y.shape, sh, sw, num_threads,
           255 if xp.dtype.name == "uint8" else 65535)
    if xp.shape[0] == 0:
        return y
    if xp.dtype.name == "uint8":
        wp = np.empty(max(1, adder_int_packed_size_u8(w.shape[0], w.shape[1],
                                                      w.shape[2] * w.shape[3])), np.uint8)
        _run_u8(xp, w, wp, y, sh, sw, num_threads)
    else:
        _run_u16(xp, w, y, sh, sw, num_threads)
    return y


cdef void _run_u8(const uint8_t[:, :, :, ::1] xp, const uint8_t[:, :, :, ::1] w,
                  uint8_t[::1] wp, int32_t[:, :, :, ::1] y, int sh, int sw,
                  int num_threads) noexcept:
    cdef int N = xp.shape[0], Wp = xp.shape[2], C = xp.shape[3]
    cdef int Cout = w.shape[0], kh = w.shape[1], kw = w.shape[2]
    cdef int Ho = y.shape[1], Wo = y.shape[2]
    cdef long unit, units = <long>N * Ho
    cdef int n, ho
    with nogil:
        adder_int_pack_u8(&w[0, 0, 0, 0], Cout, kh, <long>kw * C, &wp[0])
        for unit in prange(units, schedule="static", num_threads=num_threads):
            n = <int>(unit // Ho)
            ho = <int>(unit % Ho)
            adder_int_row_u8(&xp[n, 0, 0, 0], Wp, C, kh, kw, sh, sw, ho, Wo, &w[0, 0, 0, 0],
                             &wp[0], Cout, &y[n, ho, 0, 0])


cdef void _run_u16(const uint16_t[:, :, :, ::1] xp, const uint16_t[:, :, :, ::1] w,
                   int32_t[:, :, :, ::1] y, int sh, int sw, int num_threads) noexcept:
    cdef int N = xp.shape[0], Wp = xp.shape[2], C = xp.shape[3]
    cdef int Cout = w.shape[0], kh = w.shape[1], kw = w.shape[2]
    cdef int Ho = y.shape[1], Wo = y.shape[2]
    cdef long unit, units = <long>N * Ho
    cdef int n, ho
    with nogil:
        for unit in prange(units, schedule="static", num_threads=num_threads):
            n = <int>(unit // Ho)
            ho = <int>(unit % Ho)
            adder_int_row_u16(&xp[n, 0, 0, 0], Wp, C, kh, kw, sh, sw, ho, Wo, &w[0, 0, 0, 0],
                              Cout, &y[n, ho, 0, 0])


cdef extern from "glue_int.h" nogil:
    void glue_rows(const void *const *src, const int *srckind, int K, long p0, long p1, int C,
                   const int32_t *mult, const int64_t *bias, int sh, int64_t vmax, void *out,
                   int outkind)

cdef enum:
    MAX_VIEWS = 16
    GLUE_CHUNK = 64  # positions per parallel work unit

_KIND = {"uint8": 1, "uint16": 2, "int32": 4}
_LIMIT = {"uint8": 255, "uint16": 65535, "int32": 2 ** 31 - 1}


def _bytes_of(a):
    """A flat uint8 view of a C-contiguous array (for its data pointer)."""
    return a.reshape(-1).view(np.uint8)


def glue_fixed(srcs, mult, bias, shift, vmax, outs, int num_threads):
    """Fixed-point glue (addercore.quant.model, glue_int.h): for every view v, position p,
    channel t, ``outs[v][p, t] = clip((Σ_k mult[v, k, t]·srcs[k][p, t] + bias[v, t]
    + 2^(shift[v]−1)) >> shift[v], 0, vmax[v])`` in int64 (arithmetic shift, i.e. floor), as
    numpy computes it, stored in the dtype of ``outs[v]``.

    srcs: 1..4 C-contiguous (P, C) arrays, int32 accumulators or uint8/uint16 codes;
    mult int32 (V, K, C); bias int64 (V, C); shift int32 (V,) in [1, 62]; vmax int32 (V,)
    that fits outs[v]'s dtype; outs: V C-contiguous (P, C) arrays of uint8, uint16 or int32,
    overwritten.  Returns outs.  ValueError/TypeError on anything else.
    """
    cdef int K = len(srcs)
    if not 1 <= K <= 4:
        raise ValueError(f"glue_fixed takes 1..4 sources, got {K}")
    P, C = srcs[0].shape
    V = mult.shape[0]
    for k, s in enumerate(srcs):
        if s.dtype.name not in _KIND or s.shape != (P, C) or not s.flags.c_contiguous:
            raise ValueError(f"srcs[{k}] must be a C-contiguous ({P}, {C}) int32, uint16 or "
                             f"uint8 array, got {s.dtype} {s.shape}")
    if mult.dtype.name != "int32" or bias.dtype.name != "int64" or shift.dtype.name != "int32" \
            or vmax.dtype.name != "int32":
        raise TypeError("glue_fixed: mult int32, bias int64, shift int32, vmax int32")
    if mult.shape != (V, K, C) or bias.shape != (V, C) or shift.shape != (V,) \
            or vmax.shape != (V,) or len(outs) != V:
        raise ValueError("glue_fixed: mult (V, K, C), bias (V, C), shift (V,), vmax (V,), "
                         "V outs do not match")
    if V > MAX_VIEWS:
        raise ValueError(f"glue_fixed takes at most {MAX_VIEWS} views, got {V}")
    if V and (shift.min() < 1 or shift.max() > 62):
        raise ValueError("shift must lie in [1, 62]")
    for v, o in enumerate(outs):
        if o.dtype.name not in _KIND or o.shape != (P, C) or not o.flags.c_contiguous:
            raise ValueError(f"outs[{v}] must be a C-contiguous ({P}, {C}) uint8, uint16 or "
                             f"int32 array, got {o.dtype} {o.shape}")
        if not 0 <= int(vmax[v]) <= _LIMIT[o.dtype.name]:
            raise ValueError(f"vmax[{v}] = {int(vmax[v])} does not fit outs[{v}] ({o.dtype})")
    if P == 0 or V == 0:
        return outs
    _glue([_bytes_of(s) for s in srcs], [_KIND[s.dtype.name] for s in srcs], mult, bias,
          shift, vmax, [_bytes_of(o) for o in outs], [_KIND[o.dtype.name] for o in outs],
          <long>P, <int>C, num_threads)
    return outs


cdef void _glue(list src_bytes, list src_kinds, const int32_t[:, :, ::1] mult,
                const int64_t[:, ::1] bias, const int32_t[::1] shift, const int32_t[::1] vmax,
                list out_bytes, list out_kinds, long P, int C, int num_threads):
    cdef const void *sptr[4]
    cdef int skind[4]
    cdef void *optr[MAX_VIEWS]
    cdef int okind[MAX_VIEWS]
    cdef const uint8_t[::1] sb
    cdef uint8_t[::1] ob
    cdef int K = len(src_bytes), V = mult.shape[0], v, k
    cdef long chunk, nchunks = (P + GLUE_CHUNK - 1) // GLUE_CHUNK, p0, p1
    for k in range(K):
        sb = src_bytes[k]
        sptr[k] = <const void *>&sb[0]
        skind[k] = src_kinds[k]
    for v in range(V):
        ob = out_bytes[v]
        optr[v] = <void *>&ob[0]
        okind[v] = out_kinds[v]
    with nogil:
        for chunk in prange(nchunks, schedule="static", num_threads=num_threads):
            p0 = chunk * GLUE_CHUNK
            p1 = p0 + GLUE_CHUNK if p0 + GLUE_CHUNK < P else P
            for v in range(V):
                glue_rows(sptr, skind, K, p0, p1, C, &mult[v, 0, 0], &bias[v, 0], shift[v],
                          vmax[v], optr[v], okind[v])
