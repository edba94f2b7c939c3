"""The CIFAR training loop (the authors' recipe, spec §4), resumable bit for bit.

Modules, one job each: :mod:`.config` (the settings), :mod:`.build` (the model and data they
name), :mod:`.loop` (:class:`Trainer`, :func:`train`), :mod:`.checkpoint` (the resumable
checkpoint's format), :mod:`.metrics` (metrics files, plot), :mod:`.progress` (the live line),
:mod:`.evaluation` (test accuracy, loading weights).

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
from .build import build_model, load_data
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from .config import CIFAR_MODELS, RESUME_MUST_MATCH, TrainConfig
from .evaluation import evaluate, load_weights
from .loop import NonFiniteLossError, Trainer, TrainingInterrupted, train
from .metrics import METRIC_FIELDS

__all__ = ["TrainConfig", "Trainer", "train", "evaluate", "load_weights", "NonFiniteLossError",
           "TrainingInterrupted", "METRIC_FIELDS"]
