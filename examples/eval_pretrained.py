"""Evaluate the authors' released ResNet-20 AdderNet checkpoint on the CIFAR-10 test set.

    python examples/eval_pretrained.py ../shared/data/pretrained/ResNet20-AdderNet.pth \\
        --data-dir ../shared/data/cifar-10-batches-py [--limit N] [--batch-size 100]

No PyTorch: :func:`addercore.io.load_torch_checkpoint` reads the (legacy-format) file, the
DataParallel prefix ``module.`` is stripped, and the state dict loads strictly into
``addercore.models.resnet20(10, kind="adder")``. Images are normalised with the authors'
constants (``addercore.data.transforms.CIFAR10_MEAN/STD``); the model runs in eval mode
(BatchNorm with running statistics, including ``bn2`` on the logits). Prints top-1/top-5.
"""
import argparse
import sys
import time

import numpy as np

import addercore
from addercore import io as aio
from addercore.data.cifar import load_cifar10
from addercore.data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize
from addercore.models import resnet20
from addercore.quant import cli as quant_cli


def _progress(done, total, t0, correct1, stream):
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.perf_counter() - t0
    rate = done / elapsed if elapsed > 0 else 0.0
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:5d}/{total} "
                 f"{rate:7.1f} img/s  top-1 {100.0 * correct1 / max(done, 1):6.2f}%")
    stream.flush()


def evaluate(checkpoint, data_dir, limit=None, batch_size=100, dtype=np.float32,
             progress=sys.stderr):
    """Top-1/top-5 of the checkpoint on the first ``limit`` (default all) CIFAR-10 test images.

    Returns a dict: images, top1, top5 (percent), seconds, images_per_s, backend, threads.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    state = aio.strip_prefix(aio.load_torch_checkpoint(checkpoint), "module.")
    model = resnet20(10, kind="adder", dtype=dtype)
    model.load_state_dict(state, strict=True)
    model.eval()
    images, labels = load_cifar10(data_dir, train=False, download=False, progress=False)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    total = len(labels)
    correct1 = correct5 = 0
    t0 = time.perf_counter()
    with addercore.no_grad():
        for start in range(0, total, batch_size):
            x = normalize(images[start:start + batch_size], CIFAR10_MEAN, CIFAR10_STD, dtype=dtype)
            y = labels[start:start + batch_size]
            logits = model(x).data
            top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
            correct1 += int(np.sum(top5[:, 0] == y))
            correct5 += int(np.sum(np.any(top5 == y[:, None], axis=1)))
            if progress is not None:
                _progress(min(start + batch_size, total), total, t0, correct1, progress)
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress.write("\n")
    return {"images": total, "top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "seconds": seconds, "images_per_s": total / seconds, "backend": addercore.backend(),
            "threads": addercore.get_num_threads()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="PyTorch checkpoint (e.g. ResNet20-AdderNet.pth)")
    parser.add_argument("--data-dir", required=True,
                        help="CIFAR-10: cifar-10-batches-py folder, its parent, or the tar.gz")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test images")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--float64", action="store_true", help="run in float64")
    parser.add_argument("--threads", type=int, default=None, help="kernel/BLAS threads")
    quant_cli.add_eval_arguments(parser)  # --bits N / --quantized FILE: the integer model
    args = parser.parse_args(argv)
    if args.threads is not None:
        addercore.set_num_threads(args.threads)
    if args.bits is not None or args.quantized is not None:
        r = quant_cli.evaluate_args(args)
    else:
        r = evaluate(args.checkpoint, args.data_dir, args.limit, args.batch_size,
                     np.float64 if args.float64 else np.float32)
    print(f"images: {r['images']}  top-1: {r['top1']:.2f}%  top-5: {r['top5']:.2f}%  "
          f"time: {r['seconds']:.1f} s  ({r['images_per_s']:.1f} images/s, "
          f"{r['backend']} backend, {r['threads']} threads)")
    return r


if __name__ == "__main__":
    main()
