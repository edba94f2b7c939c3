"""A/B two builds of the compiled kernels (``addercore_ext._adder``) in ONE process.

The 2-core VM's speed drifts by up to 2x within a minute, so timing two builds in separate
processes cannot resolve a 10% difference.  Here the other build's module (built in a git
worktree: ``git worktree add ../old <commit> && cd ../old && python setup.py build_ext
--inplace``) is loaded beside this checkout's, ``addercore.ops.fast._adder`` is swapped
between the two, and calls alternate A B B A; the figure is the median over rounds of
time(other) / time(this).  Both builds must take the same driver arguments (the Python layer
is this checkout's).

    python benchmarks/ab_builds.py ../old layer 8 256 28 32 --cout 256 --kernel 3 --padding 1
    python benchmarks/ab_builds.py ../old step --batch 128 --threads 2
    python benchmarks/ab_builds.py ../old0f7 forward-raw 8 256 28 32 --rows-driver

``forward-raw`` calls the two modules' ``adder_forward`` driver directly on the same aligned
workspaces (conv and ℓ1 modes); ``--rows-driver``: the other build is from before commit
2a0e7cb, whose driver took output rows per tile instead of positions.
"""
import argparse
import glob
import importlib.machinery
import importlib.util
import os
import time

import numpy as np

import addercore
import addercore.ops.fast as fast
from addercore.threads import num_threads


def load_other(worktree):
    """The ``_adder`` extension module of another build, loaded under its own name."""
    paths = glob.glob(os.path.join(worktree, "addercore_ext", "_adder.*.so"))
    if not paths:
        raise SystemExit(f"no built addercore_ext/_adder.*.so under {worktree}")
    loader = importlib.machinery.ExtensionFileLoader("addercore_ext._adder", paths[0])
    spec = importlib.util.spec_from_file_location("addercore_ext._adder", paths[0],
                                                  loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def ab(fn, this, other, rounds, label):
    ratios = []
    for _ in range(rounds):
        t = {0: 0.0, 1: 0.0}
        for which in (0, 1, 1, 0):
            fast._adder = this if which == 0 else other
            fn()  # warm-up with this build's module (workspaces, caches)
            t0 = time.perf_counter()
            fn()
            t[which] += time.perf_counter() - t0
        ratios.append(t[1] / t[0])
    fast._adder = this
    print(f"{label:10s} time other/this: median {np.median(ratios):.3f}  "
          f"rounds {np.round(ratios, 2)}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worktree", help="checkout holding the other build")
    sub = parser.add_subparsers(dest="what", required=True)
    layer = sub.add_parser("layer", help="one layer: adder/conv forward/backward, float32")
    layer.add_argument("shape", type=int, nargs=4, metavar=("N", "C", "H", "W"))
    layer.add_argument("--cout", type=int, default=None)
    layer.add_argument("--kernel", type=int, default=3)
    layer.add_argument("--stride", type=int, default=1)
    layer.add_argument("--padding", type=int, default=1)
    raw = sub.add_parser("forward-raw", help="the forward driver itself, 3x3 s1 p1, float32")
    raw.add_argument("shape", type=int, nargs=4, metavar=("N", "C", "H", "W"))
    raw.add_argument("--rows-driver", action="store_true",
                     help="the other build's adder_forward takes rows per tile (before 2a0e7cb)")
    step = sub.add_parser("step", help="a whole ResNet-20 AdderNet training step")
    step.add_argument("--batch", type=int, default=128)
    for p in (layer, raw, step):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    this, other = fast._adder, load_other(args.worktree)
    rng = np.random.default_rng(0)
    if args.what == "layer":
        n, c, h, w = args.shape
        s, p = args.stride, args.padding
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((args.cout or c, c, args.kernel, args.kernel)).astype(np.float32)
        g = rng.standard_normal(fast.conv2d_forward(x, wt, s, p).shape).astype(np.float32)
        fns = {"conv fwd": lambda: fast.conv2d_forward(x, wt, s, p),
               "adder fwd": lambda: fast.adder2d_forward(x, wt, s, p, "l1"),
               "conv bwd": lambda: fast.conv2d_backward(x, wt, g, s, p),
               "adder bwd": lambda: fast.adder2d_backward(x, wt, g, s, p)}
        with num_threads(args.threads):
            for label, fn in fns.items():
                ab(fn, this, other, args.rounds, label)
        return
    if args.what == "forward-raw":
        n, c, h, w = args.shape
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = rng.standard_normal((c, c * 9)).astype(np.float32)
        y = np.empty((n, c, h, w), np.float32)
        tile = fast._tile_positions(c * 9, 4, "forward")
        cap = this.tile_capacity(h * w, tile, 4)
        col = fast._workspace("col", np.dtype(np.float32), (2, c * 9 * max(cap, w)),
                              align_rows=True)
        xp = fast._workspace("padded_image", np.dtype(np.float32),
                             (2, 3 * c * (h + 2) * (w + 2) + 64), align_rows=True)
        rows = max(1, tile // w)
        for mode, label in ((this.FORWARD_CONV, "conv fwd"), (this.FORWARD_L1, "adder fwd")):
            def call(mode=mode):
                if fast._adder is other and args.rows_driver:
                    other.adder_forward(x, wt, y, 3, 3, 1, 1, 1, 1, mode, rows, col, xp,
                                        args.threads)
                else:
                    fast._adder.adder_forward(x, wt, y, 3, 3, 1, 1, 1, 1, mode, tile, col, xp,
                                              args.threads)
            ab(call, this, other, args.rounds, label)
        return
    from bench_resnet20 import step_functions  # benchmarks/ is this script's folder
    addercore.set_num_threads(args.threads)
    train_step, _ = step_functions("adder", args.batch)
    ab(train_step, this, other, args.rounds, "step")


if __name__ == "__main__":
    main()
