/* Per-image adder kernels, written once and instantiated for float32 and float64 by
 * adder_kernels.h (macros T = element type, S = suffix f32/f64).  See adder_kernels.h for the
 * design notes.  None of these functions allocates memory or uses threads: the callers in
 * _adder.pyx own the buffers and the parallel loop. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, S)
#define CATN_(a, b) a##b
#define CATN(a, b) CATN_(a, b)
#define VT CATN(v, S)
#define VOP(op) CAT(v##op, S)

/* ---------------------------------------------------------------------------------------
 * im2col of output rows [h_lo, h_hi) of one image: col[k, p] with k = (c, i, j) row-major and p = (h, w) row-major.
 * x: (C, H, W); col: (C·kh·kw, (h_hi-h_lo)·Wo) with row stride ldc.  Taps on the zero padding are written as 0.
 * ------------------------------------------------------------------------------------- */
static void FN(pack_patches)(const T *restrict x, int C, int H, int W, int kh, int kw, int sh, int sw,
                             int ph, int pw, int h_lo, int h_hi, int Wo, T *restrict col, long ldc)
{
    const long P = ldc; /* row stride of col: (h_hi - h_lo)·Wo for a packed tile */
    for (int c = 0; c < C; c++) {
        const T *xc = x + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T *row = col + ((long)(c * kh + i) * kw + j) * P;
                /* output columns w whose input column w·sw + j - pw lies inside [0, W) */
                int w_lo = 0, w_hi = Wo; /* [w_lo, w_hi) */
                while (w_lo < Wo && w_lo * sw + j - pw < 0) w_lo++;
                while (w_hi > w_lo && (w_hi - 1) * sw + j - pw >= W) w_hi--;
                for (int h = h_lo; h < h_hi; h++) {
                    T *out = row + (long)(h - h_lo) * Wo;
                    int xh = h * sh + i - ph;
                    if (xh < 0 || xh >= H) {
                        for (int w = 0; w < Wo; w++) out[w] = (T)0;
                        continue;
                    }
                    const T *xrow = xc + (long)xh * W + j - pw;
                    for (int w = 0; w < w_lo; w++) out[w] = (T)0;
                    if (sw == 1) {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[w];
                    } else if (sw == 2) {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[2 * (long)w];
                    } else {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[(long)w * sw];
                    }
                    for (int w = w_hi; w < Wo; w++) out[w] = (T)0;
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Zero-padded copy of one image: xp (C, H + 2·ph, W + 2·pw).  Packing from it needs no bounds
 * logic, so every patch row is a fixed-length copy (this is what makes packing cheap for the
 * short rows of 8×8 and 16×16 feature maps).
 * ------------------------------------------------------------------------------------- */
static void FN(pad_image)(const T *restrict x, int C, int H, int W, int ph, int pw,
                          T *restrict xp)
{
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    for (int c = 0; c < C; c++) {
        T *dst = xp + (long)c * Hp * Wp;
        const T *src = x + (long)c * H * W;
        for (long e = 0; e < (long)ph * Wp; e++) dst[e] = (T)0;
        for (int h = 0; h < H; h++) {
            T *d = dst + (long)(h + ph) * Wp;
            for (int w = 0; w < pw; w++) d[w] = (T)0;
            memcpy(d + pw, src + (long)h * W, sizeof(T) * (size_t)W);
            for (int w = pw + W; w < Wp; w++) d[w] = (T)0;
        }
        for (long e = (long)(H + ph) * Wp; e < (long)Hp * Wp; e++) dst[e] = (T)0;
    }
}

static inline __attribute__((always_inline)) void FN(copy_row)(T *restrict dst,
                                                               const T *restrict src, int n)
{
    for (int w = 0; w < n; w++) dst[w] = src[w];
}

/* im2col of output rows [h_lo, h_hi) from the padded image xp (C, Hp, Wp); same layout as
 * pack_patches. */
static void FN(pack_patches_padded)(const T *restrict xp, int C, int Hp, int Wp, int kh, int kw,
                                    int sh, int sw, int h_lo, int h_hi, int Wo,
                                    T *restrict col, long ldc)
{
    for (int c = 0; c < C; c++) {
        const T *xc = xp + (long)c * Hp * Wp;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T *out = col + ((long)(c * kh + i) * kw + j) * ldc;
                const T *src = xc + (long)(h_lo * sh + i) * Wp + j;
                const long src_step = (long)sh * Wp;
                if (sw == 1) {
                    /* fixed lengths let the compiler emit straight vector moves */
                    if (Wo == 8) {
                        for (int h = h_lo; h < h_hi; h++, out += 8, src += src_step)
                            FN(copy_row)(out, src, 8);
                    } else if (Wo == 16) {
                        for (int h = h_lo; h < h_hi; h++, out += 16, src += src_step)
                            FN(copy_row)(out, src, 16);
                    } else if (Wo == 32) {
                        for (int h = h_lo; h < h_hi; h++, out += 32, src += src_step)
                            FN(copy_row)(out, src, 32);
                    } else {
                        for (int h = h_lo; h < h_hi; h++, out += Wo, src += src_step)
                            FN(copy_row)(out, src, Wo);
                    }
                } else if (sw == 2) {
                    /* vectors of even elements; may read 2·VLANES-1 elements past a row, which
                     * stays inside xp (the caller allocates PAD_SLACK extra elements) */
                    for (int h = h_lo; h < h_hi; h++, out += Wo, src += src_step) {
                        int w = 0;
                        for (; w + VLANES <= Wo; w += VLANES)
                            VOP(store)(out + w, VOP(load_even)(src + 2 * (long)w));
                        for (; w < Wo; w++) out[w] = src[2 * (long)w];
                    }
                } else {
                    for (int h = h_lo; h < h_hi; h++, out += Wo, src += src_step)
                        for (int w = 0; w < Wo; w++) out[w] = src[(long)w * sw];
                }
            }
        }
    }
}

/* Packing strategy for one image: stride-1 and stride-2 layers pack from a zero-padded copy
 * (made once per image in xp; x itself for stride 1 without padding), stride 2 with vector
 * loads of even elements; larger strides pack directly from x with bounds logic.
 * pack_source returns the array pack_tile must be given.  xp needs C·(H+2ph)·(W+2pw) +
 * PAD_SLACK elements. */
#ifndef PAD_SLACK
#define PAD_SLACK 32
#endif
static inline int FN(pack_uses_padded)(int sw) { return sw <= 2; }

static const T *FN(pack_source)(const T *x, int C, int H, int W, int ph, int pw, int sw, T *xp)
{
    if (!FN(pack_uses_padded)(sw)) return x;
    if (sw == 1 && ph == 0 && pw == 0) return x;
    FN(pad_image)(x, C, H, W, ph, pw, xp);
    return xp;
}

static void FN(pack_tile)(const T *src, int C, int H, int W, int kh, int kw, int sh, int sw,
                          int ph, int pw, int h_lo, int h_hi, int Wo, T *col, long ldc)
{
    if (FN(pack_uses_padded)(sw))
        FN(pack_patches_padded)(src, C, H + 2 * ph, W + 2 * pw, kh, kw, sh, sw, h_lo, h_hi, Wo,
                                col, ldc);
    else
        FN(pack_patches)(src, C, H, W, kh, kw, sh, sw, ph, pw, h_lo, h_hi, Wo, col, ldc);
}

/* ---------------------------------------------------------------------------------------
 * col2im of one image, accumulating: gx[c, h·sh+i-ph, w·sw+j-pw] += dcol[k, p] for the taps
 * inside the image (taps on the padding are dropped).  gx: (C, H, W), must be initialised.
 * Fixed order (c, i, j, h, w): deterministic.
 * ------------------------------------------------------------------------------------- */
static void FN(unpack_patches_add)(const T *dcol, int C, int H, int W, int kh, int kw, int sh,
                                   int sw, int ph, int pw, int h_lo, int h_hi, int Wo,
                                   long ldc, T *gx)
{
    const long P = ldc; /* row stride of dcol */
    for (int c = 0; c < C; c++) {
        T *gc = gx + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                const T *row = dcol + ((long)(c * kh + i) * kw + j) * P;
                int w_lo = 0, w_hi = Wo;
                while (w_lo < Wo && w_lo * sw + j - pw < 0) w_lo++;
                while (w_hi > w_lo && (w_hi - 1) * sw + j - pw >= W) w_hi--;
                for (int h = h_lo; h < h_hi; h++) {
                    int xh = h * sh + i - ph;
                    if (xh < 0 || xh >= H) continue;
                    const T *in = row + (long)(h - h_lo) * Wo;
                    T *grow = gc + (long)xh * W + j - pw;
                    if (sw == 1) {
                        for (int w = w_lo; w < w_hi; w++) grow[w] += in[w];
                    } else {
                        for (int w = w_lo; w < w_hi; w++) grow[(long)w * sw] += in[w];
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Forward of one image: y[t, p] = -Σ_k dist(col[k, p] - w[t, k]), k ascending, one
 * accumulator per output starting at 0 (the canonical order, bit-exact with the reference);
 * for the convolution (FWD_DOT) y[t, p] = Σ_k col[k, p]·w[t, k] with the same blocking, one
 * fused multiply-add per tap (not bit-exact with a BLAS GEMM, but the same for any thread
 * count).
 * Register block: FWD_TB filters × FWD_PV vectors of contiguous positions; the tap loop k is
 * innermost and sequential, lanes are different outputs.
 * col: (K, P) tile (row stride P); w: (Cout, K); y: (Cout, ldy) (first P columns written).
 * ------------------------------------------------------------------------------------- */
#ifndef FWD_TB
#define FWD_TB 4
#endif
#ifndef FWD_PV
#define FWD_PV 2
#endif

#define FWD_L1 0  /* acc += |c - w|, output -acc (adder, spec §1) */
#define FWD_L2 1  /* acc += (c - w)², output -acc (ℓ2 adder) */
#define FWD_DOT 2 /* acc = c·w + acc (one rounding), output acc (convolution) */

/* one tap of the forward: acc + dist(c - w), or c·w + acc for the convolution */
static inline __attribute__((always_inline)) VT FN(fwd_term)(VT c, VT wv, VT acc, VT one, int mode)
{
    if (mode == FWD_DOT) return VOP(fma)(c, wv, acc);
    VT d = VOP(diff)(c, wv, one);
    return VOP(add)(acc, mode == FWD_L2 ? VOP(mul)(d, d) : VOP(abs)(d));
}

static inline __attribute__((always_inline)) T FN(fwd_term_scalar)(T c, T w, T acc, int mode)
{
    if (mode == FWD_DOT) return acc + c * w; /* leftover positions only */
    T d = c - w;
    return acc + (mode == FWD_L2 ? d * d : (d < 0 ? -d : (d == 0 ? (T)0 : d)));
}

static inline __attribute__((always_inline)) VT FN(fwd_result)(VT acc, int mode)
{
    return mode == FWD_DOT ? acc : VOP(neg)(acc);
}

static inline __attribute__((always_inline)) void FN(forward_body)(const T *col, const T *w,
                                                                   int Cout, int K, long P,
                                                                   T *y, long ldy, int mode)
{
    const long PB = (long)FWD_PV * VLANES;
    const VT one = VOP(set1)((T)1);
    long p0 = 0;
    for (; p0 + PB <= P; p0 += PB) {
        int t0 = 0;
        for (; t0 + FWD_TB <= Cout; t0 += FWD_TB) {
            VT acc[FWD_TB][FWD_PV];
            for (int a = 0; a < FWD_TB; a++)
                for (int b = 0; b < FWD_PV; b++) acc[a][b] = VOP(zero)();
            const T *wt = w + (long)t0 * K;
            const T *cp = col + p0;
            for (int k = 0; k < K; k++, cp += P) {
                VT c[FWD_PV];
                for (int b = 0; b < FWD_PV; b++) c[b] = VOP(load)(cp + b * VLANES);
                for (int a = 0; a < FWD_TB; a++) {
                    VT wv = VOP(set1)(wt[(long)a * K + k]);
                    for (int b = 0; b < FWD_PV; b++)
                        acc[a][b] = FN(fwd_term)(c[b], wv, acc[a][b], one, mode);
                }
            }
            for (int a = 0; a < FWD_TB; a++)
                for (int b = 0; b < FWD_PV; b++)
                    VOP(store)(y + (long)(t0 + a) * ldy + p0 + b * VLANES, FN(fwd_result)(acc[a][b], mode));
        }
        for (; t0 < Cout; t0++) { /* leftover filters, one at a time */
            VT acc[FWD_PV];
            for (int b = 0; b < FWD_PV; b++) acc[b] = VOP(zero)();
            const T *wt = w + (long)t0 * K;
            const T *cp = col + p0;
            for (int k = 0; k < K; k++, cp += P) {
                VT wv = VOP(set1)(wt[k]);
                for (int b = 0; b < FWD_PV; b++)
                    acc[b] = FN(fwd_term)(VOP(load)(cp + b * VLANES), wv, acc[b], one, mode);
            }
            for (int b = 0; b < FWD_PV; b++)
                VOP(store)(y + (long)t0 * ldy + p0 + b * VLANES, FN(fwd_result)(acc[b], mode));
        }
    }
    /* leftover positions: one vector at a time, then scalar; same chain of roundings */
    for (; p0 + VLANES <= P; p0 += VLANES) {
        for (int t = 0; t < Cout; t++) {
            const T *wt = w + (long)t * K;
            const T *cp = col + p0;
            VT acc = VOP(zero)();
            for (int k = 0; k < K; k++, cp += P)
                acc = FN(fwd_term)(VOP(load)(cp), VOP(set1)(wt[k]), acc, one, mode);
            VOP(store)(y + (long)t * ldy + p0, FN(fwd_result)(acc, mode));
        }
    }
    for (int t = 0; t < Cout; t++) {
        const T *wt = w + (long)t * K;
        for (long p = p0; p < P; p++) {
            T acc = (T)0;
            for (int k = 0; k < K; k++) acc = FN(fwd_term_scalar)(col[(long)k * P + p], wt[k], acc, mode);
            y[(long)t * ldy + p] = mode == FWD_DOT ? acc : -acc;
        }
    }
}

/* mode: FWD_L1, FWD_L2 or FWD_DOT (each a separately specialised copy of forward_body) */
static void FN(forward_tile)(const T *col, const T *w, int Cout, int K, long P, T *y,
                             long ldy, int mode)
{
    if (mode == FWD_L1) FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_L1);
    else if (mode == FWD_L2) FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_L2);
    else FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_DOT);
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient, "full" part of one image (a GEMM with the reduction along contiguous p):
 *     gw[t, k] += Σ_p col[k, p] · g[t, p]          gsum[t] += Σ_p g[t, p]
 * The caller forms Σ D·G = Σ X·G - F·Σ G (spec §2) once all images are accumulated.
 * Register block: FGW_TB filters × FGW_KB taps, one vector accumulator each, lanes summed
 * in a fixed order at the end.  col: (K, P) tile; g: (Cout, ldg); gw: (Cout, K); gsum: (Cout,).
 * ------------------------------------------------------------------------------------- */
#ifndef FGW_TB
#define FGW_TB 4
#endif
#ifndef FGW_KB
#define FGW_KB 2
#endif

static void FN(filter_grad_full_tile)(const T *col, const T *g, long ldg, int Cout, int K,
                                      long P, T *gw, T *gsum)
{
    const long PV = P - P % VLANES; /* vectorised part of p */
    for (int t = 0; gsum != NULL && t < Cout; t++) {
        const T *gt = g + (long)t * ldg;
        VT s = VOP(zero)();
        long p = 0;
        for (; p < PV; p += VLANES) s = VOP(add)(s, VOP(load)(gt + p));
        T acc = VOP(hsum)(s);
        for (; p < P; p++) acc += gt[p];
        gsum[t] += acc;
    }
    int t0 = 0;
    for (; t0 < Cout; t0 += FGW_TB) {
        const int tb = Cout - t0 < FGW_TB ? Cout - t0 : FGW_TB;
        int k0 = 0;
        for (; k0 < K; k0 += FGW_KB) {
            const int kb = K - k0 < FGW_KB ? K - k0 : FGW_KB;
            if (tb == FGW_TB && kb == FGW_KB) {
                VT acc[FGW_TB][FGW_KB];
                for (int a = 0; a < FGW_TB; a++)
                    for (int b = 0; b < FGW_KB; b++) acc[a][b] = VOP(zero)();
                long p = 0;
                for (; p < PV; p += VLANES) {
                    VT c[FGW_KB];
                    for (int b = 0; b < FGW_KB; b++) c[b] = VOP(load)(col + (long)(k0 + b) * P + p);
                    for (int a = 0; a < FGW_TB; a++) {
                        VT gv = VOP(load)(g + (long)(t0 + a) * ldg + p);
                        for (int b = 0; b < FGW_KB; b++) acc[a][b] = VOP(fma)(c[b], gv, acc[a][b]);
                    }
                }
                for (int a = 0; a < FGW_TB; a++)
                    for (int b = 0; b < FGW_KB; b++) {
                        T sum = VOP(hsum)(acc[a][b]);
                        const T *ck = col + (long)(k0 + b) * P;
                        const T *gt = g + (long)(t0 + a) * ldg;
                        for (long q = p; q < P; q++) sum += ck[q] * gt[q];
                        gw[(long)(t0 + a) * K + k0 + b] += sum;
                    }
            } else {
                for (int a = 0; a < tb; a++)
                    for (int b = 0; b < kb; b++) {
                        const T *ck = col + (long)(k0 + b) * P;
                        const T *gt = g + (long)(t0 + a) * ldg;
                        VT s = VOP(zero)();
                        long p = 0;
                        for (; p < PV; p += VLANES) s = VOP(fma)(VOP(load)(ck + p), VOP(load)(gt + p), s);
                        T sum = VOP(hsum)(s);
                        for (; p < P; p++) sum += ck[p] * gt[p];
                        gw[(long)(t0 + a) * K + k0 + b] += sum;
                    }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient, "full" part, GEMM-style: the tile of g is transposed into gT[p, t]
 * (Cout contiguous) so that the reduction over p stays in registers: for each position p,
 * FGT_KB broadcast patch values × 2 vectors of filters -> 2·FGT_KB fused multiply-adds, no
 * horizontal sums.  Same contract as filter_grad_full_tile; gT: workspace of P·Cout.
 * Filters beyond the last whole block of 2 vectors go through filter_grad_full_tile.
 * ------------------------------------------------------------------------------------- */
#ifndef FGT_KB
#define FGT_KB 6
#endif
#ifndef FGT_MIN_K
#define FGT_MIN_K 32
#endif

static void FN(filter_grad_full_tile_t)(const T *col, const T *g, long ldg, int Cout, int K,
                                        long P, T *gw, T *gsum, T *gT)
{
    const int TV = 2 * VLANES;
    const int Cb = Cout - Cout % TV; /* filters handled by the transposed kernel */
    if (Cb == 0 || K < FGT_MIN_K) { /* short filters: the transpose would not pay */
        FN(filter_grad_full_tile)(col, g, ldg, Cout, K, P, gw, gsum);
        return;
    }
    {   /* Σ_p g and the transpose of the first Cb filter rows */
        const long PV = P - P % VLANES;
        for (int t = 0; t < Cout; t++) {
            const T *gt = g + (long)t * ldg;
            VT sv = VOP(zero)();
            long p = 0;
            for (; p < PV; p += VLANES) sv = VOP(add)(sv, VOP(load)(gt + p));
            T acc = VOP(hsum)(sv);
            for (; p < P; p++) acc += gt[p];
            gsum[t] += acc;
        }
        for (int t = 0; t < Cb; t++) {
            const T *gt = g + (long)t * ldg;
            for (long p = 0; p < P; p++) gT[p * Cb + t] = gt[p];
        }
    }
    T lanes[2 * VF64_LANES > 2 * VF32_LANES ? 2 * VF64_LANES : 2 * VF32_LANES];
    for (int t0 = 0; t0 < Cb; t0 += TV) {
        int k0 = 0;
        for (; k0 < K; k0 += FGT_KB) {
            const int kb = K - k0 < FGT_KB ? K - k0 : FGT_KB;
            if (kb == FGT_KB) {
                VT acc[FGT_KB][2];
                for (int b = 0; b < FGT_KB; b++) acc[b][0] = acc[b][1] = VOP(zero)();
                const T *cp = col + (long)k0 * P;
                const T *gp = gT + t0;
                for (long p = 0; p < P; p++, gp += Cb) {
                    VT g0 = VOP(load)(gp), g1 = VOP(load)(gp + VLANES);
                    for (int b = 0; b < FGT_KB; b++) {
                        VT c = VOP(set1)(cp[(long)b * P + p]);
                        acc[b][0] = VOP(fma)(c, g0, acc[b][0]);
                        acc[b][1] = VOP(fma)(c, g1, acc[b][1]);
                    }
                }
                for (int b = 0; b < FGT_KB; b++) {
                    VOP(store)(lanes, acc[b][0]);
                    VOP(store)(lanes + VLANES, acc[b][1]);
                    for (int l = 0; l < TV; l++) gw[(long)(t0 + l) * K + k0 + b] += lanes[l];
                }
            } else {
                for (int b = 0; b < kb; b++) {
                    VT a0 = VOP(zero)(), a1 = VOP(zero)();
                    const T *cp = col + (long)(k0 + b) * P;
                    const T *gp = gT + t0;
                    for (long p = 0; p < P; p++, gp += Cb) {
                        VT c = VOP(set1)(cp[p]);
                        a0 = VOP(fma)(c, VOP(load)(gp), a0);
                        a1 = VOP(fma)(c, VOP(load)(gp + VLANES), a1);
                    }
                    VOP(store)(lanes, a0);
                    VOP(store)(lanes + VLANES, a1);
                    for (int l = 0; l < TV; l++) gw[(long)(t0 + l) * K + k0 + b] += lanes[l];
                }
            }
        }
    }
    if (Cb < Cout)
        FN(filter_grad_full_tile)(col, g + (long)Cb * ldg, ldg, Cout - Cb, K, P,
                                  gw + (long)Cb * K, NULL);
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient "sign" of one image: gw[t, k] += Σ_p sgn(col[k, p] - w[t, k]) · g[t, p],
 * with the filters given transposed, wT (K, Cout) (as for the input gradient).
 * Block 2 filters × 2 taps (the filter values stay in registers).
 * ------------------------------------------------------------------------------------- */
static void FN(filter_grad_sign_tile)(const T *col, const T *wT, const T *g, long ldg, int Cout,
                                      int K, long P, T *gw)
{
    const long PV = P - P % VLANES;
    const VT one = VOP(set1)((T)1);
    for (int t = 0; t < Cout; t++) {
        const T *gt = g + (long)t * ldg;
        int k = 0;
        for (; k + 2 <= K; k += 2) {
            const T *c0 = col + (long)k * P, *c1 = c0 + P;
            const T w0 = wT[(long)k * Cout + t], w1 = wT[(long)(k + 1) * Cout + t];
            VT wv0 = VOP(set1)(w0), wv1 = VOP(set1)(w1);
            VT s0a = VOP(zero)(), s0b = VOP(zero)(), s1a = VOP(zero)(), s1b = VOP(zero)();
            long p = 0;
            for (; p + 2 * VLANES <= PV; p += 2 * VLANES) {
                VT ga = VOP(load)(gt + p), gb = VOP(load)(gt + p + VLANES);
                s0a = VOP(add)(s0a, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), ga));
                s0b = VOP(add)(s0b, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p + VLANES), wv0, one), gb));
                s1a = VOP(add)(s1a, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p), wv1, one), ga));
                s1b = VOP(add)(s1b, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p + VLANES), wv1, one), gb));
            }
            for (; p < PV; p += VLANES) {
                VT ga = VOP(load)(gt + p);
                s0a = VOP(add)(s0a, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), ga));
                s1a = VOP(add)(s1a, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p), wv1, one), ga));
            }
            T sum0 = VOP(hsum)(VOP(add)(s0a, s0b)), sum1 = VOP(hsum)(VOP(add)(s1a, s1b));
            for (; p < P; p++) {
                T d0 = c0[p] - w0, d1 = c1[p] - w1;
                sum0 += d0 != d0 ? d0 : (d0 > 0 ? gt[p] : (T)0) - (d0 < 0 ? gt[p] : (T)0);
                sum1 += d1 != d1 ? d1 : (d1 > 0 ? gt[p] : (T)0) - (d1 < 0 ? gt[p] : (T)0);
            }
            gw[(long)t * K + k] += sum0;
            gw[(long)t * K + k + 1] += sum1;
        }
        for (; k < K; k++) {
            const T *c0 = col + (long)k * P;
            const T w0 = wT[(long)k * Cout + t];
            VT wv0 = VOP(set1)(w0), s = VOP(zero)();
            long p = 0;
            for (; p < PV; p += VLANES)
                s = VOP(add)(s, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), VOP(load)(gt + p)));
            T sum = VOP(hsum)(s);
            for (; p < P; p++) {
                T d = c0[p] - w0;
                sum += d != d ? d : (d > 0 ? gt[p] : (T)0) - (d < 0 ? gt[p] : (T)0);
            }
            gw[(long)t * K + k] += sum;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Input gradient in patch space of one image, computed IN PLACE over the packed patches:
 *     col[k, p] <- Σ_t factor(w[t, k] - col[k, p]) · g[t, p]     (t ascending)
 * with the filters given transposed, wT (K, Cout), so that the filter values a block needs
 * for successive t are contiguous (w itself would stream one cache line per filter).
 * factor: IG_HARDTANH clip(·, -1, 1); IG_SIGN sgn(·); IG_L2 2·(·)  (the argument is -D);
 * IG_CONV: the convolution's col[k, p] <- Σ_t w[t, k]·g[t, p] (the patches are not read).
 * Block IG_KB taps × IG_PV vectors of positions; a block reads only its own patch entries,
 * so it can overwrite them.  Then unpack_patches_add gathers col into the input gradient.
 * ------------------------------------------------------------------------------------- */
#define IG_HARDTANH 0
#define IG_SIGN 1
#define IG_L2 2
#define IG_CONV 3
#ifndef IG_KB
#define IG_KB 4
#endif
#ifndef IG_PV
#define IG_PV 2
#endif

static inline __attribute__((always_inline)) VT FN(ig_term)(VT nd, VT gv, VT acc, int mode,
                                                            VT lo, VT hi)
{
        /* operand order keeps NaN: max/min return their second operand when one is NaN */
    if (mode == IG_HARDTANH) return VOP(fma)(VOP(min)(hi, VOP(max)(lo, nd)), gv, acc);
    if (mode == IG_SIGN) return VOP(add)(acc, VOP(signmul)(nd, gv));
    return VOP(fma)(nd, gv, acc);
}

static inline __attribute__((always_inline)) T FN(ig_term_scalar)(T nd, T gv, T acc, int mode)
{
    if (mode == IG_HARDTANH) {
        T f = nd < (T)-1 ? (T)-1 : (nd > (T)1 ? (T)1 : nd);
        return acc + f * gv;
    }
    if (mode == IG_SIGN) return acc + (nd != nd ? nd : (nd > 0 ? gv : (T)0) - (nd < 0 ? gv : (T)0));
    return acc + nd * gv;
}

static inline __attribute__((always_inline)) void FN(input_grad_body)(T *col, const T *wT,
                                                                      const T *g, long ldg,
                                                                      int Cout, int K, long P,
                                                                      int mode)
{
    const long PB = (long)IG_PV * VLANES;
    const VT lo = VOP(set1)((T)-1), hi = VOP(set1)((T)1), one = VOP(set1)((T)1);
    long p0 = 0;
    for (; p0 + PB <= P; p0 += PB) {
        int k0 = 0;
        for (; k0 + IG_KB <= K; k0 += IG_KB) {
            VT acc[IG_KB][IG_PV];
            for (int a = 0; a < IG_KB; a++)
                for (int b = 0; b < IG_PV; b++) acc[a][b] = VOP(zero)();
            T *cp = col + (long)k0 * P + p0;
            for (int t = 0; t < Cout; t++) {
                VT gv[IG_PV];
                for (int b = 0; b < IG_PV; b++) gv[b] = VOP(load)(g + (long)t * ldg + p0 + b * VLANES);
                for (int a = 0; a < IG_KB; a++) {
                    VT wv = VOP(set1)(wT[(long)(k0 + a) * Cout + t]);
                    for (int b = 0; b < IG_PV; b++) {
                        if (mode == IG_CONV) {
                            acc[a][b] = VOP(fma)(wv, gv[b], acc[a][b]);
                            continue;
                        }
                        VT nd = VOP(diff)(wv, VOP(load)(cp + (long)a * P + b * VLANES), one);
                        acc[a][b] = FN(ig_term)(nd, gv[b], acc[a][b], mode, lo, hi);
                    }
                }
            }
            for (int a = 0; a < IG_KB; a++)
                for (int b = 0; b < IG_PV; b++) {
                    VT r = acc[a][b];
                    if (mode == IG_L2) r = VOP(add)(r, r);
                    VOP(store)(cp + (long)a * P + b * VLANES, r);
                }
        }
        for (; k0 < K; k0++) {
            VT acc[IG_PV];
            for (int b = 0; b < IG_PV; b++) acc[b] = VOP(zero)();
            T *cp = col + (long)k0 * P + p0;
            for (int t = 0; t < Cout; t++) {
                VT wv = VOP(set1)(wT[(long)k0 * Cout + t]);
                for (int b = 0; b < IG_PV; b++) {
                    VT gv = VOP(load)(g + (long)t * ldg + p0 + b * VLANES);
                    if (mode == IG_CONV) {
                        acc[b] = VOP(fma)(wv, gv, acc[b]);
                        continue;
                    }
                    VT nd = VOP(diff)(wv, VOP(load)(cp + b * VLANES), one);
                    acc[b] = FN(ig_term)(nd, gv, acc[b], mode, lo, hi);
                }
            }
            for (int b = 0; b < IG_PV; b++) {
                VT r = acc[b];
                if (mode == IG_L2) r = VOP(add)(r, r);
                VOP(store)(cp + b * VLANES, r);
            }
        }
    }
    for (; p0 + VLANES <= P; p0 += VLANES) {
        for (int k = 0; k < K; k++) {
            VT acc = VOP(zero)();
            T *cp = col + (long)k * P + p0;
            VT c = VOP(load)(cp);
            for (int t = 0; t < Cout; t++) {
                VT wv = VOP(set1)(wT[(long)k * Cout + t]), gv = VOP(load)(g + (long)t * ldg + p0);
                if (mode == IG_CONV) acc = VOP(fma)(wv, gv, acc);
                else acc = FN(ig_term)(VOP(diff)(wv, c, one), gv, acc, mode, lo, hi);
            }
            if (mode == IG_L2) acc = VOP(add)(acc, acc);
            VOP(store)(cp, acc);
        }
    }
    for (long p = p0; p < P; p++) {
        for (int k = 0; k < K; k++) {
            T acc = (T)0, c = col[(long)k * P + p];
            for (int t = 0; t < Cout; t++)
                acc = mode == IG_CONV ? acc + wT[(long)k * Cout + t] * g[(long)t * ldg + p]
                                      : FN(ig_term_scalar)(wT[(long)k * Cout + t] - c,
                                                           g[(long)t * ldg + p], acc, mode);
            if (mode == IG_L2) acc = acc + acc;
            col[(long)k * P + p] = acc;
        }
    }
}

static void FN(input_grad_tile)(T *col, const T *wT, const T *g, long ldg, int Cout, int K,
                                long P, int mode)
{
    if (mode == IG_HARDTANH) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_HARDTANH);
    else if (mode == IG_SIGN) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_SIGN);
    else if (mode == IG_L2) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_L2);
    else FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_CONV);
}

#undef CAT_
#undef CAT
#undef FN
#undef VT
#undef CATN_
#undef CATN
#undef VOP
