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
 * 3. 8-bit SIMD path: psadbw with the filters interleaved.  _mm256_sad_epu8 (AVX2) /
 *    _mm512_sad_epu8 (AVX-512BW, used wherever the target CPU has it) sums the absolute
 *    differences of 8 bytes into one 64-bit lane.
 *    The filters are packed once per call (adder_int_pack_u8) so that one vector holds the same
 *    8 taps of TV filters (TV = 4 for ymm, 8 for zmm; vectors in pairs over 2·TV filters,
 *    interleaved even/odd so that two accumulators blend into 2·TV int32 in filter order): wp[o][g][tt][8], o the filter
 *    group, g the 8-tap group (row i, bytes 8j..8j+7 of its run of L bytes; the last group of a
 *    row is zero-padded).  The input is not packed: the 8 bytes of a position are broadcast to
 *    every lane (vpbroadcastq from memory is a load-port µop).  Each psadbw then yields partial
 *    sums of TV *different* filters, one per lane, so accumulating over the groups needs only
 *    vertical 64-bit adds -- no horizontal reduction per output, which is what made short
 *    filters (1x1 layers, K = 16) and rows of 48 bytes slow in a layout with one output per
 *    vector.  At the end two vectors blend into 2·TV int32 outputs, consecutive in the
 *    channel-last y.  A block of PB positions x OB filter groups keeps PB·OB accumulators, so each broadcast
 *    is reused OB times and each filter vector PB times.  A partial tap group (L not a multiple
 *    of 8) is read with a bounded copy: its padding bytes are 0 in both operands (|0 - 0| = 0)
 *    and nothing past the input is read.  Lane sums are at most 8·255 per group and a whole
 *    output at most K·255 < 2^31 (checked by the driver).
 * 4. 16-bit path (9..16-bit codes): |x - f| = max(x, f) - min(x, f) on unsigned 16-bit lanes,
 *    then the two halves of each 32-bit lane are added into int32 accumulators.
 * 5. Scalar fallback: plain C over the unpacked filters (a portable build, ADDERCORE_MARCH=,
 *    or ADDERCORE_NO_SIMD).  All paths compute the same integers, bit for bit.
 * 6. These functions do no allocation and no bounds checks: the Cython driver checks the
 *    geometry before its nogil loop.
 */
#ifndef ADDERCORE_ADDER_INT_H
#define ADDERCORE_ADDER_INT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* AVX-512BW whenever the target has it (unlike the float kernels, where 512-bit is opt-in:
 * here it is 1.5-2.5x faster than AVX2); ADDERCORE_NO_AVX512 (ADDERCORE_AVX512=0) forces AVX2. */
#if !defined(ADDERCORE_NO_SIMD) && !defined(ADDERCORE_NO_AVX512) && defined(__AVX512F__) && \
    defined(__AVX512BW__)
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
/* 8-bit path (design point 3)                                                              */
/* ---------------------------------------------------------------------------------------- */
#if defined(ADDER_INT_AVX512)
#define INT_PB 4 /* 16 zmm accumulators of the 32 registers (16-bit path) */
#else
#define INT_PB 2 /* 8 ymm accumulators of the 16 registers (16-bit path) */
#endif
#define INT_TB 4

#if defined(ADDER_INT_AVX512) || defined(ADDER_INT_AVX2)
#if defined(ADDER_INT_AVX512)
typedef __m512i sadv;
#define SADV_TV 8 /* filters per vector */
static inline sadv sadv_zero(void) { return _mm512_setzero_si512(); }
static inline sadv sadv_bcast(uint64_t v) { return _mm512_set1_epi64((long long)v); }
static inline sadv sadv_load(const uint8_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline sadv sadv_acc(sadv acc, sadv x, sadv w)
{
    return _mm512_add_epi64(acc, _mm512_sad_epu8(x, w));
}
/* Two accumulators whose 64-bit lanes hold the even (a) and odd (b) filters of a pair group,
 * each value < 2^31: b's values shifted into the high halves and blended with a's low halves
 * give the 2·TV int32 outputs in filter order, with no cross-lane shuffle.  n <= 2·TV stored. */
static inline void sadv_store_pair(int32_t *y, sadv a, sadv b, int n)
{
    __m512i v = _mm512_mask_blend_epi32((__mmask16)0xAAAA, a, _mm512_slli_epi64(b, 32));
    if (n == 2 * SADV_TV) {
        _mm512_storeu_si512((void *)y, v);
    } else {
        int32_t tmp[2 * SADV_TV];
        _mm512_storeu_si512((void *)tmp, v);
        memcpy(y, tmp, (size_t)n * sizeof(int32_t));
    }
}
#else
typedef __m256i sadv;
#define SADV_TV 4
static inline sadv sadv_zero(void) { return _mm256_setzero_si256(); }
static inline sadv sadv_bcast(uint64_t v) { return _mm256_set1_epi64x((long long)v); }
static inline sadv sadv_load(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline sadv sadv_acc(sadv acc, sadv x, sadv w)
{
    return _mm256_add_epi64(acc, _mm256_sad_epu8(x, w));
}
static inline void sadv_store_pair(int32_t *y, sadv a, sadv b, int n)
{
    __m256i v = _mm256_blend_epi32(a, _mm256_slli_epi64(b, 32), 0xAA);
    if (n == 2 * SADV_TV) {
        _mm256_storeu_si256((__m256i *)y, v);
    } else {
        int32_t tmp[2 * SADV_TV];
        _mm256_storeu_si256((__m256i *)tmp, v);
        memcpy(y, tmp, (size_t)n * sizeof(int32_t));
    }
}
#endif

static inline uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* the first n < 8 bytes at p, zero-extended: a partial tap group never reads past its run */
static inline uint64_t load_u64_part(const uint8_t *p, long n)
{
    uint64_t v = 0;
    memcpy(&v, p, (size_t)n);
    return v;
}

/* The outputs of np positions (a multiple of PB) x OB/2 pair groups (2·TV filters each):
 * y[p*ldy + f] = Σ_k |x_p[k] - w_f[k]| (the last pair group stores nlast filters).
 * x: first position, pstep between positions; xoff: byte offsets (from a position) of the nfull
 * whole 8-tap groups, then of the npart partial groups of rem bytes, in the order of the packed
 * filter vectors wp (ostride bytes between filter vectors).  One flat loop over the groups
 * keeps the PB·OB accumulators in registers. */
#define SADQ_RUN(PB, OB)                                                                       \
    static void sadq_run_##PB##x##OB(const uint8_t *x, long pstep, int np, const long *xoff,     \
                                     long nfull, long npart, long rem, const uint8_t *wp,        \
                                     long ostride, int32_t *y, long ldy, int nlast)              \
    {                                                                                            \
        for (int p0 = 0; p0 + PB <= np; p0 += PB) {                                              \
            const uint8_t *xq = x + (long)p0 * pstep;                                            \
            sadv acc[PB][OB];                                                                    \
            for (int p = 0; p < PB; p++)                                                         \
                for (int o = 0; o < OB; o++) acc[p][o] = sadv_zero();                            \
            const uint8_t *wg = wp;                                                              \
            for (long g = 0; g < nfull; g++, wg += SADV_TV * 8) {                                \
                const uint8_t *xg = xq + xoff[g];                                                \
                sadv xb[PB];                                                                     \
                for (int p = 0; p < PB; p++) xb[p] = sadv_bcast(load_u64(xg + p * pstep));       \
                for (int o = 0; o < OB; o++) {                                                   \
                    sadv wv = sadv_load(wg + o * ostride);                                       \
                    for (int p = 0; p < PB; p++) acc[p][o] = sadv_acc(acc[p][o], xb[p], wv);    \
                }                                                                                \
            }                                                                                    \
            for (long g = nfull; g < nfull + npart; g++, wg += SADV_TV * 8) {                    \
                const uint8_t *xg = xq + xoff[g];                                                \
                sadv xb[PB];                                                                     \
                for (int p = 0; p < PB; p++) xb[p] = sadv_bcast(load_u64_part(xg + p * pstep, rem)); \
                for (int o = 0; o < OB; o++) {                                                   \
                    sadv wv = sadv_load(wg + o * ostride);                                       \
                    for (int p = 0; p < PB; p++) acc[p][o] = sadv_acc(acc[p][o], xb[p], wv);    \
                }                                                                                \
            }                                                                                    \
            int32_t *yq = y + (long)p0 * ldy;                                                    \
            for (int p = 0; p < PB; p++)                                                         \
                for (int o = 0; o < OB; o += 2)                                                  \
                    sadv_store_pair(yq + p * ldy + o * SADV_TV, acc[p][o], acc[p][o + 1],        \
                                    o == OB - 2 ? nlast : 2 * SADV_TV);                          \
        }                                                                                        \
    }

/* Register budget: PB·OB accumulators + PB broadcasts + 1 filter vector.  AVX-512 (32 zmm):
 * 4x4 and 8x2; AVX2 (16 ymm): 2x4 and 4x2.  Plus 1xOB for the last positions. */
#if defined(ADDER_INT_AVX512)
SADQ_RUN(4, 4)
SADQ_RUN(8, 2)
#define SADQ_PB4 4
#define SADQ_PB2 8
#define SADQ_RUN4 sadq_run_4x4
#define SADQ_RUN2 sadq_run_8x2
#else
SADQ_RUN(2, 4)
SADQ_RUN(4, 2)
#define SADQ_PB4 2
#define SADQ_PB2 4
#define SADQ_RUN4 sadq_run_2x4
#define SADQ_RUN2 sadq_run_4x2
#endif
SADQ_RUN(1, 4)
SADQ_RUN(1, 2)
#endif /* SIMD */

/* Bytes of the packed filters of the 8-bit SIMD path (0: the scalar build reads w itself). */
static inline long adder_int_packed_size_u8(int Cout, int kh, long L)
{
#if defined(ADDER_INT_AVX512) || defined(ADDER_INT_AVX2)
    const long groups = (long)kh * ((L + 7) / 8), nO = 2 * ((Cout + 2 * SADV_TV - 1) / (2 * SADV_TV));
    return nO * groups * SADV_TV * 8;
#else
    (void)Cout; (void)kh; (void)L;
    return 0;
#endif
}

/* w (Cout, kh, L) -> wp[o][g][l][8] (design point 3), zero-padded; wp holds
 * adder_int_packed_size_u8 bytes.  Tap groups g: first the whole 8-byte groups of every row
 * (g = i·(L/8) + j), then the partial group of each row when L is not a multiple of 8.  Filter vectors come in pairs (2q, 2q+1) covering filters
 * q·2TV .. q·2TV + 2TV - 1: lane l of vector 2q + h holds filter q·2TV + 2l + h, the
 * interleaving that sadv_store_pair undoes for free. */
static void adder_int_pack_u8(const uint8_t *w, int Cout, int kh, long L, uint8_t *wp)
{
#if defined(ADDER_INT_AVX512) || defined(ADDER_INT_AVX2)
    const long G8 = L / 8, G = (long)kh * ((L + 7) / 8), K = (long)kh * L;
    memset(wp, 0, (size_t)adder_int_packed_size_u8(Cout, kh, L));
    for (int t = 0; t < Cout; t++) {
        const long r = t % (2 * SADV_TV), o = 2 * (t / (2 * SADV_TV)) + (r & 1), tt = r >> 1;
        for (int i = 0; i < kh; i++)
            for (long b = 0; b < L; b++) {
                const long g = b < 8 * G8 ? i * G8 + (b >> 3) : kh * G8 + i;
                wp[((o * G + g) * SADV_TV + tt) * 8 + (b & 7)] = w[(long)t * K + (long)i * L + b];
            }
    }
#else
    (void)w; (void)Cout; (void)kh; (void)L; (void)wp;
#endif
}

/* scalar: y[p*ldy + t] = Σ_{i<kh} SAD(x + p*pstep + i*rs, w + t*K + i*L, L) */
static inline void sad_block_u8_scalar(const uint8_t *x, long pstep, long rs, int np, const uint8_t *w,
                                       int nt, int kh, long L, int32_t *y, long ldy)
{
    const long K = (long)kh * L;
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
/* xp: padded image (Hp, Wp, C); w: (Cout, kh, kw, C); wp: w packed by adder_int_pack_u8
 * (8-bit SIMD path; NULL allowed in the scalar build); y: output row (Wo, Cout).  Output row
 * ho reads padded rows ho*sh .. ho*sh + kh - 1.  Blocks of positions x filters, then the
 * edges. */
static void adder_int_row_u8(const uint8_t *xp, int Wp, int C, int kh, int kw, int sh, int sw,
                             int ho, int Wo, const uint8_t *w, const uint8_t *wp, int Cout,
                             int32_t *y)
{
    const long rs = (long)Wp * C, L = (long)kw * C, pstep = (long)sw * C, K = (long)kh * L;
    const uint8_t *x0 = xp + (long)ho * sh * rs;
#if defined(ADDER_INT_AVX512) || defined(ADDER_INT_AVX2)
    (void)w; (void)K;
    const int nO = 2 * ((Cout + 2 * SADV_TV - 1) / (2 * SADV_TV)); /* filter vectors, even */
    const long G8 = L / 8, rem = L % 8, nfull = (long)kh * G8, npart = rem ? kh : 0;
    const long ostride = (nfull + npart) * SADV_TV * 8;
    long xoff[nfull + npart + 1]; /* the group offsets, in the packing order */
    for (int i = 0; i < kh; i++) {
        for (long j = 0; j < G8; j++) xoff[i * G8 + j] = (long)i * rs + 8 * j;
        if (rem) xoff[nfull + i] = (long)i * rs + 8 * G8;
    }
    for (int o0 = 0; o0 < nO; o0 += 4) {
        const int ob = nO - o0 < 4 ? nO - o0 : 4; /* 4 or 2 vectors: 2 or 1 pair groups */
        const int left = Cout - (o0 + ob - 2) * SADV_TV; /* filters of the last pair group */
        const int nlast = left < 2 * SADV_TV ? left : 2 * SADV_TV;
        const uint8_t *wo = wp + (long)o0 * ostride;
        int32_t *yo = y + (long)o0 * SADV_TV;
        const int pb = ob == 4 ? SADQ_PB4 : SADQ_PB2;
        const int nmain = Wo - Wo % pb;
        if (ob == 4) {
            SADQ_RUN4(x0, pstep, nmain, xoff, nfull, npart, rem, wo, ostride, yo, Cout, nlast);
            sadq_run_1x4(x0 + nmain * pstep, pstep, Wo - nmain, xoff, nfull, npart, rem, wo,
                         ostride, yo + (long)nmain * Cout, Cout, nlast);
        } else {
            SADQ_RUN2(x0, pstep, nmain, xoff, nfull, npart, rem, wo, ostride, yo, Cout, nlast);
            sadq_run_1x2(x0 + nmain * pstep, pstep, Wo - nmain, xoff, nfull, npart, rem, wo,
                         ostride, yo + (long)nmain * Cout, Cout, nlast);
        }
    }
#else
    (void)wp;
    for (int p = 0; p < Wo; p += INT_PB) {
        int np = Wo - p < INT_PB ? Wo - p : INT_PB;
        for (int t = 0; t < Cout; t += INT_TB) {
            int nt = Cout - t < INT_TB ? Cout - t : INT_TB;
            sad_block_u8_scalar(x0 + p * pstep, pstep, rs, np, w + t * K, nt, kh, L,
                                y + (long)p * Cout + t, Cout);
        }
    }
#endif
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
