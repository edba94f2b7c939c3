"""Evaluate the authors' released ResNet-20 AdderNet checkpoint on the CIFAR-10 test set.

    python examples/eval_pretrained.py ../shared/data/pretrained/ResNet20-AdderNet.pth \\
        --data-dir ../shared/data/cifar-10-batches-py [--limit N] [--batch-size 100]

Without ``--data-dir`` the CIFAR-10 test set is looked for in ``$ADDERCORE_DATA``, then
``~/.cache/addercore``, then downloaded into the cache (``--no-download`` forbids that).

No PyTorch: :func:`addercore.io.load_torch_checkpoint` reads the (legacy-format) file, the
DataParallel prefix ``module.`` is stripped, and the state dict loads strictly into
``addercore.models.resnet20(10, kind="adder")``. Images are normalised with the authors'
constants (``addercore.data.transforms.CIFAR10_MEAN/STD``); the model runs in eval mode
(BatchNorm with running statistics, including ``bn2`` on the logits). Prints top-1/top-5.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bootstrap  # noqa: E402,F401  (the compiled addercore: installed, or the checkout's build)

import addercore
from addercore import _cli
from addercore import io as aio
from addercore.data.cifar import load_cifar10
from addercore.data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize
from addercore.models import resnet20
from addercore.quant import cli as quant_cli


def _is_integer_model(path):
    """True when ``path`` is an integer AdderNet file (its metadata carries the format tag)."""
    from addercore.quant.model import FORMAT

    try:
        return aio.load(path)[1].get("format") == FORMAT
    except (OSError, ValueError):
        return False


def load_checkpoint(path):
    """The authors' state dict from a PyTorch file, ``module.`` prefix stripped.

    Raises FileNotFoundError for a missing file and ValueError (one line, saying what to do)
    for anything that is not a PyTorch checkpoint, e.g. addercore's own ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found" if not path.exists()
                                else f"checkpoint {path} is not a file")
    if path.suffix == ".npz":
        if _is_integer_model(path):
            raise ValueError(f"{path} is a quantised integer model (addercore quantize): "
                             f"evaluate it with --quantized {path}")
        raise ValueError(f"{path} is an addercore .npz checkpoint, not a PyTorch .pth file: "
                         f"evaluate it with: python examples/train_cifar.py --eval-only {path} "
                         f"(plus the --model/--kind it was trained with)")
    return aio.strip_prefix(aio.load_torch_checkpoint(path), "module.")


def evaluate(checkpoint, data_dir=None, limit=None, batch_size=100, dtype=np.float32,
             progress=sys.stderr, download=True):
    """Top-1/top-5 of the checkpoint on the first ``limit`` (default all) CIFAR-10 test images.

    ``data_dir``/``download`` as :func:`addercore.data.load_cifar10` (``None``: the usual
    search, then a download into the cache). ``progress``: a stream for the progress line
    (redrawn on a terminal, one line per 10% otherwise) or None.
    Returns a dict: images, top1, top5 (percent), seconds, images_per_s, backend, threads.
    Raises ValueError for ``batch_size``/``limit`` < 1 or a file that is not the checkpoint,
    FileNotFoundError (``DataNotFoundError``) for a missing checkpoint or data set.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    state = load_checkpoint(checkpoint)
    model = resnet20(10, kind="adder", dtype=dtype)
    model.load_state_dict(state, strict=True)
    model.eval()
    images, labels = load_cifar10(data_dir, train=False, download=download, progress=True)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    total = len(labels)
    correct1 = correct5 = 0
    bar = _cli.Progress(total, progress) if progress is not None else None
    t0 = time.perf_counter()
    with addercore.no_grad():
        for start in range(0, total, batch_size):
            x = normalize(images[start:start + batch_size], CIFAR10_MEAN, CIFAR10_STD, dtype=dtype)
            y = labels[start:start + batch_size]
            logits = model(x).data
            top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
            correct1 += int(np.sum(top5[:, 0] == y))
            correct5 += int(np.sum(np.any(top5 == y[:, None], axis=1)))
            if bar is not None:
                done = min(start + batch_size, total)
                bar.update(done, _cli.eval_progress_text(done, total, t0, correct1))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return {"images": total, "top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "seconds": seconds, "images_per_s": total / seconds, "backend": addercore.backend(),
            "threads": addercore.get_num_threads()}


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 done, 2 usage or input error (bad option, missing or wrong "
               "file, data not found), 130 interrupted.")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="PyTorch checkpoint (e.g. ResNet20-AdderNet.pth); not needed with "
                             "--quantized FILE")
    _cli.add_data_args(parser)
    parser.add_argument("--limit", type=_cli.positive_int, default=None, metavar="N",
                        help="only the first N test images (default: all 10,000)")
    parser.add_argument("--batch-size", type=_cli.positive_int, default=100, metavar="N",
                        help="images per forward pass (default: 100)")
    parser.add_argument("--float64", action="store_true", help="run in float64")
    parser.add_argument("--threads", type=_cli.positive_int, default=None,
                        help="kernel/BLAS threads (default: all usable cores)")
    quant_cli.add_eval_arguments(parser)  # --bits N / --quantized FILE: the integer model
    return parser


def run(argv=None):
    """Parse ``argv``, evaluate, print the result line; return the result dict (errors raise)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.quantized is None:
        parser.error("the CHECKPOINT argument is required (or --quantized FILE)")
    if args.checkpoint is not None and args.quantized is not None:
        parser.error("give either CHECKPOINT or --quantized FILE, not both")
    if args.threads is not None:
        addercore.set_num_threads(args.threads)
    if args.bits is not None or args.quantized is not None:
        r = quant_cli.evaluate_args(args)
    else:
        r = evaluate(args.checkpoint, args.data_dir, args.limit, args.batch_size,
                     np.float64 if args.float64 else np.float32,
                     download=_cli.download_mode(args))
    print(f"images: {r['images']}  top-1: {r['top1']:.2f}%  top-5: {r['top5']:.2f}%  "
          f"time: {r['seconds']:.1f} s  ({r['images_per_s']:.1f} images/s, "
          f"{r['backend']} backend, {r['threads']} threads)")
    return r


def main(argv=None):
    """Command-line entry point; returns the exit status (see ``--help``)."""
    try:
        run(argv)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:  # input errors: one line
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        return _cli.fail(msg)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return _cli.fail("interrupted", _cli.EXIT_SIGINT)
    return _cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
