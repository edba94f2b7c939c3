"""Data-parallel training over MPI ranks: :class:`DistributedTrainer`.

One step on ``N`` ranks is one step of one process on the whole global batch
(``config.batch_size`` images):

- every rank draws the same permutation and augmentation (``ShardedBatchLoader``) and trains on
  its contiguous share of the global batch;
- each rank back-propagates its mean loss weighted by ``share / global batch``, so the rank
  gradients add up to the gradient of the global batch's mean loss; they are summed in a fixed
  order (:meth:`~addercore.distributed.Communicator.sum_ordered`: by rank, in float64), and the
  optimiser (adaptive scaling η on the norm of the **summed** gradient, weight decay, momentum)
  then runs identically on every rank, so the parameters stay identical without broadcasts;
- BatchNorm: by default each rank normalises with its share's statistics (as PyTorch's
  DistributedDataParallel) and the running statistics are then replaced on every rank by the
  share-weighted mean of the ranks' updated running statistics (momentum applied once, to the
  mean of the ranks' batch statistics); with ``config.sync_bn`` the statistics are those of the
  global batch (:class:`~addercore.distributed.SyncBatchNorm2d`) and N ranks reproduce one
  process up to rounding;
- a non-finite loss or buffer on any rank, and a stop request (Ctrl-C / SIGTERM, or
  :meth:`request_stop`) on any rank, are agreed on in the step's collective, so every rank skips
  the same batch or stops after the same step;
- evaluation is sharded (each rank tests a contiguous share of the test set) and the sums are
  reduced; precise-BN re-estimation runs on every rank alike (same images, same statistics);
- rank 0 alone writes (checkpoint, best weights, metrics, plot, through the same atomic writes)
  and reads a checkpoint to resume, broadcasting it; the checkpoint holds nothing that depends
  on the number of ranks (the loader position counts global batches), so a run can be resumed
  with another number of ranks, or in one process.

Collectives per step: one allgather of a few numbers (loss, correct, flags, and the per-rank
BatchNorm running statistics) and one fixed-order sum of the gradients (about 2× the parameters
moved per rank); with ``sync_bn`` two small allgathers per BatchNorm layer besides. Errors and
timeouts: see :mod:`addercore.distributed.comm` (the caller ends the job with ``abort``).
"""
import math
import os
import signal

import numpy as np

from .. import functional as F
from ..distributed import ShardedBatchLoader, convert_sync_batchnorm, shard_bounds
from ..nn import BatchNorm2d
from .checkpoint import read_checkpoint
from .evaluation import evaluate
from .loop import NonFiniteLossError, NonFiniteStateError, Trainer

__all__ = ["DistributedTrainer"]

# positions in the per-step vector every rank contributes
_LOSS_SUM, _CORRECT, _BAD_LOSS, _BAD_BUFFER, _SIGNAL, _HEAD = range(6)


class MissingCheckpointError(FileNotFoundError):
    """``--resume`` without a checkpoint, raised alike on every rank by
    :meth:`DistributedTrainer.resume` (so callers may end every rank cleanly)."""


class DistributedTrainer(Trainer):
    """:class:`~addercore.train.Trainer` of one rank of a data-parallel run over ``comm`` (a
    :class:`~addercore.distributed.Communicator`). Every rank constructs one with the same
    ``config`` and data and calls the same methods (:meth:`resume`, :meth:`fit`) in the same
    order. Only rank 0 writes to ``stream`` and to ``config.out``.

    Raises ValueError when a rank would get no image of some batch (global batch, or the
    epoch's last, smaller than the number of ranks).
    """

    def __init__(self, config, comm, train_data=None, test_data=None, stream=None,
                 log_interval=30.0, overwrite=False, check_memory=True):
        self.comm = comm
        self.is_root = comm.is_root
        self._devnull = None
        if not self.is_root:
            self._devnull = stream = open(os.devnull, "w")
        super().__init__(config, train_data, test_data, stream=stream, log_interval=log_interval,
                         overwrite=overwrite, check_memory=check_memory)
        c = self.config
        self.loader = ShardedBatchLoader(self.train_x, self.train_y, c.batch_size, comm.rank,
                                         comm.size, shuffle=True, augment=c.augment,
                                         seed=c.seed, dtype=self.dtype)
        if self.loader.smallest_share() < 1:
            n, b = len(self.train_y), c.batch_size
            raise ValueError(
                f"{comm.size} ranks but a batch of {min(b, n, n % b or b)} images (batch size "
                f"{b}, {n} training images): every rank needs at least one image of every "
                "batch; use fewer ranks, a larger --batch-size, or a --train-subset whose last "
                "batch is not smaller than the number of ranks")
        self.bn_layers = [m for m in self.model.modules() if isinstance(m, BatchNorm2d)]
        if c.sync_bn:
            convert_sync_batchnorm(self.model, comm)
        self._pending_signal = None
        self._step_images = 0

    def close(self):
        super().close()
        if self._devnull is not None:
            self._devnull.close()
            self._devnull = None

    # -- rank 0 writes, every rank computes ------------------------------------------------
    def open_run(self, resume=False):
        if self.is_root:
            return super().open_run(resume)
        self._started = True

    def save_checkpoint(self):
        if self.is_root:
            return super().save_checkpoint()
        # the same check as rank 0 (identical state), so that every rank raises alike
        self._check_state(f"epoch {self.epoch + (1 if self.partial else 0)}, global step "
                          f"{self.global_step}")
        return self.ckpt_path

    def _write_best(self):
        return super()._write_best() if self.is_root else self.best_path

    def _recover_best(self, arrays):
        if self.is_root:
            super()._recover_best(arrays)

    def plot(self):
        return super().plot() if self.is_root else None

    def _append_metrics(self, row):
        if self.is_root:
            super()._append_metrics(row)

    def _rewrite_metrics(self):
        if self.is_root:
            super()._rewrite_metrics()

    def _read_checkpoint(self, path):
        """Rank 0 reads (and checks) the checkpoint and broadcasts it: other ranks need no
        access to ``out``."""
        arrays, meta = read_checkpoint(path) if self.is_root else (None, None)
        return self.comm.bcast_arrays(arrays, meta, what="checkpoint broadcast")

    def resume(self, path=None):
        """:meth:`Trainer.resume` on every rank: rank 0 checks that the checkpoint exists
        before anything is created and tells the others, so that a missing checkpoint raises
        the same :class:`MissingCheckpointError` (a FileNotFoundError) on every rank (not an
        abort with a run folder left)."""
        from pathlib import Path

        path = Path(path) if path is not None else self.ckpt_path
        missing = None
        if self.is_root and not path.exists():
            try:
                read_checkpoint(path)
            except FileNotFoundError as e:  # the message says what to do
                missing = str(e)
        missing = self.comm.bcast_json(missing, what="checkpoint check")
        if missing:
            raise MissingCheckpointError(missing)
        try:
            self.open_run(resume=True)
            self._restore(path)
        except BaseException:
            self.close()
            raise

    # -- stop requests: agreed on in each step's collective --------------------------------
    def _handler(self, signum, frame):
        if self._pending_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._pending_signal = signum
        self.log(f"\n{signal.Signals(signum).name}: finishing the current step on every rank, "
                 "then saving a resumable checkpoint")

    def request_stop(self, signum=signal.SIGINT):
        """Ask every rank to stop after the next step (agreed on in that step's collective)."""
        self._pending_signal = signum

    # -- the step --------------------------------------------------------------------------
    def _images_in(self, yb):
        return self._step_images

    def _running_stats(self):
        return [a for m in self.bn_layers for a in (m.running_mean, m.running_var)]

    def _train_step(self, xb, yb, epoch, k):
        c = self.config
        comm = self.comm
        n_global = self.loader.global_batch_size(k)
        self._step_images = n_global
        weight = len(yb) / n_global
        buffers = self._buffers()
        logits = self.model(xb)
        loss = F.cross_entropy(logits, yb)
        value = float(loss.data)
        bad_loss = not math.isfinite(value)
        bad_buffers = [] if bad_loss else self._nonfinite_buffers()
        head = np.zeros(_HEAD)
        head[_LOSS_SUM] = value * len(yb) if not bad_loss else 0.0
        head[_CORRECT] = int((logits.data.argmax(axis=1) == yb).sum())
        head[_BAD_LOSS], head[_BAD_BUFFER] = bad_loss, bool(bad_buffers)
        head[_SIGNAL] = self._pending_signal or 0
        stats = [] if c.sync_bn else self._running_stats()
        parts = [head] + [weight * s.astype(np.float64) for s in stats]
        rows = comm.allgather_rows(np.concatenate(parts), "step statistics")
        total = rows[0].copy()
        for r in range(1, comm.size):
            total += rows[r]
        signals = rows[:, _SIGNAL]
        if signals.any() and self._stop_signal is None:
            self._stop_signal = int(signals[np.nonzero(signals)[0][0]])
        where = (f"epoch {epoch + 1}, step {k + 1}/{len(self.loader)} "
                 f"(global step {self.global_step + 1})")
        bad_ranks = [r for r in range(comm.size) if rows[r, _BAD_LOSS] or rows[r, _BAD_BUFFER]]
        if bad_ranks:
            if c.skip_nonfinite:
                self.model.load_state_dict(buffers, strict=False)
                self.log(f"non-finite loss or BatchNorm statistics on rank(s) {bad_ranks} at "
                         f"{where}: batch skipped on every rank")
                return None
            cls = NonFiniteLossError if rows[:, _BAD_LOSS].any() else NonFiniteStateError
            raise cls(f"non-finite training {'loss' if cls is NonFiniteLossError else 'state'}"
                      f" on rank(s) {bad_ranks} at {where}. Last good checkpoint: "
                      f"{self._last_good()}. Lower --lr, check the input data, or pass "
                      "--skip-nonfinite to skip such batches.")
        offset = _HEAD
        for s in stats:  # share-weighted mean of the ranks' running statistics
            s[...] = total[offset:offset + s.size].astype(s.dtype)
            offset += s.size
        self.optimizer.zero_grad()
        loss.backward(np.asarray(weight, dtype=loss.data.dtype))
        self._sum_gradients()
        self.optimizer.step()
        return total[_LOSS_SUM] / n_global, int(round(total[_CORRECT]))

    def _sum_gradients(self):
        """Replace every parameter's gradient by the fixed-order sum over ranks (one
        collective over the concatenated gradients)."""
        # a parameter without a gradient has none on every rank (same graph): it stays so
        params = [p for p in self.optimizer.params if p.grad is not None]
        if not params:
            return
        dtype = params[0].data.dtype
        flat = np.concatenate([p.grad.astype(dtype, copy=False).ravel() for p in params])
        summed = self.comm.sum_ordered(flat)
        offset = 0
        for p in params:
            p.grad = summed[offset:offset + p.data.size].reshape(p.data.shape).astype(
                p.data.dtype, copy=False)
            offset += p.data.size

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self):
        """Each rank tests a contiguous share of the test set; loss and correct counts are
        summed by rank order."""
        lo, hi = shard_bounds(len(self.test_y), self.comm.rank, self.comm.size)
        seen = hi - lo
        loss = acc = 0.0
        if seen:
            loss, acc = evaluate(self.model, self.test_x[lo:hi], self.test_y[lo:hi],
                                 self.config.test_batch_size, self.dtype)
        total = self.comm.sum_rows([loss * seen, round(acc * seen), seen], "evaluation")
        n = max(total[2], 1)
        return float(total[0] / n), float(total[1] / n)
