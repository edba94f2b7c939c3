/* addercore adder kernels: per-image building blocks (C, header-only).
 *
 * Design
 * ------
 * One image at a time, in tiles of consecutive output positions (across row ends, whatever the
 * output width): the patches of a tile are packed into a
 * thread-owned buffer ``col[K, Pt]`` (K = Cin·kh·kw taps in (c, i, j) order, Pt = positions of
 * the tile, contiguous; ~128 KiB so that it stays in the core's L2 while it is consumed), and
 * every kernel streams that buffer with unit-stride vector loads along p.  Tiles are packed
 * from the image's "column planes" (adder_pack.h: padding, strides and dilation resolved once
 * per image), in which every tap's patch row is one contiguous run, so packing is K plain
 * copies per tile and costs a few percent of the arithmetic at any output width.
 *
 * Forward: y[t, p] = -Σ_k dist(col[k, p] - w[t, k]).  The micro-kernel holds a block of
 * 4 filters × 2 vectors of contiguous positions in 8 independent accumulators; for each tap k
 * (sequential, ascending) it loads 2 patch vectors, broadcasts 4 filter values and does
 * subtract (on the FMA ports, as c - w·1: exact, and it leaves the add ports to the
 * accumulation), |·| (a mask) and add.  Vectorisation is across outputs, never across taps,
 * so every lane is one accumulator chain over k ascending: the canonical summation order
 * (the contract, and what it guarantees: docs/method.md §3).  Holding it bit for bit needs no
 * -ffast-math and, for ℓ2, -ffp-contract=off (both set by setup.py).
 *
 * Backward (per tile, same packed buffer):
 *   - "full" filter gradient = Σ X·G - F·Σ G: a GEMM with the reduction along p, done with
 *     the grad tile transposed to (p, t) so that 12 accumulators (6 taps × 2 vectors of
 *     filters) stay in registers over the whole tile (filter_grad_full_tile_t), added into a
 *     (K, Cout)-transposed partial (contiguous vector adds), plus a rank-1 term applied once
 *     by the caller;
 *   - "sign" filter gradient Σ sgn(D)·G: the grad tile transposed the same way, 4 taps × 2
 *     vectors of filters, 2·sgn(D) from one integer instruction (vpsignd) and a fused
 *     multiply-add per vector of terms (filter_grad_sign_tile_t), into a (Cout, K) partial;
 *     blocks with non-finite data or sums fall back to the direct form
 *     (filter_grad_sign_tile), which is exact per term;
 *   - input gradient: dcol[k, p] = Σ_t factor(-D)·G computed in place over col (a block
 *     reads only its own patch entries), then gathered into the planes' gradient
 *     (unpack_tile_add) and, once per image, into the input gradient (fold_planes).
 * Reductions inside a kernel run in a fixed order independent of threads; threads only ever
 * split work by image or by fixed "slots" of images (see _adder.pyx), so results are
 * bit-identical for any thread count.
 */
#ifndef ADDERCORE_ADDER_KERNELS_H
#define ADDERCORE_ADDER_KERNELS_H

#include "adder_simd.h"
#include "adder_transpose.h" /* transpose_f32 / _f64: FN(transpose) in adder_backward.h */

/* Instantiation
 * -------------
 * The kernel headers are written once and included once per element type with these macros:
 *   T_IN    operand type: input images, packed patches, filters
 *   T_ACC   accumulator and output type (the same as T_IN for the float kernels; an integer
 *           inference kernel would use e.g. int8_t operands with int32_t accumulators)
 *   V_IN, V_ACC   the SIMD vector types holding T_IN / T_ACC lanes (adder_simd.h)
 *   S       name suffix of the instantiation (f32, f64): pack_tile_f32, forward_tile_f64...
 *   VLANES  lanes of one vector of T_ACC (VF32_LANES, VF64_LANES)
 * and these helpers, which expand with the S in force at the point of use: */
#define CAT_(a, b) a##_##b        /* a_b */
#define CAT(a, b) CAT_(a, b)      /* a_b after macro expansion of a and b */
#define CATN_(a, b) a##b          /* ab */
#define CATN(a, b) CATN_(a, b)    /* ab after macro expansion */
#define FN(name) CAT(name, S)     /* kernel name with the instantiation suffix: name_f32 */
#define VOP(op) CAT(v##op, S)     /* SIMD operation of the instantiation: vload_f32 */

#define T_IN float
#define T_ACC float
#define V_IN vf32
#define V_ACC vf32
#define S f32
#define VLANES VF32_LANES
#include "adder_pack.h"
#include "adder_forward.h"
#include "adder_backward.h"
#undef T_IN
#undef T_ACC
#undef V_IN
#undef V_ACC
#undef S
#undef VLANES

#define T_IN double
#define T_ACC double
#define V_IN vf64
#define V_ACC vf64
#define S f64
#define VLANES VF64_LANES
#include "adder_pack.h"
#include "adder_forward.h"
#include "adder_backward.h"
#undef T_IN
#undef T_ACC
#undef V_IN
#undef V_ACC
#undef S
#undef VLANES

/* Facts the Python side needs, exported by _adder.pyx (one definition, here):
 * PAD_SLACK (adder_pack.h) and the width in elements of the forward's register block of
 * positions, which fast.py rounds its tile lengths to. */
#define FORWARD_BLOCK_F32 (FWD_PV * VF32_LANES) /* float32 positions per forward block */
#define FORWARD_BLOCK_F64 (FWD_PV * VF64_LANES) /* float64 positions per forward block */

static const char *addercore_simd_name(void) { return ADDERCORE_SIMD_NAME; }

#endif
