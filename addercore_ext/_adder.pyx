# cython: language_level=3
"""Parallel drivers of the adder kernels (adder_kernels.h) for float32 and float64.

Design
------
Work is split between OpenMP threads over units whose results do not depend on how many
threads there are, nor on which thread runs them (each unit writes only its own outputs or
slot partial; the thread's workspaces are scratch).  The forward and backward hand the units
out dynamically (``prange(schedule="dynamic")``): on a shared 2-vCPU machine one core is often
slower for a while, and a static split made the other wait (a whole ResNet-20 step at 2
threads, in one process against the static build: 3.5% faster, benchmarks/RESULTS.md).  The
smaller passes (transposes, slot sums) keep static chunks.

* forward: one unit = one image ``n``. The thread packs the image's patches, a tile of
  consecutive output positions at a time (whatever the output width: see adder_pack.h), into
  its own ``col`` buffer (row ``tid`` of ``col_workspace``) and
  computes that tile of ``y[n]``. Each output is one
  sequential accumulator chain, so the result is the same for any thread count (and equals
  the numpy reference bit for bit).
* backward: one unit = one *slot*, a fixed range of consecutive images (the number of slots
  depends on the shapes only, never on the thread count: ``fast._backward_slots``). The
  thread packs each image of the slot (ascending), adds its filter-gradient contribution into
  the slot's own partial sum ``partial_grad_weight[slot]`` and computes ``grad_input[n]`` (input gradient in place over
  the packed patches, then col2im). The caller sums the slot partials in slot order. No
  atomics, no thread-count-dependent reduction: bit-identical results for 1, 2, 4... threads.

The convolution (CNN baseline and stems) runs through the same drivers and tiles, with a
fused multiply-add in place of the distance (``FORWARD_CONV``, ``INPUT_GRAD_CONV``): no batch-
sized patch matrix, no BLAS call, so it scales with the OpenMP team like the adder layers.

Memory: besides the outputs, these functions allocate nothing; the caller passes the
workspaces and reuses them across calls: per thread a packed tile (K × tile positions), the
image's column planes (adder_pack.h; backward: and their gradient) and (backward) a
transposed grad_output tile; per slot the partial filter
gradients (slots, Cout, K) and Σ grad_output (slots, Cout).
"""
from cython.parallel cimport parallel, prange
cimport openmp
from cython cimport floating


cdef extern from "adder_transpose.h" nogil:
    void transpose_f32(const float *src, long lds, int rows, int cols, float *dst, long ldd)
    void transpose_f64(const double *src, long lds, int rows, int cols, double *dst, long ldd)


cdef extern from "adder_kernels.h" nogil:
    void pack_patches_f32(const float *x, int C, int H, int W, int kh, int kw, int sh, int sw,
                          int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo, float *col,
                          long ldc)
    void pack_patches_f64(const double *x, int C, int H, int W, int kh, int kw, int sh, int sw,
                          int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo,
                          double *col, long ldc)
    void unpack_patches_add_f32(const float *dcol, int C, int H, int W, int kh, int kw, int sh,
                                int sw, int ph, int pw, int dh, int dw, long p_lo, long p_hi,
                                int Wo, long ldc, float *gx)
    void unpack_patches_add_f64(const double *dcol, int C, int H, int W, int kh, int kw, int sh,
                                int sw, int ph, int pw, int dh, int dw, long p_lo, long p_hi,
                                int Wo, long ldc, double *gx)
    void copy_tile_f32(const float *g, long ldg, int rows, long n, long ld, float *dst)
    void copy_tile_f64(const double *g, long ldg, int rows, long n, long ld, double *dst)
    void forward_tile_f32(const float *col, long ldc, const float *w, int Cout, int K, long P,
                          float *y, long ldy, int mode)
    void forward_tile_f64(const double *col, long ldc, const double *w, int Cout, int K, long P,
                          double *y, long ldy, int mode)
    void filter_grad_full_tile_t_f32(const float *col, const float *g, long ldg, int Cout, int K,
                                     long P, float *gwT, long ldw, float *gsum, float *gT,
                                     int first)
    void filter_grad_full_tile_t_f64(const double *col, const double *g, long ldg, int Cout,
                                     int K, long P, double *gwT, long ldw, double *gsum,
                                     double *gT, int first)
    void filter_grad_sign_tile_t_f32(const float *col, const float *wT, const float *g,
                                     long ldg, int Cout, int K, long P, float *gw, float *gT)
    void filter_grad_sign_tile_t_f64(const double *col, const double *wT, const double *g,
                                     long ldg, int Cout, int K, long P, double *gw, double *gT)
    void input_grad_tile_f32(float *col, const float *wT, const float *g, long ldg, int Cout,
                             int K, long P, int mode)
    void input_grad_tile_f64(double *col, const double *wT, const double *g, long ldg, int Cout,
                             int K, long P, int mode)
    long source_channel_stride_f32(int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
                                   int dh, int Ho, int Wo)
    const float *pack_source_f32(const float *x, int C, int H, int W, int kh, int kw, int sh,
                                 int sw, int ph, int pw, int dh, int dw, int Ho, int Wo, float *xs)
    const double *pack_source_f64(const double *x, int C, int H, int W, int kh, int kw, int sh,
                                  int sw, int ph, int pw, int dh, int dw, int Ho, int Wo,
                                  double *xs)
    void pack_tile_f32(const float *src, long cs, int C, int kh, int kw, int sh, int dh, int Ho,
                       int Wo, long p_lo, long p_hi, float *col, long ldc)
    void pack_tile_f64(const double *src, long cs, int C, int kh, int kw, int sh, int dh, int Ho,
                       int Wo, long p_lo, long p_hi, double *col, long ldc)
    void unpack_tile_add_f32(const float *dcol, long ldc, int C, int kh, int kw, int sh, int dh,
                             int Ho, int Wo, long p_lo, long p_hi, long cs, float *ds)
    void unpack_tile_add_f64(const double *dcol, long ldc, int C, int kh, int kw, int sh, int dh,
                             int Ho, int Wo, long p_lo, long p_hi, long cs, double *ds)
    void fold_planes_f32(const float *ds, int C, int H, int W, int kh, int kw, int sh, int sw,
                         int ph, int pw, int dh, int dw, int Ho, int Wo, float *gx)
    void fold_planes_f64(const double *ds, int C, int H, int W, int kh, int kw, int sh, int sw,
                         int ph, int pw, int dh, int dw, int Ho, int Wo, double *gx)
    const char *addercore_simd_name()
    int IG_HARDTANH, IG_SIGN, IG_L2, IG_CONV
    int FWD_L1, FWD_L2, FWD_DOT
    int C_PAD_SLACK "PAD_SLACK"
    int VF32_LANES, VF64_LANES
    int C_FWD_BLOCK_F32 "FORWARD_BLOCK_F32", C_FWD_BLOCK_F64 "FORWARD_BLOCK_F64"


INPUT_GRAD_HARDTANH = IG_HARDTANH
INPUT_GRAD_SIGN = IG_SIGN
INPUT_GRAD_L2 = IG_L2
INPUT_GRAD_CONV = IG_CONV  # convolution: Σ_t w·g (the patches are not read)
FORWARD_L1 = FWD_L1
FORWARD_L2 = FWD_L2
FORWARD_CONV = FWD_DOT  # convolution: Σ_k patch·w
#: Spare elements after the packing source: pad_workspace rows must hold
#: source_size(...) + PAD_SLACK elements (forward; twice source_size for the backward).
PAD_SLACK = C_PAD_SLACK
#: Output positions per register block of the forward kernel (float32, float64): tiles of this
#: many positions (or multiples) have no partial vectors.
FORWARD_BLOCK_F32 = C_FWD_BLOCK_F32
FORWARD_BLOCK_F64 = C_FWD_BLOCK_F64
#: Elements per SIMD vector (float32, float64).
VECTOR_LANES_F32 = VF32_LANES
VECTOR_LANES_F64 = VF64_LANES


def simd_name():
    """Instruction set the kernels were compiled for: "avx2+fma" or "scalar"."""
    return addercore_simd_name().decode()


cdef inline long _round_up(long n, long m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline long _merge_length(long tile, long block) noexcept nogil:
    """Shortest remainder that gets a tile of its own: half a tile, in whole register blocks
    (at least one).  Shorter ones join the last tile (then up to ~1.5 tiles long): a tile has
    fixed costs (it streams all the filters once; the backward's filter-gradient block sums
    its accumulators into the partials once), so a short last tile per image would run
    slower per tap, and small images (width 1-3 maps) are nothing but such tiles."""
    cdef long half = _round_up((tile + 1) // 2, block)
    return half if half > block else block


cdef inline long _tile_end(long p_lo, long P, long tile, long block) noexcept nogil:
    """End of the tile of output positions starting at p_lo: ``tile`` positions, except that a
    remainder shorter than _merge_length (``block``: one forward register block) joins the
    last tile, so that no tile is a sliver."""
    cdef long p_hi = p_lo + tile
    if p_hi >= P or P - p_hi < _merge_length(tile, block):
        return P
    return p_hi


cdef inline long _tile_capacity(long P, long tile, long block, long lanes) noexcept nogil:
    """Padded length (whole vectors) of the longest tile _tile_end makes of P positions."""
    return _round_up(min(P, tile + _merge_length(tile, block) - 1), lanes)


def source_size(int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                int dw):
    """Elements of one image's packing source (its column planes, adder_pack.h): C·kw·sh·
    (Ho + (kh-1)·dh // sh)·Wo, or C·H·W for a 1x1 stride-1 unpadded layer (x itself).  The
    drivers' pad_workspace rows need this + PAD_SLACK (forward) or 2·this + PAD_SLACK
    (backward: the planes and their gradient)."""
    cdef int Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    cdef int Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if Ho <= 0 or Wo <= 0:
        return 0
    return C * source_channel_stride_f32(H, W, kh, kw, sh, sw, ph, pw, dh, Ho, Wo)


def tile_capacity(long positions, long tile_positions, itemsize):
    """Row length the tile workspaces need: the longest tile of ``positions`` output positions
    cut into tiles of ``tile_positions`` (see adder_forward), rounded up to whole vectors of
    the dtype of size ``itemsize`` (4 or 8 bytes).  col_workspace rows need K times this,
    gt_workspace rows 2·Cout times this."""
    if tile_positions < 1 or positions < 0 or itemsize not in (4, 8):
        raise ValueError(f"tile_positions must be >= 1, positions >= 0 and itemsize 4 or 8, got "
                         f"{tile_positions}, {positions}, {itemsize}")
    if itemsize == 4:
        return _tile_capacity(positions, tile_positions, C_FWD_BLOCK_F32, VF32_LANES)
    return _tile_capacity(positions, tile_positions, C_FWD_BLOCK_F64, VF64_LANES)


cdef _check_geometry(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph,
                     int pw, int Ho, int Wo, int num_threads, int dh=1, int dw=1):
    """The drivers trust their arguments inside nogil loops, so every size they index with is
    checked here first (addercore.ops validates user input; this guards direct callers)."""
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 or dh < 1 or dw < 1:
        raise ValueError(f"kernel/stride/dilation must be >= 1 and padding >= 0, got kernel "
                         f"({kh}, {kw}) stride ({sh}, {sw}) padding ({ph}, {pw}) dilation "
                         f"({dh}, {dw})")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if (Ho != (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            or Wo != (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1 or Ho < 0 or Wo < 0):
        raise ValueError(f"output (Ho, Wo) = ({Ho}, {Wo}) does not match input ({H}, {W}), "
                         f"kernel ({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw}), "
                         f"dilation ({dh}, {dw})")


cdef _check_groups(int C, int Cout, int groups):
    if groups < 1 or C % groups != 0 or Cout % groups != 0:
        raise ValueError(f"groups must be >= 1 and divide Cin={C} and Cout={Cout}, got {groups}")


cdef _check_workspace(name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t need_rows,
                      Py_ssize_t need_cols):
    if rows < need_rows or cols < need_cols:
        raise ValueError(f"{name} must have shape >= ({need_rows}, {need_cols}), "
                         f"got ({rows}, {cols})")


cdef inline void _pack(const floating *x, int C, int H, int W, int kh, int kw, int sh, int sw,
                       int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo,
                       floating *col, long ldc) noexcept nogil:
    if floating is float:
        pack_patches_f32(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, p_lo, p_hi, Wo, col, ldc)
    else:
        pack_patches_f64(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, p_lo, p_hi, Wo, col, ldc)


cdef inline const floating *_source(const floating *x, int C, int H, int W, int kh, int kw,
                                   int sh, int sw, int ph, int pw, int dh, int dw, int Ho, int Wo,
                                   floating *xs) noexcept nogil:
    if floating is float:
        return pack_source_f32(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, xs)
    else:
        return pack_source_f64(x, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, xs)


cdef inline void _pack_tile(const floating *src, long cs, int C, int kh, int kw, int sh, int dh,
                            int Ho, int Wo, long p_lo, long p_hi, floating *col,
                            long ldc) noexcept nogil:
    if floating is float:
        pack_tile_f32(src, cs, C, kh, kw, sh, dh, Ho, Wo, p_lo, p_hi, col, ldc)
    else:
        pack_tile_f64(src, cs, C, kh, kw, sh, dh, Ho, Wo, p_lo, p_hi, col, ldc)


cdef inline void _unpack_tile_add(const floating *dcol, long ldc, int C, int kh, int kw, int sh,
                                  int dh, int Ho, int Wo, long p_lo, long p_hi, long cs,
                                  floating *ds) noexcept nogil:
    if floating is float:
        unpack_tile_add_f32(dcol, ldc, C, kh, kw, sh, dh, Ho, Wo, p_lo, p_hi, cs, ds)
    else:
        unpack_tile_add_f64(dcol, ldc, C, kh, kw, sh, dh, Ho, Wo, p_lo, p_hi, cs, ds)


cdef inline void _fold_planes(const floating *ds, int C, int H, int W, int kh, int kw,
                              int sh, int sw, int ph, int pw, int dh, int dw, int Ho, int Wo,
                              floating *gx) noexcept nogil:
    if floating is float:
        fold_planes_f32(ds, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, gx)
    else:
        fold_planes_f64(ds, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, gx)


cdef inline void _copy_tile(const floating *g, long ldg, int rows, long n, long ld,
                            floating *dst) noexcept nogil:
    if floating is float:
        copy_tile_f32(g, ldg, rows, n, ld, dst)
    else:
        copy_tile_f64(g, ldg, rows, n, ld, dst)


cdef inline void _unpack_add(const floating *dcol, int C, int H, int W, int kh, int kw, int sh,
                             int sw, int ph, int pw, int dh, int dw, long p_lo, long p_hi, int Wo,
                             long ldc, floating *gx) noexcept nogil:
    if floating is float:
        unpack_patches_add_f32(dcol, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, p_lo, p_hi, Wo,
                               ldc, gx)
    else:
        unpack_patches_add_f64(dcol, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, p_lo, p_hi, Wo,
                               ldc, gx)


def adder_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] weight,
                  floating[:, :, :, ::1] y, int kh, int kw, int sh, int sw, int ph, int pw,
                  int mode, long tile_positions, floating[:, ::1] col_workspace,
                  floating[:, ::1] pad_workspace, int num_threads, int groups=1, int dh=1,
                  int dw=1):
    """y[n, t] = -Σ_k dist(patch - w[t]) for every image (see module docstring); ``mode``
    FORWARD_L1 / FORWARD_L2 picks the distance, FORWARD_CONV computes the convolution
    y[n, t] = Σ_k patch·w[t] instead.

    x (N, Cin, H, W); weight (Cout, K) with K = Cin/groups·kh·kw; y (N, Cout, Ho, Wo) written.
    ``groups``: output channels [g·Cout/groups, (g+1)·Cout/groups) see only input channels
    [g·Cin/groups, (g+1)·Cin/groups) (each group is a layer of its own over its channel slice);
    ``dh``/``dw``: the dilation (tap (i, j) reads input row h·sh + i·dh - ph, column
    w·sw + j·dw - pw).
    Each image is processed in tiles of ``tile_positions`` consecutive output positions
    (p = h·Wo + w, across row ends; a remainder shorter than half a tile joins the last
    tile), packed into the thread's row of col_workspace (>= num_threads rows of
    >= K·tile_capacity(Ho·Wo, tile_positions, itemsize)), same dtype, from the image's column
    planes in the thread's row of pad_workspace (>= num_threads, >= source_size(...) + PAD_SLACK).
    Allocates nothing.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Cout = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    _check_groups(C, Cout, groups)
    cdef int Cg = C // groups, Og = Cout // groups
    cdef int K = Cg * kh * kw
    cdef long P = <long>Ho * Wo
    cdef Py_ssize_t n
    cdef int tid, g
    cdef long p_lo, p_hi, ld, cap, lanes, block, cs
    cdef floating *col
    cdef floating *xp
    cdef const floating *src
    cdef floating *yn
    _check_geometry(N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, num_threads, dh, dw)
    if y.shape[0] != N or weight.shape[0] != Cout or weight.shape[1] != K:
        raise ValueError(f"y must be (N={N}, Cout, Ho, Wo) and weight (Cout, K={K}), got "
                         f"({y.shape[0]}, {y.shape[1]}, {y.shape[2]}, {y.shape[3]}) and "
                         f"({weight.shape[0]}, {weight.shape[1]})")
    if mode != FWD_L1 and mode != FWD_L2 and mode != FWD_DOT:
        raise ValueError(f"mode must be FORWARD_L1, FORWARD_L2 or FORWARD_CONV, got {mode}")
    if tile_positions < 1:
        raise ValueError(f"tile_positions must be >= 1, got {tile_positions}")
    if N == 0 or Cout == 0 or P == 0:
        return
    if floating is float:
        lanes, block = VF32_LANES, C_FWD_BLOCK_F32
    else:
        lanes, block = VF64_LANES, C_FWD_BLOCK_F64
    cap = _tile_capacity(P, tile_positions, block, lanes)
    _check_workspace("col_workspace", col_workspace.shape[0], col_workspace.shape[1],
                     num_threads, <Py_ssize_t>K * cap)
    cs = source_channel_stride_f32(H, W, kh, kw, sh, sw, ph, pw, dh, Ho, Wo)
    _check_workspace("pad_workspace", pad_workspace.shape[0], pad_workspace.shape[1],
                     num_threads, <Py_ssize_t>C * cs + C_PAD_SLACK)
    with nogil, parallel(num_threads=num_threads):
        tid = openmp.omp_get_thread_num()
        col = &col_workspace[tid, 0]
        xp = &pad_workspace[tid, 0]
        for n in prange(N, schedule="dynamic"):
            src = _source(&x[n, 0, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, xp)
            yn = &y[n, 0, 0, 0]
            for g in range(groups):
                p_lo = 0
                while p_lo < P:
                    p_hi = _tile_end(p_lo, P, tile_positions, block)
                    ld = _round_up(p_hi - p_lo, lanes)
                    _pack_tile(src + <long>g * Cg * cs, cs, Cg, kh, kw, sh, dh, Ho, Wo, p_lo,
                               p_hi, col, ld)
                    if floating is float:
                        forward_tile_f32(col, ld, &weight[g * Og, 0], Og, K, p_hi - p_lo,
                                         yn + g * Og * P + p_lo, P, mode)
                    else:
                        forward_tile_f64(col, ld, &weight[g * Og, 0], Og, K, p_hi - p_lo,
                                         yn + g * Og * P + p_lo, P, mode)
                    p_lo = p_hi


def adder_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] weight_t,
                   const floating[:, :, :, ::1] grad_output, floating[:, :, :, ::1] grad_input,
                   int kh, int kw, int sh, int sw, int ph, int pw, bint filter_sign,
                   int input_mode, long tile_positions, floating[:, ::1] col_workspace,
                   floating[:, ::1] gt_workspace, floating[:, ::1] pad_workspace,
                   floating[:, :, ::1] partial_grad_weight, floating[:, ::1] partial_grad_sum,
                   int num_threads, int groups=1, int dh=1, int dw=1):
    """Accumulate the adder backward of a batch, slot by slot (see module docstring).

    x (N, Cin, H, W); weight_t (groups·K, Cout/groups), K = Cin/groups·kh·kw: each group's
    filters transposed, group after group (each tap's Cout/groups values contiguous, as the
    input-gradient block reads them); ``groups``, ``dh``/``dw`` as in adder_forward;
    grad_output (N, Cout, Ho, Wo);
    grad_input (N, Cin, H, W) written (zeroed here first);
    partial_grad_sum (S, Cout) must be zero on entry, and so must partial_grad_weight
    (S, Cout, K) for ``filter_sign`` (the full filter gradient writes its slot's first tile):
    slot s covers images [s·N // S, (s+1)·N // S) and receives Σ_n Σ_p col·G
    (``filter_sign`` false) or Σ_n Σ_p sgn(D)·G (true) in partial_grad_weight[s] and Σ G in
    partial_grad_sum[s].  Layout of partial_grad_weight[s]: (Cout, K) for ``filter_sign``;
    otherwise the Cout·K elements hold each group's block TRANSPOSED, (K, Cout/groups), group
    after group (the layout of weight_t: the full filter gradient's register blocks then add
    into contiguous filters); reduce_slots undoes it.  input_mode: INPUT_GRAD_HARDTANH / _SIGN / _L2, or INPUT_GRAD_CONV
    for the convolution (its filter gradient is the Σ col·G part alone).
    Images are processed in tiles of output positions as in adder_forward; with
    cap = tile_capacity(Ho·Wo, tile_positions, itemsize): col_workspace (>= num_threads,
    >= K·cap) holds the packed tile, gt_workspace (>= num_threads, >= 2·Cout·cap) the
    grad_output tile (zero-padded to whole vectors) and its transpose, pad_workspace
    (>= num_threads, >= 2·source_size(...) + PAD_SLACK) the image's column planes and their
    gradient (gathered into grad_input once per image).
    Allocates nothing.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Cout = grad_output.shape[1], Ho = grad_output.shape[2], Wo = grad_output.shape[3]
    _check_groups(C, Cout, groups)
    cdef int Cg = C // groups, Og = Cout // groups
    cdef int K = Cg * kh * kw
    cdef long P = <long>Ho * Wo
    cdef int S = partial_grad_weight.shape[0]
    cdef Py_ssize_t s, n, n_lo, n_hi, e, count
    cdef int tid, g
    cdef long p_lo, p_hi, ld, cap, lanes, block, cs
    cdef const floating *wT
    cdef floating *col
    cdef floating *gx
    cdef floating *gT
    cdef floating *gb
    cdef floating *xp
    cdef floating *ds
    cdef const floating *src
    cdef bint direct
    _check_geometry(N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, num_threads, dh, dw)
    x_shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    gi_shape = (grad_input.shape[0], grad_input.shape[1], grad_input.shape[2], grad_input.shape[3])
    go_shape = (grad_output.shape[0], grad_output.shape[1], grad_output.shape[2],
                grad_output.shape[3])
    if (go_shape[0] != N or gi_shape != x_shape or weight_t.shape[0] != groups * K
            or weight_t.shape[1] != Og):
        raise ValueError(f"grad_output must be (N={N}, Cout, Ho, Wo), grad_input {x_shape} and "
                         f"weight_t (groups·K={groups * K}, Cout/groups={Og}), got {go_shape}, "
                         f"{gi_shape} and ({weight_t.shape[0]}, {weight_t.shape[1]})")
    if (input_mode != IG_HARDTANH and input_mode != IG_SIGN and input_mode != IG_L2
            and input_mode != IG_CONV):
        raise ValueError(f"input_mode must be one of the INPUT_GRAD_* constants, got {input_mode}")
    if tile_positions < 1 or S < 1:
        raise ValueError(f"tile_positions and the number of slots must be >= 1, got "
                         f"{tile_positions}, {S}")
    if N == 0:
        return
    if partial_grad_weight.shape[1] != Cout or partial_grad_weight.shape[2] != K:
        raise ValueError(f"partial_grad_weight must be (S, Cout={Cout}, K={K}), got "
                         f"({partial_grad_weight.shape[0]}, {partial_grad_weight.shape[1]}, "
                         f"{partial_grad_weight.shape[2]})")
    if floating is float:
        lanes, block = VF32_LANES, C_FWD_BLOCK_F32
    else:
        lanes, block = VF64_LANES, C_FWD_BLOCK_F64
    cap = _tile_capacity(P, tile_positions, block, lanes)
    _check_workspace("partial_grad_sum", partial_grad_sum.shape[0], partial_grad_sum.shape[1],
                     S, Cout)
    _check_workspace("col_workspace", col_workspace.shape[0], col_workspace.shape[1],
                     num_threads, <Py_ssize_t>K * cap)
    _check_workspace("gt_workspace", gt_workspace.shape[0], gt_workspace.shape[1],
                     num_threads, <Py_ssize_t>2 * Cout * cap)
    cs = source_channel_stride_f32(H, W, kh, kw, sh, sw, ph, pw, dh, Ho, Wo)
    _check_workspace("pad_workspace", pad_workspace.shape[0], pad_workspace.shape[1],
                     num_threads, <Py_ssize_t>2 * C * cs + C_PAD_SLACK)
    count = <Py_ssize_t>C * H * W
    with nogil, parallel(num_threads=num_threads):
        tid = openmp.omp_get_thread_num()
        col = &col_workspace[tid, 0]
        gT = &gt_workspace[tid, 0]
        gb = gT + <long>Cout * cap
        xp = &pad_workspace[tid, 0]
        ds = xp + <long>C * cs  # the planes' gradient
        for s in prange(S, schedule="dynamic"):
            n_lo = s * N // S
            n_hi = (s + 1) * N // S
            for n in range(n_lo, n_hi):
                gx = &grad_input[n, 0, 0, 0]
                if P == 0 or Cout == 0:
                    for e in range(count):
                        gx[e] = 0
                    continue
                src = _source(&x[n, 0, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, xp)
                # planes that are x itself (1x1 stride 1, no padding): their gradient is gx,
                # which the tiles add into; otherwise into the planes' gradient, which
                # _fold_planes then writes into gx (zeroing it channel by channel)
                direct = src == &x[n, 0, 0, 0]
                if direct:
                    for e in range(count):
                        gx[e] = 0
                else:
                    for e in range(<Py_ssize_t>C * cs):
                        ds[e] = 0
                for g in range(groups):
                    wT = &weight_t[g * K, 0]
                    p_lo = 0
                    while p_lo < P:
                        p_hi = _tile_end(p_lo, P, tile_positions, block)
                        ld = _round_up(p_hi - p_lo, lanes)
                        # the patches and grad_output of the tile, both zero-padded to ld
                        # columns: the kernels run whole vectors, the padding adds exact zeros
                        _pack_tile(src + <long>g * Cg * cs, cs, Cg, kh, kw, sh, dh, Ho, Wo, p_lo,
                                   p_hi, col, ld)
                        _copy_tile(&grad_output[n, g * Og, 0, 0] + p_lo, P, Og, p_hi - p_lo, ld,
                                   gb)
                        if floating is float:
                            if filter_sign:
                                filter_grad_sign_tile_t_f32(col, wT, gb, ld, Og, K, ld,
                                                            &partial_grad_weight[s, g * Og, 0],
                                                            gT)
                            else:
                                filter_grad_full_tile_t_f32(col, gb, ld, Og, K, ld,
                                                            &partial_grad_weight[s, 0, 0]
                                                            + <long>g * K * Og, Og,
                                                            &partial_grad_sum[s, g * Og], gT,
                                                            n == n_lo and p_lo == 0)
                            input_grad_tile_f32(col, wT, gb, ld, Og, K, ld, input_mode)
                        else:
                            if filter_sign:
                                filter_grad_sign_tile_t_f64(col, wT, gb, ld, Og, K, ld,
                                                            &partial_grad_weight[s, g * Og, 0],
                                                            gT)
                            else:
                                filter_grad_full_tile_t_f64(col, gb, ld, Og, K, ld,
                                                            &partial_grad_weight[s, 0, 0]
                                                            + <long>g * K * Og, Og,
                                                            &partial_grad_sum[s, g * Og], gT,
                                                            n == n_lo and p_lo == 0)
                            input_grad_tile_f64(col, wT, gb, ld, Og, K, ld, input_mode)
                        _unpack_tile_add(col, ld, Cg, kh, kw, sh, dh, Ho, Wo, p_lo, p_hi, cs,
                                         (gx if direct else ds) + <long>g * Cg * cs)
                        p_lo = p_hi
                if not direct:
                    _fold_planes(ds, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, gx)


cdef inline void _transpose_rows(const floating *src, long lds, int rows, int cols,
                                 floating *dst, long ldd) noexcept nogil:
    """dst[c, r] = src[r, c] for r < rows, c < cols: register-blocked (adder_transpose.h)."""
    if floating is float:
        transpose_f32(src, lds, rows, cols, dst, ldd)
    else:
        transpose_f64(src, lds, rows, cols, dst, ldd)


cdef enum:
    # rows per chunk (work unit) of the blocked transposes: each destination row then gets
    # runs of 64 elements (whole cache lines), and a chunk of source rows stays in L2
    TRANSPOSE_CHUNK = 64


def transpose_filters(const floating[:, ::1] weight, floating[:, ::1] weight_t, int groups,
                      int num_threads):
    """weight_t (groups·K, Cout/groups) = each group's filters of weight (Cout, K) transposed,
    group after group (the layout adder_backward takes).  A blocked copy: numpy's strided
    transpose of a multi-MiB filter bank costs as much as a small layer's backward."""
    cdef int Cout = weight.shape[0], K = weight.shape[1]
    cdef int Og, nk, nb, b, g, t0
    if groups < 1 or Cout % groups != 0 or num_threads < 1:
        raise ValueError(f"groups must divide Cout={Cout} and num_threads be >= 1, got "
                         f"{groups}, {num_threads}")
    Og = Cout // groups
    if weight_t.shape[0] != <Py_ssize_t>groups * K or weight_t.shape[1] != Og:
        raise ValueError(f"weight_t must be (groups·K={groups * K}, Cout/groups={Og}), got "
                         f"({weight_t.shape[0]}, {weight_t.shape[1]})")
    if Cout == 0 or K == 0:
        return
    nk = (Og + TRANSPOSE_CHUNK - 1) // TRANSPOSE_CHUNK
    nb = groups * nk
    with nogil:
        for b in prange(nb, schedule="static", num_threads=num_threads):
            g = b // nk
            t0 = (b % nk) * TRANSPOSE_CHUNK
            # TRANSPOSE_CHUNK whole filters (contiguous source rows) per unit
            _transpose_rows(&weight[g * Og + t0, 0], K, min(TRANSPOSE_CHUNK, Og - t0), K,
                            &weight_t[g * K, t0], Og)


def reduce_slots(floating[:, :, ::1] partial_grad_weight, floating[:, ::1] grad_weight,
                 int groups, bint transposed, int num_threads,
                 const floating[:, ::1] weight=None, const floating[::1] grad_sum=None,
                 double scale=1.0):
    """grad_weight (Cout, K) = Σ_s partial_grad_weight[s], summed in slot order (s = 0, 1, ...:
    the same additions as ``p[0].copy(); p[0] += p[s]...``, so the result does not depend on
    the thread count).  ``transposed``: each slot holds the layout adder_backward gives the
    full filter gradient, each group's (K, Cout/groups) block transposed, group after group;
    it is summed in that layout (contiguous) and transposed back chunk by chunk.
    partial_grad_weight[0] is overwritten (with the running sum).

    With ``weight`` (Cout, K) and ``grad_sum`` (Cout,) (``transposed`` only): the full filter
    gradient's rank-1 term applied to each chunk while it is in cache,
    ``grad_weight = (Σ_s partial - weight·grad_sum[:, None])·scale`` with the product rounded
    before the subtraction (the same operations as numpy's ``gw -= w * s[:, None]; gw *=
    scale``; scale 2 for ℓ2, method §4.1), instead of three more passes over Cout·K."""
    cdef int S = partial_grad_weight.shape[0], Cout = grad_weight.shape[0]
    cdef int K = grad_weight.shape[1]
    cdef int Og, nk, nb, b, g, k0, rows, s, t, r
    cdef long e, off, n, total
    cdef floating *p0
    cdef floating *gw
    cdef const floating *ps
    cdef const floating *wp = NULL
    cdef const floating *gsp = NULL
    cdef floating prod, fscale = <floating>scale
    if groups < 1 or Cout % groups != 0 or num_threads < 1:
        raise ValueError(f"groups must divide Cout={Cout} and num_threads be >= 1, got "
                         f"{groups}, {num_threads}")
    if (S < 1 or partial_grad_weight.shape[1] != Cout or partial_grad_weight.shape[2] != K):
        raise ValueError(f"partial_grad_weight must be (S >= 1, Cout={Cout}, K={K}), got "
                         f"({S}, {partial_grad_weight.shape[1]}, {partial_grad_weight.shape[2]})")
    if (weight is None) != (grad_sum is None) or (weight is not None and not transposed):
        raise ValueError("weight and grad_sum go together, and only with transposed=True")
    if weight is not None:
        if weight.shape[0] != Cout or weight.shape[1] != K or grad_sum.shape[0] != Cout:
            raise ValueError(f"weight must be (Cout={Cout}, K={K}) and grad_sum (Cout={Cout},), "
                             f"got ({weight.shape[0]}, {weight.shape[1]}) and ({grad_sum.shape[0]},)")
    if Cout == 0 or K == 0:
        return
    if weight is not None:
        wp = &weight[0, 0]
        gsp = &grad_sum[0]
    Og = Cout // groups
    total = <long>Cout * K
    p0 = &partial_grad_weight[0, 0, 0]
    if transposed:  # chunks of TRANSPOSE_CHUNK taps of one group: (rows, Og) contiguous
        nk = (K + TRANSPOSE_CHUNK - 1) // TRANSPOSE_CHUNK
        nb = groups * nk
    else:  # chunks of TRANSPOSE_CHUNK filters: (rows, K) contiguous
        nk = (Cout + TRANSPOSE_CHUNK - 1) // TRANSPOSE_CHUNK
        nb = nk
    with nogil:
        for b in prange(nb, schedule="static", num_threads=num_threads):
            if transposed:
                g = b // nk
                k0 = (b % nk) * TRANSPOSE_CHUNK
                rows = min(TRANSPOSE_CHUNK, K - k0)
                off = <long>g * K * Og + <long>k0 * Og
                n = <long>rows * Og
            else:
                g = 0
                k0 = b * TRANSPOSE_CHUNK
                rows = min(TRANSPOSE_CHUNK, Cout - k0)
                off = <long>k0 * K
                n = <long>rows * K
            for s in range(1, S):
                ps = p0 + <long>s * total + off
                for e in range(n):
                    p0[off + e] = p0[off + e] + ps[e]
            if transposed:
                _transpose_rows(p0 + off, Og, rows, Og, &grad_weight[g * Og, k0], K)
                if wp != NULL:  # the rank-1 term on the block just written (in L1/L2)
                    for t in range(g * Og, (g + 1) * Og):
                        gw = &grad_weight[t, k0]
                        for r in range(rows):
                            prod = wp[<long>t * K + k0 + r] * gsp[t]
                            gw[r] = (gw[r] - prod) * fscale
            else:
                gw = &grad_weight[k0, 0]
                for e in range(n):
                    gw[e] = p0[off + e]


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, int kh, int kw, int sh,
           int sw, int ph, int pw, int Ho, int Wo, int num_threads, int dh=1, int dw=1):
    """Patch matrix of a batch, images side by side: x (N, C, H, W) -> cols (C·kh·kw, N·Ho·Wo)
    (written; column n·Ho·Wo + p is position p of image n), ready for one GEMM."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef long P = <long>Ho * Wo
    cdef long ldc = cols.shape[1]
    cdef Py_ssize_t n
    _check_geometry(N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, num_threads, dh, dw)
    _check_workspace("cols", cols.shape[0], cols.shape[1], <Py_ssize_t>C * kh * kw, N * P)
    if N == 0 or cols.shape[0] == 0 or P == 0:
        return
    with nogil:
        for n in prange(N, schedule="static", num_threads=num_threads):
            _pack(&x[n, 0, 0, 0], C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, 0, P, Wo,
                  &cols[0, n * P], ldc)


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] x, int kh, int kw, int sh,
           int sw, int ph, int pw, int Ho, int Wo, int num_threads, int dh=1, int dw=1):
    """Adjoint of im2col: cols (C·kh·kw, N·Ho·Wo) summed into x (N, C, H, W) (zeroed here)."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef long P = <long>Ho * Wo
    cdef long ldc = cols.shape[1]
    cdef Py_ssize_t n, e, count = <Py_ssize_t>C * H * W
    cdef floating *gx
    _check_geometry(N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, num_threads, dh, dw)
    _check_workspace("cols", cols.shape[0], cols.shape[1], <Py_ssize_t>C * kh * kw, N * P)
    if N == 0 or count == 0:
        return
    with nogil:
        for n in prange(N, schedule="static", num_threads=num_threads):
            gx = &x[n, 0, 0, 0]
            for e in range(count):
                gx[e] = 0
            if cols.shape[0] > 0 and P > 0:
                _unpack_add(&cols[0, n * P], C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, 0, P, Wo,
                            ldc, gx)
