#!/usr/bin/env python
"""Train a ResNet AdderNet (or the same network as a CNN) on CIFAR-10/100 on a CPU.

Defaults are the AdderNet authors' recipe: ResNet-20, ℓ1 adder layers, 400 epochs, batch 256,
SGD momentum 0.9, weight decay 5e-4, adaptive scaling η = 0.2, cosine learning rate from 0.1
(set once per epoch), random crop + flip. A quick look:

    python examples/train_cifar.py --data-dir ../shared/data/cifar-10-batches-py \\
        --epochs 1 --train-subset 5000 --precise-bn 2000 --out runs/quick

(``--precise-bn``: after one epoch the BatchNorm running statistics still lag the weights, so
the plain test accuracy sits near 10%; the re-estimated statistics show what the weights learnt.)

Interrupt with Ctrl-C (or SIGTERM): a resumable checkpoint is saved; continue with the same
command plus --resume. The loop itself is :mod:`addercore.train`.
"""
import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bootstrap  # noqa: E402,F401  (the compiled addercore: installed, or the checkout's build)

import addercore  # noqa: E402
from addercore.data import DataNotFoundError  # noqa: E402
from addercore._cli import add_data_args, download_mode, nonneg_float, positive_int  # noqa: E402,E501
from addercore.ops.options import FILTER_GRADS, NORMS  # noqa: E402
from addercore.nn import recalibrate_batchnorm  # noqa: E402
from addercore.train import (NonFiniteError, RunFolder, Trainer, TrainConfig,  # noqa: E402
                             TrainingInterrupted, build_model, evaluate, load_data, load_weights,
                             precise_bn_batches)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where it says something: not for None/False defaults, nor
    where the help text already states the default."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Outputs in --out: checkpoint.npz (every epoch, and on Ctrl-C), best.npz (best "
               "test accuracy), metrics.jsonl / metrics.csv (one row per epoch), curves.png "
               "(with matplotlib), command.txt. Exit status: 0 done, 1 error or non-finite "
               "loss, 130/143 interrupted by SIGINT/SIGTERM (checkpoint saved).",
        formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=("cifar10", "cifar100"), default=None,
                   help=f"which data set to train and test on (default: {d.dataset}; with "
                        "--eval-only: the checkpoint's)")
    add_data_args(g)
    g.add_argument("--train-subset", type=positive_int, default=None, metavar="N",
                   help="train on the first N training images only (default: all)")
    g.add_argument("--test-subset", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only (default: all)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=("resnet20", "resnet32", "resnet56", "vgg_small"),
                   default=None, help=f"network, docs/method.md §7 (default: {d.model}; with "
                                      "--eval-only: the checkpoint's)")
    g.add_argument("--kind", choices=("adder", "cnn"), default=None,
                   help="adder layers (AdderNet) or ordinary multiplication convolutions (CNN, "
                        "same topology) in the blocks; first conv and classifier always multiply "
                        f"(default: {d.kind}; with --eval-only: the checkpoint's)")
    g.add_argument("--norm", choices=NORMS, default=None,
                   help="adder distance: l1 (the paper) or squared l2 (supplement) (default: "
                        f"{d.norm}; with --eval-only: the checkpoint's)")
    g.add_argument("--filter-grad", choices=FILTER_GRADS, default=d.filter_grad,
                   help="adder filter gradient: full (X - F, the paper) or sign (the "
                        "supplement's ablation)")
    g.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype,
                   help="floating-point type of weights and activations")
    g = p.add_argument_group("optimisation (defaults: the authors' recipe)")
    g.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help="number of epochs; the cosine schedule spans exactly these epochs")
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="training mini-batch size (test batches are 100)")
    g.add_argument("--lr", type=nonneg_float, default=d.lr,
                   help="initial learning rate; lr(e) = lr/2·(1 + cos(π·e/epochs)) at epoch e")
    g.add_argument("--eta", type=nonneg_float, default=d.eta,
                   help="adaptive-scaling coefficient η of the adder layers' filter gradients")
    g.add_argument("--momentum", type=nonneg_float, default=d.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=nonneg_float, default=d.weight_decay,
                   help="L2 weight decay (all parameters)")
    g.add_argument("--no-augment", action="store_true",
                   help="disable random crop (pad 4) + horizontal flip")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a batch whose loss is NaN/Inf instead of stopping")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed of initialisation, shuffling and augmentation")
    g = p.add_argument_group("run")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="threads for the kernels and BLAS (default: all usable cores)")
    g.add_argument("--out", default=d.out, metavar="DIR",
                   help="output directory (checkpoints, metrics, plot)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in DIR/checkpoint.npz exactly where it stopped "
                        "(the settings that change the numbers must be the same)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run even though DIR holds one: its checkpoint, best "
                        "weights, metrics, plot and command.txt are deleted first (without "
                        "--resume or --overwrite, a folder holding a run is refused)")
    g.add_argument("--allow-numpy-backend", action="store_true",
                   help="train even when the compiled kernels are unavailable (the numpy "
                        "reference kernels are about 55x slower; ADDERCORE_BACKEND=numpy asks "
                        "for them too)")
    g.add_argument("--ignore-memory-check", action="store_true",
                   help="start even when the estimated memory of a training step exceeds the "
                        "available memory")
    g.add_argument("--eval-only", metavar="CHECKPOINT", default=None,
                   help="only evaluate the weights in CHECKPOINT (checkpoint.npz, best.npz or "
                        "the authors' .pth) on the test set, and exit")
    g.add_argument("--precise-bn", type=int, default=0, metavar="N",
                   help="before each evaluation, also re-estimate the BatchNorm statistics on N "
                        "training images (weights fixed) and evaluate with them: both test "
                        "accuracies are reported, best.npz holds the re-estimated statistics, "
                        "the checkpoint the training-time ones. Short runs need it: early in "
                        "AdderNet training the running statistics lag the weights and the "
                        "eval accuracy sits near chance (try 2000; 0 = off)")
    g.add_argument("--max-steps-per-epoch", type=positive_int, default=None,
                   help="cut every epoch after this many steps (smoke tests only)")
    g.add_argument("--log-interval", type=nonneg_float, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal, print the progress line this often")
    # --- data-parallel training (mpi): see examples/_distributed.py ---
    g = p.add_argument_group("data-parallel training over MPI ranks (pip install \".[mpi]\"; "
                             "mpiexec -n N python examples/train_cifar.py ...)")
    g.add_argument("--distributed", action="store_true",
                   help="train data-parallel over the ranks of the MPI job (automatic when "
                        "started by mpiexec/srun with more than one process); --batch-size "
                        "stays the global batch")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch of all ranks (N ranks then "
                        "reproduce one process up to rounding) instead of each rank's share")
    g.add_argument("--comm-timeout", type=positive_int, default=600, metavar="SECONDS",
                   help="how long a rank waits for the others in one collective before ending "
                        "the whole job (a rank died or hangs)")
    return p


# options that describe the network: --eval-only takes them from the checkpoint when not given
NETWORK_OPTIONS = ("dataset", "model", "kind", "norm")


def config_from_args(args, recorded=None):
    """The TrainConfig of the command line; network options not given come from ``recorded``
    (a checkpoint's configuration) or the defaults."""
    d = TrainConfig()
    net = {k: getattr(args, k) if getattr(args, k) is not None else
           (recorded or {}).get(k, getattr(d, k)) for k in NETWORK_OPTIONS}
    return TrainConfig(
        dataset=net["dataset"], data_dir=args.data_dir, download=download_mode(args),
        model=net["model"], kind=net["kind"], norm=net["norm"], filter_grad=args.filter_grad,
        epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, eta=args.eta, momentum=args.momentum,
        weight_decay=args.weight_decay, threads=args.threads, seed=args.seed,
        train_subset=args.train_subset, test_subset=args.test_subset, out=args.out,
        dtype=args.dtype, augment=not args.no_augment, skip_nonfinite=args.skip_nonfinite,
        max_steps_per_epoch=args.max_steps_per_epoch, precise_bn=args.precise_bn,
        sync_bn=args.sync_bn).validate()


def recorded_config(path):
    """The configuration an addercore checkpoint records (``{}`` for other files)."""
    if Path(path).suffix != ".npz":
        return {}
    from addercore import io as aio

    return aio.load(path)[1].get("config") or {}


def eval_only(args, path):
    from addercore.threads import set_num_threads

    recorded = recorded_config(path)
    clash = [f"--{k} {getattr(args, k)} (the checkpoint records {recorded[k]!r})"
             for k in NETWORK_OPTIONS if getattr(args, k) is not None and k in recorded
             and getattr(args, k) != recorded[k]]
    if clash:
        raise ValueError(f"{path} was trained with other network settings: {'; '.join(clash)}; "
                         "leave these options out to use the checkpoint's")
    config = config_from_args(args, recorded)
    if config.threads:
        set_num_threads(config.threads)
    train, (test_x, test_y) = load_data(config, with_train=bool(config.precise_bn))
    model = build_model(config)
    try:
        load_weights(model, path)
    except ValueError as e:
        text = str(e)
        if len(text) > 300:  # thousands of key names help nobody
            text = text[:300] + "..."
        raise ValueError(f"{path}: the weights do not fit {config.describe()} "
                         f"({text}); pass the --model/--kind/--norm/--dataset it was trained "
                         "with") from None
    t0 = time.monotonic()
    loss, acc = evaluate(model, test_x, test_y, config.test_batch_size, config.dtype)
    dt = time.monotonic() - t0
    print(f"{path} ({config.describe()}): test loss {loss:.4f}, top-1 accuracy {100 * acc:.2f}% on {len(test_y)} "
          f"images ({len(test_y) / dt:.1f} img/s)")
    if config.precise_bn:
        n = recalibrate_batchnorm(model, precise_bn_batches(train[0], config.precise_bn,
                                                            config.seed, config.batch_size,
                                                            config.dtype))
        loss, acc = evaluate(model, test_x, test_y, config.test_batch_size, config.dtype)
        print(f"with BatchNorm statistics re-estimated on {n} training images (precise BN, "
              f"seed {config.seed}): test loss {loss:.4f}, top-1 accuracy {100 * acc:.2f}%")
    return 0


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def header(trainer):
    """The run's first line: what trains on what, for how long, where."""
    c = trainer.config
    steps = len(trainer.loader)
    if c.max_steps_per_epoch is not None:
        steps = min(steps, c.max_steps_per_epoch)
    return (f"{c.describe()} on {c.dataset}: {len(trainer.train_y)} train / "
            f"{len(trainer.test_y)} test images, {_plural(c.epochs, 'epoch')} of "
            f"{_plural(steps, 'step')} (batch {c.batch_size}), out {trainer.out}")


def backend_line():
    """``kernels: cython (avx2+fma), addercore from DIR``: what the run computes with."""
    name = addercore.backend()
    build = ""
    if name == "cython":
        from addercore.ops import fast

        build = f" ({fast.simd()})"
    return f"kernels: {name}{build}, addercore from {_bootstrap.ADDERCORE_FROM}"


def check_backend(allow):
    """None, or the error message when training would silently run on the numpy kernels."""
    if addercore.backend() == "cython" or allow or \
            os.environ.get("ADDERCORE_BACKEND", "").strip().lower() == "numpy":
        return None
    return (f"the compiled kernels are not available (addercore from "
            f"{_bootstrap.ADDERCORE_FROM}); training would run on the numpy reference kernels, "
            "about 55x slower. Build them (`pip install .`, or `python setup.py build_ext "
            "--inplace` in the checkout), or pass --allow-numpy-backend to train anyway")


def _os_error(e):
    return f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)


def main(argv=None):
    args = build_parser().parse_args(argv)
    # --- data-parallel training (mpi) ---
    import _distributed

    if _distributed.wanted(args):
        return _distributed.main(args, sys.modules[__name__])
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer = None
    try:
        if args.eval_only:
            return eval_only(args, args.eval_only)
        problem = check_backend(args.allow_numpy_backend)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        folder = RunFolder(config.out)
        folder.check_path()
        present = folder.existing_run()
        if not (args.resume or args.overwrite) and present:  # say so before loading data
            print(f"error: --out {config.out} already holds a run ({', '.join(present)}): add "
                  "--resume to continue it, --overwrite to delete it and start over, or choose "
                  "another --out", file=sys.stderr)
            return 1
        trainer = Trainer(config, log_interval=args.log_interval, overwrite=args.overwrite,
                          check_memory=not args.ignore_memory_check)
        trainer.log(header(trainer))
        trainer.log(backend_line())
        if args.resume:
            trainer.resume()  # checks the checkpoint before creating or writing anything
        else:
            trainer.open_run()
        with open(trainer.out / "command.txt", "a") as f:
            f.write(shlex.join([sys.executable] + sys.argv) + "\n")
        summary = trainer.fit()
    except TrainingInterrupted as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # saved: a late Ctrl-C changes nothing now
        return 128 + int(e.signum)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before training started)
        print("\naborted by Ctrl-C: nothing more was saved (the last checkpoint, if any, "
              "stays; continue with --resume)", file=sys.stderr)
        return 130
    except (DataNotFoundError, NonFiniteError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
    best = summary["best_test_acc"]
    last = trainer.history[-1] if trainer.history else {}
    precise = last.get("precise_bn_test_acc")
    print(f"done: {_plural(summary['epochs'], 'epoch')}, final test accuracy "
          f"{100 * summary['final_test_acc']:.2f}%"
          + (f" ({100 * precise:.2f}% with precise BN)" if precise is not None else "")
          + f", best {100 * best:.2f}%{' (precise BN)' if precise is not None else ''} (epoch "
          f"{summary['best_epoch']}), {summary['elapsed_s']:.0f} s; outputs in {summary['out']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL) if hasattr(signal, "SIGPIPE") else None
    try:
        code = main()
    except KeyboardInterrupt:  # a Ctrl-C that lands between the loop's handler and an exit
        print("\naborted by Ctrl-C (the last checkpoint, if any, stays; continue with --resume)",
              file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
