"""Command line of the integer AdderNet.

    python -m addercore quantize CHECKPOINT --data-dir DIR --out model_int8.npz [--bits 8]
        [--scheme shared|grouped] [--groups 4] [--act-percentile P] [--glue fixed|float]
        [--calib-images 512] [--seed 0] [--overwrite]

and the evaluation hook of ``examples/eval_pretrained.py`` (``--bits N`` quantises the
checkpoint first, ``--quantized FILE`` evaluates a saved file). Calibration images are drawn
(seeded) from the CIFAR-10 *training* set, normalised like the model's input; the test set is
only ever evaluated.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "add_eval_arguments", "evaluate_args", "calibration_images",
           "load_float_model", "evaluate_quantized"]


def load_float_model(checkpoint):
    """The released (or an addercore-trained) ResNet-20 ℓ1 AdderNet from a PyTorch checkpoint,
    in eval mode, as examples/eval_pretrained.py loads it."""
    from .. import io as aio
    from ..models import resnet20

    state = aio.strip_prefix(aio.load_torch_checkpoint(checkpoint), "module.")
    model = resnet20(10, kind="adder")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def calibration_images(data_dir, count=512, seed=0, download=False):
    """``count`` CIFAR-10 training images chosen without replacement with ``seed``, normalised
    (float32, (count, 3, 32, 32)). ``download`` as in :func:`addercore.data.load_cifar10`."""
    from ..data.cifar import load_cifar10
    from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"calibration image count must be a positive int, got {count!r}")
    images, _ = load_cifar10(data_dir, train=True, download=download, progress=False)
    pick = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)),
                                              replace=False)
    return normalize(images[np.sort(pick)], CIFAR10_MEAN, CIFAR10_STD)


def evaluate_quantized(qmodel, data_dir, limit=None, batch_size=250, progress=sys.stderr,
                       download=False):
    """Top-1/top-5 of a :class:`~addercore.quant.QuantizedModel` on the first ``limit``
    (default all) CIFAR-10 test images; the dict of examples/eval_pretrained.evaluate.
    ``download`` as in :func:`addercore.data.load_cifar10`."""
    from .. import backend, get_num_threads
    from .._cli import Progress, eval_progress_text
    from ..data.cifar import load_cifar10
    from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, labels = load_cifar10(data_dir, train=False, download=download, progress=False)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    total = len(labels)
    correct1 = correct5 = 0
    bar = Progress(total, progress) if progress is not None else None
    t0 = time.perf_counter()
    for start in range(0, total, batch_size):
        x = normalize(images[start:start + batch_size], CIFAR10_MEAN, CIFAR10_STD)
        y = labels[start:start + batch_size]
        top5 = np.argsort(-qmodel(x), axis=1, kind="stable")[:, :5]
        correct1 += int(np.sum(top5[:, 0] == y))
        correct5 += int(np.sum(np.any(top5 == y[:, None], axis=1)))
        if bar is not None:
            done = min(start + batch_size, total)
            bar.update(done, eval_progress_text(done, total, t0, correct1))
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return {"images": total, "top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "seconds": seconds, "images_per_s": total / seconds,
            "backend": f"{backend()}+int-{qmodel.bits}bit", "threads": get_num_threads()}


def _percentile(text):
    """--act-percentile: 'mse', 'max' (no clamp: the calibration maximum) or a number."""
    if text in ("mse", "max"):
        return None if text == "max" else "mse"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mse', 'max' or a percentile in (50, 100], "
                                         f"got {text!r}") from None


def _add_quant_options(parser):
    parser.add_argument("--scheme", choices=("shared", "grouped"), default="shared",
                        help="shared scale per layer (default) or grouped filter scales")
    parser.add_argument("--groups", type=int, default=4, help="filter groups (--scheme grouped)")
    # mse by default: on the released ResNet-20 it keeps 4-bit at 90.98% where the plain
    # maximum gives 89.86% (docs/results/quantization.md)
    parser.add_argument("--act-percentile", type=_percentile, default="mse",
                        help="activation clamp: 'mse' (default: the squared-error-optimal "
                             "clip), 'max' (the calibration maximum, no clamp) or a percentile "
                             "of the calibration activations in (50, 100]")
    parser.add_argument("--glue", choices=("fixed", "float"), default="fixed",
                        help="fixed-point integer glue (default) or float64 glue")
    parser.add_argument("--calib-images", type=int, default=512,
                        help="calibration images drawn from the TRAINING set (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")


def add_eval_arguments(parser):
    """The options examples/eval_pretrained.py gains: --bits, --quantized and the quantiser's."""
    parser.add_argument("--bits", type=int, default=None,
                        help="quantise the checkpoint to this many bits (2..16) and evaluate "
                             "the integer model")
    parser.add_argument("--quantized", metavar="FILE", default=None,
                        help="evaluate a saved quantised model (instead of a CHECKPOINT)")
    _add_quant_options(parser)


def _quantize_from_args(args, progress=sys.stderr):
    from .._cli import download_mode
    from .calibrate import quantize

    model = load_float_model(args.checkpoint)
    calib = calibration_images(args.data_dir, args.calib_images, args.seed, download_mode(args))
    if progress is not None:  # calibration takes about a minute on 2 cores: say so first
        progress.write(f"calibrating {args.bits}-bit codes on {len(calib)} training images...\n")
        progress.flush()
    t0 = time.perf_counter()
    q = quantize(model, calib, bits=args.bits, scheme=args.scheme, groups=args.groups,
                 act_percentile=args.act_percentile, glue=args.glue)
    if progress is not None:
        progress.write(f"quantised to {args.bits} bits ({args.scheme}"
                       f"{f', {args.groups} groups' if args.scheme == 'grouped' else ''}, "
                       f"act clamp {args.act_percentile or 'max'}, {args.glue} glue) on "
                       f"{len(calib)} training images in {time.perf_counter() - t0:.1f} s\n")
    return q


def evaluate_args(args):
    """examples/eval_pretrained.py with --bits or --quantized: the evaluate() result dict."""
    from .fileformat import load

    from .._cli import download_mode

    if args.quantized is not None:
        q = load(args.quantized)
    else:
        q = _quantize_from_args(args)
    return evaluate_quantized(q, args.data_dir, args.limit, args.batch_size,
                              download=download_mode(args))


def main(argv=None):
    """``python -m addercore quantize ...``; returns the exit status (0 ok, 2 errors)."""
    from .._cli import add_data_args
    from .fileformat import save

    parser = argparse.ArgumentParser(
        prog="addercore quantize",
        description="Quantise a trained ResNet-20 ℓ1 AdderNet for integer inference "
                    "(format: docs/integer-format.md).")
    parser.add_argument("checkpoint", metavar="CHECKPOINT")
    add_data_args(parser, "CIFAR-10 (its training images are the calibration set)")
    parser.add_argument("--out", required=True, help="output .npz (not overwritten unless "
                                                     "--overwrite)")
    parser.add_argument("--bits", type=int, default=8, help="code width, 2..16 (default 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file")
    _add_quant_options(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        # refuse before a minute of calibration, in the command line's words
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory; give a file name, e.g. "
                             f"{out / 'model_int8.npz'}")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"--out {out} exists; add --overwrite to replace it")
        q = _quantize_from_args(args, progress=sys.stdout)
        save(out, q, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as exc:
        print(f"addercore quantize: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
