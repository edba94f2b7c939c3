"""Compiled adder kernels (addercore_ext via addercore.ops.fast) against the numpy reference.

* ℓ1 and ℓ2 forward: bit-exact, float32 and float64 (canonical summation order).
* backward (every filter_grad × input_grad × norm): float64 within 1e-10, float32 within 1e-4,
  both relative to the largest magnitude of the reference result.
* bit-identical outputs for 1, 2 and 4 threads (forward and backward).
Shapes cover non-square kernels, strides 1-3, paddings 0-2, batch 1, one channel, and tiles
smaller than an image (several packed tiles per image, ragged position tails).
"""
import numpy as np
import pytest

from addercore import _backend
from addercore.ops import reference
from addercore.threads import num_threads
from conftest import layer_case

if _backend.backend() != "cython":
    pytest.skip(
        "compiled backend not active (addercore_ext not built or ADDERCORE_BACKEND=numpy)",
        allow_module_level=True,
    )

from addercore.ops import fast  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-4, np.float64: 1e-10}

# N, Cin, H, W, Cout, kh, kw, stride, padding
SHAPES = [
    (2, 3, 7, 9, 5, 3, 2, (1, 2), (1, 0)),
    (1, 1, 5, 5, 1, 3, 3, (3, 3), (2, 2)),  # batch 1, one channel, padding > what fits
    (3, 4, 11, 6, 6, 2, 3, (2, 1), (0, 2)),
    (2, 2, 9, 9, 3, 1, 1, (2, 2), (0, 0)),  # 1x1 strided shortcut
    (1, 16, 16, 16, 16, 3, 3, (1, 1), (1, 1)),  # whole register blocks
    (2, 5, 13, 17, 9, 4, 1, (3, 2), (2, 1)),
    (2, 3, 4, 4, 7, 5, 5, (1, 1), (2, 2)),  # kernel larger than the image (padding taps)
    (2, 3, 20, 34, 4, 3, 3, (2, 2), (1, 1)),  # stride 2, vector gathers + ragged tail
    (1, 2, 16, 33, 3, 1, 1, (2, 2), (0, 0)),  # 1x1 stride 2 without padding
    # stride 2 without padding whose even-element loads end exactly at a row's last element:
    # packed straight from x, no padded copy (pack_source)
    (2, 3, 10, 32, 4, 1, 1, (2, 2), (0, 0)),
    (2, 2, 9, 20, 3, 3, 3, (2, 2), (0, 0)),
    # 1x1 with strides and padding: only row phase 0 of the column planes is read, built and
    # folded back (pack_source / fold_planes skip the others)
    (2, 3, 9, 10, 4, 1, 1, (2, 3), (1, 1)),
]
IDS = [f"N{s[0]}C{s[1]}H{s[2]}W{s[3]}O{s[4]}k{s[5]}x{s[6]}s{s[7][0]}{s[7][1]}p{s[8][0]}{s[8][1]}"
       for s in SHAPES]


def _every_op(x, weight, g, st, pd, second_backward):
    """[ℓ1 fwd, ℓ2 fwd, conv fwd, ℓ1 full/hardtanh bwd (2), adder bwd with the modes
    ``second_backward`` = (norm, filter_grad, input_grad) (2), conv bwd (2)] of the compiled
    kernels."""
    out = [fast.adder2d_forward(x, weight, st, pd, "l1"),
           fast.adder2d_forward(x, weight, st, pd, "l2"),
           fast.conv2d_forward(x, weight, st, pd)]
    out += fast.adder2d_backward(x, weight, g, st, pd, "l1", "full", "hardtanh")
    out += fast.adder2d_backward(x, weight, g, st, pd, *second_backward)
    out += fast.conv2d_backward(x, weight, g, st, pd)
    return out


def make(shape, dtype, seed=0):
    x, weight, g, stride, padding = layer_case(shape, dtype, seed)
    # ties D == 0 exercise sgn(0) = 0 and the inclusive clip bounds
    x.flat[::7] = weight.flat[0]
    return x, weight, g, stride, padding


def assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.fixture(params=[None, 512], ids=["tile=image", "tile=small"])
def tile_bytes(request, monkeypatch):
    """Default tiles, and tiny tiles (one register block: several tiles per image, tiles
    ending inside an output row, merged ragged tails)."""
    if request.param is not None:
        monkeypatch.setitem(fast.TILE_BYTES, "forward", request.param)
        monkeypatch.setitem(fast.TILE_BYTES, "backward", request.param)
        monkeypatch.setattr(fast, "TILE_MIN_BLOCKS", 1)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_bit_exact(shape, norm, dtype, tile_bytes):
    x, weight, _, stride, padding = make(shape, dtype)
    expected = reference.adder2d_forward(x, weight, stride, padding, norm)
    actual = fast.adder2d_forward(x, weight, stride, padding, norm)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_backward_matches_reference(shape, norm, dtype, tile_bytes):
    x, weight, g, stride, padding = make(shape, dtype)
    for filter_grad in ("full", "sign"):
        for input_grad in ("hardtanh", "sign", "exact"):
            args = (x, weight, g, stride, padding, norm, filter_grad, input_grad)
            gi_ref, gw_ref = reference.adder2d_backward(*args)
            gi, gw = fast.adder2d_backward(*args)
            assert_close(gi, gi_ref, dtype)
            assert_close(gw, gw_ref, dtype)


def test_backward_many_slots():
    """Batches larger than the slot count (images grouped per slot, uneven groups)."""
    shape = (37, 3, 6, 5, 4, 3, 3, (1, 1), (1, 1))
    for dtype in DTYPES:
        x, weight, g, stride, padding = make(shape, dtype, seed=3)
        args = (x, weight, g, stride, padding, "l1", "full", "hardtanh")
        for a, b in zip(fast.adder2d_backward(*args), reference.adder2d_backward(*args)):
            assert_close(a, b, dtype)


def test_backward_slot_rule():
    """min(N, 16) slots unless a slot would get fewer than MIN_SLOT_POSITIONS positions; then
    the largest power of two that gives each at least that many (hand-computed, 96)."""
    assert fast.MIN_SLOT_POSITIONS == 96 and fast.MAX_BACKWARD_SLOTS == 16
    cases = {(256, 64): 16, (8, 1056): 8, (8, 196): 8, (8, 64): 4, (8, 49): 4, (8, 32): 2,
             (16, 49): 8, (32, 49): 16, (12, 8): 1, (3, 40): 1, (1, 1): 1, (5, 1000): 5}
    for (n, positions), slots in cases.items():
        assert fast._backward_slots(n, positions) == slots, (n, positions)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(12, 3, 6, 8, 5), (8, 4, 4, 5, 6), (9, 2, 7, 1, 3)],
                         ids=["4slots", "1slot", "width1"])
def test_small_batch_slots_match_reference_and_threads(shape, dtype):
    """Small batches of small maps (fewer slots than images): the reference's results, and
    the same bits for 1, 2 and 3 threads."""
    n, cin, h, w, cout = shape
    x, weight, g, stride, padding = make((n, cin, h, w, cout, 3, 3, (1, 1), (1, 1)), dtype,
                                         seed=n)
    assert fast._backward_slots(n, h * w) < min(n, fast.MAX_BACKWARD_SLOTS)
    results = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            out = list(fast.adder2d_backward(x, weight, g, stride, padding, "l1", "full",
                                             "hardtanh"))
            out += fast.conv2d_backward(x, weight, g, stride, padding)
        results.append(out)
    ref = list(reference.adder2d_backward(x, weight, g, stride, padding, "l1", "full",
                                          "hardtanh"))
    ref += reference.conv2d_backward(x, weight, g, stride, padding)
    for a, b in zip(results[0], ref):
        assert_close(a, b, dtype)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_thread_counts(dtype, tile_bytes):
    shape = (37, 4, 10, 9, 6, 3, 2, (2, 1), (1, 1))
    x, weight, g, stride, padding = make(shape, dtype, seed=5)
    results = []
    for threads in (1, 2, 4):
        with num_threads(threads):
            out = [fast.adder2d_forward(x, weight, stride, padding, norm) for norm in ("l1", "l2")]
            for norm, fg, ig in [("l1", "full", "hardtanh"), ("l1", "sign", "sign"),
                                 ("l2", "full", "exact"), ("l2", "sign", "hardtanh")]:
                out += fast.adder2d_backward(x, weight, g, stride, padding, norm, fg, ig)
            out += fast.conv2d_backward(x, weight, g, stride, padding)
            out.append(fast.conv2d_forward(x, weight, stride, padding))
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=IDS[:4])
def test_conv_and_patches_match_reference(shape, dtype):
    x, weight, g, stride, padding = make(shape, dtype)
    kernel = weight.shape[2:]
    cols = fast.im2col(x, kernel, stride, padding)
    np.testing.assert_array_equal(cols, reference.im2col(x, kernel, stride, padding))
    assert_close(fast.col2im(cols, x.shape, kernel, stride, padding),
                 reference.col2im(cols, x.shape, kernel, stride, padding), dtype)
    assert_close(fast.conv2d_forward(x, weight, stride, padding),
                 reference.conv2d_forward(x, weight, stride, padding), dtype)
    for a, b in zip(fast.conv2d_backward(x, weight, g, stride, padding),
                    reference.conv2d_backward(x, weight, g, stride, padding)):
        assert_close(a, b, dtype)


def test_workspaces_are_reused_and_grow():
    """Shapes that need bigger, then smaller, workspaces give correct results."""
    for shape in (SHAPES[0], SHAPES[4], SHAPES[1], SHAPES[4]):
        x, weight, g, stride, padding = make(shape, np.float32)
        np.testing.assert_array_equal(
            fast.adder2d_forward(x, weight, stride, padding, "l1"),
            reference.adder2d_forward(x, weight, stride, padding, "l1"))
    fast.clear_workspaces()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [1, 5, 16, 27, 1000])
def test_workspace_rows_start_on_cache_lines(dtype, cols):
    """Every thread's row of a row-aligned workspace starts on a 64-byte line (the kernels'
    vector loads along a row would otherwise straddle lines), is at least as long as asked,
    and the cache gives back the same memory for the same request."""
    fast.clear_workspaces()
    a = fast._workspace("test_rows", np.dtype(dtype), (3, cols), align_rows=True)
    assert a.shape[0] == 3 and a.shape[1] >= cols and a.flags.c_contiguous
    assert [a[r].ctypes.data % 64 for r in range(3)] == [0, 0, 0]
    plain = fast._workspace("test_plain", np.dtype(dtype), (cols,))
    assert plain.ctypes.data % 64 == 0 and plain.shape == (cols,)
    again = fast._workspace("test_rows", np.dtype(dtype), (3, cols), align_rows=True)
    assert again.ctypes.data == a.ctypes.data
    fast.clear_workspaces()


def test_empty_batch():
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    assert fast.adder2d_forward(x, w, (1, 1), (1, 1), "l1").shape == (0, 3, 5, 5)
    gi, gw = fast.adder2d_backward(x, w, np.zeros((0, 3, 5, 5), np.float32), (1, 1), (1, 1),
                                   "l1", "full", "hardtanh")
    assert gi.shape == x.shape and gw.shape == w.shape and not gw.any()


def test_simd_name():
    assert fast.simd() in ("avx2+fma", "avx512f", "scalar")


def test_raw_drivers_check_workspaces_and_geometry():
    """The Cython drivers index their buffers inside nogil loops: wrong sizes passed by a direct
    caller must raise ValueError (naming the argument), never touch memory out of bounds."""
    from addercore_ext import _adder

    f32 = np.float32
    x, w = np.zeros((2, 3, 8, 8), f32), np.zeros((4, 27), f32)
    y, g = np.zeros((2, 4, 8, 8), f32), np.zeros((2, 4, 8, 8), f32)
    # tiles of 64 positions = the whole 8x8 output: col needs exactly K x 64
    assert _adder.tile_capacity(64, 64, 4) == 64
    col = np.zeros((1, 27 * 64), f32)
    # column planes of one image (C·kw·sh·(Ho + (kh-1)·dh // sh)·Wo = 3·3·1·10·8), and their
    # gradient for the backward
    assert _adder.source_size(3, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1) == 720
    assert _adder.source_size(3, 8, 8, 1, 1, 1, 1, 0, 0, 1, 1) == 3 * 64  # x itself
    assert _adder.source_size(3, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1) == 3 * 3 * 2 * 5 * 4
    xp = np.zeros((1, 2 * 720 + _adder.PAD_SLACK), f32)
    _adder.adder_forward(x, w, y, 3, 3, 1, 1, 1, 1, _adder.FORWARD_L1, 64, col, xp, 1)  # fits
    cases = [
        ("col_workspace", dict(col=col[:, :-1])),
        ("pad_workspace", dict(xp=xp[:, :300])),
        ("col_workspace", dict(threads=2)),
        (r"output \(Ho, Wo\)", dict(y=np.zeros((2, 4, 7, 8), f32))),
        ("mode", dict(mode=7)),
    ]
    for match, change in cases:
        a = dict(y=y, mode=_adder.FORWARD_L1, col=col, xp=xp, threads=1)
        a.update(change)
        with pytest.raises(ValueError, match=match):
            _adder.adder_forward(x, w, a["y"], 3, 3, 1, 1, 1, 1, a["mode"], 64,
                                 np.ascontiguousarray(a["col"]), np.ascontiguousarray(a["xp"]),
                                 a["threads"])
    gi = np.zeros_like(x)
    wt, gt = np.zeros((27, 4), f32), np.zeros((1, 2 * 4 * 64), f32)
    partial, psum = np.zeros((2, 4, 27), f32), np.zeros((2, 4), f32)
    args = [x, wt, g, gi, 3, 3, 1, 1, 1, 1, False, _adder.INPUT_GRAD_HARDTANH, 64, col, gt, xp,
            partial, psum, 1]
    _adder.adder_backward(*args)  # fits
    for index, bad, match in [(14, gt[:, :-1], "gt_workspace"),
                              (16, np.zeros((2, 4, 26), f32), "partial_grad_weight"),
                              (17, np.zeros((1, 4), f32), "partial_grad_sum"),
                              (1, np.zeros((4, 27), f32), "weight_t"),
                              (11, 9, "input_mode")]:
        bad_args = list(args)
        bad_args[index] = np.ascontiguousarray(bad) if isinstance(bad, np.ndarray) else bad
        with pytest.raises(ValueError, match=match):
            _adder.adder_backward(*bad_args)
    with pytest.raises(ValueError, match="cols"):
        _adder.im2col(x, np.zeros((27, 2 * 64 - 1), f32), 3, 3, 1, 1, 1, 1, 8, 8, 1)


def test_constants_exported_from_c():
    """PAD_SLACK and the block widths come from the C headers (one definition)."""
    from addercore_ext import _adder

    assert _adder.PAD_SLACK >= 2 * _adder.VECTOR_LANES_F32  # stride-2 gathers read 2 vectors
    assert _adder.FORWARD_BLOCK_F32 % _adder.VECTOR_LANES_F32 == 0
    assert _adder.FORWARD_BLOCK_F64 % _adder.VECTOR_LANES_F64 == 0
    lanes = _adder.VECTOR_LANES_F32
    assert _adder.VECTOR_LANES_F64 * 2 == lanes or lanes == 1
    # the tiles: a remainder shorter than one block joins the last tile; rows = whole vectors
    block = _adder.FORWARD_BLOCK_F32
    # longest tile: 2 blocks plus a merged remainder of up to block - 1, in whole vectors
    assert _adder.tile_capacity(10 * block, 2 * block, 4) == -(-(3 * block - 1) // lanes) * lanes
    assert _adder.tile_capacity(2 * block + 1, 2 * block, 4) == 2 * block + lanes
    assert _adder.tile_capacity(3, 2 * block, 4) == -(-3 // lanes) * lanes  # one vector (SIMD)
    with pytest.raises(ValueError, match="tile_positions"):
        _adder.tile_capacity(10, 0, 4)


# Output widths of issue 14 (odd, prime, MNIST 28, ImageNet 56): every one must give the
# reference's results, whatever the vector width divides.
WIDTHS = [1, 3, 7, 9, 13, 28, 56]


def _width_case(wo, stride, dtype, seed):
    """A 3x3 layer (padding 1) whose output is (Ho, wo) for the given stride; small N, C."""
    h_out = 5
    w_in = (wo - 1) * stride + 1  # (w_in + 2 - 3) // stride + 1 == wo
    h_in = (h_out - 1) * stride + 1
    return make((2, 3, h_in, w_in, 10, 3, 3, (stride, stride), (1, 1)), dtype, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("wo", WIDTHS)
def test_any_output_width_matches_reference(wo, stride, dtype, tile_bytes):
    x, weight, g, st, pd = _width_case(wo, stride, dtype, seed=wo)
    assert reference.adder2d_forward(x, weight, st, pd, "l1").shape[3] == wo
    for norm in ("l1", "l2"):
        np.testing.assert_array_equal(fast.adder2d_forward(x, weight, st, pd, norm),
                                      reference.adder2d_forward(x, weight, st, pd, norm))
        args = (x, weight, g, st, pd, norm, "full", "hardtanh" if norm == "l1" else "exact")
        for a, b in zip(fast.adder2d_backward(*args), reference.adder2d_backward(*args)):
            assert_close(a, b, dtype)
    args = (x, weight, g, st, pd, "l1", "sign", "sign")
    for a, b in zip(fast.adder2d_backward(*args), reference.adder2d_backward(*args)):
        assert_close(a, b, dtype)
    assert_close(fast.conv2d_forward(x, weight, st, pd),
                 reference.conv2d_forward(x, weight, st, pd), dtype)
    for a, b in zip(fast.conv2d_backward(x, weight, g, st, pd),
                    reference.conv2d_backward(x, weight, g, st, pd)):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_output_width_bit_identical_across_thread_counts(dtype, tile_bytes):
    for wo in WIDTHS:
        for stride in (1, 2):
            x, weight, g, st, pd = _width_case(wo, stride, dtype, seed=100 + wo)
            results = []
            for threads in (1, 2):
                with num_threads(threads):
                    results.append(_every_op(x, weight, g, st, pd, ("l2", "sign", "exact")))
            for a, b in zip(*results):
                assert a.tobytes() == b.tobytes(), (wo, stride)


# Tiny and odd widths with more images than threads (uneven image ranges per thread and per
# backward slot, 3 threads), 3x3 and 1x1 layers: the results of every op equal the reference
# (forward bit for bit) and do not depend on the thread count.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wo, kernel", [(1, 3), (2, 3), (3, 3), (7, 3), (1, 1), (3, 1)])
def test_tiny_widths_many_images(wo, kernel, dtype, tile_bytes):
    pad = kernel // 2
    x, weight, g, st, pd = make((5, 4, 3, wo, 6, kernel, kernel, (1, 1), (pad, pad)), dtype,
                                seed=200 + wo)
    results = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            results.append(_every_op(x, weight, g, st, pd, ("l1", "sign", "sign")))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
    y1, y2, yc, gi1, gw1, gis, gws, gic, gwc = results[0]
    assert y1.shape[3] == wo
    np.testing.assert_array_equal(y1, reference.adder2d_forward(x, weight, st, pd, "l1"))
    np.testing.assert_array_equal(y2, reference.adder2d_forward(x, weight, st, pd, "l2"))
    assert_close(yc, reference.conv2d_forward(x, weight, st, pd), dtype)
    for got, ref in [((gi1, gw1), reference.adder2d_backward(x, weight, g, st, pd, "l1", "full",
                                                             "hardtanh")),
                     ((gis, gws), reference.adder2d_backward(x, weight, g, st, pd, "l1", "sign",
                                                             "sign")),
                     ((gic, gwc), reference.conv2d_backward(x, weight, g, st, pd))]:
        for a, b in zip(got, ref):
            assert_close(a, b, dtype)


# Long filters (K = 64·9 taps: a tile of the default size then spans several output rows
# of an odd width) at the widths of the ResNet-18 ImageNet maps' parity (7, 9, 13).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wo", [7, 9, 13])
def test_odd_widths_long_filters(wo, dtype):
    x, weight, g, st, pd = make((3, 64, 5, wo, 9, 3, 3, (1, 1), (1, 1)), dtype, seed=300 + wo)
    outs = []
    for threads in (1, 2):
        with num_threads(threads):
            outs.append([fast.adder2d_forward(x, weight, st, pd, "l1"),
                         *fast.adder2d_backward(x, weight, g, st, pd, "l1", "full", "hardtanh"),
                         fast.conv2d_forward(x, weight, st, pd)])
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()
    y, gi, gw, yc = outs[0]
    np.testing.assert_array_equal(y, reference.adder2d_forward(x, weight, st, pd, "l1"))
    for a, b in zip((gi, gw), reference.adder2d_backward(x, weight, g, st, pd, "l1", "full",
                                                          "hardtanh")):
        assert_close(a, b, dtype)
    assert_close(yc, reference.conv2d_forward(x, weight, st, pd), dtype)


# The backward's full filter gradient accumulates into (K, Cout)-transposed slot partials
# (filter_grad_full_tile_t: filters in vector lanes, K >= FGT_MIN_K = 32 taps): filter counts
# with a remainder beyond whole blocks of 2 vectors (37 = 32 + 5), tap counts with a remainder
# beyond the 6-tap register block (40 = 6·6 + 4), groups (each group's block transposed, group
# after group), several images per slot (N = 19 > 16 slots), default and tiny tiles.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
def test_long_filters_transposed_partials(groups, dtype, tile_bytes):
    from addercore import ops
    from optest import check_compiled_matches_reference
    rng = np.random.default_rng(40 + groups)
    cin, cout = 40 * groups, 37 * groups
    x = rng.standard_normal((19, cin, 5, 3)).astype(dtype)
    w = rng.standard_normal((cout, cin // groups, 1, 1)).astype(dtype)
    g = rng.standard_normal((19, cout, 5, 3)).astype(dtype)
    kw = dict(groups=groups)
    for fg, ig in [("full", "hardtanh"), ("sign", "sign")]:
        check_compiled_matches_reference("adder2d_backward", x, w, g, 1, 0, "l1", fg, ig, **kw)
    check_compiled_matches_reference("conv2d_backward", x, w, g, 1, 0, **kw)
    outs = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            outs.append([*ops.adder2d_backward(x, w, g, 1, 0, **kw),
                         *ops.conv2d_backward(x, w, g, 1, 0, **kw)])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cout, k, groups", [(37, 70, 1), (48, 33, 3), (5, 3, 5), (1, 1, 1),
                                             (130, 19, 1), (64, 576, 2), (24, 8, 1)])
def test_reduce_slots_and_transpose_filters(cout, k, groups, dtype):
    """The backward's helpers against numpy: the slot sum in slot order (bit for bit the same
    additions as p[0] + p[1] + ...), undoing the per-group (K, Cout/groups) transposition, and
    the per-group transpose of the filters; with the validation of their shapes."""
    from addercore_ext import _adder
    rng = np.random.default_rng(cout + k)
    og = cout // groups
    partial = rng.standard_normal((3, cout, k)).astype(dtype)
    expected = partial[0] + partial[1] + partial[2]
    for transposed, want in [(False, expected),
                             (True, expected.reshape(groups, k, og).transpose(0, 2, 1)
                              .reshape(cout, k))]:
        for threads in (1, 2):
            out = np.full((cout, k), np.nan, dtype)
            _adder.reduce_slots(partial.copy(), out, groups, transposed, threads)
            np.testing.assert_array_equal(out, want)
    w = rng.standard_normal((cout, k)).astype(dtype)
    wt = np.full((groups * k, og), np.nan, dtype)
    _adder.transpose_filters(w, wt, groups, 2)
    np.testing.assert_array_equal(wt.reshape(groups, k, og),
                                  w.reshape(groups, og, k).transpose(0, 2, 1))
    with pytest.raises(ValueError, match="partial_grad_weight"):
        _adder.reduce_slots(partial[:, :, :-1].copy(), out, groups, True, 1)
    with pytest.raises(ValueError, match="weight_t"):
        _adder.transpose_filters(w, np.zeros((groups * k + 1, og), dtype), groups, 1)
    with pytest.raises(ValueError, match="groups"):
        _adder.reduce_slots(partial, out, cout + 1, True, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cout, k, groups", [(37, 70, 1), (48, 33, 3), (130, 19, 2)])
def test_reduce_slots_rank1_term(cout, k, groups, dtype):
    """The full filter gradient's rank-1 term fused into reduce_slots equals numpy's separate
    passes bit for bit: (Σ_s p[s] transposed back - F·ΣG)·scale, product rounded first."""
    from addercore_ext import _adder
    rng = np.random.default_rng(cout * k)
    og = cout // groups
    partial = rng.standard_normal((3, cout, k)).astype(dtype)
    weight = rng.standard_normal((cout, k)).astype(dtype)
    grad_sum = rng.standard_normal(cout).astype(dtype)
    summed = (partial[0] + partial[1] + partial[2]).reshape(groups, k, og).transpose(0, 2, 1)
    for scale in (1.0, 2.0):
        want = summed.reshape(cout, k) - weight * grad_sum[:, None]
        want *= dtype(scale)
        for threads in (1, 2):
            out = np.full((cout, k), np.nan, dtype)
            _adder.reduce_slots(partial.copy(), out, groups, True, threads, weight, grad_sum,
                                scale)
            np.testing.assert_array_equal(out, want)
    out = np.empty((cout, k), dtype)
    with pytest.raises(ValueError, match="go together"):
        _adder.reduce_slots(partial.copy(), out, groups, True, 1, weight, None)
    with pytest.raises(ValueError, match="go together"):
        _adder.reduce_slots(partial.copy(), out, groups, False, 1, weight, grad_sum)
    with pytest.raises(ValueError, match="weight must be"):
        _adder.reduce_slots(partial.copy(), out, groups, True, 1, weight[:, :-1].copy(),
                            grad_sum)
