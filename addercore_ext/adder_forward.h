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
 * innermost and sequential, lanes are different outputs.
 * col: (K, P) tile (row stride P); w: (Cout, K); y: (Cout, ldy) (first P columns written).
 * ------------------------------------------------------------------------------------- */
#ifndef FWD_TB
#define FWD_TB 4 /* filters per forward register block */
#endif
#ifndef FWD_PV
#define FWD_PV 2 /* vectors of positions per forward register block */
#endif

#define FWD_L1 0  /* acc += |c - w|, output -acc (adder, spec §1) */
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

static inline __attribute__((always_inline)) T_ACC FN(fwd_term_scalar)(T_IN c, T_IN w, T_ACC acc,
                                                                       int mode)
{
    if (mode == FWD_DOT) return acc + (T_ACC)c * (T_ACC)w; /* leftover positions only */
    T_ACC d = (T_ACC)c - (T_ACC)w;
    return acc + (mode == FWD_L2 ? d * d : (d < 0 ? -d : (d == 0 ? (T_ACC)0 : d)));
}

static inline __attribute__((always_inline)) V_ACC FN(fwd_result)(V_ACC acc, int mode)
{
    return mode == FWD_DOT ? acc : VOP(neg)(acc);
}

static inline __attribute__((always_inline)) void FN(forward_body)(const T_IN *col, const T_IN *w,
                                                                   int Cout, int K, long P,
                                                                   T_ACC *y, long ldy, int mode)
{
    const long PB = (long)FWD_PV * VLANES;
    const V_IN one = VOP(set1)((T_IN)1);
    long p0 = 0;
    for (; p0 + PB <= P; p0 += PB) {
        int t0 = 0;
        for (; t0 + FWD_TB <= Cout; t0 += FWD_TB) {
            V_ACC acc[FWD_TB][FWD_PV];
            for (int a = 0; a < FWD_TB; a++)
                for (int b = 0; b < FWD_PV; b++) acc[a][b] = VOP(zero)();
            const T_IN *wt = w + (long)t0 * K;
            const T_IN *cp = col + p0;
            for (int k = 0; k < K; k++, cp += P) {
                V_IN c[FWD_PV];
                for (int b = 0; b < FWD_PV; b++) c[b] = VOP(load)(cp + b * VLANES);
                for (int a = 0; a < FWD_TB; a++) {
                    V_IN wv = VOP(set1)(wt[(long)a * K + k]);
                    for (int b = 0; b < FWD_PV; b++)
                        acc[a][b] = FN(fwd_term)(c[b], wv, acc[a][b], one, mode);
                }
            }
            for (int a = 0; a < FWD_TB; a++)
                for (int b = 0; b < FWD_PV; b++)
                    VOP(store)(y + (long)(t0 + a) * ldy + p0 + b * VLANES, FN(fwd_result)(acc[a][b], mode));
        }
        for (; t0 < Cout; t0++) { /* leftover filters, one at a time */
            V_ACC acc[FWD_PV];
            for (int b = 0; b < FWD_PV; b++) acc[b] = VOP(zero)();
            const T_IN *wt = w + (long)t0 * K;
            const T_IN *cp = col + p0;
            for (int k = 0; k < K; k++, cp += P) {
                V_IN wv = VOP(set1)(wt[k]);
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
            const T_IN *wt = w + (long)t * K;
            const T_IN *cp = col + p0;
            V_ACC acc = VOP(zero)();
            for (int k = 0; k < K; k++, cp += P)
                acc = FN(fwd_term)(VOP(load)(cp), VOP(set1)(wt[k]), acc, one, mode);
            VOP(store)(y + (long)t * ldy + p0, FN(fwd_result)(acc, mode));
        }
    }
    for (int t = 0; t < Cout; t++) {
        const T_IN *wt = w + (long)t * K;
        for (long p = p0; p < P; p++) {
            T_ACC acc = (T_ACC)0;
            for (int k = 0; k < K; k++) acc = FN(fwd_term_scalar)(col[(long)k * P + p], wt[k], acc, mode);
            y[(long)t * ldy + p] = mode == FWD_DOT ? acc : -acc;
        }
    }
}

/* mode: FWD_L1, FWD_L2 or FWD_DOT (each a separately specialised copy of forward_body) */
static void FN(forward_tile)(const T_IN *col, const T_IN *w, int Cout, int K, long P, T_ACC *y,
                             long ldy, int mode)
{
    if (mode == FWD_L1) FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_L1);
    else if (mode == FWD_L2) FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_L2);
    else FN(forward_body)(col, w, Cout, K, P, y, ldy, FWD_DOT);
}
