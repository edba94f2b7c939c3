/* Fixed-point glue of the integer model (method §11, docs/integer-format.md "glue"): one row
 * range of one output view,
 *     out[p, t] = clip((Σ_k mult[k, t]·src_k[p, t] + bias[t] + 2^(shift−1)) >> shift, 0, vmax)
 * in int64, written directly in the view's code type (uint8 / uint16 / int32).
 *
 * Design
 * ------
 * 1. The result is clipped below at 0, so the arithmetic (floor) shift of a negative sum never
 *    matters: clamping the rounded sum at 0 *before* the shift and then shifting logically gives
 *    the same integers, and needs no 64-bit arithmetic shift (which AVX2 lacks).
 * 2. Vectors of 64-bit lanes, one channel each (AVX-512: 8, AVX2: 4): sign-extend the int32
 *    source and multiplier, vpmuldq (signed 32 x 32 -> 64), add; clamp, shift, clamp; narrow
 *    to the code type.  The compiler's own vectorisation of the scalar loop was 3-4x slower
 *    (the int64 -> uint8 narrowing chain).  The channels past the last whole vector, and the
 *    scalar build, use glue_finish.
 * 3. A source is an int32 accumulator array or the uint8/uint16 codes of a tensor (the identity
 *    residual), read in its own type: no widening copy before the call.
 * 4. Exact: the same int64 arithmetic as the numpy glue of addercore.quant.model, bit for bit.
 */
#ifndef ADDERCORE_GLUE_INT_H
#define ADDERCORE_GLUE_INT_H

#include <stdint.h>
#include <string.h>

static inline int64_t glue_finish(int64_t acc, int64_t rnd, int sh, int64_t vmax)
{
    acc = (int64_t)((uint64_t)acc + (uint64_t)rnd); /* wraps like numpy's int64, no C UB */
    acc = acc < 0 ? 0 : acc;                        /* design point 1 */
    acc = (int64_t)((uint64_t)acc >> sh);
    return acc > vmax ? vmax : acc;
}

#if !defined(ADDERCORE_NO_SIMD) && !defined(ADDERCORE_NO_AVX512) && defined(__AVX512F__) && \
    defined(__AVX512BW__)
#include <immintrin.h>
#define GLUE_LANES 8
typedef __m512i gluev;
static inline gluev glue_v_bias(const int64_t *b) { return _mm512_loadu_si512((const void *)b); }
/* 8 sources from element i of src, an array of kind 4 (int32), 2 (uint16) or 1 (uint8) */
static inline __m512i glue_v_src(const void *src, int kind, long i)
{
    if (kind == 4) return _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)((const int32_t *)src + i)));
    if (kind == 2) return _mm512_cvtepu16_epi64(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
    return _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)((const uint8_t *)src + i)));
}
static inline gluev glue_v_madd(gluev acc, const void *src, int kind, long i, const int32_t *m)
{
    __m512i sv = glue_v_src(src, kind, i);
    __m512i mv = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)m));
    return _mm512_add_epi64(acc, _mm512_mul_epi32(sv, mv));
}
static inline gluev glue_v_finish(gluev acc, int64_t rnd, int sh, int64_t vmax)
{
    acc = _mm512_add_epi64(acc, _mm512_set1_epi64(rnd));
    acc = _mm512_max_epi64(acc, _mm512_setzero_si512());
    acc = _mm512_srl_epi64(acc, _mm_cvtsi32_si128(sh));
    return _mm512_min_epi64(acc, _mm512_set1_epi64(vmax));
}
static inline void glue_v_store_u8(uint8_t *q, gluev v)
{
    _mm_storel_epi64((__m128i *)q, _mm512_cvtepi64_epi8(v));
}
static inline void glue_v_store_u16(uint16_t *q, gluev v)
{
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi64_epi16(v));
}
static inline void glue_v_store_i32(int32_t *q, gluev v)
{
    _mm256_storeu_si256((__m256i *)q, _mm512_cvtepi64_epi32(v));
}
#elif !defined(ADDERCORE_NO_SIMD) && defined(__AVX2__)
#include <immintrin.h>
#define GLUE_LANES 4
typedef __m256i gluev;
static inline gluev glue_v_bias(const int64_t *b) { return _mm256_loadu_si256((const __m256i *)b); }
static inline __m256i glue_v_src(const void *src, int kind, long i)
{
    if (kind == 4) return _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)((const int32_t *)src + i)));
    if (kind == 2) return _mm256_cvtepu16_epi64(_mm_loadl_epi64((const __m128i *)((const uint16_t *)src + i)));
    int32_t w;
    memcpy(&w, (const uint8_t *)src + i, 4);
    return _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(w));
}
static inline gluev glue_v_madd(gluev acc, const void *src, int kind, long i, const int32_t *m)
{
    __m256i sv = glue_v_src(src, kind, i);
    __m256i mv = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)m));
    return _mm256_add_epi64(acc, _mm256_mul_epi32(sv, mv));
}
static inline gluev glue_v_finish(gluev acc, int64_t rnd, int sh, int64_t vmax)
{
    const __m256i vm = _mm256_set1_epi64x(vmax);
    acc = _mm256_add_epi64(acc, _mm256_set1_epi64x(rnd));
    acc = _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_setzero_si256(), acc), acc);
    acc = _mm256_srl_epi64(acc, _mm_cvtsi32_si128(sh));
    return _mm256_blendv_epi8(acc, vm, _mm256_cmpgt_epi64(acc, vm));
}
/* the 4 lanes (each in [0, 2^31)) as 4 int32 */
static inline __m128i glue_v_i32(gluev v)
{
    return _mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}
static inline void glue_v_store_u8(uint8_t *q, gluev v)
{
    __m128i d = glue_v_i32(v);
    d = _mm_packus_epi16(_mm_packus_epi32(d, d), d);
    int32_t w = _mm_cvtsi128_si32(d);
    memcpy(q, &w, 4);
}
static inline void glue_v_store_u16(uint16_t *q, gluev v)
{
    __m128i d = glue_v_i32(v);
    _mm_storel_epi64((__m128i *)q, _mm_packus_epi32(d, d));
}
static inline void glue_v_store_i32(int32_t *q, gluev v) { _mm_storeu_si128((__m128i *)q, glue_v_i32(v)); }
#endif

/* element i of a source of kind 4 (int32), 2 (uint16) or 1 (uint8) */
static inline int64_t glue_src(const void *src, int kind, long i)
{
    if (kind == 4) return ((const int32_t *)src)[i];
    if (kind == 2) return ((const uint16_t *)src)[i];
    return ((const uint8_t *)src)[i];
}

#if defined(GLUE_LANES)
#define GLUE_VECTOR_PART(SUFFIX)                                                               \
    for (; t + GLUE_LANES <= C; t += GLUE_LANES) {                                               \
        gluev acc = glue_v_madd(glue_v_bias(bias + t), src[0], kind[0], o + t, m0 + t);          \
        if (K > 1) acc = glue_v_madd(acc, src[1], kind[1], o + t, m1 + t);                       \
        if (K > 2) acc = glue_v_madd(acc, src[2], kind[2], o + t, m2 + t);                       \
        if (K > 3) acc = glue_v_madd(acc, src[3], kind[3], o + t, m3 + t);                       \
        glue_v_store_##SUFFIX(q + t, glue_v_finish(acc, rnd, sh, vmax));                         \
    }
#else
#define GLUE_VECTOR_PART(SUFFIX)
#endif

#define GLUE_ROWS(NAME, OUT_T, SUFFIX)                                                         \
    static void NAME(const void *const *src, const int *kind, int K, long p0, long p1, int C,    \
                     const int32_t *mult, const int64_t *bias, int sh, int64_t vmax, OUT_T *out) \
    {                                                                                            \
        const int64_t rnd = (int64_t)1 << (sh - 1);                                              \
        const int32_t *m0 = mult, *m1 = mult + C, *m2 = mult + 2 * C, *m3 = mult + 3 * C;        \
        for (long p = p0; p < p1; p++) {                                                         \
            const long o = p * C;                                                                \
            OUT_T *q = out + o;                                                                  \
            int t = 0;                                                                           \
            GLUE_VECTOR_PART(SUFFIX)                                                             \
            for (; t < C; t++) {                                                                 \
                int64_t acc = bias[t] + (int64_t)m0[t] * glue_src(src[0], kind[0], o + t);       \
                if (K > 1) acc += (int64_t)m1[t] * glue_src(src[1], kind[1], o + t);             \
                if (K > 2) acc += (int64_t)m2[t] * glue_src(src[2], kind[2], o + t);             \
                if (K > 3) acc += (int64_t)m3[t] * glue_src(src[3], kind[3], o + t);             \
                q[t] = (OUT_T)glue_finish(acc, rnd, sh, vmax);                                   \
            }                                                                                    \
        }                                                                                        \
    }

GLUE_ROWS(glue_rows_u8, uint8_t, u8)
GLUE_ROWS(glue_rows_u16, uint16_t, u16)
GLUE_ROWS(glue_rows_i32, int32_t, i32)

/* src: K (1..4) arrays (P, C), srckind: their element sizes (4 int32 accumulators, 2 or 1
 * uint16 / uint8 codes); out: the view's codes, outkind 1 uint8, 2 uint16, 4 int32. */
static inline void glue_rows(const void *const *src, const int *srckind, int K, long p0, long p1,
                             int C, const int32_t *mult, const int64_t *bias, int sh,
                             int64_t vmax, void *out, int outkind)
{
    if (outkind == 1)
        glue_rows_u8(src, srckind, K, p0, p1, C, mult, bias, sh, vmax, (uint8_t *)out);
    else if (outkind == 2)
        glue_rows_u16(src, srckind, K, p0, p1, C, mult, bias, sh, vmax, (uint16_t *)out);
    else
        glue_rows_i32(src, srckind, K, p0, p1, C, mult, bias, sh, vmax, (int32_t *)out);
}

#endif /* ADDERCORE_GLUE_INT_H */
