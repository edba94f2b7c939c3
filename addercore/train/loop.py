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
from ..data.transforms import normalize
from ..nn import recalibrate_batchnorm
from ..optim import SGD, CosineAnnealingLR
from ..threads import set_num_threads
from .build import build_model, load_data
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint, settings_diff,
                         with_prefix, without_prefix)
from .evaluation import evaluate, precise_bn_batches
from .metrics import NO_PLOT_MESSAGE, append_metrics, plot_curves, rewrite_metrics
from .memory import check_step_memory
from .progress import Progress, fmt_time
from .rundir import RunFolder

__all__ = ["Trainer", "train", "NonFiniteError", "NonFiniteLossError", "NonFiniteStateError",
           "CheckpointWriteError", "TrainingInterrupted"]

CIFAR_TRAIN_IMAGES = 50000  # CIFAR-10 and CIFAR-100 alike


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf (message: where, what, and the last good checkpoint)."""


class NonFiniteLossError(NonFiniteError):
    """The training loss became NaN or Inf (message: where, and the last good checkpoint)."""


class NonFiniteStateError(NonFiniteError):
    """A parameter or buffer (e.g. a BatchNorm running variance) became NaN or Inf while the loss
    stayed finite; such a state is never saved as a checkpoint."""


class CheckpointWriteError(OSError):
    """A checkpoint or weights file could not be written (message: the file and the reason);
    the previous version of the file is intact."""

    def __str__(self):
        return self.strerror


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
    ``overwrite``: a new run may replace a run found in ``config.out`` (its files are deleted
    first); without it :meth:`fit` refuses such a folder (:class:`~.rundir.RunExistsError`).
    ``check_memory``: refuse (:class:`~.memory.StepMemoryError`) a batch size whose training
    step would not fit in the available memory, before loading anything.
    """

    def __init__(self, config, train_data=None, test_data=None, stream=None, log_interval=30.0,
                 overwrite=False, check_memory=True):
        self.config = config.validate()
        self.stream = sys.stderr if stream is None else stream
        self.out = Path(config.out)
        self.ckpt_path = self.out / "checkpoint.npz"
        self.best_path = self.out / "best.npz"
        self.overwrite = bool(overwrite)
        self.folder = RunFolder(self.out)
        self.folder.check_path()
        if check_memory:
            n_train = (len(train_data[1]) if train_data is not None else
                       min(config.train_subset or CIFAR_TRAIN_IMAGES, CIFAR_TRAIN_IMAGES))
            check_step_memory(config.model, min(config.batch_size, n_train), config.dtype)
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
        self.best_state = None         # weights (and buffers) of the best epoch
        self._started = False          # the run folder was checked and opened once
        self._good_epoch = None        # epoch of the checkpoint on disk when its state is finite
        self._said_no_plot = False
        self._saving = False
        self._abort_requested = False
        self.partial = None            # running sums of a partially trained epoch
        self.elapsed = 0.0             # training + eval seconds over all sessions
        self.progress = Progress(self.stream, log_interval)
        self._stop_signal = None

    # -- messages ----------------------------------------------------------------------------
    def log(self, text):
        self.progress.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- the run folder ----------------------------------------------------------------------
    def open_run(self, resume=False):
        """Lock ``out`` for this process (held until :meth:`close`; :meth:`fit` closes it at its
        end), remove stale temporary files, and, unless ``resume``, refuse a folder that holds a
        run (or delete that run when the trainer was made with ``overwrite=True``)."""
        if self.folder.locked:
            return
        # a later fit() of this trainer (after an interruption) continues its own run
        removed = self.folder.open(resume=resume or self._started, overwrite=self.overwrite)
        self._started = True
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left by a killed write in "
                     f"{self.out}: {', '.join(removed)}")

    def close(self):
        """Release the run folder's lock (idempotent)."""
        self.folder.close()

    # -- checkpoints -------------------------------------------------------------------------
    def _arrays(self):
        arrays = with_prefix("model.", self.model.state_dict())
        arrays.update(with_prefix("optim.", self.optimizer.state_dict()))
        arrays.update(with_prefix("sched.", self.scheduler.state_dict()))
        if self.best_state is not None:
            # best.npz's content travels in the checkpoint: one atomic write decides both, and
            # best.npz is re-derived from it after a kill between the two writes
            arrays.update(with_prefix("best.model.", self.best_state))
        return arrays

    def nonfinite_state(self):
        """Names of the parameters and buffers holding NaN or Inf (empty when all finite)."""
        bad = [n for n, p in self.model.named_parameters() if not np.isfinite(p.data).all()]
        return bad + self._nonfinite_buffers()

    def _nonfinite_buffers(self):
        return [n for n, b in self.model.named_buffers() if b is not None
                and np.asarray(b).dtype.kind in "fc" and not np.isfinite(b).all()]

    def _last_good(self):
        if self._good_epoch:
            return f"{self.ckpt_path} (end of epoch {self._good_epoch})"
        return "none (no epoch finished yet)" if self.epoch == 0 else "none"

    def _check_state(self, where):
        """The names of non-finite parameters/buffers (empty: the state is good). Raises
        :class:`NonFiniteStateError` unless ``skip_nonfinite`` (then the checkpoint is written
        but marked, and never named the last good one)."""
        bad = self.nonfinite_state()
        if bad:
            listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            if not self.config.skip_nonfinite:
                raise NonFiniteStateError(
                    f"non-finite model state ({listed}) at {where}: not saved. Last good "
                    f"checkpoint: {self._last_good()}. Lower --lr, or check the input data.")
            self.log(f"warning: non-finite model state ({listed}) at {where}; the checkpoint "
                     "is saved (--skip-nonfinite) but marked as not good")
        return bad

    def _save(self, path, arrays, meta):
        self._saving = True  # a second Ctrl-C now waits for the write (a fraction of a second)
        try:
            aio.save(path, arrays, meta)
        except OSError as e:
            raise CheckpointWriteError(e.errno, f"cannot write {path}: {e.strerror or e} (the "
                                       "previous version, if any, is intact)") from e
        finally:
            self._saving = False
        if self._abort_requested:
            raise KeyboardInterrupt  # the second Ctrl-C that arrived during the write
        return path

    def save_checkpoint(self):
        """Write ``checkpoint.npz`` atomically (resumable state, mid-epoch included). Raises
        :class:`NonFiniteStateError` instead when a parameter or buffer is NaN/Inf, and
        :class:`CheckpointWriteError` when the file cannot be written."""
        bad = self._check_state(f"epoch {self.epoch + (1 if self.partial else 0)}, global "
                                f"step {self.global_step}")
        meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": self.config.as_dict(), "epoch": self.epoch,
                "global_step": self.global_step, "loader": self.loader.state_dict(),
                "partial": self.partial, "history": self.history, "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "elapsed": self.elapsed,
                "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        if bad:
            meta["nonfinite"] = bad  # (older checkpoints lack the key: they were never marked)
        path = self._save(self.ckpt_path, self._arrays(), meta)
        if not bad and self.partial is None:
            self._good_epoch = self.epoch
        elif bad:
            self._good_epoch = None
        return path

    def _best_meta(self):
        meta = {"format": "addercore-weights", "epoch": self.best_epoch,
                "test_acc": self.best_acc, "config": self.config.as_dict()}
        if self.config.precise_bn:
            meta["batchnorm_statistics"] = (f"re-estimated on {self.config.precise_bn} training "
                                            "images (precise BN)")
        return meta

    def _write_best(self):
        """Write ``best.npz`` from :attr:`best_state` (after the checkpoint that records it)."""
        return self._save(self.best_path, with_prefix("model.", self.best_state),
                          self._best_meta())

    def _recover_best(self, arrays):
        """Make ``best.npz`` agree with the checkpoint just resumed (a kill between the
        checkpoint's write and best.npz's leaves the older best.npz, or none)."""
        if self.best_epoch is None:
            return
        try:
            best_arrays, best_meta = aio.load(self.best_path)
        except (OSError, ValueError):
            best_arrays, best_meta = None, {}
        on_disk = best_meta.get("epoch")
        embedded = without_prefix("best.model.", arrays)
        if embedded:
            self.best_state = embedded
            if on_disk != self.best_epoch:
                self._write_best()
                self.log(f"best.npz: rewritten with epoch {self.best_epoch} from the checkpoint "
                         f"(it held {'epoch %s' % on_disk if on_disk else 'nothing'})")
        elif on_disk == self.best_epoch:  # checkpoint written before best weights travelled in it
            self.best_state = without_prefix("model.", best_arrays)
        else:
            self.log(f"warning: {self.best_path} holds {'epoch %s' % on_disk if on_disk else 'nothing'}"
                     f" but the checkpoint's best epoch is {self.best_epoch}; it is replaced at "
                     "the next better epoch")

    def resume(self, path=None):
        """Restore the state saved in ``path`` (default ``out/checkpoint.npz``), after locking
        the run folder (see :meth:`open_run`). Nothing is created when the checkpoint is
        missing or does not fit."""
        path = Path(path) if path is not None else self.ckpt_path
        read_checkpoint(path) if not path.exists() else None  # FileNotFoundError, says what to do
        try:
            self.open_run(resume=True)
            self._restore(path)
        except BaseException:
            self.close()
            raise

    def _restore(self, path):
        arrays, meta = self._read_checkpoint(path)
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
        if not meta.get("nonfinite") and self.epoch > 0:
            self._good_epoch = self.epoch
        if path == self.ckpt_path:
            self._recover_best(arrays)
        self._rewrite_metrics()
        where = f"epoch {self.epoch + 1}" + (
            f", step {self.partial['steps'] + self.partial['skipped']}" if self.partial else "")
        self.log(f"resumed from {path} at {where} (global step {self.global_step})")

    def plot(self):
        """Write ``curves.png`` when matplotlib is importable; returns the path or None (then
        says once that no plot was written, and how to get one)."""
        try:
            return plot_curves(self.out / "curves.png", self.history,
                               f"{self.config.describe()} on {self.config.dataset}")
        except ImportError:
            if not self._said_no_plot:
                self._said_no_plot = True
                self.log(NO_PLOT_MESSAGE)
            return None

    # -- signals -----------------------------------------------------------------------------
    def _handler(self, signum, frame):
        if self._stop_signal is not None and signum == signal.SIGINT:
            if self._saving:  # never tear a write: abort right after it
                self._abort_requested = True
                return
            raise KeyboardInterrupt  # second Ctrl-C: abort now (last checkpoint stays)
        self._stop_signal = signum
        again = ("Ctrl-C again to abort without saving" if signum == signal.SIGINT else
                 "Ctrl-C to abort without saving")
        self.log(f"\n{signal.Signals(signum).name}: finishing the current step, then saving a "
                 f"resumable checkpoint ({again})")

    def request_stop(self, signum=signal.SIGINT):
        """Ask :meth:`fit` to save a checkpoint and stop after the current step (as Ctrl-C)."""
        self._stop_signal = signum

    # -- hooks a data-parallel trainer (train/distributed.py) overrides ---------------------
    def _images_in(self, yb):
        """Images the step on batch ``yb`` trained on (all ranks together when distributed)."""
        return len(yb)

    def _evaluate(self):
        """Test ``(loss, accuracy)`` of the model as it is."""
        return evaluate(self.model, self.test_x, self.test_y, self.config.test_batch_size,
                        self.dtype)

    def _append_metrics(self, row):
        append_metrics(self.out, row)

    def _rewrite_metrics(self):
        rewrite_metrics(self.out, self.history)

    def _read_checkpoint(self, path):
        return read_checkpoint(path)

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
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at {where}. Last good checkpoint: "
                f"{self._last_good()}. Lower --lr, or pass --skip-nonfinite to skip such batches.")
        # a finite loss does not prove finite statistics: one huge input value can make a
        # BatchNorm running variance overflow while the normalised output stays finite
        bad = self._nonfinite_buffers()
        if bad:
            where = (f"epoch {epoch + 1}, step {k + 1}/{len(self.loader)} "
                     f"(global step {self.global_step + 1})")
            if self.config.skip_nonfinite:
                self.model.load_state_dict(buffers, strict=False)
                self.log(f"non-finite {', '.join(bad)} at {where}: batch skipped")
                return None
            raise NonFiniteStateError(
                f"non-finite {', '.join(bad)} at {where} (the loss, {value:.4g}, is finite: an "
                f"input or activation overflowed). Last good checkpoint: {self._last_good()}. "
                "Lower --lr, check the input data, or pass --skip-nonfinite to skip such batches.")
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
                p["loss_sum"] += loss * self._images_in(yb)
                p["correct"] += correct
                p["seen"] += self._images_in(yb)
                p["steps"] += 1
            session_images += self._images_in(yb)
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

    def precise_bn_batches(self):
        """The batches BatchNorm statistics are re-estimated on
        (:func:`.evaluation.precise_bn_batches` with this run's ``precise_bn``, seed and batch
        size)."""
        c = self.config
        return precise_bn_batches(self.train_x, c.precise_bn, c.seed, c.batch_size, self.dtype)

    def evaluate_precise_bn(self):
        """Test ``(loss, accuracy, state)`` with BatchNorm statistics re-estimated on
        :meth:`precise_bn_batches` (``state``: that model's state dict); the training-time
        running statistics are restored afterwards (the run continues bit for bit)."""
        buffers = self._buffers()
        try:
            recalibrate_batchnorm(self.model, self.precise_bn_batches())
            loss, acc = self._evaluate()
            state = self.model.state_dict()
        finally:
            self.model.load_state_dict(buffers, strict=False)
        return loss, acc, state

    def _eval_estimate(self):
        if self.history:
            return self.history[-1]["eval_time_s"]
        return 0.0

    def fit(self):
        """Train until ``config.epochs``; returns the summary dict. Raises
        :class:`TrainingInterrupted` after saving on SIGINT/SIGTERM, :class:`NonFiniteLossError`
        on a NaN/Inf loss."""
        c = self.config
        self.open_run()
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
                    self.progress.end()
                    where = (f"interrupted at epoch {epoch + 1}, step "
                             f"{self.partial['steps'] + self.partial['skipped']}")
                    self._interrupt(where)
                self.progress.end()
                p = self.partial
                t_eval = time.monotonic()
                test_loss, test_acc = self._evaluate()
                pbn_loss = pbn_acc = pbn_state = None
                if c.precise_bn:
                    pbn_loss, pbn_acc, pbn_state = self.evaluate_precise_bn()
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
                       "elapsed_s": round(self.elapsed, 3),
                       "precise_bn_test_loss": pbn_loss, "precise_bn_test_acc": pbn_acc}
                self.history.append(row)
                self.partial = None
                self.epoch = epoch + 1
                self.scheduler.step()
                # with precise BN, the best epoch and best.npz are those of the re-estimated
                # statistics (the model one would deploy), else of the running statistics
                score = test_acc if pbn_acc is None else pbn_acc
                improved = score > self.best_acc
                if improved:
                    self.best_acc, self.best_epoch = score, epoch + 1
                    self.best_state = self.model.state_dict() if pbn_state is None else pbn_state
                if self._stop_signal is not None and self.epoch < c.epochs:
                    self._interrupt(f"interrupted after epoch {self.epoch}", row=row,
                                    improved=improved)
                self.save_checkpoint()
                if improved:
                    self._write_best()
                self._append_metrics(row)
                self.plot()
                self.log(self._epoch_line(row, improved))
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)
            self.close()
        return self.summary()

    def _epoch_line(self, row, improved):
        c = self.config
        return (f"epoch {row['epoch']}/{c.epochs}: train loss {row['train_loss']:.4f} "
                f"acc {100 * row['train_acc']:.2f}% | test loss {row['test_loss']:.4f} "
                f"acc {100 * row['test_acc']:.2f}%"
                + (f" (precise BN {100 * row['precise_bn_test_acc']:.2f}%)"
                   if row.get("precise_bn_test_acc") is not None else "")
                + f" | {row['train_images_per_s']:.1f} img/s, "
                f"epoch {fmt_time(row['train_time_s'])} + eval "
                f"{fmt_time(row['eval_time_s'])}" + (" | best" if improved else ""))

    def _interrupt(self, where, row=None, improved=False):
        """Save after SIGINT/SIGTERM and raise :class:`TrainingInterrupted`; when the save
        fails (full disk, non-finite state) the message says so and the older checkpoint
        stays. ``row``: the metrics of an epoch that just ended (written as usual)."""
        try:
            path = self.save_checkpoint()
            if row is not None:
                if improved:
                    self._write_best()
                self._append_metrics(row)
                self.plot()
                self.log(self._epoch_line(row, improved))
            msg = f"{where}: saved {path}; continue with --resume"
        except (OSError, NonFiniteError) as e:
            path = None
            msg = f"{where}, but the checkpoint was NOT saved: {e}"
        self.log(msg)
        raise TrainingInterrupted(msg, self._stop_signal, path)

    def summary(self):
        """Final numbers of the run (dict)."""
        last = self.history[-1] if self.history else {}
        return {"epochs": self.epoch, "global_step": self.global_step,
                "final_test_acc": last.get("test_acc"), "final_train_acc": last.get("train_acc"),
                "best_test_acc": self.best_acc if self.best_epoch else None,
                "best_epoch": self.best_epoch, "elapsed_s": round(self.elapsed, 1),
                "out": str(self.out)}


def train(config, train_data=None, test_data=None, resume=False, stream=None, overwrite=False):
    """Run (or, with ``resume=True``, continue) the training described by ``config``; returns
    :meth:`Trainer.summary`. See :class:`Trainer` for the data arguments and ``overwrite``."""
    trainer = Trainer(config, train_data, test_data, stream=stream, overwrite=overwrite)
    if resume:
        trainer.resume()
    return trainer.fit()
