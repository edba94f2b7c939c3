#!/usr/bin/env python
"""Compare a checkpoint's BatchNorm running statistics with the statistics of real test batches.

    python docs/results/bn_diagnostic.py CHECKPOINT [--kind adder|cnn] [--data-dir DIR] [-n 200]
        [--recalibrate M]

Prints, per BatchNorm layer, the median variance of its input over the n test images (as
training sees it: every layer normalising with batch statistics) vs the running variance, and
the median |mean - running mean| / std; then the accuracy on the n test images in eval mode
(running statistics) and with batch statistics. Early in AdderNet training (large learning rate,
weights moving fast) the running statistics of the deep layers lag the batch statistics by
orders of magnitude, so eval-mode accuracy can sit near chance while batch-statistics accuracy
tracks the training accuracy; the gap closes as the learning rate decays. ``--recalibrate M``
re-estimates the statistics on M training images (:func:`addercore.nn.recalibrate_batchnorm`,
"precise BN") and re-evaluates.
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


def _bn_stats(model):
    return {name: (m.running_mean.astype(np.float64), m.running_var.astype(np.float64))
            for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def _batches(x, size=100):
    return [normalize(x[i:i + size]) for i in range(0, len(x), size)]


def _accuracy(model, batches, labels, train_mode=False):
    model.train(train_mode)
    with no_grad():
        pred = np.concatenate([model(b).data.argmax(1) for b in batches])
    model.eval()
    return 100 * float((pred == labels).mean())


def main(argv=None, stream=sys.stdout):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--kind", choices=("adder", "cnn"), default="adder")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-n", type=int, default=200, help="test images (batches of 100)")
    p.add_argument("--recalibrate", type=int, default=0, metavar="M",
                   help="also re-estimate the running statistics on M training images "
                        "(batches of 100, weights unchanged) and re-evaluate")
    a = p.parse_args(argv)
    m = resnet20(kind=a.kind)
    load_weights(m, a.checkpoint)
    m.eval()
    x, y = load_cifar10(a.data_dir, train=False, download=False)
    xb, yb = _batches(x[:a.n]), y[:a.n]
    running = _bn_stats(m)
    result = {"eval_acc": _accuracy(m, xb, yb)}
    # the statistics of the test batches themselves, measured the way training sees them
    nn.recalibrate_batchnorm(m, xb)
    batch = _bn_stats(m)
    load_weights(m, a.checkpoint)  # back to the checkpoint's statistics
    result["batch_stats_acc"] = _accuracy(m, xb, yb, train_mode=True)
    load_weights(m, a.checkpoint)  # (train-mode forward passes moved the running statistics)
    print(f"{'layer':24s} {'batch var':>10s} {'running var':>12s} {'|Δmean|/std':>12s}",
          file=stream)
    result["layers"] = {}
    for k, (rm, rv) in running.items():
        bm, bv = batch[k]
        row = (np.median(bv), np.median(rv), np.median(np.abs(bm - rm) / np.sqrt(bv + 1e-5)))
        result["layers"][k] = row
        print(f"{k:24s} {row[0]:10.3g} {row[1]:12.3g} {row[2]:12.3g}", file=stream)
    print(f"accuracy on {a.n} test images: eval mode {result['eval_acc']:.1f}%, "
          f"batch statistics {result['batch_stats_acc']:.1f}%", file=stream)
    if a.recalibrate:
        xtr, _ = load_cifar10(a.data_dir, train=True, download=False)
        nn.recalibrate_batchnorm(m, _batches(xtr[:a.recalibrate]))
        result["recalibrated_acc"] = _accuracy(m, xb, yb)
        print(f"after re-estimating the running statistics on {a.recalibrate} training images: "
              f"eval mode {result['recalibrated_acc']:.1f}%", file=stream)
    return result


if __name__ == "__main__":
    main()
