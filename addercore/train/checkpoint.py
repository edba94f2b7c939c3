"""The resumable training checkpoint (``checkpoint.npz``): its format and its checks.

Arrays: ``model.*`` (weights and BatchNorm buffers), ``optim.*`` (momentum buffers, step count),
``sched.*`` (the schedule). JSON metadata: ``format`` / ``version``, the configuration, the
epoch, the batch loader's position, the running sums of a partially trained epoch, the metrics
history, the best epoch and accuracy, the elapsed time.
"""
from pathlib import Path

from .. import io as aio
from .config import RESUME_MUST_MATCH, TrainConfig

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "read_checkpoint", "settings_diff",
           "with_prefix", "without_prefix"]

CHECKPOINT_FORMAT = "addercore-train-checkpoint"
CHECKPOINT_VERSION = 1


def with_prefix(prefix, state):
    """``{prefix + name: array}`` for a state dict."""
    return {f"{prefix}{k}": v for k, v in state.items()}


def without_prefix(prefix, arrays):
    """The arrays whose names start with ``prefix``, the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def read_checkpoint(path):
    """``(arrays, meta)`` of the training checkpoint ``path``. FileNotFoundError (saying how to
    start instead) when absent, ValueError when it is not a training checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path} (start without --resume, "
                                f"or pass the --out directory of the interrupted run)")
    arrays, meta = aio.load(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint (format {meta.get('format')!r}); "
                         f"use --eval-only for weight files")
    return arrays, meta


def settings_diff(saved, config):
    """``["lr: checkpoint 0.05, now 0.2", ...]``: the settings of ``RESUME_MUST_MATCH`` in which
    ``config`` differs from the checkpoint's ``saved`` configuration dict."""
    mine = config.as_dict()
    # settings added after a checkpoint was written compare as their defaults
    defaults = TrainConfig().as_dict()
    return [f"{k}: checkpoint {saved.get(k, defaults[k])!r}, now {mine[k]!r}"
            for k in RESUME_MUST_MATCH if saved.get(k, defaults[k]) != mine[k]]
