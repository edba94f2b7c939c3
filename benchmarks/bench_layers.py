"""Per-layer benchmark of the adder kernels against the GEMM limit (issue 3).

For every adder layer shape of CIFAR ResNet-20 at each batch size and thread count, times in
the same run:
  * ``fwd``   addercore ℓ1 adder forward (patch packing included),
  * ``bwd``   addercore ℓ1 adder backward (full filter grad + hardtanh input grad, col2im),
  * ``sgemm`` numpy float32 GEMM  W (Cout×K) @ cols (K × N·Ho·Wo) on the already packed
              im2col matrix (the multiply-accumulate limit; packing NOT included),
  * ``conv``  a numpy convolution: addercore's numpy reference im2col + GEMM (packing included),
  * optionally PyTorch (``unfold`` + broadcast as the AdderNet authors do, and ``conv2d``).
Prints ratios to sgemm and G-taps/s (taps = N·Cout·Ho·Wo·K).  Each figure is the minimum over
``--repeat`` interleaved repetitions.  Before the 2-thread rows, a 1- vs 2-thread sgemm check
tells whether the second core is really available.

Run (unset the OpenBLAS variables of this machine, they slow numpy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_layers.py

Width independence (issue 14 §1): ``--widths 1-64`` sweeps the output width of one 3×3 s1 p1
layer (``--sweep N C H``), ``--shapes imagenet`` times the ResNet-18/50 ImageNet layer shapes;
both print G-taps/s of the ℓ1 adder and the convolution, forward and backward, float32 and
float64, and each rate's ratio to the best rate of its column in the same run (the target is
<= 1.3).  Example (short; ~1 min on a loaded machine):
    PYTHONPATH=. python benchmarks/bench_layers.py --widths 1-64 --threads 1 --repeat 2 --cpu-clock
"""
import argparse
import os
import platform
import subprocess
import time

import numpy as np

import addercore.ops.fast as fast
from addercore.ops import reference
from addercore.threads import num_threads

LAYERS = [
    # name, Cin, Cout, H, k, stride, pad
    ("16->16 3x3 @32", 16, 16, 32, 3, 1, 1),
    ("16->32 3x3 s2", 16, 32, 32, 3, 2, 1),
    ("32->32 3x3 @16", 32, 32, 16, 3, 1, 1),
    ("32->64 3x3 s2", 32, 64, 16, 3, 2, 1),
    ("64->64 3x3 @8", 64, 64, 8, 3, 1, 1),
    ("16->32 1x1 s2", 16, 32, 32, 1, 2, 0),
    ("32->64 1x1 s2", 32, 64, 16, 1, 2, 0),
]


#: Longer than OpenBLAS's busy-wait after a call (2^28 cycles ≈ 0.09 s at 3 GHz).
BLAS_SPIN_S = 0.2


def best_time(fn, repeat):
    fn()  # warm-up (allocates the cached workspaces)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def try_torch():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None

    def unfold_adder(x, w, stride, pad):
        n, c, h, _ = x.shape
        cout, _, k, _ = w.shape
        ho = (h + 2 * pad - k) // stride + 1
        cols = F.unfold(x, k, padding=pad, stride=stride)  # (N, K, P)
        out = -(cols.unsqueeze(1) - w.view(1, cout, -1, 1)).abs().sum(2)
        return out.view(n, cout, ho, ho)

    return torch, F, unfold_adder


def sgemm_scaling(repeat, threads=2):
    """Speed-up of a 1024³ sgemm from 1 to ``threads`` threads (≈ threads on a free machine)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    b = a.copy()
    times = {}
    for t in (1, threads):
        with num_threads(t):
            times[t] = best_time(lambda: a @ b, repeat)
    return times[1] / times[threads]


def run(batches, thread_counts, repeat, layers, with_torch, cpu_clock=False):
    torch_bits = try_torch() if with_torch else None
    rng = np.random.default_rng(0)
    header = (
        f"{'layer':16} {'N':>4} {'thr':>3} | {'sgemm ms':>8} {'fwd ms':>8} {'bwd ms':>8} "
        f"{'conv ms':>8} | {'fwd/gemm':>8} {'bwd/gemm':>8} {'conv/gemm':>9} | "
        f"{'fwd Gtap/s':>10} {'bwd Gtap/s':>10}"
    )
    if torch_bits:
        header += f" | {'torch unfold ms':>15} {'torch conv ms':>13}"
    rows = []
    for threads in thread_counts:
        with num_threads(threads):
            if threads > 1:
                print(f"# sgemm 1->{threads} thread speed-up check (1024^3): "
                      f"{sgemm_scaling(repeat, threads):.2f}x")
            print(header)
            for batch in batches:
                for name, cin, cout, h, k, s, p in layers:
                    if name not in layers_selected(layers):
                        continue
                    x = rng.standard_normal((batch, cin, h, h)).astype(np.float32)
                    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
                    ho = (h + 2 * p - k) // s + 1
                    kk = cin * k * k
                    taps = batch * cout * ho * ho * kk
                    cols = np.ascontiguousarray(
                        fast.im2col(x, (k, k), (s, s), (p, p)).transpose(1, 0, 2)
                    ).reshape(kk, -1)
                    w2 = w.reshape(cout, -1)
                    g = rng.standard_normal((batch, cout, ho, ho)).astype(np.float32)
                    # With several threads every timing starts from parked thread pools: OpenBLAS's
                    # workers busy-wait ~0.1 s after each call, so on a machine with as many
                    # cores as threads a kernel timed right after a GEMM would share its cores
                    # with them (a training step makes no BLAS call; see RESULTS.md)
                    fns = {
                        "fwd": lambda: fast.adder2d_forward(x, w, (s, s), (p, p), "l1"),
                        "bwd": lambda: fast.adder2d_backward(
                            x, w, g, (s, s), (p, p), "l1", "full", "hardtanh"),
                        "sgemm": lambda: w2 @ cols,
                        "conv": lambda: reference.conv2d_forward(x, w, (s, s), (p, p)),
                    }
                    if torch_bits:
                        torch, F, unfold_adder = torch_bits
                        torch.set_num_threads(threads)
                        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
                        if batch * cout * kk * ho * ho * 4 < 4e9:
                            fns["torch_unfold"] = lambda: unfold_adder(xt, wt, s, p)
                        fns["torch_conv"] = lambda: F.conv2d(xt, wt, stride=s, padding=p)
                    best = {key: float("inf") for key in fns}
                    for fn in fns.values():
                        fn()
                    if threads > 1:
                        time.sleep(BLAS_SPIN_S)
                    # 1 thread with --cpu-clock: CPU time of this thread (immune to preemption
                    # by other processes on a shared machine); otherwise wall-clock time
                    clock = time.thread_time if (cpu_clock and threads == 1) else time.perf_counter
                    for _ in range(repeat):  # interleaved: all see the same machine state
                        for key, fn in fns.items():
                            if threads > 1:
                                time.sleep(BLAS_SPIN_S)  # let idle workers park (see above)
                            t0 = clock()
                            fn()
                            best[key] = min(best[key], clock() - t0)
                    gemm = best["sgemm"]
                    row = (
                        f"{name:16} {batch:4d} {threads:3d} | {gemm * 1e3:8.2f} "
                        f"{best['fwd'] * 1e3:8.2f} {best['bwd'] * 1e3:8.2f} "
                        f"{best['conv'] * 1e3:8.2f} | {best['fwd'] / gemm:8.2f} "
                        f"{best['bwd'] / gemm:8.2f} {best['conv'] / gemm:9.2f} | "
                        f"{taps / best['fwd'] / 1e9:10.1f} {taps / best['bwd'] / 1e9:10.1f}"
                    )
                    if torch_bits:
                        tu = best.get("torch_unfold")
                        row += f" | {tu * 1e3 if tu else float('nan'):15.1f} "
                        row += f"{best['torch_conv'] * 1e3:13.2f}"
                    print(row, flush=True)
                    rows.append((name, batch, threads, best))
    return rows


# ResNet-18/50 ImageNet (224×224) layer shapes: name, Cin, Cout, H (input), k, stride, pad
IMAGENET_LAYERS = [
    ("r18 64->64 3x3 @56", 64, 64, 56, 3, 1, 1),
    ("r18 64->128 3x3 s2", 64, 128, 56, 3, 2, 1),
    ("r18 128->128 3x3 @28", 128, 128, 28, 3, 1, 1),
    ("r18 128->256 3x3 s2", 128, 256, 28, 3, 2, 1),
    ("r18 256->256 3x3 @14", 256, 256, 14, 3, 1, 1),
    ("r18 256->512 3x3 s2", 256, 512, 14, 3, 2, 1),
    ("r18 512->512 3x3 @7", 512, 512, 7, 3, 1, 1),
    ("r18 64->128 1x1 s2", 64, 128, 56, 1, 2, 0),
    ("r50 256->64 1x1 @56", 256, 64, 56, 1, 1, 0),
    ("r50 64->256 1x1 @56", 64, 256, 56, 1, 1, 0),
    ("r50 512->128 1x1 @28", 512, 128, 28, 1, 1, 0),
    ("r50 1024->256 1x1 @14", 1024, 256, 14, 1, 1, 0),
    ("r50 2048->512 1x1 @7", 2048, 512, 7, 1, 1, 0),
    ("r50 512->512 3x3 @7", 512, 512, 7, 3, 1, 1),
]

#: Issue 14's report (2 threads, float32, 3x3 s1 p1): the same work in transposed shapes, and
#: 512 channels at width 7 vs 8 (label, N, C, H, W)
ISSUE14_SHAPES = [
    ("8x256 28x32", 8, 256, 28, 32),
    ("8x256 32x28", 8, 256, 32, 28),
    ("8x256 14x16", 8, 256, 14, 16),
    ("8x256 16x14", 8, 256, 16, 14),
    ("8x512 7x7", 8, 512, 7, 7),
    ("8x512 8x8", 8, 512, 8, 8),
]

def same_work_widths(h, w, k):
    """Input shapes (H', W') with about the pixels of (h, w) at other widths: w itself, w + 1,
    2w, and 8 / 16 / 32 when they differ from those (at most 4w, at least the kernel), each
    with H' = round(h·w / W') (at least the kernel).  The issue-14 question for one layer: does
    the same work run slower at its real width than at another?"""
    widths = [w, w + 1, 2 * w] + [v for v in (8, 16, 32) if v not in (w, w + 1, 2 * w)]
    return [(max(k, round(h * w / v)), v) for v in widths if k <= v <= 4 * w]


RATE_COLUMNS = [(op, dt, d) for op in ("adder", "conv") for dt in ("f32", "f64")
                for d in ("fwd", "bwd")]


def _rate_fns(x, w, g, s, p):
    """The 8 timed calls of a width/shape row: (adder, conv) × (fwd, bwd), for x's dtype."""
    st, pd = (s, s), (p, p)
    return {
        ("adder", "fwd"): lambda: fast.adder2d_forward(x, w, st, pd, "l1"),
        ("adder", "bwd"): lambda: fast.adder2d_backward(x, w, g, st, pd, "l1", "full", "hardtanh"),
        ("conv", "fwd"): lambda: fast.conv2d_forward(x, w, st, pd),
        ("conv", "bwd"): lambda: fast.conv2d_backward(x, w, g, st, pd),
    }


def _timed(fn, clock):
    """One measurement: a warm-up call (workspaces, caches), then the better of two calls."""
    fn()
    best = float("inf")
    for _ in range(2):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def rate_table(rows, threads, repeat, cpu_clock):
    """G-taps/s of every (op, dtype, direction) for each row (label, N, Cin, Cout, H, W, k, s, p),
    and each row's speed relative to the best row of its column.

    Two estimates, both from ``repeat`` interleaved rounds:
      * ``G-taps/s``: the best time of each cell over the rounds (absolute figures);
      * ``paired``: every measurement of a row is bracketed by measurements of a reference
        row (the row of median size) of the same column, and the row's speed is divided by
        the mean of the two reference speeds; the median of that over the rounds, relative
        to the best row's, is the ratio reported (the target of issue 14 §1: <= 1.3).
    The paired ratio is what to read on a machine whose speed drifts (the 2-core VM changes
    speed by up to 2x within a minute: benchmarks/RESULTS.md, "Kernel speed against output
    width"): a slow or fast window then scales the row and its reference alike, where the
    best-of-rounds ratio compares cells timed in different windows.
    With 10 rows or more (``--widths``), two robust summaries follow: the worst row against
    the 90th-percentile row of its column (the best of 64 noisy medians is itself an outlier)
    and the median paired ratio."""
    clock = time.thread_time if (cpu_clock and threads == 1) else time.perf_counter
    rng = np.random.default_rng(0)
    cases = []  # (label, taps, {(op, dt, d): fn})
    for label, n, cin, cout, h, w_in, k, s, p in rows:
        ho, wo = (h + 2 * p - k) // s + 1, (w_in + 2 * p - k) // s + 1
        fns = {}
        for dt, dtype in (("f32", np.float32), ("f64", np.float64)):
            x = rng.standard_normal((n, cin, h, w_in)).astype(dtype)
            w = rng.standard_normal((cout, cin, k, k)).astype(dtype)
            g = rng.standard_normal((n, cout, ho, wo)).astype(dtype)
            for (op, d), fn in _rate_fns(x, w, g, s, p).items():
                fns[(op, dt, d)] = fn
        cases.append((label, n * cout * ho * wo * cin * k * k, fns))
    ref_label, ref_taps, ref_fns = sorted(cases, key=lambda case: case[1])[len(cases) // 2]
    best_s = [{c: float("inf") for c in RATE_COLUMNS} for _ in cases]
    paired = [{c: [] for c in RATE_COLUMNS} for _ in cases]  # rate / reference rate, per round
    with num_threads(threads):
        for rnd in range(repeat):
            for c in RATE_COLUMNS:
                t_ref = _timed(ref_fns[c], clock)
                for (label, taps, fns), row_best, row_paired in zip(cases, best_s, paired):
                    t = _timed(fns[c], clock)
                    t_ref_after = _timed(ref_fns[c], clock)
                    row_best[c] = min(row_best[c], t)
                    ref_rate = 0.5 * (ref_taps / t_ref + ref_taps / t_ref_after)
                    row_paired[c].append(taps / t / ref_rate)
                    t_ref = t_ref_after
            print(f"  round {rnd + 1}/{repeat} done", flush=True)
    rates = [(label, {c: taps / b[c] / 1e9 for c in RATE_COLUMNS})
             for (label, taps, _), b in zip(cases, best_s)]
    rel = [{c: float(np.median(r[c])) for c in RATE_COLUMNS} for r in paired]
    best = {c: max(r[c] for _, r in rates) for c in RATE_COLUMNS}
    best_rel = {c: max(r[c] for r in rel) for c in RATE_COLUMNS}
    names = " ".join(f"{op[:3]}{dt[1:]}{d[0]}".rjust(6) for op, dt, d in RATE_COLUMNS)
    print(f"# G-taps/s (best of {repeat} interleaved rounds) | paired ratio: best row / this "
          f"row, medians of speeds relative to the reference row {ref_label!r} timed "
          f"around each measurement (ad=adder l1, con=conv; 32/64 = float32/64; "
          f"f/b = forward/backward)")
    print(f"  {'shape':24} {names} | {names}")
    for (label, r), q in zip(rates, rel):
        print(f"  {label:24} " + " ".join(f"{r[c]:6.2f}" for c in RATE_COLUMNS) + " | "
              + " ".join(f"{best_rel[c] / q[c]:6.2f}" for c in RATE_COLUMNS))
    worst = {c: max(best_rel[c] / q[c] for q in rel) for c in RATE_COLUMNS}
    print(f"  {'worst paired ratio':24} {'':{7 * len(RATE_COLUMNS) - 1}} | "
          + " ".join(f"{worst[c]:6.2f}" for c in RATE_COLUMNS))
    if len(rel) >= 10:
        # With many rows the best row is partly a noise outlier (the maximum of many noisy
        # medians), so also give the worst row against the 90th-percentile row of its column.
        p90 = {c: float(np.percentile([q[c] for q in rel], 90)) for c in RATE_COLUMNS}
        worst90 = {c: max(p90[c] / q[c] for q in rel) for c in RATE_COLUMNS}
        print(f"  {'worst / 90th-pct row':24} {'':{7 * len(RATE_COLUMNS) - 1}} | "
              + " ".join(f"{worst90[c]:6.2f}" for c in RATE_COLUMNS))
        print(f"  {'median paired ratio':24} {'':{7 * len(RATE_COLUMNS) - 1}} | "
              + " ".join(f"{float(np.median([best_rel[c] / q[c] for q in rel])):6.2f}"
                         for c in RATE_COLUMNS))
    worst_best = {c: max(best[c] / r[c] for _, r in rates) for c in RATE_COLUMNS}
    print(f"  {'(best-of-rounds ratio)':24} {'':{7 * len(RATE_COLUMNS) - 1}} | "
          + " ".join(f"{worst_best[c]:6.2f}" for c in RATE_COLUMNS))
    return rates


def parse_widths(text):
    """"1-64", "1-64:3" (step) or "7,8,28" -> list of widths."""
    out = []
    for part in text.split(","):
        rng_part, _, step = part.partition(":")
        lo, _, hi = rng_part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


_SELECTED = None


def layers_selected(layers):
    return _SELECTED if _SELECTED is not None else [layer[0] for layer in layers]


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = [line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")]
        return model[0] if model else platform.processor()
    except OSError:
        return platform.processor()


def main():
    global _SELECTED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5,
                        help="repetitions (with --widths / --shapes imagenet: interleaved "
                             "rounds over all rows; each figure is the best)")
    parser.add_argument("--layer", type=int, nargs="*", help="indices into the layer list")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="time 1-thread rows with the thread's CPU clock (shared machines)")
    parser.add_argument("--shapes", choices=["cifar", "imagenet", "issue14"], default="cifar",
                        help="cifar: the ResNet-20 table (default); imagenet: G-taps/s of the "
                             "ResNet-18/50 ImageNet layers (batch --batch[0]) and ratio to best; "
                             "issue14: the transposed shapes of issue 14's report, with ms per "
                             "call")
    parser.add_argument("--widths", help="output-width sweep, e.g. 1-64 or 1-64:3 or 7,8,28: "
                                         "G-taps/s per width and ratio to the best width")
    parser.add_argument("--only", nargs="+", metavar="TEXT",
                        help="with --shapes imagenet: only the layers whose name contains one "
                             "of these strings (e.g. --only 1024 2048)")
    parser.add_argument("--same-work", action="store_true",
                        help="with --shapes imagenet: per layer, a table of the layer at its "
                             "own shape and at other widths with about the same pixels "
                             "(same_work_widths): the ratio of its own row is its width penalty")
    parser.add_argument("--sweep", type=int, nargs=3, default=[8, 64, 32],
                        metavar=("N", "C", "H"), help="layer of the width sweep: batch, "
                        "channels (in = out), input height (3x3 s1 p1; default 8 64 32, the "
                        "batch of issue 14's report; 1 64 32 makes 1-M-tap calls at width 1, "
                        "where per-call costs show)")
    args = parser.parse_args()
    if args.layer:
        _SELECTED = [LAYERS[i][0] for i in args.layer]
    print(f"# machine: {machine()}; numpy {np.__version__}; kernels: {fast.simd()}; "
          f"load average at start {os.getloadavg()[0]:.1f}; "
          f"1-thread clock: {'thread CPU time' if args.cpu_clock else 'wall'}")
    if args.widths or args.shapes in ("imagenet", "issue14"):
        for threads in args.threads:
            if args.shapes == "issue14":
                print(f"# issue 14's shapes (N, C, H, W) -> C, 3x3 s1 p1, {threads} thread(s)")
                rows = [(label, n, c, c, h, w, 3, 1, 1) for label, n, c, h, w in ISSUE14_SHAPES]
            elif args.widths:
                n, c, h = args.sweep
                print(f"# width sweep: (N, C, H, W) = ({n}, {c}, {h}, W) -> {c}, 3x3 s1 p1, "
                      f"{threads} thread(s)")
                rows = [(f"W={w}", n, c, c, h, w, 3, 1, 1) for w in parse_widths(args.widths)]
            elif args.same_work:
                for name, cin, cout, h, k, s, p in IMAGENET_LAYERS:
                    if args.only and not any(t in name for t in args.only):
                        continue
                    print(f"# {name}: the same layer at other widths, about the same pixels; "
                          f"batch {args.batch[0]}, {threads} thread(s); first row: its own shape")
                    rows = [(f"{hh}x{ww}" + (" (own)" if (hh, ww) == (h, h) else ""),
                             args.batch[0], cin, cout, hh, ww, k, s, p)
                            for hh, ww in same_work_widths(h, h, k)]
                    rate_table(rows, threads, args.repeat, args.cpu_clock)
                continue
            else:
                print(f"# ResNet-18/50 ImageNet layers, batch {args.batch[0]}, {threads} thread(s)")
                rows = [(name, args.batch[0], cin, cout, h, h, k, s, p)
                        for name, cin, cout, h, k, s, p in IMAGENET_LAYERS
                        if not args.only or any(t in name for t in args.only)]
            rates = rate_table(rows, threads, args.repeat, args.cpu_clock)
            if args.shapes == "issue14":
                print("# ms per call (best of the rounds): adder f32 forward / backward, conv f32 "
                      "forward / backward")
                for (label, n, cin, cout, h, w, k, _, _), (_, r) in zip(rows, rates):
                    taps = n * cout * h * w * cin * k * k  # s1 p1: Ho, Wo = H, W
                    print(f"  {label:24} " + " / ".join(
                        f"{taps / r[(op, 'f32', d)] / 1e6:7.1f}" for op in ("adder", "conv")
                        for d in ("fwd", "bwd")))
        print(f"# load average at end {os.getloadavg()[0]:.1f}")
        return
    run(args.batch, args.threads, args.repeat, LAYERS, not args.no_torch, args.cpu_clock)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
