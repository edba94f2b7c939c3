"""The CIFAR training loop (the authors' recipe, spec §4), resumable bit for bit.

>>> from addercore.train import TrainConfig, train
>>> summary = train(TrainConfig(epochs=10, out="runs/r20-adder"))   # doctest: +SKIP

Recipe defaults: SGD momentum 0.9 (not Nesterov), weight decay 5e-4, adaptive per-layer
scaling with η = 0.2 on the raw filter gradient of every adder layer, batch 256, cosine learning
rate ``lr(e) = lr/2·(1 + cos(π·e/epochs))`` set **once per epoch** (the spec's formula, with
``epochs`` in place of 400), random crop (zero-pad 4) + horizontal flip, normalisation with the
spec's mean/std, test batch 100.

Output directory ``out``:

- ``checkpoint.npz`` — written atomically after every epoch and on Ctrl-C / SIGTERM (mid-epoch):
  model weights and BatchNorm buffers (``model.*``), optimiser momentum buffers and step count
  (``optim.*``), the schedule (``sched.*``) and, as JSON metadata, the configuration, the epoch,
  the batch loader's position (every batch is a pure function of ``(seed, epoch, batch)``), the
  running sums of a partially trained epoch and the metrics history. :func:`train` with
  ``resume=True`` continues from it and reproduces the uninterrupted run exactly (same weights,
  bit for bit, same metrics).
- ``best.npz`` — model weights of the epoch with the best test accuracy.
- ``metrics.jsonl`` and ``metrics.csv`` — one row per epoch (appended; on resume rewritten from
  the checkpoint's history so that rows of unsaved epochs disappear).
- ``curves.png`` — loss and accuracy curves, when matplotlib is importable.
- ``command.txt`` — the command line of every start / resume.

Non-finite loss: training stops with :class:`NonFiniteLossError` naming the epoch, step and the
last good checkpoint, unless ``skip_nonfinite`` is set; then the batch is skipped (no update,
BatchNorm statistics restored) and counted in the metrics (``skipped_steps``).
"""
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import functional as F
from . import io as aio
from . import nn
from .data import BatchLoader, load_cifar10, load_cifar100
from .data.transforms import CIFAR10_MEAN, CIFAR10_STD
from .models import MODELS
from .ops.options import FILTER_GRADS, NORMS
from .optim import SGD, CosineAnnealingLR
from .tensor import no_grad
from .threads import set_num_threads

__all__ = ["TrainConfig", "Trainer", "train", "evaluate", "load_weights", "NonFiniteLossError",
           "TrainingInterrupted", "METRIC_FIELDS"]

CHECKPOINT_FORMAT = "addercore-train-checkpoint"
CHECKPOINT_VERSION = 1
CIFAR_MODELS = ("resnet20", "resnet32", "resnet56", "vgg_small")
METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "steps",
                 "skipped_steps", "train_time_s", "train_images_per_s", "eval_time_s",
                 "eval_images_per_s", "elapsed_s")
# Settings that decide the numbers: a resumed run must use the same values.
RESUME_MUST_MATCH = ("dataset", "model", "kind", "norm", "filter_grad", "epochs", "batch_size", "lr", "eta",
                     "momentum", "weight_decay", "seed", "train_subset", "test_subset", "dtype",
                     "augment", "test_batch_size", "max_steps_per_epoch")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (message: where, and the last good checkpoint)."""


class TrainingInterrupted(Exception):
    """Raised by :meth:`Trainer.fit` after Ctrl-C / SIGTERM once the checkpoint is saved."""

    def __init__(self, message, signum, checkpoint):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the authors' CIFAR recipe)."""

    dataset: str = "cifar10"          # "cifar10" | "cifar100"
    data_dir: str = None              # None: $ADDERCORE_DATA, ~/.cache/addercore, download
    download: bool = True
    model: str = "resnet20"           # resnet20 | resnet32 | resnet56 | vgg_small
    kind: str = "adder"               # "adder" | "cnn"
    norm: str = "l1"                  # "l1" | "l2"
    filter_grad: str = "full"         # adder filter gradient: "full" (X - F, the paper) | "sign"
    epochs: int = 400
    batch_size: int = 256
    lr: float = 0.1
    eta: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    threads: int = None               # None: all usable cores
    seed: int = 0
    train_subset: int = None          # first N training images
    test_subset: int = None           # first N test images
    out: str = "runs/cifar"
    dtype: str = "float32"
    augment: bool = True
    test_batch_size: int = 100
    skip_nonfinite: bool = False
    max_steps_per_epoch: int = None   # for smoke tests: cut each epoch short

    def validate(self):
        """Raise ValueError/TypeError naming the first bad setting."""
        def choice(name, options):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")

        def pos_int(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''},"
                                 f" got {v!r}")

        def nonneg(name, positive=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (positive and v == 0):
                raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'}"
                                 f" number, got {v!r}")

        choice("dataset", ("cifar10", "cifar100"))
        choice("model", CIFAR_MODELS)
        choice("kind", ("adder", "cnn"))
        choice("norm", NORMS)
        choice("filter_grad", FILTER_GRADS)
        choice("dtype", ("float32", "float64"))
        for name in ("epochs", "batch_size", "test_batch_size"):
            pos_int(name)
        for name in ("threads", "train_subset", "test_subset", "max_steps_per_epoch"):
            pos_int(name, allow_none=True)
        nonneg("lr", positive=True)
        nonneg("eta", positive=True)
        nonneg("momentum")
        nonneg("weight_decay")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        return self

    def as_dict(self):
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def build_model(config):
    """The model of ``config`` (fresh initialisation seeded by ``config.seed``)."""
    num_classes = 10 if config.dataset == "cifar10" else 100
    rng = np.random.default_rng(config.seed)
    model = MODELS[config.model](num_classes=num_classes, kind=config.kind, norm=config.norm,
                                 eta=config.eta, dtype=np.dtype(config.dtype), rng=rng)
    if config.filter_grad != "full":  # the supplement's sign-gradient ablation (Table 1)
        for m in model.modules():
            if isinstance(m, nn.Adder2d):
                m.filter_grad = config.filter_grad
    return model


def load_data(config, with_train=True):
    """``((train_x, train_y), (test_x, test_y))`` uint8 images / int64 labels, subsets applied
    (the first ``train_subset`` / ``test_subset`` images). ``with_train=False`` skips reading
    the training set (returns None in its place)."""
    loader = load_cifar10 if config.dataset == "cifar10" else load_cifar100
    test_x, test_y = loader(config.data_dir, train=False, download=config.download)
    if config.test_subset is not None:
        test_x, test_y = test_x[:config.test_subset], test_y[:config.test_subset]
    if not with_train:
        return None, (test_x, test_y)
    train_x, train_y = loader(config.data_dir, train=True, download=config.download)
    if config.train_subset is not None:
        train_x, train_y = train_x[:config.train_subset], train_y[:config.train_subset]
    return (train_x, train_y), (test_x, test_y)


def evaluate(model, images, labels, batch_size=100, dtype=np.float32, mean=CIFAR10_MEAN,
             std=CIFAR10_STD):
    """Mean cross-entropy and top-1 accuracy (fraction) of ``model`` in eval mode on uint8
    ``images`` (N, C, H, W) / int ``labels`` (N,). Returns ``(loss, accuracy)``."""
    loader = BatchLoader(images, labels, batch_size, shuffle=False, augment=False,
                         dtype=dtype, mean=mean, std=std)
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for xb, yb in loader:
                logits = model(xb)
                loss_sum += float(F.cross_entropy(logits, yb).data) * len(yb)
                correct += int((logits.data.argmax(axis=1) == yb).sum())
                seen += len(yb)
    finally:
        model.train(was_training)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def load_weights(model, path):
    """Load model weights from an addercore checkpoint (``checkpoint.npz`` / ``best.npz``) or a
    PyTorch ``.pth`` state dict (``module.`` prefixes stripped), strictly. Returns metadata."""
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".tar"):
        state = aio.strip_prefix(aio.load_torch_checkpoint(path))
        model.load_state_dict(state, strict=True)
        return {}
    arrays, meta = aio.load(path)
    state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{path}: no model weights (no 'model.*' arrays)")
    model.load_state_dict(state, strict=True)
    return meta


def _fmt_time(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class _Progress:
    """The live progress line on ``stream``: redrawn in place on a terminal, else one line
    every ``interval`` seconds."""

    def __init__(self, stream, interval=30.0):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self.last = -math.inf
        self.width = 0

    def update(self, text, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        if self.tty:
            pad = max(self.width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self):
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
        self.width = 0


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Owns the model, optimiser, schedule, loaders and output directory of one run.

    ``train_data`` / ``test_data``: ``(uint8 images (N, 3, 32, 32), int labels (N,))``; loaded
    from ``config`` when omitted. ``stream``: where progress and messages go (stderr).
    """

    def __init__(self, config, train_data=None, test_data=None, stream=None, log_interval=30.0):
        self.config = config.validate()
        self.stream = sys.stderr if stream is None else stream
        self.out = Path(config.out)
        self.ckpt_path = self.out / "checkpoint.npz"
        self.best_path = self.out / "best.npz"
        if train_data is None or test_data is None:
            (train_data, test_data) = load_data(config)
        self.train_x, self.train_y = train_data
        self.test_x, self.test_y = test_data
        self.dtype = np.dtype(config.dtype)
        if config.threads is not None:
            set_num_threads(config.threads)
        self.model = build_model(config)
        self.optimizer = SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay, eta=config.eta)
        self.scheduler = CosineAnnealingLR(self.optimizer, config.epochs)
        self.loader = BatchLoader(self.train_x, self.train_y, config.batch_size, shuffle=True,
                                  augment=config.augment, seed=config.seed, dtype=self.dtype)
        self.epoch = 0                 # epoch in progress (or next to run)
        self.global_step = 0
        self.history = []
        self.best_acc, self.best_epoch = -1.0, None
        self.partial = None            # running sums of a partially trained epoch
        self.elapsed = 0.0             # training + eval seconds over all sessions
        self.progress = _Progress(self.stream, log_interval)
        self._stop_signal = None

    # -- messages ----------------------------------------------------------------------------
    def log(self, text):
        self.progress.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- checkpoints -------------------------------------------------------------------------
    def _arrays(self):
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        arrays.update({f"sched.{k}": v for k, v in self.scheduler.state_dict().items()})
        return arrays

    def save_checkpoint(self):
        """Write ``checkpoint.npz`` atomically (resumable state, mid-epoch included)."""
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": self.config.as_dict(), "epoch": self.epoch,
                "global_step": self.global_step, "loader": self.loader.state_dict(),
                "partial": self.partial, "history": self.history, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "elapsed": self.elapsed,
                "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        aio.save(self.ckpt_path, self._arrays(), meta)
        return self.ckpt_path

    def resume(self, path=None):
        """Restore the state saved in ``path`` (default ``out/checkpoint.npz``)."""
        path = Path(path) if path is not None else self.ckpt_path
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path} (start without --resume, "
                                    f"or pass the --out directory of the interrupted run)")
        arrays, meta = aio.load(path)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a training checkpoint (format {meta.get('format')!r}); "
                             f"use --eval-only for weight files")
        saved = meta["config"]
        mine = self.config.as_dict()
        # settings added after a checkpoint was written compare as their defaults
        defaults = TrainConfig().as_dict()
        diff = [f"{k}: checkpoint {saved.get(k, defaults[k])!r}, now {mine[k]!r}"
                for k in RESUME_MUST_MATCH if saved.get(k, defaults[k]) != mine[k]]
        if diff:
            raise ValueError(f"{path}: the run was started with other settings; resuming would "
                             "not reproduce it: " + "; ".join(diff))
        sub = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items()  # noqa: E731
                              if k.startswith(prefix)}
        self.model.load_state_dict(sub("model."), strict=True)
        self.optimizer.load_state_dict(sub("optim."))
        self.scheduler.load_state_dict(sub("sched."))
        self.loader.load_state_dict(meta["loader"])
        self.epoch = int(meta["epoch"])
        self.global_step = int(meta["global_step"])
        self.history = list(meta["history"])
        self.partial = meta["partial"]
        self.best_acc = float(meta["best_acc"])
        self.best_epoch = meta["best_epoch"]
        self.elapsed = float(meta["elapsed"])
        self._rewrite_metrics()
        where = f"epoch {self.epoch + 1}" + (
            f", step {self.partial['steps'] + self.partial['skipped']}" if self.partial else "")
        self.log(f"resumed from {path} at {where} (global step {self.global_step})")

    # -- metrics -----------------------------------------------------------------------------
    def _rewrite_metrics(self):
        self.out.mkdir(parents=True, exist_ok=True)
        with aio.atomic_open(self.out / "metrics.jsonl", "w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        with aio.atomic_open(self.out / "metrics.csv", "w") as f:
            w = csv.DictWriter(f, METRIC_FIELDS)
            w.writeheader()
            w.writerows(self.history)

    def _append_metrics(self, row):
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.out / "metrics.csv"
        new = not csv_path.exists() or csv_path.stat().st_size == 0
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)

    def plot(self):
        """Write ``curves.png`` when matplotlib is importable; returns the path or None."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        if not self.history:
            return None
        ep = [r["epoch"] for r in self.history]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(ep, [r["train_loss"] for r in self.history], label="train")
        a1.plot(ep, [r["test_loss"] for r in self.history], label="test")
        a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy"), a1.legend()
        a2.plot(ep, [100 * r["train_acc"] for r in self.history], label="train")
        a2.plot(ep, [100 * r["test_acc"] for r in self.history], label="test")
        a2.set_xlabel("epoch"), a2.set_ylabel("top-1 accuracy (%)"), a2.legend()
        c = self.config
        fig.suptitle(f"{c.model} {c.kind} ({c.norm}) on {c.dataset}")
        fig.tight_layout()
        path = self.out / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    # -- signals -----------------------------------------------------------------------------
    def _handler(self, signum, frame):
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now (last checkpoint stays)
        self._stop_signal = signum
        self.log(f"\n{signal.Signals(signum).name}: finishing the current step, then saving a "
                 "resumable checkpoint (Ctrl-C again to abort without saving)")

    def request_stop(self, signum=signal.SIGINT):
        """Ask :meth:`fit` to save a checkpoint and stop after the current step (as Ctrl-C)."""
        self._stop_signal = signum

    # -- training ----------------------------------------------------------------------------
    def _train_step(self, xb, yb, epoch, k):
        """One SGD step; returns (loss, correct) or None when skipped (non-finite loss)."""
        buffers = None
        if self.config.skip_nonfinite:
            buffers = [(m, n, np.array(b, copy=True)) for m in self.model.modules()
                       for n, b in m._buffers.items() if b is not None]
        logits = self.model(xb)
        loss = F.cross_entropy(logits, yb)
        value = float(loss.data)
        if not math.isfinite(value):
            where = (f"epoch {epoch + 1}, step {k + 1}/{len(self.loader)} "
                     f"(global step {self.global_step + 1})")
            if self.config.skip_nonfinite:
                for m, n, b in buffers:
                    m._set_buffer(n, b)
                self.log(f"non-finite loss ({value}) at {where}: batch skipped")
                return None
            last = (f"{self.ckpt_path} (end of epoch {self.epoch})" if self.ckpt_path.exists()
                    and self.epoch > 0 else "none (no epoch finished yet)")
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at {where}. Last good checkpoint: {last}. "
                "Lower --lr, or pass --skip-nonfinite to skip such batches.")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return value, int((logits.data.argmax(axis=1) == yb).sum())

    def _train_epoch(self, epoch):
        c = self.config
        p = self.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": 0, "skipped": 0,
                             "time": 0.0}
        self.partial = p
        n_batches = len(self.loader)
        limit = n_batches if c.max_steps_per_epoch is None else min(n_batches,
                                                                    c.max_steps_per_epoch)
        t_start = time.monotonic() - p["time"]
        session_t0, session_images = time.monotonic(), 0
        for xb, yb in self.loader:
            k = p["steps"] + p["skipped"]
            result = self._train_step(xb, yb, epoch, k)
            self.global_step += 1
            if result is None:
                p["skipped"] += 1
            else:
                loss, correct = result
                p["loss_sum"] += loss * len(yb)
                p["correct"] += correct
                p["seen"] += len(yb)
                p["steps"] += 1
            session_images += len(yb)
            now = time.monotonic()
            p["time"] = now - t_start
            done = k + 1
            rate = session_images / max(now - session_t0, 1e-9)
            eta_epoch = (limit - done) * c.batch_size / max(rate, 1e-9)
            est_epoch = limit * c.batch_size / max(rate, 1e-9) + self._eval_estimate()
            eta_total = eta_epoch + self._eval_estimate() + (c.epochs - epoch - 1) * est_epoch
            self.progress.update(
                f"epoch {epoch + 1}/{c.epochs} step {done}/{limit} "
                f"loss {p['loss_sum'] / max(p['seen'], 1):.4f} "
                f"acc {100 * p['correct'] / max(p['seen'], 1):.2f}% "
                f"{rate:.1f} img/s lr {self.optimizer.lr:.4g} "
                f"ETA epoch {_fmt_time(eta_epoch)} total {_fmt_time(eta_total)}",
                force=done == limit)
            if done >= limit:
                if done < n_batches:  # cut short (smoke tests): move the loader to the next epoch
                    self.loader.set_epoch(epoch + 1)
                break
            if self._stop_signal is not None:
                return False  # mid-epoch; at the epoch's end, fit() evaluates and saves first
        return True

    def _eval_estimate(self):
        if self.history:
            return self.history[-1]["eval_time_s"]
        return 0.0

    def fit(self):
        """Train until ``config.epochs``; returns the summary dict. Raises
        :class:`TrainingInterrupted` after saving on SIGINT/SIGTERM, :class:`NonFiniteLossError`
        on a NaN/Inf loss."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        installed = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, self._handler)
        try:
            while self.epoch < c.epochs:
                epoch = self.epoch
                session_t0 = time.monotonic()
                finished = self._train_epoch(epoch)
                if not finished:
                    self.elapsed += time.monotonic() - session_t0
                    path = self.save_checkpoint()
                    self.progress.end()
                    msg = (f"interrupted at epoch {epoch + 1}, step "
                           f"{self.partial['steps'] + self.partial['skipped']}: saved {path}; "
                           f"continue with --resume")
                    self.log(msg)
                    raise TrainingInterrupted(msg, self._stop_signal, path)
                self.progress.end()
                p = self.partial
                t_eval = time.monotonic()
                test_loss, test_acc = evaluate(self.model, self.test_x, self.test_y,
                                               c.test_batch_size, self.dtype)
                eval_time = time.monotonic() - t_eval
                self.elapsed += time.monotonic() - session_t0
                row = {"epoch": epoch + 1, "lr": self.optimizer.lr,
                       "train_loss": p["loss_sum"] / max(p["seen"], 1),
                       "train_acc": p["correct"] / max(p["seen"], 1),
                       "test_loss": test_loss, "test_acc": test_acc,
                       "steps": p["steps"], "skipped_steps": p["skipped"],
                       "train_time_s": round(p["time"], 3),
                       "train_images_per_s": round((p["seen"] + p["skipped"] * c.batch_size)
                                                   / max(p["time"], 1e-9), 2),
                       "eval_time_s": round(eval_time, 3),
                       "eval_images_per_s": round(len(self.test_y) / max(eval_time, 1e-9), 2),
                       "elapsed_s": round(self.elapsed, 3)}
                self.history.append(row)
                self.partial = None
                self.epoch = epoch + 1
                self.scheduler.step()
                improved = test_acc > self.best_acc
                if improved:
                    self.best_acc, self.best_epoch = test_acc, epoch + 1
                self.save_checkpoint()
                if improved:
                    aio.save(self.best_path,
                             {f"model.{k}": v for k, v in self.model.state_dict().items()},
                             {"format": "addercore-weights", "epoch": epoch + 1,
                              "test_acc": test_acc, "config": c.as_dict()})
                self._append_metrics(row)
                self.plot()
                self.log(f"epoch {epoch + 1}/{c.epochs}: train loss {row['train_loss']:.4f} "
                         f"acc {100 * row['train_acc']:.2f}% | test loss {test_loss:.4f} "
                         f"acc {100 * test_acc:.2f}% | {row['train_images_per_s']:.1f} img/s, "
                         f"epoch {_fmt_time(row['train_time_s'])} + eval "
                         f"{_fmt_time(eval_time)}" + (" | best" if improved else ""))
                if self._stop_signal is not None and self.epoch < c.epochs:
                    msg = (f"interrupted after epoch {self.epoch}: saved {self.ckpt_path}; "
                           "continue with --resume")
                    self.log(msg)
                    raise TrainingInterrupted(msg, self._stop_signal, self.ckpt_path)
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)
        return self.summary()

    def summary(self):
        """Final numbers of the run (dict)."""
        last = self.history[-1] if self.history else {}
        return {"epochs": self.epoch, "global_step": self.global_step,
                "final_test_acc": last.get("test_acc"), "final_train_acc": last.get("train_acc"),
                "best_test_acc": self.best_acc if self.best_epoch else None,
                "best_epoch": self.best_epoch, "elapsed_s": round(self.elapsed, 1),
                "out": str(self.out)}


def train(config, train_data=None, test_data=None, resume=False, stream=None):
    """Run (or, with ``resume=True``, continue) the training described by ``config``; returns
    :meth:`Trainer.summary`. See :class:`Trainer` for the data arguments."""
    trainer = Trainer(config, train_data, test_data, stream=stream)
    if resume:
        trainer.resume()
    return trainer.fit()
