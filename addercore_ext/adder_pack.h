/* Patch packing (im2col of a tile of output positions) and its adjoint (col2im), one
 * instantiation per element type; included by adder_kernels.h with the macros of its
 * "Instantiation" block (T_IN, T_ACC, S, VLANES, FN, VOP).  Patches are operands (T_IN);
 * the adjoint gathers gradients (T_ACC). */

/* ---------------------------------------------------------------------------------------
 * im2col of output rows [h_lo, h_hi) of one image: col[k, p] with k = (c, i, j) row-major and p = (h, w) row-major.
 * x: (C, H, W); col: (C·kh·kw, (h_hi-h_lo)·Wo) with row stride ldc.  Taps on the zero padding are written as 0.
 * ------------------------------------------------------------------------------------- */
static void FN(pack_patches)(const T_IN *restrict x, int C, int H, int W, int kh, int kw, int sh, int sw,
                             int ph, int pw, int h_lo, int h_hi, int Wo, T_IN *restrict col, long ldc)
{
    const long P = ldc; /* row stride of col: (h_hi - h_lo)·Wo for a packed tile */
    for (int c = 0; c < C; c++) {
        const T_IN *xc = x + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T_IN *row = col + ((long)(c * kh + i) * kw + j) * P;
                /* output columns w whose input column w·sw + j - pw lies inside [0, W) */
                int w_lo = 0, w_hi = Wo; /* [w_lo, w_hi) */
                while (w_lo < Wo && w_lo * sw + j - pw < 0) w_lo++;
                while (w_hi > w_lo && (w_hi - 1) * sw + j - pw >= W) w_hi--;
                for (int h = h_lo; h < h_hi; h++) {
                    T_IN *out = row + (long)(h - h_lo) * Wo;
                    int xh = h * sh + i - ph;
                    if (xh < 0 || xh >= H) {
                        for (int w = 0; w < Wo; w++) out[w] = (T_IN)0;
                        continue;
                    }
                    const T_IN *xrow = xc + (long)xh * W + j - pw;
                    for (int w = 0; w < w_lo; w++) out[w] = (T_IN)0;
                    if (sw == 1) {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[w];
                    } else if (sw == 2) {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[2 * (long)w];
                    } else {
                        for (int w = w_lo; w < w_hi; w++) out[w] = xrow[(long)w * sw];
                    }
                    for (int w = w_hi; w < Wo; w++) out[w] = (T_IN)0;
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

static inline __attribute__((always_inline)) void FN(copy_row)(T_IN *restrict dst,
                                                               const T_IN *restrict src, int n)
{
    for (int w = 0; w < n; w++) dst[w] = src[w];
}

/* im2col of output rows [h_lo, h_hi) from the padded image xp (C, Hp, Wp); same layout as
 * pack_patches. */
static void FN(pack_patches_padded)(const T_IN *restrict xp, int C, int Hp, int Wp, int kh, int kw,
                                    int sh, int sw, int h_lo, int h_hi, int Wo,
                                    T_IN *restrict col, long ldc)
{
    for (int c = 0; c < C; c++) {
        const T_IN *xc = xp + (long)c * Hp * Wp;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                T_IN *out = col + ((long)(c * kh + i) * kw + j) * ldc;
                const T_IN *src = xc + (long)(h_lo * sh + i) * Wp + j;
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
#define PAD_SLACK 32 /* elements after a padded image that stride-2 vector gathers may read */
#endif
static inline int FN(pack_uses_padded)(int sw) { return sw <= 2; }

static const T_IN *FN(pack_source)(const T_IN *x, int C, int H, int W, int ph, int pw, int sw, T_IN *xp)
{
    if (!FN(pack_uses_padded)(sw)) return x;
    if (sw == 1 && ph == 0 && pw == 0) return x;
    FN(pad_image)(x, C, H, W, ph, pw, xp);
    return xp;
}

static void FN(pack_tile)(const T_IN *src, int C, int H, int W, int kh, int kw, int sh, int sw,
                          int ph, int pw, int h_lo, int h_hi, int Wo, T_IN *col, long ldc)
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
static void FN(unpack_patches_add)(const T_ACC *dcol, int C, int H, int W, int kh, int kw, int sh,
                                   int sw, int ph, int pw, int h_lo, int h_hi, int Wo,
                                   long ldc, T_ACC *gx)
{
    const long P = ldc; /* row stride of dcol */
    for (int c = 0; c < C; c++) {
        T_ACC *gc = gx + (long)c * H * W;
        for (int i = 0; i < kh; i++) {
            for (int j = 0; j < kw; j++) {
                const T_ACC *row = dcol + ((long)(c * kh + i) * kw + j) * P;
                int w_lo = 0, w_hi = Wo;
                while (w_lo < Wo && w_lo * sw + j - pw < 0) w_lo++;
                while (w_hi > w_lo && (w_hi - 1) * sw + j - pw >= W) w_hi--;
                for (int h = h_lo; h < h_hi; h++) {
                    int xh = h * sh + i - ph;
                    if (xh < 0 || xh >= H) continue;
                    const T_ACC *in = row + (long)(h - h_lo) * Wo;
                    T_ACC *grow = gc + (long)xh * W + j - pw;
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
