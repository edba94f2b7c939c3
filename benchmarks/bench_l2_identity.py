#!/usr/bin/env python
"""Supplement Eq. 15 on real activations, and its cost: the ℓ2 adder forward through
``2·(X∗F) − ΣXp² − ΣF²`` (:func:`addercore.ops.l2_identity.adder2d_l2_forward`,
``method="conv"``) against the direct ℓ2 kernel (``method="direct"``).

    python benchmarks/bench_l2_identity.py --checkpoint ../shared/data/pretrained/ResNet20-AdderNet.pth \\
        --data-dir ../shared/data/cifar-10-batches-py [-n 32] [--repeat 3] [--threads 1]

1. Accuracy. The authors' ResNet-20 AdderNet checkpoint (ℓ1-trained; its filters serve as real
   filters here) runs in eval mode on the first ``n`` CIFAR-10 test images; the inputs of
   four adder layers (3×3 stride 1 at 32×32, 3×3 stride 2 with padding, 1×1 stride 2 shortcut,
   3×3 at 8×8) are captured. For each, in float64 and float32, prints the max abs difference
   between the two methods, the largest |y| (for scale), the difference as a fraction of the
   rounding bound :func:`~addercore.ops.l2_identity.l2_rounding_bound`, and (float32) each
   method's max abs error against the float64 direct result.
2. Speed. Best of ``--repeat`` interleaved timings of both methods on those inputs (float32,
   ``--threads`` kernel threads). The convolution of the "conv" method is
   :func:`addercore.ops.conv2d_forward` (the compiled tiled kernel under the Cython backend).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import addercore  # noqa: E402
from addercore import io as aio  # noqa: E402
from addercore import nn, no_grad  # noqa: E402
from addercore.data.cifar import load_cifar10  # noqa: E402
from addercore.data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize  # noqa: E402
from addercore.models import resnet20  # noqa: E402
from addercore.ops.l2_identity import adder2d_l2_forward, l2_rounding_bound  # noqa: E402
from addercore.threads import num_threads  # noqa: E402

LAYERS = ("layer1.0.conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer3.2.conv2")


def capture_inputs(checkpoint, data_dir, n, layers=LAYERS):
    """Run the checkpoint (float64, eval mode) on the first ``n`` test images; return
    ``{name: (x float64 (N, Cin, H, W), filters float64, stride, padding)}``."""
    state = aio.strip_prefix(aio.load_torch_checkpoint(checkpoint), "module.")
    model = resnet20(10, kind="adder", dtype=np.float64)
    model.load_state_dict(state, strict=True)
    model.eval()
    images, _ = load_cifar10(data_dir, train=False, download=False, progress=False)
    x = normalize(images[:n], CIFAR10_MEAN, CIFAR10_STD, dtype=np.float64)
    captured = {}
    modules = dict(model.named_modules())
    for name in layers:
        mod = modules[name]
        if not isinstance(mod, nn.Adder2d):
            raise ValueError(f"{name} is not an adder layer")

        def hook(t, name=name, mod=mod, orig=mod.forward):
            captured[name] = (np.array(t.data), np.array(mod.adder.data), mod.stride, mod.padding)
            return orig(t)
        object.__setattr__(mod, "forward", hook)
    with no_grad():
        model(x)
    return captured


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="../shared/data/pretrained/ResNet20-AdderNet.pth")
    p.add_argument("--data-dir", default="../shared/data/cifar-10-batches-py")
    p.add_argument("-n", type=int, default=32, help="test images (default 32)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.n < 1 or a.repeat < 1 or a.threads < 1:
        p.error("-n, --repeat and --threads must be >= 1")
    print(f"backend {addercore.backend()}, {a.n} CIFAR-10 test images, checkpoint {a.checkpoint}")
    cap = capture_inputs(a.checkpoint, a.data_dir, a.n)

    print("\n1. Eq. 15 ('conv') vs the direct ℓ2 kernel ('direct') on real activations")
    print(f"{'layer':24s} {'x shape':>18s} {'F shape':>16s} {'s':>3s} {'p':>3s} {'dtype':>8s} "
          f"{'max|conv-direct|':>17s} {'max|y|':>10s} {'/bound':>8s} "
          f"{'conv err':>10s} {'direct err':>10s}")
    with num_threads(a.threads):
        for name, (x64, w64, s, pad) in cap.items():
            exact = adder2d_l2_forward(x64, w64, s, pad, method="direct")
            for dt in (np.float64, np.float32):
                x, w = x64.astype(dt), w64.astype(dt)
                yc = adder2d_l2_forward(x, w, s, pad, method="conv")
                yd = adder2d_l2_forward(x, w, s, pad, method="direct")
                diff = np.abs(yc.astype(np.float64) - yd).max()
                ratio = (np.abs(yc.astype(np.float64) - yd) / l2_rounding_bound(x, w, s, pad)).max()
                errs = ("", "")
                if dt == np.float32:  # against the float64 direct sum
                    errs = (f"{np.abs(yc - exact).max():.3g}", f"{np.abs(yd - exact).max():.3g}")
                print(f"{name:24s} {str(x.shape):>18s} {str(w.shape):>16s} {s[0]:3d} {pad[0]:3d} "
                      f"{np.dtype(dt).name:>8s} {diff:17.3g} {np.abs(yd).max():10.4g} "
                      f"{ratio:8.2g} {errs[0]:>10s} {errs[1]:>10s}")

        print(f"\n2. float32 forward time, best of {a.repeat}, {a.threads} thread(s), "
              f"batch {a.n}")
        print(f"{'layer':24s} {'direct ms':>10s} {'conv ms':>10s} {'direct/conv':>12s}")
        for name, (x64, w64, s, pad) in cap.items():
            x, w = x64.astype(np.float32), w64.astype(np.float32)
            td = best_of(lambda: adder2d_l2_forward(x, w, s, pad, method="direct"), a.repeat)
            tc = best_of(lambda: adder2d_l2_forward(x, w, s, pad, method="conv"), a.repeat)
            print(f"{name:24s} {1e3 * td:10.2f} {1e3 * tc:10.2f} {td / tc:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
