/* Patch packing (im2col of a tile of output positions) and its adjoint (col2im), one
 * instantiation per element type; included by adder_kernels.h with the macros of its
 * "Instantiation" block (T_IN, T_ACC, S, VLANES, FN, VOP).  Patches are operands (T_IN);
 * the adjoint gathers gradients (T_ACC).
 *
 * A tile is a range [p_lo, p_hi) of the output positions p = h·Wo + w of one image, not a
 * group of whole rows: its length is then independent of the output width Wo, so every tile
 * but the last of an image holds whole register blocks (see tile_end in _adder.pyx).  The
 * layers' tiles are packed from the image's column planes (pack_source, pack_tile: one copy
 * per tap whatever the output width); the bounds-checked pack_patches / unpack_patches_add
 * (the public im2col / col2im) walk a tile as runs ("segments") of one output row each. */

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
 * Packing source of one image: its "column planes".  For every channel c, tap column j and
 * row phase f in [0, sh):
 *     S[c][j][f][q][w] = Xp[c, q·sh + f, w·sw + j·dw]       q in [0, Qh), w in [0, Wo)
 * (Xp: x zero-padded by ph rows and pw columns, rows past Xp read as 0;
 * Qh = Ho + ⌊(kh-1)·dh / sh⌋).  Tap (i, j) of output position p = h·Wo + w reads Xp row
 * h·sh + i·dh = (h + ⌊i·dh/sh⌋)·sh + (i·dh mod sh) and column w·sw + j·dw, so the patch row
 * of tap (c, i, j) over ANY run of positions [p_lo, p_hi) is one contiguous run of S:
 *     S[c][j][i·dh mod sh] + ⌊i·dh/sh⌋·Wo + p
 * (rows of Wo follow each other as the positions do).  Packing a tile is then K plain copies
 * of p_hi - p_lo elements whatever the output width, where packing output row by output
 * row made one copy per row segment: one element long at width 1, whose bookkeeping cost
 * more than the arithmetic it fed (issue 14).  Building S writes C·kw·sh·Qh·Wo ≈ kw/sw times
 * the image (the strides' gathers and all the padding logic happen here, once per image).
 * When S would be x itself (1x1 kernel, stride 1, no padding) x is used directly.
 * ------------------------------------------------------------------------------------- */
#ifndef PAD_SLACK
#define PAD_SLACK 32 /* spare elements the workspace contract keeps after the packing source */
#endif

/* rows per (c, j, phase) plane */
static inline long FN(planes_rows)(int Ho, int kh, int sh, int dh)
{
    return (long)Ho + (long)(kh - 1) * dh / sh;
}

/* whether some tap row i < kh reads row phase f (i·dh mod sh == f): a 1x1 stride-2 layer
 * reads phase 0 only, so its phase-1 planes are neither built nor folded back */
static inline int FN(phase_used)(int f, int kh, int sh, int dh)
{
    for (int i = 0; i < kh; i++)
        if ((i * dh) % sh == f) return 1;
    return 0;
}

/* channel stride of the packing source (elements); C times this is its size */
static inline long FN(source_channel_stride)(int H, int W, int kh, int kw, int sh, int sw,
                                             int ph, int pw, int dh, int Ho, int Wo)
{
    if (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0) return (long)H * W;
    return (long)kw * sh * FN(planes_rows)(Ho, kh, sh, dh) * Wo;
}

/* Short element loops stay loops: gcc would otherwise turn each row's zero fill and copy into
 * a memset/memmove call, which costs more than the row itself at widths 1-3. */
#ifndef PACK_INLINE_LOOPS
#if defined(__GNUC__) && !defined(__clang__)
#define PACK_INLINE_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define PACK_INLINE_LOOPS
#endif
#endif

#ifndef PACK_NARROW
#define PACK_NARROW 8 /* planes narrower than this are built column by column */
#endif

/* plane rows [*q_lo, *q_hi) of row phase f whose input row q·sh + f - ph lies in [0, H) (the
 * others lie wholly on the padding) */
static inline void FN(rows_inside)(long Qh, int sh, int f, int ph, int H, long *q_lo,
                                   long *q_hi)
{
    long lo = 0, hi = Qh;
    while (lo < Qh && lo * sh + f - ph < 0) lo++;
    while (hi > lo && (hi - 1) * sh + f - ph >= H) hi--;
    *q_lo = lo;
    *q_hi = hi;
}

/* d[0, n) = s[0, n) (no overlap): whole vectors, the last one ending at n (it may overlap the
 * previous one: the same values are stored twice), or element by element when n < VLANES.
 * The plane rows of a CIFAR layer are 7-32 elements: gcc's vectorised loop ran them mostly
 * through its scalar epilogue (1 cycle per element, 8% of an 8x8 layer's forward). */
static inline __attribute__((always_inline)) void FN(copy_row)(T_IN *restrict d,
                                                              const T_IN *restrict s, long n)
{
    if (VLANES > 1 && n >= VLANES) {
        long q = 0;
        for (; q + VLANES <= n; q += VLANES) VOP(store)(d + q, VOP(load)(s + q));
        if (q < n) VOP(store)(d + n - VLANES, VOP(load)(s + n - VLANES));
        return;
    }
    for (long q = 0; q < n; q++) d[q] = s[q];
}

/* d[0, n) = 0, in whole vectors as copy_row */
static inline __attribute__((always_inline)) void FN(zero_row)(T_IN *restrict d, long n)
{
    if (VLANES > 1 && n >= VLANES) {
        long q = 0;
        for (; q + VLANES <= n; q += VLANES) VOP(store)(d + q, VOP(zero)());
        if (q < n) VOP(store)(d + n - VLANES, VOP(zero)());
        return;
    }
    for (long q = 0; q < n; q++) d[q] = (T_IN)0;
}

#ifndef PACK_ROW_MAX
#define PACK_ROW_MAX 1024 /* longest padded input row the stride-1 path below stages */
#endif

/* pack_source for sw == 1, Wo >= PACK_NARROW, W + 2·pw <= PACK_ROW_MAX (3x3 s1 p1 layers and
 * the like): each input row is staged once, zero-padded, in a stack buffer; plane j's row is
 * then the buffer's columns [j·dw, j·dw + Wo), one copy_row of whole vectors with no edge
 * handling.  The general path below walks each (plane, row) with its own edge zeros: for the
 * 7-8 element rows of an 8x8 map that bookkeeping cost as much as the copies (perf: pack_source
 * 7% of the forward against 1% for the padded-image packing of 0f782a4).  Same planes, same
 * values: only how they are filled differs. */
static PACK_INLINE_LOOPS void FN(pack_source_rows)(const T_IN *restrict x, int C, int H, int W,
                                                   int kh, int kw, int sh, int ph, int pw,
                                                   int dh, int dw, int Ho, int Wo,
                                                   T_IN *restrict xs)
{
    const long Qh = FN(planes_rows)(Ho, kh, sh, dh), plane = Qh * Wo;
    const int Wp = W + 2 * pw;
    T_IN row[PACK_ROW_MAX]; /* [0, pw) and [pw + W, Wp) stay 0; copy_row stays in [0, Wp) */
    for (int q = 0; q < pw; q++) row[q] = (T_IN)0;
    for (int q = pw + W; q < Wp; q++) row[q] = (T_IN)0;
    for (int c = 0; c < C; c++) {
        const T_IN *xc = x + (long)c * H * W;
        for (int f = 0; f < sh; f++) {
            if (!FN(phase_used)(f, kh, sh, dh)) continue; /* never read by pack_tile */
            long q_lo, q_hi;
            FN(rows_inside)(Qh, sh, f, ph, H, &q_lo, &q_hi);
            for (int j = 0; j < kw; j++) {
                T_IN *d = xs + (((long)c * kw + j) * sh + f) * plane;
                FN(zero_row)(d, q_lo * Wo);
                FN(zero_row)(d + q_hi * Wo, (Qh - q_hi) * Wo);
            }
            for (long q = q_lo; q < q_hi; q++) {
                FN(copy_row)(row + pw, xc + (q * sh + f - ph) * W, W);
                for (int j = 0; j < kw; j++)
                    FN(copy_row)(xs + (((long)c * kw + j) * sh + f) * plane + q * Wo,
                                 row + (long)j * dw, Wo);
            }
        }
    }
}

/* S for image x (C, H, W) into xs (>= C·source_channel_stride elements); returns the source
 * the tiles are packed from (x itself for a 1x1 stride-1 unpadded layer, else xs).  Planes
 * and runs of rows that lie wholly on the padding are zeroed in one call each; only the rows
 * inside the image are walked one by one (or, for narrow planes, column by column: a row
 * loop's set-up would cost more than its one to three elements). */
static PACK_INLINE_LOOPS const T_IN *FN(pack_source)(const T_IN *restrict x, int C, int H, int W,
                                                     int kh, int kw, int sh, int sw, int ph,
                                                     int pw, int dh, int dw, int Ho, int Wo,
                                                     T_IN *restrict xs)
{
    if (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0) return x;
    if (sw == 1 && Wo >= PACK_NARROW && W + 2 * pw <= PACK_ROW_MAX) {
        FN(pack_source_rows)(x, C, H, W, kh, kw, sh, ph, pw, dh, dw, Ho, Wo, xs);
        return xs;
    }
    const long Qh = FN(planes_rows)(Ho, kh, sh, dh), plane = Qh * Wo;
    for (int c = 0; c < C; c++) {
        const T_IN *xc = x + (long)c * H * W;
        for (int j = 0; j < kw; j++) {
            int w_lo, w_hi; /* output columns whose input column is inside the image */
            FN(valid_columns)(Wo, W, sw, j * dw, pw, &w_lo, &w_hi);
            const long off = (long)j * dw - pw; /* input column of output column w: w·sw + off */
            for (int f = 0; f < sh; f++) {
                if (!FN(phase_used)(f, kh, sh, dh)) continue; /* never read by pack_tile */
                T_IN *d = xs + (((long)c * kw + j) * sh + f) * plane;
                long q_lo, q_hi;
                FN(rows_inside)(Qh, sh, f, ph, H, &q_lo, &q_hi);
                if (w_lo >= w_hi || q_lo >= q_hi) {
                    memset(d, 0, sizeof(T_IN) * (size_t)plane);
                    continue;
                }
                memset(d, 0, sizeof(T_IN) * (size_t)(q_lo * Wo));
                memset(d + q_hi * Wo, 0, sizeof(T_IN) * (size_t)((Qh - q_hi) * Wo));
                const T_IN *xrow = xc + (q_lo * sh + f - ph) * W;
                const long xstep = (long)sh * W;
                if (Wo < PACK_NARROW) { /* narrow planes: column by column (fewer, longer loops) */
                    for (int w = 0; w < Wo; w++) {
                        T_IN *dw_ = d + q_lo * Wo + w;
                        if (w < w_lo || w >= w_hi) {
                            for (long q = q_lo; q < q_hi; q++, dw_ += Wo) *dw_ = (T_IN)0;
                        } else {
                            const T_IN *xw = xrow + (long)w * sw + off;
                            for (long q = q_lo; q < q_hi; q++, dw_ += Wo, xw += xstep) *dw_ = *xw;
                        }
                    }
                    continue;
                }
                for (long q = q_lo; q < q_hi; q++, xrow += xstep) {
                    T_IN *dq = d + q * Wo;
                    for (int w = 0; w < w_lo; w++) dq[w] = (T_IN)0;
                    if (sw == 1) {
                        FN(copy_row)(dq + w_lo, xrow + w_lo + off, w_hi - w_lo);
                    } else {
                        for (int w = w_lo; w < w_hi; w++) dq[w] = xrow[(long)w * sw + off];
                    }
                    for (int w = w_hi; w < Wo; w++) dq[w] = (T_IN)0;
                }
            }
        }
    }
    return xs;
}

/* offset in S (relative to the channel) of tap (i, j)'s patch row at position 0 */
static inline long FN(tap_offset)(int i, int j, int kw, int sh, int dh, long plane, int Wo)
{
    return ((long)j * sh + (i * dh) % sh) * plane + (long)(i * dh / sh) * Wo;
}

/* Pack positions [p_lo, p_hi) from S (pack_source; channel stride cs) into the tile buffer
 * col (row stride ldc, the tile's padded length) and zero its columns [p_hi - p_lo, ldc):
 * the kernels may then run whole vectors over a tile whose length is not a multiple of the
 * vector width (the lanes past the tile read zeros and are never stored). */
static PACK_INLINE_LOOPS void FN(pack_tile)(const T_IN *restrict src, long cs, int C, int kh,
                                            int kw, int sh, int dh, int Ho, int Wo, long p_lo,
                                            long p_hi, T_IN *restrict col, long ldc)
{
    const long n = p_hi - p_lo, plane = FN(planes_rows)(Ho, kh, sh, dh) * Wo;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                T_IN *out = col + ((long)(c * kh + i) * kw + j) * ldc;
                const T_IN *in = src + c * cs + FN(tap_offset)(i, j, kw, sh, dh, plane, Wo) + p_lo;
                /* a loop, not memcpy: K calls of a few dozen elements cost more than the copy */
                for (long q = 0; q < n; q++) out[q] = in[q];
                for (long q = n; q < ldc; q++) out[q] = (T_IN)0;
            }
}

/* Adjoint of pack_tile into gradient planes dS (same layout as S, channel stride cs):
 * dS[tap row of (c, i, j)][p] += dcol[k, p - p_lo] — contiguous adds, fixed order (c, i, j, p). */
static void FN(unpack_tile_add)(const T_ACC *restrict dcol, long ldc, int C, int kh, int kw,
                                int sh, int dh, int Ho, int Wo, long p_lo, long p_hi, long cs,
                                T_ACC *restrict ds)
{
    const long n = p_hi - p_lo, plane = FN(planes_rows)(Ho, kh, sh, dh) * Wo;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const T_ACC *in = dcol + ((long)(c * kh + i) * kw + j) * ldc;
                T_ACC *d = ds + c * cs + FN(tap_offset)(i, j, kw, sh, dh, plane, Wo) + p_lo;
                for (long q = 0; q < n; q++) d[q] += in[q];
            }
}

/* Fold gradient planes dS (C·cs elements, as made by unpack_tile_add over a whole image) into
 * gx (C, H, W), which it writes: gx[c] = 0, then gx[c, q·sh + f - ph, w·sw + j·dw - pw] +=
 * dS[c][j][f][q][w] for the entries inside the image (padding entries dropped), in the fixed
 * order (c, j, f, q, w).  Each channel is zeroed just before its terms are added, while it is
 * in cache (zeroing the whole image first cost a separate pass over memory: 11% of a strided
 * 1x1 layer's backward).  Not needed when the source is x itself (then dS is gx). */
static void FN(fold_planes)(const T_ACC *restrict ds, int C, int H, int W, int kh, int kw,
                            int sh, int sw, int ph, int pw, int dh, int dw, int Ho, int Wo,
                            T_ACC *restrict gx)
{
    const long Qh = FN(planes_rows)(Ho, kh, sh, dh), plane = Qh * Wo;
    for (int c = 0; c < C; c++) {
        T_ACC *gc = gx + (long)c * H * W;
        memset(gc, 0, sizeof(T_ACC) * (size_t)H * W);
        for (int j = 0; j < kw; j++) {
            int w_lo, w_hi;
            FN(valid_columns)(Wo, W, sw, j * dw, pw, &w_lo, &w_hi);
            if (w_lo >= w_hi) continue;
            const long off = (long)j * dw - pw;
            for (int f = 0; f < sh; f++) {
                if (!FN(phase_used)(f, kh, sh, dh)) continue; /* unpack_tile_add never wrote it */
                const T_ACC *d = ds + (((long)c * kw + j) * sh + f) * plane;
                /* the plane rows q whose image row q·sh + f - ph lies inside [0, H) */
                const long q_lo = ph > f ? (ph - f + sh - 1) / sh : 0;
                long q_hi = H + ph - f > 0 ? (H + ph - f + sh - 1) / sh : 0;
                if (q_hi > Qh) q_hi = Qh;
                if (q_lo >= q_hi) continue;
                T_ACC *g0 = gc + (q_lo * sh + f - ph) * W + off;
                const long gstep = (long)sh * W;
                if (w_hi - w_lo < 4) {
                    /* narrow planes column by column: a row loop's set-up would cost more
                     * than its one to three elements (each gx element gets at most one term
                     * per (c, j, f), so the order of the terms it gets is unchanged) */
                    for (int w = w_lo; w < w_hi; w++) {
                        const T_ACC *dq = d + q_lo * Wo + w;
                        T_ACC *gq = g0 + (long)w * sw;
                        for (long q = q_lo; q < q_hi; q++, dq += Wo, gq += gstep) *gq += *dq;
                    }
                    continue;
                }
                d += q_lo * Wo;
                for (long q = q_lo; q < q_hi; q++, d += Wo, g0 += gstep) {
                    if (sw == 1) {
                        for (int w = w_lo; w < w_hi; w++) g0[w] += d[w];
                    } else {
                        for (int w = w_lo; w < w_hi; w++) g0[(long)w * sw] += d[w];
                    }
                }
            }
        }
    }
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
