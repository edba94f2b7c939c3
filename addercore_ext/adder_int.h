/* Integer ℓ1 adder kernels: exact int32 sums of |xq - fq| (spec §6, integer inference).
 *
 * Design
 * ------
 * 1. Layout: channel-last.  The input is one zero-point-padded image in NHWC order (Hp, Wp, C)
 *    of unsigned codes, the filters are (Cout, kh, kw, C).  For an output position and a filter
 *    row i, the kw·C operands are contiguous in both, so a position needs kh contiguous runs of
 *    L = kw·C bytes and no patch packing at all ("implicit im2col").  Integer sums are exact in
 *    any order, so the (i, j, c) tap order gives the same result as the canonical (c, i, j).
 * 2. Unsigned operands only.  Signed codes are shifted into the unsigned range by the caller
 *    (x ^ 0x80 for int8, x ^ 0x8000 for int16, i.e. + 128 / + 32768 modulo the width): adding
 *    one constant to both operands leaves |x - f| unchanged.
 * 3. 8-bit path: psadbw.  _mm256_sad_epu8 (AVX2) / _mm512_sad_epu8 (AVX-512BW) sums the absolute
 *    differences of 8 bytes into one 64-bit lane: 32 (64) differences per instruction.  A block
 *    of PB positions x TB filters keeps PB·TB vector accumulators, so each loaded x run is
 *    reused TB times and each filter run PB times.  Lane sums are at most 8·255 per step and a
 *    whole output at most K·255 < 2^31 (checked by the driver), so the 64-bit lanes and the
 *    final int32 never overflow.  Tails (L not a multiple of the vector width) use masked loads
 *    (AVX-512BW), a 16-byte psadbw, then scalar bytes (AVX2).
 * 4. 16-bit path (9..16-bit codes): |x - f| = max(x, f) - min(x, f) on unsigned 16-bit lanes,
 *    then the two halves of each 32-bit lane are added into int32 accumulators.
 * 5. Scalar fallback: the same blocking in plain C (a portable build, ADDERCORE_MARCH=, or
 *    ADDERCORE_NO_SIMD).  All paths compute the same integers, bit for bit.
 * 6. These functions do no allocation and no bounds checks: the Cython driver checks the
 *    geometry before its nogil loop.
 */
#ifndef ADDERCORE_ADDER_INT_H
#define ADDERCORE_ADDER_INT_H

#include <stdint.h>
#include <stdlib.h>

#if !defined(ADDERCORE_NO_SIMD) && defined(ADDERCORE_AVX512) && defined(__AVX512BW__)
#define ADDER_INT_AVX512 1
#include <immintrin.h>
#elif !defined(ADDERCORE_NO_SIMD) && defined(__AVX2__)
#define ADDER_INT_AVX2 1
#include <immintrin.h>
#endif

static inline const char *adder_int_simd_name(void)
{
#if defined(ADDER_INT_AVX512)
    return "avx512bw";
#elif defined(ADDER_INT_AVX2)
    return "avx2";
#else
    return "scalar";
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* scalar building blocks                                                                    */
/* ---------------------------------------------------------------------------------------- */
static inline int32_t sad_run_u8_scalar(const uint8_t *a, const uint8_t *b, long n)
{
    int32_t s = 0;
    for (long k = 0; k < n; k++) {
        int d = (int)a[k] - (int)b[k];
        s += d < 0 ? -d : d;
    }
    return s;
}

static inline int32_t sad_run_u16_scalar(const uint16_t *a, const uint16_t *b, long n)
{
    int32_t s = 0;
    for (long k = 0; k < n; k++) {
        int32_t d = (int32_t)a[k] - (int32_t)b[k];
        s += d < 0 ? -d : d;
    }
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* 8-bit block: PB positions x TB filters                                                    */
/* ---------------------------------------------------------------------------------------- */
#if defined(ADDER_INT_AVX512)
#define INT_PB 4 /* 16 zmm accumulators of the 32 registers */
#else
#define INT_PB 2 /* 8 ymm accumulators of the 16 registers */
#endif
#define INT_TB 4

/* y[p*ldy + t] = Σ_{i<kh} SAD(x + p*pstep + i*rs, w + t*K + i*L, L) for p < np, t < nt. */
static void sad_block_u8(const uint8_t *x, long pstep, long rs, int np, const uint8_t *w,
                         int nt, int kh, long L, int32_t *y, long ldy)
{
    const long K = (long)kh * L;
#if defined(ADDER_INT_AVX512)
    if (np == INT_PB && nt == INT_TB) {
        __m512i acc[INT_PB][INT_TB];
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++) acc[p][t] = _mm512_setzero_si512();
        for (int i = 0; i < kh; i++) {
            const uint8_t *xr = x + (long)i * rs;
            const uint8_t *wr = w + (long)i * L;
            for (long b = 0; b < L; b += 64) {
                long left = L - b;
                __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
                __m512i xv[INT_PB];
                for (int p = 0; p < INT_PB; p++)
                    xv[p] = _mm512_maskz_loadu_epi8(m, xr + p * pstep + b);
                for (int t = 0; t < INT_TB; t++) {
                    __m512i wv = _mm512_maskz_loadu_epi8(m, wr + t * K + b);
                    for (int p = 0; p < INT_PB; p++)
                        acc[p][t] = _mm512_add_epi64(acc[p][t], _mm512_sad_epu8(xv[p], wv));
                }
            }
        }
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++)
                y[p * ldy + t] = (int32_t)_mm512_reduce_add_epi64(acc[p][t]);
        return;
    }
#elif defined(ADDER_INT_AVX2)
    if (np == INT_PB && nt == INT_TB) {
        /* 2 x 4 accumulators + 2 x runs + 1 filter run: 11 of the 16 ymm registers */
        __m256i acc[INT_PB][INT_TB];
        int32_t tail[INT_PB][INT_TB];
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++) {
                acc[p][t] = _mm256_setzero_si256();
                tail[p][t] = 0;
            }
        const long L32 = L & ~31L, L16 = L & ~15L;
        for (int i = 0; i < kh; i++) {
            const uint8_t *xr = x + (long)i * rs;
            const uint8_t *wr = w + (long)i * L;
            for (long b = 0; b < L32; b += 32) {
                __m256i xv[INT_PB];
                for (int p = 0; p < INT_PB; p++)
                    xv[p] = _mm256_loadu_si256((const __m256i *)(xr + p * pstep + b));
                for (int t = 0; t < INT_TB; t++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + t * K + b));
                    for (int p = 0; p < INT_PB; p++)
                        acc[p][t] = _mm256_add_epi64(acc[p][t], _mm256_sad_epu8(xv[p], wv));
                }
            }
            if (L16 > L32) { /* one 16-byte step: psadbw on xmm, upper half zero */
                __m128i xv[INT_PB];
                for (int p = 0; p < INT_PB; p++)
                    xv[p] = _mm_loadu_si128((const __m128i *)(xr + p * pstep + L32));
                for (int t = 0; t < INT_TB; t++) {
                    __m128i wv = _mm_loadu_si128((const __m128i *)(wr + t * K + L32));
                    for (int p = 0; p < INT_PB; p++)
                        acc[p][t] = _mm256_add_epi64(
                            acc[p][t], _mm256_set_m128i(_mm_setzero_si128(), _mm_sad_epu8(xv[p], wv)));
                }
            }
            if (L > L16)
                for (int p = 0; p < INT_PB; p++)
                    for (int t = 0; t < INT_TB; t++)
                        tail[p][t] += sad_run_u8_scalar(xr + p * pstep + L16, wr + t * K + L16,
                                                        L - L16);
        }
        /* The four 64-bit lanes of each accumulator hold values < 2^31: pack two accumulators
         * per vector (low/high 32 bits), interleave, and add, giving filters t..t+3 of one
         * position as four int32 in one register. */
        for (int p = 0; p < INT_PB; p++) {
            __m256i b01 = _mm256_or_si256(acc[p][0], _mm256_slli_epi64(acc[p][1], 32));
            __m256i b23 = _mm256_or_si256(acc[p][2], _mm256_slli_epi64(acc[p][3], 32));
            __m256i c = _mm256_add_epi32(_mm256_unpacklo_epi64(b01, b23),
                                         _mm256_unpackhi_epi64(b01, b23));
            __m128i d = _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
            d = _mm_add_epi32(d, _mm_loadu_si128((const __m128i *)tail[p]));
            _mm_storeu_si128((__m128i *)(y + p * ldy), d);
        }
        return;
    }
#endif
    /* scalar (and the partial blocks at the edges of the SIMD paths) */
    for (int p = 0; p < np; p++)
        for (int t = 0; t < nt; t++) {
            int32_t s = 0;
            for (int i = 0; i < kh; i++)
                s += sad_run_u8_scalar(x + p * pstep + (long)i * rs, w + t * K + (long)i * L, L);
            y[p * ldy + t] = s;
        }
}

/* ---------------------------------------------------------------------------------------- */
/* 16-bit block                                                                              */
/* ---------------------------------------------------------------------------------------- */
#if defined(ADDER_INT_AVX512) || defined(ADDER_INT_AVX2)
#if defined(ADDER_INT_AVX512)
/* |a - b| of 32 unsigned 16-bit lanes, widened and added pairwise into 16 int32 lanes */
static inline __m512i absdiff_pairs_u16_512(__m512i a, __m512i b)
{
    __m512i d = _mm512_sub_epi16(_mm512_max_epu16(a, b), _mm512_min_epu16(a, b));
    return _mm512_add_epi32(_mm512_and_si512(d, _mm512_set1_epi32(0xffff)),
                            _mm512_srli_epi32(d, 16));
}
#else
static inline __m256i absdiff_pairs_u16_256(__m256i a, __m256i b)
{
    __m256i d = _mm256_sub_epi16(_mm256_max_epu16(a, b), _mm256_min_epu16(a, b));
    return _mm256_add_epi32(_mm256_and_si256(d, _mm256_set1_epi32(0xffff)),
                            _mm256_srli_epi32(d, 16));
}
#endif
#endif

/* as sad_block_u8 on unsigned 16-bit codes; pstep, rs, L in elements */
static void sad_block_u16(const uint16_t *x, long pstep, long rs, int np, const uint16_t *w,
                          int nt, int kh, long L, int32_t *y, long ldy)
{
    const long K = (long)kh * L;
#if defined(ADDER_INT_AVX512)
    if (np == INT_PB && nt == INT_TB) {
        __m512i acc[INT_PB][INT_TB];
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++) acc[p][t] = _mm512_setzero_si512();
        for (int i = 0; i < kh; i++) {
            const uint16_t *xr = x + (long)i * rs;
            const uint16_t *wr = w + (long)i * L;
            for (long b = 0; b < L; b += 32) {
                long left = L - b;
                __mmask32 m = left >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << left) - 1);
                __m512i xv[INT_PB];
                for (int p = 0; p < INT_PB; p++)
                    xv[p] = _mm512_maskz_loadu_epi16(m, xr + p * pstep + b);
                for (int t = 0; t < INT_TB; t++) {
                    __m512i wv = _mm512_maskz_loadu_epi16(m, wr + t * K + b);
                    for (int p = 0; p < INT_PB; p++)
                        acc[p][t] = _mm512_add_epi32(acc[p][t], absdiff_pairs_u16_512(xv[p], wv));
                }
            }
        }
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++)
                y[p * ldy + t] = _mm512_reduce_add_epi32(acc[p][t]);
        return;
    }
#elif defined(ADDER_INT_AVX2)
    if (np == INT_PB && nt == INT_TB) {
        __m256i acc[INT_PB][INT_TB];
        int32_t tail[INT_PB][INT_TB];
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++) {
                acc[p][t] = _mm256_setzero_si256();
                tail[p][t] = 0;
            }
        const long L16 = L & ~15L;
        for (int i = 0; i < kh; i++) {
            const uint16_t *xr = x + (long)i * rs;
            const uint16_t *wr = w + (long)i * L;
            for (long b = 0; b < L16; b += 16) {
                __m256i xv[INT_PB];
                for (int p = 0; p < INT_PB; p++)
                    xv[p] = _mm256_loadu_si256((const __m256i *)(xr + p * pstep + b));
                for (int t = 0; t < INT_TB; t++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(wr + t * K + b));
                    for (int p = 0; p < INT_PB; p++)
                        acc[p][t] = _mm256_add_epi32(acc[p][t], absdiff_pairs_u16_256(xv[p], wv));
                }
            }
            if (L > L16)
                for (int p = 0; p < INT_PB; p++)
                    for (int t = 0; t < INT_TB; t++)
                        tail[p][t] += sad_run_u16_scalar(xr + p * pstep + L16, wr + t * K + L16,
                                                         L - L16);
        }
        for (int p = 0; p < INT_PB; p++)
            for (int t = 0; t < INT_TB; t++) {
                __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc[p][t]),
                                          _mm256_extracti128_si256(acc[p][t], 1));
                s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
                s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
                y[p * ldy + t] = _mm_cvtsi128_si32(s) + tail[p][t];
            }
        return;
    }
#endif
    for (int p = 0; p < np; p++)
        for (int t = 0; t < nt; t++) {
            int32_t s = 0;
            for (int i = 0; i < kh; i++)
                s += sad_run_u16_scalar(x + p * pstep + (long)i * rs, w + t * K + (long)i * L, L);
            y[p * ldy + t] = s;
        }
}

/* ---------------------------------------------------------------------------------------- */
/* one output row of one image                                                               */
/* ---------------------------------------------------------------------------------------- */
/* xp: padded image (Hp, Wp, C); w: (Cout, kh, kw, C); y: output row (Wo, Cout).
 * Output row ho reads padded rows ho*sh .. ho*sh + kh - 1.  Blocks of INT_PB positions x
 * INT_TB filters, then the edges. */
static void adder_int_row_u8(const uint8_t *xp, int Wp, int C, int kh, int kw, int sh, int sw,
                             int ho, int Wo, const uint8_t *w, int Cout, int32_t *y)
{
    const long rs = (long)Wp * C, L = (long)kw * C, pstep = (long)sw * C, K = (long)kh * L;
    const uint8_t *x0 = xp + (long)ho * sh * rs;
    for (int p = 0; p < Wo; p += INT_PB) {
        int np = Wo - p < INT_PB ? Wo - p : INT_PB;
        for (int t = 0; t < Cout; t += INT_TB) {
            int nt = Cout - t < INT_TB ? Cout - t : INT_TB;
            sad_block_u8(x0 + p * pstep, pstep, rs, np, w + t * K, nt, kh, L, y + (long)p * Cout + t,
                         Cout);
        }
    }
}

static void adder_int_row_u16(const uint16_t *xp, int Wp, int C, int kh, int kw, int sh, int sw,
                              int ho, int Wo, const uint16_t *w, int Cout, int32_t *y)
{
    const long rs = (long)Wp * C, L = (long)kw * C, pstep = (long)sw * C, K = (long)kh * L;
    const uint16_t *x0 = xp + (long)ho * sh * rs;
    for (int p = 0; p < Wo; p += INT_PB) {
        int np = Wo - p < INT_PB ? Wo - p : INT_PB;
        for (int t = 0; t < Cout; t += INT_TB) {
            int nt = Cout - t < INT_TB ? Cout - t : INT_TB;
            sad_block_u16(x0 + p * pstep, pstep, rs, np, w + t * K, nt, kh, L,
                          y + (long)p * Cout + t, Cout);
        }
    }
}

#endif /* ADDERCORE_ADDER_INT_H */
