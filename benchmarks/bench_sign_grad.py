"""Sign filter gradient against the full one (issue 16): 1-thread time of
``ops.adder2d_backward(..., filter_grad="full")`` and ``filter_grad="sign"`` (both with the
hardtanh input gradient and col2im) for the three 3×3 s1 p1 ResNet-20 layer shapes, batch 64,
float32 and float64.  Each figure is the best of ``--repeat`` calls (full and sign
interleaved) of thread CPU time (``time.thread_time``: robust on a loaded machine); the last
column is sign / full.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_sign_grad.py --repeat 5
"""
import argparse
import time

import numpy as np

from addercore import ops
from addercore.ops import fast
from addercore.threads import num_threads

SHAPES = [(16, 32), (32, 16), (64, 8)]  # (C, H): x (N, C, H, H), w (C, C, 3, 3)


def best_cpu_times(fns, repeat):
    """Best thread CPU time of each function, calls interleaved (fair under varying load)."""
    for fn in fns.values():
        fn()  # warm-up: allocates the cached workspaces
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"# kernels: {fast.simd()}; batch {args.batch}; 1 thread; best of {args.repeat} "
          f"(thread CPU time)")
    print(f"{'dtype':8} {'C,H':>6} {'full ms':>8} {'sign ms':>8} {'sign/full':>9}")
    rng = np.random.default_rng(0)
    with num_threads(1):
        for dtype in (np.float32, np.float64):
            for c, h in SHAPES:
                x = rng.standard_normal((args.batch, c, h, h)).astype(dtype)
                w = rng.standard_normal((c, c, 3, 3)).astype(dtype)
                g = rng.standard_normal((args.batch, c, h, h)).astype(dtype)
                t = best_cpu_times({fg: lambda fg=fg: ops.adder2d_backward(
                    x, w, g, 1, 1, filter_grad=fg) for fg in ("full", "sign")}, args.repeat)
                print(f"{np.dtype(dtype).name:8} {f'{c},{h}':>6} {t['full'] * 1e3:8.1f} "
                      f"{t['sign'] * 1e3:8.1f} {t['sign'] / t['full']:9.2f}")


if __name__ == "__main__":
    main()
