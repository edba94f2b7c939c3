"""The training loop: :class:`Trainer` (one run: model, optimiser, schedule, loader, output
folder) and :func:`train`."""
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import io as aio
from ..data import BatchLoader
from ..optim import SGD, CosineAnnealingLR
from ..threads import set_num_threads
from .build import build_model, load_data
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint, settings_diff,
                         with_prefix, without_prefix)
from .evaluation import evaluate
from .metrics import append_metrics, plot_curves, rewrite_metrics
from .progress import Progress, fmt_time

__all__ = ["Trainer", "train", "NonFiniteLossError", "TrainingInterrupted"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (message: where, and the last good checkpoint)."""


class TrainingInterrupted(Exception):
    """Raised by :meth:`Trainer.fit` after Ctrl-C / SIGTERM once the checkpoint is saved."""

    def __init__(self, message, signum, checkpoint):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint


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
        self.progress = Progress(self.stream, log_interval)
        self._stop_signal = None

    # -- messages ----------------------------------------------------------------------------
    def log(self, text):
        self.progress.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- checkpoints -------------------------------------------------------------------------
    def _arrays(self):
        arrays = with_prefix("model.", self.model.state_dict())
        arrays.update(with_prefix("optim.", self.optimizer.state_dict()))
        arrays.update(with_prefix("sched.", self.scheduler.state_dict()))
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
        arrays, meta = read_checkpoint(path)
        diff = settings_diff(meta["config"], self.config)
        if diff:
            raise ValueError(f"{path}: the run was started with other settings; resuming would "
                             "not reproduce it: " + "; ".join(diff))
        self.model.load_state_dict(without_prefix("model.", arrays), strict=True)
        self.optimizer.load_state_dict(without_prefix("optim.", arrays))
        self.scheduler.load_state_dict(without_prefix("sched.", arrays))
        self.loader.load_state_dict(meta["loader"])
        self.epoch = int(meta["epoch"])
        self.global_step = int(meta["global_step"])
        self.history = list(meta["history"])
        self.partial = meta["partial"]
        self.best_acc = float(meta["best_acc"])
        self.best_epoch = meta["best_epoch"]
        self.elapsed = float(meta["elapsed"])
        rewrite_metrics(self.out, self.history)
        where = f"epoch {self.epoch + 1}" + (
            f", step {self.partial['steps'] + self.partial['skipped']}" if self.partial else "")
        self.log(f"resumed from {path} at {where} (global step {self.global_step})")

    def plot(self):
        """Write ``curves.png`` when matplotlib is importable; returns the path or None."""
        return plot_curves(self.out / "curves.png", self.history,
                           f"{self.config.describe()} on {self.config.dataset}")

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
    def _buffers(self):
        """Copies of the model's buffers (BatchNorm running statistics), by dotted name."""
        return {name: np.array(b, copy=True) for name, b in self.model.named_buffers()
                if b is not None}

    def _train_step(self, xb, yb, epoch, k):
        """One SGD step; returns (loss, correct) or None when skipped (non-finite loss)."""
        buffers = self._buffers() if self.config.skip_nonfinite else None
        logits = self.model(xb)
        loss = F.cross_entropy(logits, yb)
        value = float(loss.data)
        if not math.isfinite(value):
            where = (f"epoch {epoch + 1}, step {k + 1}/{len(self.loader)} "
                     f"(global step {self.global_step + 1})")
            if self.config.skip_nonfinite:
                self.model.load_state_dict(buffers, strict=False)  # statistics as before
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
                f"ETA epoch {fmt_time(eta_epoch)} total {fmt_time(eta_total)}",
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
                    aio.save(self.best_path, with_prefix("model.", self.model.state_dict()),
                             {"format": "addercore-weights", "epoch": epoch + 1,
                              "test_acc": test_acc, "config": c.as_dict()})
                append_metrics(self.out, row)
                self.plot()
                self.log(f"epoch {epoch + 1}/{c.epochs}: train loss {row['train_loss']:.4f} "
                         f"acc {100 * row['train_acc']:.2f}% | test loss {test_loss:.4f} "
                         f"acc {100 * test_acc:.2f}% | {row['train_images_per_s']:.1f} img/s, "
                         f"epoch {fmt_time(row['train_time_s'])} + eval "
                         f"{fmt_time(eval_time)}" + (" | best" if improved else ""))
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
