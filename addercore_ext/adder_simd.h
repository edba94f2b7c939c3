/* Small SIMD abstraction for the adder kernels (float32 and float64).
 *
 * With AVX2+FMA (``-march=native`` on any x86-64-v3 CPU) a "vector" is one 256-bit register:
 * 8 floats or 4 doubles.  Otherwise it is a single scalar (V*_LANES == 1) and the very same
 * blocked kernels run lane by lane, which GCC partly re-vectorises for the target ISA.  Every
 * operation below is exactly rounded per lane (no reassociation, no ``-ffast-math``), so the
 * results of the two paths are identical bit for bit.
 */
#ifndef ADDERCORE_SIMD_H
#define ADDERCORE_SIMD_H

#include <math.h>
#include <string.h>

#if defined(ADDERCORE_AVX512) && defined(__AVX512F__) && !defined(ADDERCORE_NO_SIMD)
/* Opt-in (build with ADDERCORE_AVX512=1 on a CPU with AVX-512F): one 512-bit register is 16
 * floats or 8 doubles.  Only AVX512F instructions are used; comparisons give mask registers.
 * Per-lane results are identical to the AVX2 path; horizontal sums (vhsum, used by some
 * filter-gradient reductions) add the lanes in a different fixed order, so those sums can
 * differ from an AVX2 build in the last bits (still the same for any thread count). */
#include <immintrin.h>
#define ADDERCORE_SIMD_NAME "avx512f"

typedef __m512 vf32;
#define VF32_LANES 16 /* floats per vector */
static inline vf32 vload_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline void vstore_f32(float *p, vf32 v) { _mm512_storeu_ps(p, v); }
static inline vf32 vset1_f32(float a) { return _mm512_set1_ps(a); }
static inline vf32 vzero_f32(void) { return _mm512_setzero_ps(); }
static inline vf32 vadd_f32(vf32 a, vf32 b) { return _mm512_add_ps(a, b); }
static inline vf32 vsub_f32(vf32 a, vf32 b) { return _mm512_sub_ps(a, b); }
static inline vf32 vmul_f32(vf32 a, vf32 b) { return _mm512_mul_ps(a, b); }
static inline vf32 vfma_f32(vf32 a, vf32 b, vf32 c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf32 vdiff_f32(vf32 c, vf32 w, vf32 one) { return _mm512_fnmadd_ps(w, one, c); }
static inline vf32 vabs_f32(vf32 a)
{
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a),
                                                 _mm512_set1_epi32(0x7fffffff)));
}
static inline vf32 vneg_f32(vf32 a)
{
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a),
                                                _mm512_set1_epi32((int)0x80000000u)));
}
/* same operand semantics as AVX's minps/maxps: the second operand when either is NaN */
static inline vf32 vmin_f32(vf32 a, vf32 b) { return _mm512_min_ps(a, b); }
static inline vf32 vmax_f32(vf32 a, vf32 b) { return _mm512_max_ps(a, b); }
static inline vf32 vsignmul_f32(vf32 d, vf32 g)
{
    vf32 z = _mm512_setzero_ps();
    vf32 pos = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, z, _CMP_GT_OQ), g);
    vf32 neg = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, z, _CMP_LT_OQ), g);
    /* NaN d gives a NaN (all-ones bits), as the AVX2 path and np.sign(nan) do */
    return _mm512_mask_mov_ps(_mm512_sub_ps(pos, neg), _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q),
                              _mm512_castsi512_ps(_mm512_set1_epi32(-1)));
}
/* 2·sgn(d) (+2, 0 or -2) for d that is neither NaN nor -0 (see the AVX2 path) */
static inline vf32 vsgn2_f32(vf32 d)
{
    vf32 z = _mm512_setzero_ps();
    vf32 pos = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(d, z, _CMP_GT_OQ), _mm512_set1_ps(2.0f));
    return _mm512_mask_mov_ps(pos, _mm512_cmp_ps_mask(d, z, _CMP_LT_OQ), _mm512_set1_ps(-2.0f));
}
/* lanes summed in a fixed order: the two 256-bit halves, then as vhsum of the AVX2 path */
static inline float vhsum_f32(vf32 v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
/* src[0], src[2], ..., src[30] (reads src[0..31]) */
static inline vf32 vload_even_f32(const float *src)
{
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(src), idx, _mm512_loadu_ps(src + 16));
}

typedef __m512d vf64;
#define VF64_LANES 8 /* doubles per vector */
static inline vf64 vload_f64(const double *p) { return _mm512_loadu_pd(p); }
static inline void vstore_f64(double *p, vf64 v) { _mm512_storeu_pd(p, v); }
static inline vf64 vset1_f64(double a) { return _mm512_set1_pd(a); }
static inline vf64 vzero_f64(void) { return _mm512_setzero_pd(); }
static inline vf64 vadd_f64(vf64 a, vf64 b) { return _mm512_add_pd(a, b); }
static inline vf64 vsub_f64(vf64 a, vf64 b) { return _mm512_sub_pd(a, b); }
static inline vf64 vmul_f64(vf64 a, vf64 b) { return _mm512_mul_pd(a, b); }
static inline vf64 vfma_f64(vf64 a, vf64 b, vf64 c) { return _mm512_fmadd_pd(a, b, c); }
static inline vf64 vdiff_f64(vf64 c, vf64 w, vf64 one) { return _mm512_fnmadd_pd(w, one, c); }
static inline vf64 vabs_f64(vf64 a)
{
    return _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(a),
                                                _mm512_set1_epi64(0x7fffffffffffffffLL)));
}
static inline vf64 vneg_f64(vf64 a)
{
    return _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(a),
                                                _mm512_set1_epi64((long long)0x8000000000000000ULL)));
}
static inline vf64 vmin_f64(vf64 a, vf64 b) { return _mm512_min_pd(a, b); }
static inline vf64 vmax_f64(vf64 a, vf64 b) { return _mm512_max_pd(a, b); }
static inline vf64 vsignmul_f64(vf64 d, vf64 g)
{
    vf64 z = _mm512_setzero_pd();
    vf64 pos = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(d, z, _CMP_GT_OQ), g);
    vf64 neg = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(d, z, _CMP_LT_OQ), g);
    return _mm512_mask_mov_pd(_mm512_sub_pd(pos, neg), _mm512_cmp_pd_mask(d, d, _CMP_UNORD_Q),
                              _mm512_castsi512_pd(_mm512_set1_epi64(-1)));
}
static inline vf64 vsgn2_f64(vf64 d)
{
    vf64 z = _mm512_setzero_pd();
    vf64 pos = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(d, z, _CMP_GT_OQ), _mm512_set1_pd(2.0));
    return _mm512_mask_mov_pd(pos, _mm512_cmp_pd_mask(d, z, _CMP_LT_OQ), _mm512_set1_pd(-2.0));
}
static inline double vhsum_f64(vf64 v)
{
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}
/* src[0], src[2], ..., src[14] (reads src[0..15]) */
static inline vf64 vload_even_f64(const double *src)
{
    const __m512i idx = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm512_permutex2var_pd(_mm512_loadu_pd(src), idx, _mm512_loadu_pd(src + 8));
}

#elif defined(__AVX2__) && defined(__FMA__) && !defined(ADDERCORE_NO_SIMD)
#include <immintrin.h>
#define ADDERCORE_SIMD_NAME "avx2+fma"

typedef __m256 vf32;
#define VF32_LANES 8 /* floats per vector */
static inline vf32 vload_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline void vstore_f32(float *p, vf32 v) { _mm256_storeu_ps(p, v); }
static inline vf32 vset1_f32(float a) { return _mm256_set1_ps(a); }
static inline vf32 vzero_f32(void) { return _mm256_setzero_ps(); }
static inline vf32 vadd_f32(vf32 a, vf32 b) { return _mm256_add_ps(a, b); }
static inline vf32 vsub_f32(vf32 a, vf32 b) { return _mm256_sub_ps(a, b); }
static inline vf32 vmul_f32(vf32 a, vf32 b) { return _mm256_mul_ps(a, b); }
/* a*b + c with one rounding */
static inline vf32 vfma_f32(vf32 a, vf32 b, vf32 c) { return _mm256_fmadd_ps(a, b, c); }
/* c - w computed on the FMA ports (c - w·1 is exact in the product, one rounding: identical to
 * a subtraction) so that subtraction and accumulation use different execution ports. */
#ifdef ADDERCORE_PLAIN_SUB
static inline vf32 vdiff_f32(vf32 c, vf32 w, vf32 one) { (void)one; return _mm256_sub_ps(c, w); }
#else
static inline vf32 vdiff_f32(vf32 c, vf32 w, vf32 one) { return _mm256_fnmadd_ps(w, one, c); }
#endif
static inline vf32 vabs_f32(vf32 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf32 vneg_f32(vf32 a) { return _mm256_xor_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf32 vmin_f32(vf32 a, vf32 b) { return _mm256_min_ps(a, b); }
static inline vf32 vmax_f32(vf32 a, vf32 b) { return _mm256_max_ps(a, b); }
/* sgn(d)·g exactly as np.sign(d) * g (up to the sign of zero); NaN d gives NaN (all-ones
 * bits), as np.sign(nan) does, so a NaN input is never turned into a finite gradient. */
static inline vf32 vsignmul_f32(vf32 d, vf32 g)
{
    vf32 z = _mm256_setzero_ps();
    vf32 pos = _mm256_and_ps(_mm256_cmp_ps(d, z, _CMP_GT_OQ), g);
    vf32 neg = _mm256_and_ps(_mm256_cmp_ps(d, z, _CMP_LT_OQ), g);
    return _mm256_or_ps(_mm256_sub_ps(pos, neg), _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
}
/* 2·sgn(d) (+2, 0 or -2) in one integer instruction: vpsignd negates, keeps or zeroes the
 * bits of 2.0 by the sign of d read as an int32, and negating 0x40000000 (2.0f) as an integer
 * gives 0xC0000000 (-2.0f).  Valid for d that is neither NaN nor -0 (-0 reads as negative);
 * the sign filter gradient guarantees both (filter_grad_sign_tile_t). */
static inline vf32 vsgn2_f32(vf32 d)
{
    return _mm256_castsi256_ps(_mm256_sign_epi32(_mm256_castps_si256(_mm256_set1_ps(2.0f)),
                                                 _mm256_castps_si256(d)));
}
/* lanes summed in a fixed order: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) */
static inline float vhsum_f32(vf32 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* src[0], src[2], ..., src[14] (reads src[0..15]) */
static inline vf32 vload_even_f32(const float *src)
{
    __m256 a = _mm256_loadu_ps(src), b = _mm256_loadu_ps(src + 8);
    __m256 e = _mm256_shuffle_ps(a, b, 0x88); /* a0 a2 b0 b2 | a4 a6 b4 b6 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
}

typedef __m256d vf64;
#define VF64_LANES 4 /* doubles per vector */
static inline vf64 vload_f64(const double *p) { return _mm256_loadu_pd(p); }
static inline void vstore_f64(double *p, vf64 v) { _mm256_storeu_pd(p, v); }
static inline vf64 vset1_f64(double a) { return _mm256_set1_pd(a); }
static inline vf64 vzero_f64(void) { return _mm256_setzero_pd(); }
static inline vf64 vadd_f64(vf64 a, vf64 b) { return _mm256_add_pd(a, b); }
static inline vf64 vsub_f64(vf64 a, vf64 b) { return _mm256_sub_pd(a, b); }
static inline vf64 vmul_f64(vf64 a, vf64 b) { return _mm256_mul_pd(a, b); }
static inline vf64 vfma_f64(vf64 a, vf64 b, vf64 c) { return _mm256_fmadd_pd(a, b, c); }
static inline vf64 vdiff_f64(vf64 c, vf64 w, vf64 one) { return _mm256_fnmadd_pd(w, one, c); }
static inline vf64 vabs_f64(vf64 a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
static inline vf64 vneg_f64(vf64 a) { return _mm256_xor_pd(_mm256_set1_pd(-0.0), a); }
static inline vf64 vmin_f64(vf64 a, vf64 b) { return _mm256_min_pd(a, b); }
static inline vf64 vmax_f64(vf64 a, vf64 b) { return _mm256_max_pd(a, b); }
static inline vf64 vsignmul_f64(vf64 d, vf64 g)
{
    vf64 z = _mm256_setzero_pd();
    vf64 pos = _mm256_and_pd(_mm256_cmp_pd(d, z, _CMP_GT_OQ), g);
    vf64 neg = _mm256_and_pd(_mm256_cmp_pd(d, z, _CMP_LT_OQ), g);
    return _mm256_or_pd(_mm256_sub_pd(pos, neg), _mm256_cmp_pd(d, d, _CMP_UNORD_Q));
}
/* 2·sgn(d) as vsgn2_f32, per 32-bit half: 2.0 is 0x40000000 in the high half and 0 in the low
 * one, so the high half of d decides.  Valid for d that is neither NaN, -0 nor subnormal (a
 * positive subnormal can have a zero high half); filter_grad_sign_tile_t scales d by 2^64. */
static inline vf64 vsgn2_f64(vf64 d)
{
    return _mm256_castsi256_pd(_mm256_sign_epi32(_mm256_castpd_si256(_mm256_set1_pd(2.0)),
                                                 _mm256_castpd_si256(d)));
}
/* src[0], src[2], src[4], src[6] (reads src[0..7]) */
static inline vf64 vload_even_f64(const double *src)
{
    __m256d a = _mm256_loadu_pd(src), b = _mm256_loadu_pd(src + 4);
    __m256d e = _mm256_unpacklo_pd(a, b); /* a0 b0 | a2 b2 */
    return _mm256_permute4x64_pd(e, 0xD8);
}

static inline double vhsum_f64(vf64 v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

#else /* portable scalar path: one lane */
#define ADDERCORE_SIMD_NAME "scalar"

/* the v*_S operations of element type T on one-lane "vectors" */
#define ADDERCORE_SCALAR_OPS(T, S)                                                            \
    typedef T v##S;                                                                           \
    static inline v##S vload_##S(const T *p) { return *p; }                                  \
    static inline void vstore_##S(T *p, v##S v) { *p = v; }                                  \
    static inline v##S vset1_##S(T a) { return a; }                                          \
    static inline v##S vzero_##S(void) { return (T)0; }                                      \
    static inline v##S vadd_##S(v##S a, v##S b) { return a + b; }                            \
    static inline v##S vsub_##S(v##S a, v##S b) { return a - b; }                            \
    static inline v##S vmul_##S(v##S a, v##S b) { return a * b; }                            \
    static inline v##S vfma_##S(v##S a, v##S b, v##S c) { return c + a * b; }               \
    static inline v##S vdiff_##S(v##S c, v##S w, v##S one) { (void)one; return c - w; }     \
    static inline v##S vabs_##S(v##S a) { return a < 0 ? -a : (a == 0 ? (T)0 : a); }        \
    static inline v##S vneg_##S(v##S a) { return -a; }                                       \
    static inline v##S vmin_##S(v##S a, v##S b) { return a < b ? a : b; }                    \
    static inline v##S vmax_##S(v##S a, v##S b) { return a > b ? a : b; }                    \
    static inline v##S vsignmul_##S(v##S d, v##S g)                                          \
    {                                                                                         \
        return d != d ? d : (d > 0 ? g : (T)0) - (d < 0 ? g : (T)0);                          \
    }                                                                                         \
    static inline v##S vsgn2_##S(v##S d) { return d > 0 ? (T)2 : (d < 0 ? (T)-2 : (T)0); }   \
    static inline T vhsum_##S(v##S v) { return v; }                                          \
    static inline v##S vload_even_##S(const T *src) { return src[0]; }

ADDERCORE_SCALAR_OPS(float, f32)
ADDERCORE_SCALAR_OPS(double, f64)
#define VF32_LANES 1 /* one float per "vector" */
#define VF64_LANES 1 /* one double per "vector" */
#endif

#endif /* ADDERCORE_SIMD_H */
