"""Cache-line alignment of the kernels' workspaces, A/B in one process (commit 19d04f2).

The cached workspaces (addercore.ops.fast._workspace) start on a 64-byte line.  Here they are
replaced, call by call, by buffers starting 16 bytes past a line (numpy's own guarantee),
and the two alternate A B B A; the figure is the median over rounds of
time(misaligned) / time(aligned).

    python benchmarks/ab_alignment.py 8 256 28 32 --threads 1
"""
import argparse
import time

import numpy as np

import addercore.ops.fast as fast
from addercore.threads import num_threads

_NAMES = ("col", "padded_image", "grad_output_t")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", type=int, nargs=4, metavar=("N", "C", "H", "W"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, c, h, w = args.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    g = rng.standard_normal((n, c, h, w)).astype(np.float32)
    size = 8 * (n * c * h * w + c * c * 9 * 64) + 4096  # bytes: more than any workspace here

    def workspaces(offset):
        fast.clear_workspaces()
        for name in _NAMES:
            raw = np.empty(size + 128, np.uint8)
            start = -raw.ctypes.data % 64 + offset
            fast._local.__dict__[(name, "f")] = raw[start:start + size].view(np.float32)

    fns = {"conv fwd": lambda: fast.conv2d_forward(x, wt, 1, 1),
           "adder fwd": lambda: fast.adder2d_forward(x, wt, 1, 1, "l1"),
           "conv bwd": lambda: fast.conv2d_backward(x, wt, g, 1, 1),
           "adder bwd": lambda: fast.adder2d_backward(x, wt, g, 1, 1)}
    with num_threads(args.threads):
        for label, fn in fns.items():
            ratios = []
            for _ in range(args.rounds):
                t = {}
                for offset in (16, 0, 16, 0):
                    workspaces(offset)
                    fn()
                    t0 = time.perf_counter()
                    fn()
                    t[offset] = t.get(offset, 0.0) + time.perf_counter() - t0
                ratios.append(t[16] / t[0])
            print(f"{label:10s} time misaligned/aligned: median {np.median(ratios):.3f}  "
                  f"rounds {np.round(ratios, 2)}", flush=True)
    fast.clear_workspaces()


if __name__ == "__main__":
    main()
