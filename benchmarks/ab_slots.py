"""A/B of the backward's slot rule in ONE process (issue 14 §1): ``MIN_SLOT_POSITIONS`` = 1
and ``TRANSPOSE_PARALLEL_BYTES`` = 0 (the rule before: min(N, 16) slots, every transpose on
all threads) against this checkout's values.  G-taps/s, best of each cell, rounds
alternating old, new, new, old.

    PYTHONPATH=. python benchmarks/ab_slots.py --threads 1 2
"""
import argparse
import time

import numpy as np

import addercore
import addercore.ops.fast as fast

CASES = [  # label, x shape, Cout, kernel (padding k // 2, stride 1)
    ("W=1 (8,64,32,1)", (8, 64, 32, 1), 64, 3),
    ("W=2 (8,64,32,2)", (8, 64, 32, 2), 64, 3),
    ("W=33 (8,64,32,33)", (8, 64, 32, 33), 64, 3),
    ("r18 512->512 3x3 @7", (8, 512, 7, 7), 512, 3),
    ("r50 2048->512 1x1 @7", (8, 2048, 7, 7), 512, 1),
    ("cifar 64x8x8 b256", (256, 64, 8, 8), 64, 3),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    new = (fast.MIN_SLOT_POSITIONS, fast.TRANSPOSE_PARALLEL_BYTES)
    rng = np.random.default_rng(0)
    print(f"{'layer, float32 backward':24} thr | {'conv old':>8} {'new':>6} {'x':>5} | "
          f"{'adder old':>9} {'new':>6} {'x':>5}")
    for label, shape, cout, k in CASES:
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((cout, shape[1], k, k)).astype(np.float32)
        g = rng.standard_normal((shape[0], cout, shape[2], shape[3])).astype(np.float32)
        p = (k // 2, k // 2)
        taps = x.shape[0] * cout * shape[2] * shape[3] * shape[1] * k * k
        calls = max(3, int(3e8 // taps))
        fns = {"conv": lambda: fast.conv2d_backward(x, w, g, (1, 1), p),
               "adder": lambda: fast.adder2d_backward(x, w, g, (1, 1), p, "l1", "full",
                                                      "hardtanh")}
        for threads in args.threads:
            addercore.set_num_threads(threads)
            best = {}
            for _ in range(args.rounds):
                for which in ("old", "new", "new", "old"):
                    fast.MIN_SLOT_POSITIONS, fast.TRANSPOSE_PARALLEL_BYTES = (
                        (1, 0) if which == "old" else new)
                    for name, fn in fns.items():
                        fn()
                        for _ in range(calls):
                            t0 = time.perf_counter()
                            fn()
                            dt = time.perf_counter() - t0
                            best[name, which] = min(best.get((name, which), dt), dt)
            fast.MIN_SLOT_POSITIONS, fast.TRANSPOSE_PARALLEL_BYTES = new
            cells = []
            for name in fns:
                old_r, new_r = taps / best[name, "old"] / 1e9, taps / best[name, "new"] / 1e9
                cells.append(f"{old_r:8.1f} {new_r:6.1f} {new_r / old_r:5.2f}")
            print(f"{label:24} {threads:3d} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
