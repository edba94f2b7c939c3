"""Integer AdderNet speed (issue: integer inference): per ResNet-20 layer and whole network.

Per adder layer shape of CIFAR ResNet-20 (batch ``--batch``), one run each, 1 and 2 threads:
  * ``int8``   the 8-bit SAD kernel (addercore.quant.adder2d_int_nhwc, padding included),
  * ``int16``  the 16-bit kernel on the same shape,
  * ``f32``    addercore's float32 ℓ1 adder forward (addercore.ops.adder2d_forward),
  * ``sgemm``  numpy float32 GEMM W (Cout×K) @ cols (K × N·Ho·Wo) on the already packed patches
               (the multiply-accumulate limit; packing not timed),
with the ratios to sgemm. Then whole ResNet-20 inference (images/s, batch ``--net-batch``):
the 8-bit integer model (fixed-point glue) vs addercore's float32 AdderNet vs PyTorch's
float32 CNN (the same ResNet-20 with nn.Conv2d, ``bench_torch_resnet20.build``) when torch is
importable (skipped otherwise; addercore itself never imports torch), in interleaved rounds.

    PYTHONPATH=. python benchmarks/bench_int.py [--batch 64] [--net-batch 256]

Timings are the minimum of ``--repeat`` runs, on whatever the machine is doing; the SIMD line
says which integer kernels ran (AVX-512BW wherever the build's -march has it, else AVX2).
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


CLOCK = time.perf_counter  # --cpu-clock: time.thread_time (1 thread only)


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = CLOCK()
        fn()
        best = min(best, CLOCK() - t)
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


def _torch_cnn(threads):
    """PyTorch's float32 ResNet-20 CNN (bench_torch_resnet20.build, eval mode) and its torch
    module, or (None, None) when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None, None
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_torch_resnet20 import build

    torch.set_num_threads(threads)
    net = build(torch, "cnn").eval()
    return torch, net


def network(batch, repeat, threads):
    """Whole ResNet-20 inference, images/s: float32 AdderNet, 8-bit integer model, PyTorch's
    float32 CNN (when installed); ``repeat`` interleaved rounds, the best of each."""
    from addercore.models import resnet20
    from addercore.quant import quantize

    rng = np.random.default_rng(0)
    model = resnet20(10, kind="adder", rng=rng)
    model.eval()
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    q = quantize(model, x[:64], bits=8)
    torch, net = _torch_cnn(threads)
    best = {"f32": float("inf"), "int8": float("inf"), "torch": float("inf")}
    with num_threads(threads), addercore.no_grad():
        runs = {"f32": lambda: model(addercore.Tensor(x)), "int8": lambda: q(x)}
        if torch is not None:
            xt = torch.from_numpy(x)

            def torch_run():
                with torch.inference_mode():
                    net(xt)
            runs["torch"] = torch_run
        for fn in runs.values():  # warm-up (first-call allocations, thread pools)
            fn()
        for _ in range(repeat):
            for name, fn in runs.items():
                best[name] = min(best[name], _time(fn, 1))
    tf, ti = best["f32"], best["int8"]
    line = (f"ResNet-20 batch {batch}, {threads} thread(s): float32 AdderNet {batch / tf:7.1f} "
            f"img/s, int8 {batch / ti:7.1f} img/s ({tf / ti:4.2f}x)")
    if torch is None:
        line += "; PyTorch not installed (CNN comparison skipped)"
    else:
        tt = best["torch"]
        line += (f"; PyTorch {torch.__version__} float32 CNN {batch / tt:7.1f} img/s "
                 f"(int8 {tt / ti:4.2f}x)")
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--net-batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skip-network", action="store_true")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="time with the calling thread's CPU clock (robust to other processes "
                         "on a shared machine; only meaningful with --threads 1, where every "
                         "kernel, numpy's sgemm and torch run on the calling thread)")
    args = ap.parse_args()
    if args.cpu_clock:
        if args.threads != [1]:
            ap.error("--cpu-clock needs --threads 1")
        global CLOCK
        CLOCK = time.thread_time
    print(f"clock: {'thread CPU time' if args.cpu_clock else 'wall'}; integer SIMD "
          f"{kernels.simd_name()}; numpy {np.__version__}", flush=True)
    for t in args.threads:
        layers(args.batch, args.repeat, t)
    if not args.skip_network:
        for t in args.threads:
            network(args.net_batch, args.repeat, t)


if __name__ == "__main__":
    main()
