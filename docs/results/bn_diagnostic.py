#!/usr/bin/env python
"""Compare a checkpoint's BatchNorm running statistics with the statistics of real test batches.

    python docs/results/bn_diagnostic.py CHECKPOINT [--kind adder|cnn] [--data-dir DIR] [-n 200]

Prints, per BatchNorm layer, the median batch variance vs running variance and the median
|batch mean - running mean| / batch std, then the accuracy on n test images in eval mode
(running statistics) and with batch statistics. Early in AdderNet training (large learning rate,
weights moving fast) the running statistics of the deep layers lag the batch statistics by
orders of magnitude, so eval-mode accuracy can sit near chance while batch-statistics accuracy
tracks the training accuracy; the gap closes as the learning rate decays.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from addercore import nn, no_grad  # noqa: E402
from addercore.data import load_cifar10, normalize  # noqa: E402
from addercore.models import resnet20  # noqa: E402
from addercore.train import load_weights  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--kind", choices=("adder", "cnn"), default="adder")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--recalibrate", type=int, default=0, metavar="M",
                   help="also re-estimate the running statistics as the plain average over M "
                        "training images (batches of 100, weights unchanged) and re-evaluate")
    a = p.parse_args()
    m = resnet20(kind=a.kind)
    load_weights(m, a.checkpoint)
    x, y = load_cifar10(a.data_dir, train=False, download=False)
    xb, yb = normalize(x[:a.n]), y[:a.n]
    stats = {}
    for name, mod in m.named_modules():
        if isinstance(mod, nn.BatchNorm2d):
            def hook(t, name=name, mod=mod, orig=mod.forward):
                d = t.data
                stats[name] = (d.mean((0, 2, 3)), d.var((0, 2, 3)), mod.running_mean.copy(),
                               mod.running_var.copy())
                return orig(t)
            object.__setattr__(mod, "forward", hook)
    with no_grad():
        m.eval()
        eval_pred = m(xb).data.argmax(1)
        report = dict(stats)
        m.train()  # batch statistics (running buffers get updated, but nothing is saved)
        batch_pred = m(xb).data.argmax(1)
    print(f"{'layer':24s} {'batch var':>10s} {'running var':>12s} {'|Δmean|/std':>12s}")
    for k, (bm, bv, rm, rv) in report.items():
        print(f"{k:24s} {np.median(bv):10.3g} {np.median(rv):12.3g} "
              f"{np.median(np.abs(bm - rm) / np.sqrt(bv + 1e-5)):12.3g}")
    print(f"accuracy on {a.n} test images: eval mode {100 * (eval_pred == yb).mean():.1f}%, "
          f"batch statistics {100 * (batch_pred == yb).mean():.1f}%")
    if a.recalibrate:
        load_weights(m, a.checkpoint)
        bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
        for mod in bns:
            mod.running_mean[...] = 0
            mod.running_var[...] = 1
        xtr, _ = load_cifar10(a.data_dir, train=True, download=False)
        m.train()
        with no_grad():
            for i, start in enumerate(range(0, a.recalibrate, 100)):
                for mod in bns:
                    mod.momentum = 1.0 / (i + 1)  # cumulative average
                m(normalize(xtr[start:start + 100]))
            m.eval()
            pred = m(xb).data.argmax(1)
        print(f"after re-estimating the running statistics on {a.recalibrate} training images: "
              f"eval mode {100 * (pred == yb).mean():.1f}%")


if __name__ == "__main__":
    main()
