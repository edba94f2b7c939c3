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
        for (int t = 0; t < Cb; t++) {
            const T_ACC *gt = g + (long)t * ldg;
            for (long p = 0; p < P; p++) gT[p * Cb + t] = gt[p];
        }
    }
    int k0 = 0;
    for (; k0 + FGT_KB <= K; k0 += FGT_KB)
        for (int t0 = 0; t0 < Cb; t0 += TV)
            FN(filter_grad_t_block)(col + (long)k0 * P, gT + t0, Cb, P, gwT + (long)k0 * ldw + t0,
                                    ldw, FGT_KB, first);
    for (; k0 < K; k0++)
        for (int t0 = 0; t0 < Cb; t0 += TV)
            FN(filter_grad_t_block)(col + (long)k0 * P, gT + t0, Cb, P, gwT + (long)k0 * ldw + t0,
                                    ldw, 1, first);
    if (Cb < Cout)
        FN(filter_grad_full_tile)(col, g + (long)Cb * ldg, ldg, Cout - Cb, K, P, gwT + Cb, 1,
                                  ldw, NULL, first);
}

/* ---------------------------------------------------------------------------------------
 * Filter gradient "sign" of one image: gw[t, k] += Σ_p sgn(col[k, p] - w[t, k]) · g[t, p],
 * with the filters given transposed, wT (K, Cout) (as for the input gradient).
 * Block 2 filters × 2 taps (the filter values stay in registers).
 * ------------------------------------------------------------------------------------- */
static void FN(filter_grad_sign_tile)(const T_IN *col, const T_IN *wT, const T_ACC *g, long ldg, int Cout,
                                      int K, long P, T_ACC *gw)
{
    const long PV = P - P % VLANES;
    const V_ACC one = VOP(set1)((T_ACC)1);
    for (int t = 0; t < Cout; t++) {
        const T_ACC *gt = g + (long)t * ldg;
        int k = 0;
        for (; k + 2 <= K; k += 2) {
            const T_IN *c0 = col + (long)k * P, *c1 = c0 + P;
            const T_IN w0 = wT[(long)k * Cout + t], w1 = wT[(long)(k + 1) * Cout + t];
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
            gw[(long)t * K + k] += sum0;
            gw[(long)t * K + k + 1] += sum1;
        }
        for (; k < K; k++) {
            const T_IN *c0 = col + (long)k * P;
            const T_IN w0 = wT[(long)k * Cout + t];
            V_ACC wv0 = VOP(set1)(w0), s = VOP(zero)();
            long p = 0;
            for (; p < PV; p += VLANES)
                s = VOP(add)(s, VOP(signmul)(VOP(diff)(VOP(load)(c0 + p), wv0, one), VOP(load)(gt + p)));
            T_ACC sum = VOP(hsum)(s);
            for (; p < P; p++) {
                T_ACC d = c0[p] - w0;
                sum += d != d ? d : (d > 0 ? gt[p] : (T_ACC)0) - (d < 0 ? gt[p] : (T_ACC)0);
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
 * so it can overwrite them.  Then unpack_tile_add / fold_planes_add (adder_pack.h) gather col
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
