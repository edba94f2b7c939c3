"""ResNet-20 (CIFAR) speed and memory: AdderNet vs CNN, training step and inference (issue 3).

For kind in {adder, cnn} and each batch size, each configuration runs in a fresh subprocess
(so peak RSS is its own) and reports:
  * train img/s: one whole step = forward, cross-entropy, backward, SGD step (momentum 0.9,
    weight decay 5e-4, adaptive scaling for the adder layers), best of ``--steps`` after one
    warm-up step;
  * infer img/s: forward in eval mode without autograd, best of ``--steps``;
  * peak RSS above the baseline (model + data + warm-up workspaces excluded: the baseline is
    taken after building the model and the batch), and the tracemalloc peak of one training
    step (numpy buffers allocated during the step; measured in a separate untimed step).
Random images and labels stand in for CIFAR (speed does not depend on the values).

Run (unset the OpenBLAS variables of this machine, they slow numpy down):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_resnet20.py
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np


def rss_now_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_functions(kind, batch):
    """(train_step, infer) closures over a fresh ResNet-20 of ``kind`` and one fixed batch of
    ``batch`` random float32 CIFAR-shaped images (also used by ab_builds.py)."""
    import addercore
    from addercore import functional as F
    from addercore.models import resnet20
    from addercore.optim import SGD
    from addercore.tensor import Tensor

    rng = np.random.default_rng(0)
    model = resnet20(num_classes=10, kind=kind, rng=np.random.default_rng(1))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def train_step():
        model.train()
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with addercore.no_grad():
            model(Tensor(x))

    return train_step, infer


def one(kind, batch, steps, threads):
    import addercore

    addercore.set_num_threads(threads)
    train_step, infer = step_functions(kind, batch)
    baseline = rss_now_mb()
    out = {"kind": kind, "batch": batch, "threads": threads, "backend": addercore.backend()}
    for name, fn in (("train", train_step), ("infer", infer)):
        fn()
        best = float("inf")
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_img_s"] = batch / best
    out["peak_rss_above_baseline_mb"] = peak_rss_mb() - baseline
    tracemalloc.start()
    train_step()
    out["train_tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--kind", nargs="+", default=["adder", "cnn"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.kind[0], args.batch[0], args.steps, args.threads[0])
        return
    print(f"{'kind':6} {'batch':>5} {'thr':>3} | {'train img/s':>11} {'infer img/s':>11} | "
          f"{'peak RSS +MB':>12} {'tracemalloc MB':>14}")
    for threads in args.threads:
        for kind in args.kind:
            for batch in args.batch:
                cmd = [sys.executable, __file__, "--one", "--kind", kind, "--batch", str(batch),
                       "--steps", str(args.steps), "--threads", str(threads)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(f"{kind:6} {batch:5d} {threads:3d} | failed: {res.stderr[-400:]}")
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{kind:6} {batch:5d} {threads:3d} | {r['train_img_s']:11.1f} "
                      f"{r['infer_img_s']:11.1f} | {r['peak_rss_above_baseline_mb']:12.0f} "
                      f"{r['train_tracemalloc_peak_mb']:14.0f}   ({r['backend']})", flush=True)


if __name__ == "__main__":
    main()
