"""Integer AdderNet speed (issue: integer inference): per ResNet-20 layer and whole network.

Per adder layer shape of CIFAR ResNet-20 (batch ``--batch``), one run each, 1 and 2 threads:
  * ``int8``   the 8-bit SAD kernel (addercore.quant.adder2d_int_nhwc, padding included),
  * ``int16``  the 16-bit kernel on the same shape,
  * ``f32``    addercore's float32 ℓ1 adder forward (addercore.ops.adder2d_forward),
  * ``sgemm``  numpy float32 GEMM W (Cout×K) @ cols (K × N·Ho·Wo) on the already packed patches
               (the multiply-accumulate limit; packing not timed),
with the ratios to sgemm. Then whole ResNet-20 inference (images/s, batch ``--net-batch``):
the 8-bit integer model (fixed-point glue) vs addercore's float32 AdderNet; PyTorch's float32
CNN only if torch is importable (skipped otherwise).

    PYTHONPATH=. python benchmarks/bench_int.py [--batch 64] [--net-batch 256]

Timings are a single run (the minimum of ``--repeat``), on whatever the machine is doing.
"""
import argparse
import time

import numpy as np

import addercore
from addercore import ops
from addercore.ops import reference
from addercore.quant import kernels
from addercore.threads import num_threads

LAYERS = [  # name, Cin, Cout, H, k, stride, pad
    ("16->16 3x3 @32", 16, 16, 32, 3, 1, 1),
    ("16->32 3x3 s2", 16, 32, 32, 3, 2, 1),
    ("32->32 3x3 @16", 32, 32, 16, 3, 1, 1),
    ("32->64 3x3 s2", 32, 64, 16, 3, 2, 1),
    ("64->64 3x3 @8", 64, 64, 8, 3, 1, 1),
    ("16->32 1x1 s2", 16, 32, 32, 1, 2, 0),
    ("32->64 1x1 s2", 32, 64, 16, 1, 2, 0),
]


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def layers(batch, repeat, threads):
    rng = np.random.default_rng(0)
    print(f"\nper layer, batch {batch}, {threads} thread(s), ms (ratio to sgemm); SIMD "
          f"{kernels.simd_name()}")
    print(f"{'layer':<16} {'int8':>14} {'int16':>14} {'f32 adder':>14} {'sgemm':>8}")
    for name, cin, cout, h, k, s, p in LAYERS:
        x8 = rng.integers(0, 256, (batch, h, h, cin)).astype(np.uint8)
        w8 = rng.integers(0, 256, (cout, k, k, cin)).astype(np.uint8)
        x16, w16 = x8.astype(np.uint16) * 257, w8.astype(np.uint16) * 257
        xf = rng.standard_normal((batch, cin, h, h)).astype(np.float32)
        wf = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        cols = reference.im2col(xf, (k, k), (s, s), (p, p))  # (N, K, P)
        cols = np.ascontiguousarray(cols.transpose(1, 0, 2).reshape(cols.shape[1], -1))
        wm = wf.reshape(cout, -1)
        with num_threads(threads):
            t8 = _time(lambda: kernels.adder2d_int_nhwc(x8, w8, s, p), repeat)
            t16 = _time(lambda: kernels.adder2d_int_nhwc(x16, w16, s, p), repeat)
            tf = _time(lambda: ops.adder2d_forward(xf, wf, s, p), repeat)
            tg = _time(lambda: wm @ cols, repeat)
        print(f"{name:<16} {t8 * 1e3:7.1f} ({t8 / tg:4.2f}) {t16 * 1e3:7.1f} ({t16 / tg:4.2f}) "
              f"{tf * 1e3:7.1f} ({tf / tg:4.2f}) {tg * 1e3:8.1f}")


def network(batch, repeat, threads):
    from addercore.models import resnet20
    from addercore.quant import quantize

    rng = np.random.default_rng(0)
    model = resnet20(10, kind="adder", rng=rng)
    model.eval()
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    q = quantize(model, x[:64], bits=8)
    with num_threads(threads), addercore.no_grad():
        tf = _time(lambda: model(addercore.Tensor(x)), repeat)
        ti = _time(lambda: q(x), repeat)
    line = (f"ResNet-20 batch {batch}, {threads} thread(s): float32 AdderNet {batch / tf:7.1f} "
            f"img/s, int8 {batch / ti:7.1f} img/s ({tf / ti:4.2f}x)")
    try:
        import torch  # noqa: F401
    except ImportError:
        line += "; PyTorch not installed (CNN comparison skipped)"
    print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--net-batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skip-network", action="store_true")
    args = ap.parse_args()
    for t in args.threads:
        layers(args.batch, args.repeat, t)
    if not args.skip_network:
        for t in args.threads:
            network(args.net_batch, args.repeat, t)


if __name__ == "__main__":
    main()
