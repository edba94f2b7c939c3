#!/usr/bin/env python
"""Re-estimate the BatchNorm statistics of a finished run and record the test accuracy with them
(the "after BN re-estimation" column of ``supplement.md``'s Table 1).

    python docs/results/bn_reestimate.py RUN_DIR [--images 2000] [--threads N]

Loads ``RUN_DIR/checkpoint.npz`` (its recorded configuration gives the network, data folder and
seed), evaluates it on the CIFAR test set with its training-time running statistics, re-estimates
every BatchNorm's statistics on ``--images`` training images (weights fixed; the same image
choice as ``train_cifar.py --precise-bn``, see ``addercore.train.precise_bn_batches``) and
evaluates again. Writes ``RUN_DIR/bn_reestimated.json`` atomically:
``{"test_acc", "test_loss", "images", "seed", "checkpoint_epoch", "running_stats_test_acc"}``.
"""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a source checkout

from addercore import io as aio  # noqa: E402
from addercore.nn import recalibrate_batchnorm  # noqa: E402
from addercore.threads import set_num_threads  # noqa: E402
from addercore.train import (TrainConfig, build_model, evaluate, load_data,  # noqa: E402
                             load_weights, precise_bn_batches)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    ckpt = args.run_dir / "checkpoint.npz"
    meta = aio.load(ckpt)[1]
    config = TrainConfig(**{k: v for k, v in meta["config"].items()
                            if k in TrainConfig.__dataclass_fields__})
    if args.threads:
        set_num_threads(args.threads)
    (train_x, _), (test_x, test_y) = load_data(config)
    model = build_model(config)
    load_weights(model, ckpt)
    loss0, acc0 = evaluate(model, test_x, test_y, config.test_batch_size, config.dtype)
    n = recalibrate_batchnorm(model, precise_bn_batches(train_x, args.images, config.seed,
                                                        config.batch_size, config.dtype))
    loss, acc = evaluate(model, test_x, test_y, config.test_batch_size, config.dtype)
    out = {"test_acc": acc, "test_loss": loss, "images": n, "seed": config.seed,
           "checkpoint_epoch": meta.get("epoch"), "running_stats_test_acc": acc0}
    with aio.atomic_open(args.run_dir / "bn_reestimated.json", "w") as f:
        json.dump(out, f, indent=1)
    print(f"{args.run_dir.name}: running statistics {100 * acc0:.2f}%, re-estimated on {n} "
          f"training images {100 * acc:.2f}% (test loss {loss0:.4f} -> {loss:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
