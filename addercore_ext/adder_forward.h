/* Forward micro-kernels (adder ℓ1/ℓ2 and convolution), one instantiation per element type;
 * included by adder_kernels.h with the macros of its "Instantiation" block.  Operands (packed
 * patches, filters) are T_IN / V_IN, accumulators and outputs T_ACC / V_ACC. */

/* ---------------------------------------------------------------------------------------
 * Forward of one image: y[t, p] = -Σ_k dist(col[k, p] - w[t, k]), k ascending, one
 * accumulator per output starting at 0 (the canonical order, bit-exact with the reference);
 * for the convolution (FWD_DOT) y[t, p] = Σ_k col[k, p]·w[t, k] with the same blocking, one
 * fused multiply-add per tap (not bit-exact with a BLAS GEMM, but the same for any thread
 * count).
 * Register block: FWD_TB filters × FWD_PV vectors of contiguous positions; the tap loop k is
 * innermost and sequential, lanes are different outputs.  Positions left after the whole
 * blocks (fewer than FWD_PV vectors: the end of an image) run in blocks of FWD_TB1 filters ×
 * 1 vector, the last vector possibly partial: every position is computed in vector lanes
 * (there is no scalar path), so the speed per tap does not depend on the output width.
 * How positions are grouped into lanes does not change any result: each output is its own
 * accumulator chain over k.
 * col: (K, ldc) tile with ldc >= P rounded up to whole vectors, columns [P, ldc) readable
 * (pack_tile zeroes them; their lanes are computed and discarded); w: (Cout, K);
 * y: (Cout, ldy) (first P columns written, nothing past them).
 * ------------------------------------------------------------------------------------- */
#ifndef FWD_TB
#define FWD_TB 4 /* filters per forward register block */
#endif
#ifndef FWD_PV
#define FWD_PV 2 /* vectors of positions per forward register block */
#endif
#ifndef FWD_TB1
#define FWD_TB1 8 /* filters per register block of the last (< FWD_PV) vectors of a tile */
#endif

#define FWD_L1 0  /* acc += |c - w|, output -acc (adder, method §2.1) */
#define FWD_L2 1  /* acc += (c - w)², output -acc (ℓ2 adder) */
#define FWD_DOT 2 /* acc = c·w + acc (one rounding), output acc (convolution) */

/* one tap of the forward: acc + dist(c - w), or c·w + acc for the convolution */
static inline __attribute__((always_inline)) V_ACC FN(fwd_term)(V_IN c, V_IN wv, V_ACC acc,
                                                                V_IN one, int mode)
{
    if (mode == FWD_DOT) return VOP(fma)(c, wv, acc);
    V_ACC d = VOP(diff)(c, wv, one); /* an integer instantiation widens here */
    return VOP(add)(acc, mode == FWD_L2 ? VOP(mul)(d, d) : VOP(abs)(d));
}

static inline __attribute__((always_inline)) V_ACC FN(fwd_result)(V_ACC acc, int mode)
{
    return mode == FWD_DOT ? acc : VOP(neg)(acc);
}

/* the first n lanes of v into dst (the partial last vector of a tile) */
static inline __attribute__((always_inline)) void FN(store_lanes)(T_ACC *dst, V_ACC v, int n)
{
    T_ACC lanes[VLANES];
    VOP(store)(lanes, v);
    for (int l = 0; l < n; l++) dst[l] = lanes[l];
}

/* One register block: TB filters (from row t0 of w, given as wt) × NV vectors of positions
 * starting at cp (column p0 of the tile) -> y rows at yp (stride ldy).  The last vector
 * stores only its first `last` lanes.  TB, NV and mode are compile-time constants at every
 * call site (the function is always inlined), so acc[][] lives in registers. */
static inline __attribute__((always_inline)) void FN(forward_block)(
    const T_IN *cp, long ldc, const T_IN *wt, int K, T_ACC *yp, long ldy, int last,
    const int TB, const int NV, int mode)
{
    const V_IN one = VOP(set1)((T_IN)1);
    V_ACC acc[FWD_TB1 > FWD_TB ? FWD_TB1 : FWD_TB][FWD_PV];
    for (int a = 0; a < TB; a++)
        for (int b = 0; b < NV; b++) acc[a][b] = VOP(zero)();
    for (int k = 0; k < K; k++, cp += ldc) {
        V_IN c[FWD_PV];
        for (int b = 0; b < NV; b++) c[b] = VOP(load)(cp + b * VLANES);
        for (int a = 0; a < TB; a++) {
            V_IN wv = VOP(set1)(wt[(long)a * K + k]);
            for (int b = 0; b < NV; b++) acc[a][b] = FN(fwd_term)(c[b], wv, acc[a][b], one, mode);
        }
    }
    for (int a = 0; a < TB; a++)
        for (int b = 0; b < NV; b++) {
            T_ACC *dst = yp + (long)a * ldy + b * VLANES;
            if (b == NV - 1 && last < VLANES) FN(store_lanes)(dst, FN(fwd_result)(acc[a][b], mode), last);
            else VOP(store)(dst, FN(fwd_result)(acc[a][b], mode));
        }
}

static inline __attribute__((always_inline)) void FN(forward_body)(const T_IN *col, long ldc,
                                                                   const T_IN *w, int Cout,
                                                                   int K, long P, T_ACC *y,
                                                                   long ldy, int mode)
{
    const long PB = (long)FWD_PV * VLANES;
    long p0 = 0;
    for (; p0 + PB <= P; p0 += PB) {
        int t0 = 0;
        for (; t0 + FWD_TB <= Cout; t0 += FWD_TB)
            FN(forward_block)(col + p0, ldc, w + (long)t0 * K, K, y + (long)t0 * ldy + p0, ldy,
                              VLANES, FWD_TB, FWD_PV, mode);
        for (; t0 < Cout; t0++) /* leftover filters, one at a time */
            FN(forward_block)(col + p0, ldc, w + (long)t0 * K, K, y + (long)t0 * ldy + p0, ldy,
                              VLANES, 1, FWD_PV, mode);
    }
    /* the tail (< PB positions): vector by vector, the last one partial */
    for (; p0 < P; p0 += VLANES) {
        const int last = P - p0 < VLANES ? (int)(P - p0) : VLANES;
        int t0 = 0;
        for (; t0 + FWD_TB1 <= Cout; t0 += FWD_TB1)
            FN(forward_block)(col + p0, ldc, w + (long)t0 * K, K, y + (long)t0 * ldy + p0, ldy,
                              last, FWD_TB1, 1, mode);
        for (; t0 + FWD_TB <= Cout; t0 += FWD_TB)
            FN(forward_block)(col + p0, ldc, w + (long)t0 * K, K, y + (long)t0 * ldy + p0, ldy,
                              last, FWD_TB, 1, mode);
        for (; t0 < Cout; t0++)
            FN(forward_block)(col + p0, ldc, w + (long)t0 * K, K, y + (long)t0 * ldy + p0, ldy,
                              last, 1, 1, mode);
    }
}

/* mode: FWD_L1, FWD_L2 or FWD_DOT (each a separately specialised copy of forward_body) */
static void FN(forward_tile)(const T_IN *col, long ldc, const T_IN *w, int Cout, int K, long P,
                             T_ACC *y, long ldy, int mode)
{
    if (mode == FWD_L1) FN(forward_body)(col, ldc, w, Cout, K, P, y, ldy, FWD_L1);
    else if (mode == FWD_L2) FN(forward_body)(col, ldc, w, Cout, K, P, y, ldy, FWD_L2);
    else FN(forward_body)(col, ldc, w, Cout, K, P, y, ldy, FWD_DOT);
}
