/* Patch packing (im2col of a tile of output positions) and its adjoint (col2im), one
 * instantiation per element type; included by adder_kernels.h with the macros of its
 * "Instantiation" block (T_IN, T_ACC, S, VLANES, FN, VOP).  Patches are operands (T_IN);
 * the adjoint gathers gradients (T_ACC).
 *
 * A tile is a range [p_lo, p_hi) of the output positions p = h·Wo + w of one image, not a
 * group of whole rows: its length is then independent of the output width Wo, so every tile
 * but the last of an image holds whole register blocks (see tile_end in _adder.pyx).  The
 * loops below walk a tile as runs ("segments") of one output row each. */

/* First segment of the tile starting at p_lo: output row *h, columns [*w0, *w1), clipped to
 * the tile end p_hi.  The next segment starts at column 0 of row *h + 1. */
static inline void FN(segment_first)(long p_lo, long p_hi, int Wo, int *h, int *w0, int *w1)
{
    *h = (int)(p_lo / Wo);
    *w0 = (int)(p_lo - (long)*h * Wo);
    *w1 = p_hi - p_lo < (long)(Wo - *w0) ? *w0 + (int)(p_hi - p_lo) : Wo;
}

static inline void FN(segment_next)(long p, long p_hi, int Wo, int *h, int *w0, int *w1)
{
    /* p: first position of the new segment */
    *h += 1;
    *w0 = 0;
    *w1 = p_hi - p < (long)Wo ? (int)(p_hi - p) : Wo;
}

/* Output columns [*w_lo, *w_hi) whose input column w·sw + j - pw lies inside [0, W) (j: the
 * tap's column offset, already times the dilation). */
static inline void FN(valid_columns)(int Wo, int W, int sw, int j, int pw, int *w_lo, int *w_hi)
{
    int lo = 0, hi = Wo;
    while (lo < Wo && lo * sw + j - pw < 0) lo++;
    while (hi > lo && (hi - 1) * sw + j - pw >= W) hi--;
    *w_lo = lo;
    *w_hi = hi;
}

/* ---------------------------------------------------------------------------------------
 * im2col of output positions [p_lo, p_hi) of one image: col[k, p - p_lo] with k = (c, i, j)
 * row-major; tap (i, j) reads input (h·sh + i·dh - ph, w·sw + j·dw - pw) (dh, dw: dilation).
 * x: (C, H, W); col: (C·kh·kw, >= p_hi - p_lo) with row stride ldc.  Taps on the
 * zero padding are written as 0.  Bounds-checked: any stride and padding.
 * ------------------------------------------------------------------------------------- */
static void FN(pack_patches)(const T_IN *restrict x, int C, int H, int W, int kh, int kw, int sh,
                             int sw, int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo,
                             T_IN *restrict col, long ldc)
{
    for (int c = 0; c < C; c++) {
        const T_IN *xc = x + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T_IN *row = col + ((long)(c * kh + i) * kw + j) * ldc;
                int w_lo, w_hi;
                FN(valid_columns)(Wo, W, sw, j * dw, pw, &w_lo, &w_hi);
                int h, w0, w1;
                FN(segment_first)(p_lo, p_hi, Wo, &h, &w0, &w1);
                for (long p = p_lo; p < p_hi;) {
                    T_IN *out = row + (p - p_lo); /* out[w - w0] for w in [w0, w1) */
                    int xh = h * sh + i * dh - ph;
                    int a = w_lo > w0 ? w_lo : w0, b = w_hi < w1 ? w_hi : w1;
                    if (xh < 0 || xh >= H || a >= b) {
                        for (int w = w0; w < w1; w++) out[w - w0] = (T_IN)0;
                    } else {
                        const T_IN *xrow = xc + (long)xh * W + j * dw - pw;
                        for (int w = w0; w < a; w++) out[w - w0] = (T_IN)0;
                        if (sw == 1) {
                            for (int w = a; w < b; w++) out[w - w0] = xrow[w];
                        } else {
                            for (int w = a; w < b; w++) out[w - w0] = xrow[(long)w * sw];
                        }
                        for (int w = b; w < w1; w++) out[w - w0] = (T_IN)0;
                    }
                    p += w1 - w0;
                    FN(segment_next)(p, p_hi, Wo, &h, &w0, &w1);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Zero-padded copy of one image: xp (C, H + 2·ph, W + 2·pw).  Packing from it needs no bounds
 * logic, so every segment is a plain copy (this is what makes packing cheap for the short
 * rows of small feature maps).
 * ------------------------------------------------------------------------------------- */
static void FN(pad_image)(const T_IN *restrict x, int C, int H, int W, int ph, int pw,
                          T_IN *restrict xp)
{
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    for (int c = 0; c < C; c++) {
        T_IN *dst = xp + (long)c * Hp * Wp;
        const T_IN *src = x + (long)c * H * W;
        for (long e = 0; e < (long)ph * Wp; e++) dst[e] = (T_IN)0;
        for (int h = 0; h < H; h++) {
            T_IN *d = dst + (long)(h + ph) * Wp;
            for (int w = 0; w < pw; w++) d[w] = (T_IN)0;
            memcpy(d + pw, src + (long)h * W, sizeof(T_IN) * (size_t)W);
            for (int w = pw + W; w < Wp; w++) d[w] = (T_IN)0;
        }
        for (long e = (long)(H + ph) * Wp; e < (long)Hp * Wp; e++) dst[e] = (T_IN)0;
    }
}

/* im2col of output positions [p_lo, p_hi) from the padded image xp (C, Hp, Wp); same layout
 * as pack_patches. */
static void FN(pack_patches_padded)(const T_IN *restrict xp, int C, int Hp, int Wp, int kh,
                                    int kw, int sh, int sw, int dh, int dw, long p_lo, long p_hi,
                                    int Wo, T_IN *restrict col, long ldc)
{
    for (int c = 0; c < C; c++) {
        const T_IN *xc = xp + (long)c * Hp * Wp;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T_IN *out = col + ((long)(c * kh + i) * kw + j) * ldc;
                /* (h, w) at base + h·sh·Wp + w·sw */
                const T_IN *base = xc + (long)i * dh * Wp + (long)j * dw;
                int h, w0, w1;
                FN(segment_first)(p_lo, p_hi, Wo, &h, &w0, &w1);
                for (long p = p_lo; p < p_hi;) {
                    const int n = w1 - w0;
                    const T_IN *src = base + (long)h * sh * Wp + (long)w0 * sw;
                    if (sw == 1) {
                        for (int w = 0; w < n; w++) out[w] = src[w];
                    } else if (sw == 2) {
                        /* vectors of even elements; may read 2·VLANES-1 elements past a row,
                         * which stays inside xp (the caller allocates PAD_SLACK extra) */
                        int w = 0;
                        for (; w + VLANES <= n; w += VLANES)
                            VOP(store)(out + w, VOP(load_even)(src + 2 * (long)w));
                        for (; w < n; w++) out[w] = src[2 * (long)w];
                    } else {
                        for (int w = 0; w < n; w++) out[w] = src[(long)w * sw];
                    }
                    out += n;
                    p += n;
                    FN(segment_next)(p, p_hi, Wo, &h, &w0, &w1);
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
#define PAD_SLACK 32 /* elements after a padded image that stride-2 vector gathers may read */
#endif
static inline int FN(pack_uses_padded)(int sw) { return sw <= 2; }

static const T_IN *FN(pack_source)(const T_IN *x, int C, int H, int W, int ph, int pw, int sw,
                                   T_IN *xp)
{
    if (!FN(pack_uses_padded)(sw)) return x;
    if (sw == 1 && ph == 0 && pw == 0) return x;
    FN(pad_image)(x, C, H, W, ph, pw, xp);
    return xp;
}

/* Pack positions [p_lo, p_hi) into the tile buffer col (row stride ldc, the tile's padded
 * length) and zero its columns [p_hi - p_lo, ldc):
 * the kernels may then run whole vectors over a tile whose length is not a multiple of the
 * vector width (the lanes past the tile read zeros and are never stored). */
static void FN(pack_tile)(const T_IN *src, int C, int H, int W, int kh, int kw, int sh, int sw,
                          int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo, T_IN *col,
                          long ldc)
{
    if (FN(pack_uses_padded)(sw))
        FN(pack_patches_padded)(src, C, H + 2 * ph, W + 2 * pw, kh, kw, sh, sw, dh, dw, p_lo,
                                p_hi, Wo, col, ldc);
    else
        FN(pack_patches)(src, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, p_lo, p_hi, Wo, col, ldc);
    const long n = p_hi - p_lo, K = (long)C * kh * kw;
    if (n < ldc)
        for (long k = 0; k < K; k++)
            for (long q = n; q < ldc; q++) col[k * ldc + q] = (T_IN)0;
}

/* g (rows, >= n) with row stride ldg -> dst (rows, ld) with columns [n, ld) zeroed (the
 * grad_output tile of the backward, padded like the packed patches). */
static void FN(copy_tile)(const T_ACC *restrict g, long ldg, int rows, long n, long ld,
                          T_ACC *restrict dst)
{
    for (int r = 0; r < rows; r++) {
        const T_ACC *s = g + (long)r * ldg;
        T_ACC *d = dst + (long)r * ld;
        for (long q = 0; q < n; q++) d[q] = s[q];
        for (long q = n; q < ld; q++) d[q] = (T_ACC)0;
    }
}

/* ---------------------------------------------------------------------------------------
 * col2im of output positions [p_lo, p_hi) of one image, accumulating:
 * gx[c, h·sh+i·dh-ph, w·sw+j·dw-pw] += dcol[k, p - p_lo] for the taps inside the image
 * (taps on the padding are dropped).  gx: (C, H, W), must be initialised.  Fixed order (c, i, j, p):
 * deterministic.
 * ------------------------------------------------------------------------------------- */
static void FN(unpack_patches_add)(const T_ACC *dcol, int C, int H, int W, int kh, int kw,
                                   int sh, int sw, int ph, int pw, int dh, int dw, long p_lo,
                                   long p_hi, int Wo, long ldc, T_ACC *gx)
{
    for (int c = 0; c < C; c++) {
        T_ACC *gc = gx + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                const T_ACC *row = dcol + ((long)(c * kh + i) * kw + j) * ldc;
                int w_lo, w_hi;
                FN(valid_columns)(Wo, W, sw, j * dw, pw, &w_lo, &w_hi);
                int h, w0, w1;
                FN(segment_first)(p_lo, p_hi, Wo, &h, &w0, &w1);
                for (long p = p_lo; p < p_hi;) {
                    int xh = h * sh + i * dh - ph;
                    int a = w_lo > w0 ? w_lo : w0, b = w_hi < w1 ? w_hi : w1;
                    if (xh >= 0 && xh < H) {
                        const T_ACC *in = row + (p - p_lo); /* in[w - w0], w in [w0, w1) */
                        T_ACC *grow = gc + (long)xh * W + j * dw - pw;
                        if (sw == 1) {
                            for (int w = a; w < b; w++) grow[w] += in[w - w0];
                        } else {
                            for (int w = a; w < b; w++) grow[(long)w * sw] += in[w - w0];
                        }
                    }
                    p += w1 - w0;
                    FN(segment_next)(p, p_hi, Wo, &h, &w0, &w1);
                }
            }
        }
    }
}
