/* Backward micro-kernels (filter gradients "full" and "sign", input gradient in patch space),
 * one instantiation per element type; included by adder_kernels.h with the macros of its
 * "Instantiation" block.  Training only: the input gradient is computed in place over the
 * packed patches, so operands and accumulators must be the same type here (checked below). */

_Static_assert(__builtin_types_compatible_p(T_IN, T_ACC),
               "the backward kernels need T_IN == T_ACC (input gradient in place over col)");

/* ---------------------------------------------------------------------------------------
 * Filter gradient, "full" part of one image (a GEMM with the reduction along contiguous p):
 *     gw[t, k] += Σ_p col[k, p] · g[t, p]          gsum[t] += Σ_p g[t, p]
 * The caller forms Σ D·G = Σ X·G - F·Σ G (method §4.1) once all images are accumulated.
 * Register block: FGW_TB filters × FGW_KB taps, one vector accumulator each, lanes summed
 * in a fixed order at the end.  col: (K, P) tile; g: (Cout, ldg); gsum: (Cout,);
 * gw[t, k] is gw[t·gw_t + k·gw_k] (the callers pass the transposed (K, Cout) layout of
 * filter_grad_full_tile_t: gw_t = 1, gw_k = its row length).
 * ------------------------------------------------------------------------------------- */
#ifndef FGW_TB
#define FGW_TB 4 /* filters per register block of filter_grad_full_tile */
#endif
#ifndef FGW_KB
#define FGW_KB 2 /* taps per register block of filter_grad_full_tile */
#endif

static void FN(filter_grad_full_tile)(const T_IN *col, const T_ACC *g, long ldg, int Cout, int K,
                                      long P, T_ACC *gw, long gw_t, long gw_k, T_ACC *gsum,
                                      int first)
{
    const long PV = P - P % VLANES; /* vectorised part of p */
    for (int t = 0; gsum != NULL && t < Cout; t++) {
        const T_ACC *gt = g + (long)t * ldg;
        V_ACC s = VOP(zero)();
        long p = 0;
        for (; p < PV; p += VLANES) s = VOP(add)(s, VOP(load)(gt + p));
        T_ACC acc = VOP(hsum)(s);
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
                V_ACC acc[FGW_TB][FGW_KB];
                for (int a = 0; a < FGW_TB; a++)
                    for (int b = 0; b < FGW_KB; b++) acc[a][b] = VOP(zero)();
                long p = 0;
                for (; p < PV; p += VLANES) {
                    V_ACC c[FGW_KB];
                    for (int b = 0; b < FGW_KB; b++) c[b] = VOP(load)(col + (long)(k0 + b) * P + p);
                    for (int a = 0; a < FGW_TB; a++) {
                        V_ACC gv = VOP(load)(g + (long)(t0 + a) * ldg + p);
                        for (int b = 0; b < FGW_KB; b++) acc[a][b] = VOP(fma)(c[b], gv, acc[a][b]);
                    }
                }
                for (int a = 0; a < FGW_TB; a++)
                    for (int b = 0; b < FGW_KB; b++) {
                        T_ACC sum = VOP(hsum)(acc[a][b]);
                        const T_IN *ck = col + (long)(k0 + b) * P;
                        const T_ACC *gt = g + (long)(t0 + a) * ldg;
                        for (long q = p; q < P; q++) sum += ck[q] * gt[q];
                        T_ACC *o = gw + (long)(t0 + a) * gw_t + (long)(k0 + b) * gw_k;
                        *o = first ? sum : *o + sum;
                    }
            } else {
                for (int a = 0; a < tb; a++)
                    for (int b = 0; b < kb; b++) {
                        const T_IN *ck = col + (long)(k0 + b) * P;
                        const T_ACC *gt = g + (long)(t0 + a) * ldg;
                        V_ACC s = VOP(zero)();
                        long p = 0;
                        for (; p < PV; p += VLANES) s = VOP(fma)(VOP(load)(ck + p), VOP(load)(gt + p), s);
                        T_ACC sum = VOP(hsum)(s);
                        for (; p < P; p++) sum += ck[p] * gt[p];
                        T_ACC *o = gw + (long)(t0 + a) * gw_t + (long)(k0 + b) * gw_k;
                        *o = first ? sum : *o + sum;
                    }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient, "full" part, GEMM-style, into the TRANSPOSED partial gwT (K, ldw):
 *     gwT[k, t] += Σ_p col[k, p] · g[t, p]          gsum[t] += Σ_p g[t, p]
 * The tile of g is transposed into gT[p, t] (Cout contiguous) so that the reduction over p
 * stays in registers: for each position p, FGT_KB broadcast patch values × 2 vectors of
 * filters -> 2·FGT_KB fused multiply-adds, no horizontal sums.  The partial is (K, Cout)
 * so that a block's epilogue is 2·FGT_KB contiguous vector adds: in the (Cout, K) layout it
 * was 2·VLANES·FGT_KB scalar adds K elements apart (4-8 KiB strides for K = 1024-2048, all
 * in one L1 set), which at tiles of 32 positions cost as much as the block's arithmetic.
 * Taps outer, filters inner: the partial streams through once per tile, in order, and the
 * transposed tile gT (P·Cout) is re-read from L2 once per FGT_KB taps.
 * Filters beyond the last whole block of 2 vectors, and filters shorter than FGT_MIN_K
 * taps, go through filter_grad_full_tile.  gT: workspace of P·Cout.  ``first``: the tile is
 * the first one added into this partial, which is then written, not read (0 + x = x: the
 * caller need not zero the partials; only a -0 sum becomes -0 instead of +0).  The result of each
 * element is the one of the (Cout, K) kernel it replaced (same per-element operations).
 * ------------------------------------------------------------------------------------- */
#ifndef FGT_KB
#define FGT_KB 6 /* taps per register block of filter_grad_full_tile_t (× 2 vectors of filters) */
#endif
#ifndef FGT_MIN_K
#define FGT_MIN_K 32 /* shortest filter (taps) for which the transposed filter gradient pays */
#endif

/* one block: KB taps from k0 (rows of col and gwT) × 2 vectors of filters from t0 */
static inline __attribute__((always_inline)) void FN(filter_grad_t_block)(
    const T_IN *cp, const T_ACC *gp, long ldgt, long P, T_ACC *wp, long ldw, const int KB,
    int first)
{
    V_ACC acc[FGT_KB][2];
    for (int b = 0; b < KB; b++) acc[b][0] = acc[b][1] = VOP(zero)();
    for (long p = 0; p < P; p++, gp += ldgt) {
        V_ACC g0 = VOP(load)(gp), g1 = VOP(load)(gp + VLANES);
        for (int b = 0; b < KB; b++) {
            V_ACC c = VOP(set1)(cp[(long)b * P + p]);
            acc[b][0] = VOP(fma)(c, g0, acc[b][0]);
            acc[b][1] = VOP(fma)(c, g1, acc[b][1]);
        }
    }
    for (int b = 0; b < KB; b++) {
        T_ACC *w = wp + (long)b * ldw;
        if (first) { /* the slot's first tile: the partial is not read (nor zeroed before) */
            VOP(store)(w, acc[b][0]);
            VOP(store)(w + VLANES, acc[b][1]);
        } else {
            VOP(store)(w, VOP(add)(VOP(load)(w), acc[b][0]));
            VOP(store)(w + VLANES, VOP(add)(VOP(load)(w + VLANES), acc[b][1]));
        }
    }
}

static void FN(filter_grad_full_tile_t)(const T_IN *col, const T_ACC *g, long ldg, int Cout, int K,
                                        long P, T_ACC *gwT, long ldw, T_ACC *gsum, T_ACC *gT,
                                        int first)
{
    const int TV = 2 * VLANES;
    const int Cb = Cout - Cout % TV; /* filters handled by the transposed kernel */
    if (Cb == 0 || K < FGT_MIN_K) { /* short filters: the transpose would not pay */
        FN(filter_grad_full_tile)(col, g, ldg, Cout, K, P, gwT, 1, ldw, gsum, first);
        return;
    }
    {   /* Σ_p g and the transpose of the first Cb filter rows */
        const long PV = P - P % VLANES;
        for (int t = 0; t < Cout; t++) {
            const T_ACC *gt = g + (long)t * ldg;
            V_ACC sv = VOP(zero)();
            long p = 0;
            for (; p < PV; p += VLANES) sv = VOP(add)(sv, VOP(load)(gt + p));
            T_ACC acc = VOP(hsum)(sv);
            for (; p < P; p++) acc += gt[p];
            gsum[t] += acc;
        }
        /* register-blocked (adder_transpose.h): a scalar column walk stores Cb·itemsize
         * bytes apart and cost as much as the block arithmetic for short filters (1x1) */
        FN(transpose)(g, ldg, Cb, (int)P, gT, Cb);
    }
    int k0 = 0;
    for (; k0 + FGT_KB <= K; k0 += FGT_KB)
        for (int t0 = 0; t0 < Cb; t0 += TV)
            FN(filter_grad_t_block)(col + (long)k0 * P, gT + t0, Cb, P, gwT + (long)k0 * ldw + t0,
                                    ldw, FGT_KB, first);
    /* the last K mod FGT_KB taps in one block (each block size a compile-time constant):
     * one tap at a time would re-stream gT per tap at a third of the arithmetic per load */
    if (k0 < K)
        for (int t0 = 0; t0 < Cb; t0 += TV) {
            const T_IN *cp = col + (long)k0 * P;
            T_ACC *wp = gwT + (long)k0 * ldw + t0;
            switch (K - k0) {
            case 1: FN(filter_grad_t_block)(cp, gT + t0, Cb, P, wp, ldw, 1, first); break;
            case 2: FN(filter_grad_t_block)(cp, gT + t0, Cb, P, wp, ldw, 2, first); break;
            case 3: FN(filter_grad_t_block)(cp, gT + t0, Cb, P, wp, ldw, 3, first); break;
            case 4: FN(filter_grad_t_block)(cp, gT + t0, Cb, P, wp, ldw, 4, first); break;
            case 5: FN(filter_grad_t_block)(cp, gT + t0, Cb, P, wp, ldw, 5, first); break;
            default: /* only with an FGT_KB above 6 */
                for (int k = k0; k < K; k++)
                    FN(filter_grad_t_block)(col + (long)k * P, gT + t0, Cb, P,
                                            gwT + (long)k * ldw + t0, ldw, 1, first);
            }
        }
    if (Cb < Cout)
        FN(filter_grad_full_tile)(col, g + (long)Cb * ldg, ldg, Cout - Cb, K, P, gwT + Cb, 1,
                                  ldw, NULL, first);
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient "sign" of one image, direct form: gw[t, k] += Σ_p sgn(col[k, p] - w[t, k]) · g[t, p]
 * (Cout filters × K taps), with the filters given transposed, wT (K, ldw) (as for the input
 * gradient), gw rows ldgw apart.  Exact per term, whatever the values: sgn(0) = 0 (a term
 * g·0 is 0 even for an infinite or NaN g) and a NaN difference makes the sum NaN.
 * filter_grad_sign_tile_t runs it on the blocks its fast path does not take.
 * Block 2 taps of one filter (the filter values stay in registers), vectors along p.
 * ------------------------------------------------------------------------------------- */
static void FN(filter_grad_sign_tile)(const T_IN *col, const T_IN *wT, long ldw, const T_ACC *g,
                                      long ldg, int Cout, int K, long P, T_ACC *gw, long ldgw)
{
    const long PV = P - P % VLANES;
    const V_ACC one = VOP(set1)((T_ACC)1);
    for (int t = 0; t < Cout; t++) {
        const T_ACC *gt = g + (long)t * ldg;
        int k = 0;
        for (; k + 2 <= K; k += 2) {
            const T_IN *c0 = col + (long)k * P, *c1 = c0 + P;
            const T_IN w0 = wT[(long)k * ldw + t], w1 = wT[(long)(k + 1) * ldw + t];
            V_ACC wv0 = VOP(set1)(w0), wv1 = VOP(set1)(w1);
            V_ACC s0a = VOP(zero)(), s0b = VOP(zero)(), s1a = VOP(zero)(), s1b = VOP(zero)();
            long p = 0;
            for (; p + 2 * VLANES <= PV; p += 2 * VLANES) {
                V_ACC ga = VOP(load)(gt + p), gb = VOP(load)(gt + p + VLANES);
                s0a = VOP(add)(s0a, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), ga));
                s0b = VOP(add)(s0b, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p + VLANES), wv0, one), gb));
                s1a = VOP(add)(s1a, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p), wv1, one), ga));
                s1b = VOP(add)(s1b, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p + VLANES), wv1, one), gb));
            }
            for (; p < PV; p += VLANES) {
                V_ACC ga = VOP(load)(gt + p);
                s0a = VOP(add)(s0a, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), ga));
                s1a = VOP(add)(s1a, VOP(signmul)(VOP(diff)(VOP(load)(c1 + p), wv1, one), ga));
            }
            T_ACC sum0 = VOP(hsum)(VOP(add)(s0a, s0b)), sum1 = VOP(hsum)(VOP(add)(s1a, s1b));
            for (; p < P; p++) {
                T_ACC d0 = c0[p] - w0, d1 = c1[p] - w1;
                sum0 += d0 != d0 ? d0 : (d0 > 0 ? gt[p] : (T_ACC)0) - (d0 < 0 ? gt[p] : (T_ACC)0);
                sum1 += d1 != d1 ? d1 : (d1 > 0 ? gt[p] : (T_ACC)0) - (d1 < 0 ? gt[p] : (T_ACC)0);
            }
            gw[(long)t * ldgw + k] += sum0;
            gw[(long)t * ldgw + k + 1] += sum1;
        }
        for (; k < K; k++) {
            const T_IN *c0 = col + (long)k * P;
            const T_IN w0 = wT[(long)k * ldw + t];
            V_ACC wv0 = VOP(set1)(w0), s = VOP(zero)();
            long p = 0;
            for (; p < PV; p += VLANES)
                s = VOP(add)(s, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), VOP(load)(gt + p)));
            T_ACC sum = VOP(hsum)(s);
            for (; p < P; p++) {
                T_ACC d = c0[p] - w0;
                sum += d != d ? d : (d > 0 ? gt[p] : (T_ACC)0) - (d < 0 ? gt[p] : (T_ACC)0);
            }
            gw[(long)t * ldgw + k] += sum;
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient "sign" of one image, GEMM-style (the layout of filter_grad_full_tile_t):
 * g transposed into gT[p, t] (Cout contiguous), and for each position p, SGT_KB broadcast
 * patch values against 2 vectors of filters:
 *     acc[t, k] <- acc[t, k] + s·g[t, p],   s = vsgn2(c·λ - w'·λ) = 2·sgn(col[k, p] - w[t, k])
 * three instructions per vector of terms (fused multiply-add, vpsignd, fused multiply-add),
 * no horizontal sums; then gw[t, k] += acc/2.  Each gw[t, k] thus gains, per tile, one chain
 * over p ascending starting at +0 (doubling every term and halving the sum are exact, so this
 * equals Σ_p sgn·g summed in that order).  Why each piece:
 *   - w' is w with +0 replaced by -0, so that the difference is never -0 (c - c = +0 for every
 *     c, and -0 - (-0) = +0), which vsgn2 would read as negative;
 *   - λ = 1 (float32) or 2^64 (float64): the difference is computed as c·λ - w'·λ in one
 *     rounding, its sign is that of c - w and it is 0 only when c == w; with λ = 2^64 a
 *     nonzero float64 difference is at least 2^-1010, never subnormal (vsgn2_f64 reads the
 *     high 32 bits only);
 *   - s·g with s = 0 would turn an infinite g into NaN where the direct form gives 0, and the
 *     doubled partial sums could overflow where the direct ones do not: a block whose sums come
 *     out non-finite, or whose filters (w'·λ) are not finite, is recomputed by the direct form
 *     (filter_grad_sign_tile), and so is a tile whose patches are not all finite (a NaN patch
 *     value would get a sign).  Those cases are rare (overflow, Inf/NaN in the data) and the
 *     direct form keeps their exact semantics (a NaN difference gives NaN, a tie gives 0).
 * Same contract as filter_grad_sign_tile with ldw = Cout and ldgw = K; gT: workspace of P·Cout.
 * Filters beyond the last whole block of 2 vectors, and short filters, go through the direct
 * form.  The choice between the two forms depends on the data only, never on the thread count.
 * ------------------------------------------------------------------------------------- */
#ifndef SGT_KB
#define SGT_KB 4 /* taps per register block of filter_grad_sign_tile_t (× 2 vectors of filters) */
#endif
#ifndef SGT_MIN_K
#define SGT_MIN_K 4 /* shortest filter (taps) for which the transposed sign gradient pays */
#endif
/* λ above: 1 for float32, 2^64 for float64 */
#define SGT_SCALE (sizeof(T_ACC) == sizeof(double) ? (T_ACC)0x1p64 : (T_ACC)1)

/* 1 when all n values are finite (Σ x·0 stays 0; Inf·0 and NaN·0 are NaN) */
static int FN(all_finite)(const T_IN *x, long n)
{
    const V_ACC zero = VOP(zero)();
    V_ACC s0 = zero, s1 = zero, s2 = zero, s3 = zero;
    long i = 0;
    for (; i + 4 * VLANES <= n; i += 4 * VLANES) {
        s0 = VOP(fma)(VOP(load)(x + i), zero, s0);
        s1 = VOP(fma)(VOP(load)(x + i + VLANES), zero, s1);
        s2 = VOP(fma)(VOP(load)(x + i + 2 * VLANES), zero, s2);
        s3 = VOP(fma)(VOP(load)(x + i + 3 * VLANES), zero, s3);
    }
    T_ACC s = VOP(hsum)(VOP(add)(VOP(add)(s0, s1), VOP(add)(s2, s3)));
    for (; i < n; i++) s += x[i] * (T_ACC)0;
    return s == 0;
}

/* One register block of filter_grad_sign_tile_t: KB taps (rows of col and wT) × 2 vectors of
 * filters (columns of wT and gT) over all P positions.  Adds the block into gw and returns 1,
 * or returns 0 and leaves gw untouched when the block must go through the direct form. */
static inline __attribute__((always_inline)) int FN(sign_block_t)(const T_IN *col, long P,
                                                                 const T_IN *wT, long ldw,
                                                                 const T_ACC *gT, long ldt,
                                                                 T_ACC *gw, long ldgw, const int KB)
{
    const V_ACC zero = VOP(zero)(), scale = VOP(set1)(SGT_SCALE);
    V_ACC nw[SGT_KB][2], acc[SGT_KB][2], bad = zero;
    for (int a = 0; a < KB; a++)
        for (int j = 0; j < 2; j++) {
            /* -w'·λ: (-w) + 0 is +0 for w = ±0, i.e. -(w') with w' = -0 */
            V_ACC nwv = VOP(mul)(VOP(add)(VOP(neg)(VOP(load)(wT + (long)a * ldw + j * VLANES)),
                                          zero), scale);
            bad = VOP(add)(bad, VOP(sub)(nwv, nwv)); /* NaN unless finite */
            nw[a][j] = nwv;
            acc[a][j] = zero;
        }
    for (long p = 0; p < P; p++) {
        const T_ACC *gp = gT + p * ldt;
        const V_ACC g0 = VOP(load)(gp), g1 = VOP(load)(gp + VLANES);
        for (int a = 0; a < KB; a++) {
            const V_ACC c = VOP(set1)(col[(long)a * P + p]);
            acc[a][0] = VOP(fma)(VOP(sgn2)(VOP(fma)(c, scale, nw[a][0])), g0, acc[a][0]);
            acc[a][1] = VOP(fma)(VOP(sgn2)(VOP(fma)(c, scale, nw[a][1])), g1, acc[a][1]);
        }
    }
    const V_ACC half = VOP(set1)((T_ACC)0.5);
    T_ACC lanes[SGT_KB][2 * VLANES];
    for (int a = 0; a < KB; a++)
        for (int j = 0; j < 2; j++) {
            bad = VOP(add)(bad, VOP(sub)(acc[a][j], acc[a][j])); /* NaN unless finite */
            VOP(store)(lanes[a] + j * VLANES, VOP(mul)(acc[a][j], half));
        }
    T_ACC flag[VLANES];
    VOP(store)(flag, bad); /* 0, or NaN where a filter or a sum is not finite */
    for (int l = 0; l < VLANES; l++)
        if (flag[l] != 0) return 0;
    for (int l = 0; l < 2 * VLANES; l++)
        for (int a = 0; a < KB; a++) gw[(long)l * ldgw + a] += lanes[a][l];
    return 1;
}

static void FN(filter_grad_sign_tile_t)(const T_IN *col, const T_IN *wT, const T_ACC *g, long ldg,
                                        int Cout, int K, long P, T_ACC *gw, T_ACC *gT)
{
    const int TV = 2 * VLANES;
    const int Cb = Cout - Cout % TV; /* filters handled by the transposed kernel */
    if (Cb == 0 || K < SGT_MIN_K || !FN(all_finite)(col, (long)K * P)) {
        FN(filter_grad_sign_tile)(col, wT, Cout, g, ldg, Cout, K, P, gw, K);
        return;
    }
    FN(transpose)(g, ldg, Cb, (int)P, gT, Cb); /* gT[p, t] = g[t, p] (adder_transpose.h) */
    for (int t0 = 0; t0 < Cb; t0 += TV) {
        int k0 = 0;
        for (; k0 + SGT_KB <= K; k0 += SGT_KB)
            if (!FN(sign_block_t)(col + (long)k0 * P, P, wT + (long)k0 * Cout + t0, Cout, gT + t0,
                                  Cb, gw + (long)t0 * K + k0, K, SGT_KB))
                FN(filter_grad_sign_tile)(col + (long)k0 * P, wT + (long)k0 * Cout + t0, Cout,
                                          g + (long)t0 * ldg, ldg, TV, SGT_KB, P,
                                          gw + (long)t0 * K + k0, K);
        for (; k0 < K; k0++)
            if (!FN(sign_block_t)(col + (long)k0 * P, P, wT + (long)k0 * Cout + t0, Cout, gT + t0,
                                  Cb, gw + (long)t0 * K + k0, K, 1))
                FN(filter_grad_sign_tile)(col + (long)k0 * P, wT + (long)k0 * Cout + t0, Cout,
                                          g + (long)t0 * ldg, ldg, TV, 1, P,
                                          gw + (long)t0 * K + k0, K);
    }
    if (Cb < Cout)
        FN(filter_grad_sign_tile)(col, wT + Cb, Cout, g + (long)Cb * ldg, ldg, Cout - Cb, K, P,
                                  gw + (long)Cb * K, K);
}
#undef SGT_SCALE

/* ---------------------------------------------------------------------------------------
 * Input gradient in patch space of one image, computed IN PLACE over the packed patches:
 *     col[k, p] <- Σ_t factor(w[t, k] - col[k, p]) · g[t, p]     (t ascending)
 * with the filters given transposed, wT (K, Cout), so that the filter values a block needs
 * for successive t are contiguous (w itself would stream one cache line per filter).
 * factor: IG_HARDTANH clip(·, -1, 1); IG_SIGN sgn(·); IG_L2 2·(·)  (the argument is -D);
 * IG_CONV: the convolution's col[k, p] <- Σ_t w[t, k]·g[t, p] (the patches are not read).
 * Block IG_KB taps × IG_PV vectors of positions; a block reads only its own patch entries,
 * so it can overwrite them.  Then unpack_tile_add / fold_planes (adder_pack.h) gather col
 * into the input gradient.
 * Columns up to P rounded up to whole vectors must exist in col and g (the padded tile:
 * pack_tile and copy_tile zero the columns past the tile; they are computed and ignored); the last vectors (< IG_PV) run in blocks of IG_KB1 taps ×
 * 1 vector, so every position is computed in vector lanes whatever the output width.
 * Each dcol[k, p] is one accumulator chain over t, so the grouping changes no result.
 * ------------------------------------------------------------------------------------- */
#define IG_HARDTANH 0 /* input-gradient factor clip(-D, -1, 1) (adder, method §4.2) */
#define IG_SIGN 1 /* input-gradient factor sgn(-D) (adder "sign"/ℓ1 exact) */
#define IG_L2 2 /* input-gradient factor 2·(-D) (ℓ2 exact) */
#define IG_CONV 3 /* convolution: Σ_t w·g (the patches are not read) */
#ifndef IG_KB
#define IG_KB 4 /* taps per input-gradient register block */
#endif
#ifndef IG_PV
#define IG_PV 2 /* vectors of positions per input-gradient register block */
#endif
#ifndef IG_KB1
#define IG_KB1 8 /* taps per register block of the last (< IG_PV) vectors of a tile */
#endif
#ifndef IG_CHUNK_BYTES
#define IG_CHUNK_BYTES (256 * 1024) /* grad_output bytes per chunk of positions (L2-resident) */
#endif

static inline __attribute__((always_inline)) V_ACC FN(ig_term)(V_ACC nd, V_ACC gv, V_ACC acc, int mode,
                                                            V_ACC lo, V_ACC hi)
{
        /* operand order keeps NaN: max/min return their second operand when one is NaN */
    if (mode == IG_HARDTANH) return VOP(fma)(VOP(min)(hi, VOP(max)(lo, nd)), gv, acc);
    if (mode == IG_SIGN) return VOP(add)(acc, VOP(signmul)(nd, gv));
    return VOP(fma)(nd, gv, acc);
}

/* One register block: KB taps (rows k0.. of col and wT) × NV vectors of positions from
 * column p0, in place.  KB, NV and mode are compile-time constants at every call site. */
static inline __attribute__((always_inline)) void FN(input_grad_block)(
    T_ACC *cp, long ldc, const T_IN *wk, const T_ACC *gp, long ldg, int Cout, const int KB,
    const int NV, int mode)
{
    const V_ACC lo = VOP(set1)((T_ACC)-1), hi = VOP(set1)((T_ACC)1), one = VOP(set1)((T_ACC)1);
    V_ACC acc[IG_KB1 > IG_KB ? IG_KB1 : IG_KB][IG_PV];
    for (int a = 0; a < KB; a++)
        for (int b = 0; b < NV; b++) acc[a][b] = VOP(zero)();
    for (int t = 0; t < Cout; t++) {
        V_ACC gv[IG_PV];
        for (int b = 0; b < NV; b++) gv[b] = VOP(load)(gp + (long)t * ldg + b * VLANES);
        for (int a = 0; a < KB; a++) {
            V_ACC wv = VOP(set1)(wk[(long)a * Cout + t]);
            for (int b = 0; b < NV; b++) {
                if (mode == IG_CONV) {
                    acc[a][b] = VOP(fma)(wv, gv[b], acc[a][b]);
                    continue;
                }
                V_ACC nd = VOP(diff)(wv, VOP(load)(cp + (long)a * ldc + b * VLANES), one);
                acc[a][b] = FN(ig_term)(nd, gv[b], acc[a][b], mode, lo, hi);
            }
        }
    }
    for (int a = 0; a < KB; a++)
        for (int b = 0; b < NV; b++) {
            V_ACC r = acc[a][b];
            if (mode == IG_L2) r = VOP(add)(r, r);
            VOP(store)(cp + (long)a * ldc + b * VLANES, r);
        }
}

static inline __attribute__((always_inline)) void FN(input_grad_body)(T_ACC *col, const T_IN *wT,
                                                                      const T_ACC *g, long ldg,
                                                                      int Cout, int K, long P,
                                                                      int mode)
{
    const long PB = (long)IG_PV * VLANES;
    /* Positions in chunks whose grad_output columns (Cout × chunk) stay in L2, taps outer
     * inside a chunk: the filters (K·Cout, up to MiBs for the long 1x1 filters of ImageNet
     * ResNets) then stream once per chunk instead of once per IG_PV vectors of positions,
     * and a block's IG_KB filter rows stay in L1 over the chunk. */
    long chunk = IG_CHUNK_BYTES / ((long)Cout * (long)sizeof(T_ACC)) / PB * PB;
    if (chunk < PB) chunk = PB;
    const long PF = P - P % PB; /* positions in whole IG_PV-vector blocks */
    for (long c0 = 0; c0 < PF; c0 += chunk) {
        const long c1 = c0 + chunk < PF ? c0 + chunk : PF;
        int k0 = 0;
        for (; k0 + IG_KB <= K; k0 += IG_KB)
            for (long p0 = c0; p0 < c1; p0 += PB)
                FN(input_grad_block)(col + (long)k0 * P + p0, P, wT + (long)k0 * Cout, g + p0, ldg,
                                     Cout, IG_KB, IG_PV, mode);
        for (; k0 < K; k0++)
            for (long p0 = c0; p0 < c1; p0 += PB)
                FN(input_grad_block)(col + (long)k0 * P + p0, P, wT + (long)k0 * Cout, g + p0, ldg,
                                     Cout, 1, IG_PV, mode);
    }
    for (long p0 = PF; p0 < P; p0 += VLANES) { /* a partial last vector runs whole (see above) */
        int k0 = 0;
        for (; k0 + IG_KB1 <= K; k0 += IG_KB1)
            FN(input_grad_block)(col + (long)k0 * P + p0, P, wT + (long)k0 * Cout, g + p0, ldg,
                                 Cout, IG_KB1, 1, mode);
        for (; k0 < K; k0++)
            FN(input_grad_block)(col + (long)k0 * P + p0, P, wT + (long)k0 * Cout, g + p0, ldg,
                                 Cout, 1, 1, mode);
    }
}

/* col, g: columns up to P rounded up to whole vectors must exist (see above) */
static void FN(input_grad_tile)(T_ACC *col, const T_IN *wT, const T_ACC *g, long ldg, int Cout,
                                int K, long P, int mode)
{
    if (mode == IG_HARDTANH) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_HARDTANH);
    else if (mode == IG_SIGN) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_SIGN);
    else if (mode == IG_L2) FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_L2);
    else FN(input_grad_body)(col, wT, g, ldg, Cout, K, P, IG_CONV);
}
