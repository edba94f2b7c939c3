"""The CIFAR training loop (the authors' recipe, ``docs/method.md`` §8), resumable bit for bit.

Modules, one job each: :mod:`.config` (the settings), :mod:`.build` (the model and data they
name), :mod:`.loop` (:class:`Trainer`, :func:`train`), :mod:`.checkpoint` (the resumable
checkpoint's format), :mod:`.metrics` (metrics files, plot), :mod:`.progress` (the live line),
:mod:`.evaluation` (test accuracy, loading weights), :mod:`.rundir` (one run per output
folder, locked while it trains), :mod:`.memory` (refuse a step that cannot fit in memory).

>>> from addercore.train import TrainConfig, train
>>> summary = train(TrainConfig(epochs=10, out="runs/r20-adder"))   # doctest: +SKIP

Recipe defaults: SGD momentum 0.9 (not Nesterov), weight decay 5e-4, adaptive per-layer
scaling with η = 0.2 on the raw filter gradient of every adder layer, batch 256, cosine learning
rate ``lr(e) = lr/2·(1 + cos(π·e/epochs))`` set **once per epoch** (method §8's formula, with
``epochs`` in place of 400), random crop (zero-pad 4) + horizontal flip, normalisation with the
recipe's mean/std, test batch 100.

Output directory ``out``:

- ``checkpoint.npz`` — written atomically after every epoch and on Ctrl-C / SIGTERM (mid-epoch):
  model weights and BatchNorm buffers (``model.*``), optimiser momentum buffers and step count
  (``optim.*``), the schedule (``sched.*``) and, as JSON metadata, the configuration, the epoch,
  the batch loader's position (every batch is a pure function of ``(seed, epoch, batch)``), the
  running sums of a partially trained epoch and the metrics history. :func:`train` with
  ``resume=True`` continues from it and reproduces the uninterrupted run exactly (same weights,
  bit for bit, same metrics).
- ``best.npz`` — model weights of the epoch with the best test accuracy. The checkpoint carries
  the same weights (``best.model.*``) and is written first, so after a kill between the two
  writes the next start (``resume``) rewrites ``best.npz`` from it: the two never disagree.
- ``metrics.jsonl`` and ``metrics.csv`` — one row per epoch (appended; on resume rewritten from
  the checkpoint's history so that rows of unsaved epochs disappear).
- ``curves.png`` — loss and accuracy curves, when matplotlib is importable.
- ``command.txt`` — the command line of every start / resume.

One run per folder: a new run refuses a folder holding a run (:class:`RunExistsError`) unless
resumed or started with ``overwrite=True`` (which deletes the old run's files first); the folder
is locked while a process trains into it (:class:`RunFolderBusyError`); temporary files of a
killed write are removed at the next start. A batch size whose step cannot fit in the available
memory is refused up front (:class:`StepMemoryError`).

Non-finite loss: training stops with :class:`NonFiniteLossError` naming the epoch, step and the
last good checkpoint, unless ``skip_nonfinite`` is set; then the batch is skipped (no update,
BatchNorm statistics restored) and counted in the metrics (``skipped_steps``). A finite loss
with a non-finite buffer (a BatchNorm running variance overflowed) is treated the same way
(:class:`NonFiniteStateError`), and no checkpoint is ever written with a NaN/Inf parameter or
buffer.
"""
from .build import build_model, load_data
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from .config import CIFAR_MODELS, RESUME_MUST_MATCH, TrainConfig
from .evaluation import evaluate, load_weights, precise_bn_batches
from .loop import (CheckpointWriteError, NonFiniteError, NonFiniteLossError, NonFiniteStateError,
                   Trainer, TrainingInterrupted, train)
from .memory import StepMemoryError, check_step_memory, step_bytes
from .metrics import METRIC_FIELDS
from .rundir import RunExistsError, RunFolder, RunFolderBusyError, RunFolderError

__all__ = ["TrainConfig", "Trainer", "train", "evaluate", "load_weights", "precise_bn_batches",
           "NonFiniteLossError",
           "TrainingInterrupted", "METRIC_FIELDS", "NonFiniteError", "NonFiniteStateError",
           "CheckpointWriteError", "RunFolderError", "RunExistsError", "RunFolderBusyError",
           "StepMemoryError"]
