/* Blocked matrix transposes for the backward's per-call filter passes (C, header-only).
 *
 * Design
 * ------
 * 1. What they are for: the backward transposes the filters (Cout, K) -> (K, Cout) once per
 *    call, and its filter-gradient partial back (K, Cout) -> (Cout, K) once per call
 *    (_adder.pyx: transpose_filters, reduce_slots).  Both are passes over Cout·K elements
 *    whatever the batch, so at small calls (an output width of 1-2, a batch of 1-4 over 7×7
 *    maps) they weigh as much as the arithmetic (issue 14 §1: 2-4 ns per element through a
 *    scalar 16×16 buffer, 10× a copy).
 * 2. How: 8×8 (float32) or 4×4 (float64) blocks transposed in registers (unpack, shuffle,
 *    128-bit lane permute: AVX, so any AVX2 or AVX-512 build), source rows read and
 *    destination rows written as whole vectors.  Blocks run destination row band by band
 *    (columns of the source outermost), so each destination cache line is written whole
 *    before the next band; the callers pass chunks of at most 64 source rows, so the source
 *    lines a band reads stay in L1 until the next band reads their next vector.
 * 3. Edges (fewer than 8/4 rows or columns left) and non-AVX builds: a scalar loop.  A
 *    transpose only moves values, so every path gives the same bits.
 */
#ifndef ADDERCORE_TRANSPOSE_H
#define ADDERCORE_TRANSPOSE_H

#if defined(__AVX__) && !defined(ADDERCORE_NO_SIMD)
#include <immintrin.h>

/* dst[c, r] = src[r, c] for an 8×8 float block (row strides lds, ldd elements) */
static inline void transpose8x8_f32(const float *src, long lds, float *dst, long ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    /* pairs of rows interleaved, then quadruples, then the 128-bit halves exchanged */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* dst[c, r] = src[r, c] for a 4×4 double block */
static inline void transpose4x4_f64(const double *src, long lds, double *dst, long ldd)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#define ADDERCORE_HAVE_TRANSPOSE_BLOCKS 1
#endif

/* dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols: the blocks of design point 2 (B×B,
 * BLOCK_FN), then the rows and columns past the last whole block element by element; without
 * AVX only the element loop runs (rb = cb = 0). */
#ifdef ADDERCORE_HAVE_TRANSPOSE_BLOCKS
#define ADDERCORE_BLOCKED_PART(B, BLOCK_FN)                                                    \
    rb = rows - rows % B;                                                                      \
    cb = cols - cols % B;                                                                      \
    for (int c0 = 0; c0 < cb; c0 += B)                                                         \
        for (int r0 = 0; r0 < rb; r0 += B)                                                     \
            BLOCK_FN(src + (long)r0 * lds + c0, lds, dst + (long)c0 * ldd + r0, ldd);
#else
#define ADDERCORE_BLOCKED_PART(B, BLOCK_FN)
#endif
#define ADDERCORE_DEFINE_TRANSPOSE(T, SUF, B, BLOCK_FN)                                          \
    static void transpose_##SUF(const T *src, long lds, int rows, int cols, T *dst, long ldd) \
    {                                                                                          \
        int rb = 0, cb = 0;                                                                    \
        ADDERCORE_BLOCKED_PART(B, BLOCK_FN)                                                    \
        for (int c = 0; c < cb; c++) /* rows past the last whole block */                      \
            for (int r = rb; r < rows; r++) dst[(long)c * ldd + r] = src[(long)r * lds + c];   \
        for (int c = cb; c < cols; c++) /* columns past the last whole block */                \
            for (int r = 0; r < rows; r++) dst[(long)c * ldd + r] = src[(long)r * lds + c];    \
    }

ADDERCORE_DEFINE_TRANSPOSE(float, f32, 8, transpose8x8_f32)
ADDERCORE_DEFINE_TRANSPOSE(double, f64, 4, transpose4x4_f64)
#undef ADDERCORE_DEFINE_TRANSPOSE
#undef ADDERCORE_BLOCKED_PART

#endif /* ADDERCORE_TRANSPOSE_H */
