"""The settings of a training run (:class:`TrainConfig`) and which of them decide the numbers."""
import dataclasses
import math

import numpy as np

from ..ops.options import FILTER_GRADS, NORMS

__all__ = ["TrainConfig", "CIFAR_MODELS", "RESUME_MUST_MATCH"]

CIFAR_MODELS = ("resnet20", "resnet32", "resnet56", "vgg_small")
# Settings that decide the numbers: a resumed run must use the same values. Settings added after
# a checkpoint was written compare as their defaults (TrainConfig()), so old checkpoints resume.
RESUME_MUST_MATCH = ("dataset", "model", "kind", "norm", "filter_grad", "epochs", "batch_size",
                     "lr", "eta", "momentum", "weight_decay", "seed", "train_subset",
                     "test_subset", "dtype", "augment", "test_batch_size", "max_steps_per_epoch",
                     "precise_bn",
                     "sync_bn")  # (mpi) sync_bn: BatchNorm statistics over all ranks' batch


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the authors' CIFAR recipe)."""

    dataset: str = "cifar10"          # "cifar10" | "cifar100"
    data_dir: str = None              # None: $ADDERCORE_DATA, ~/.cache/addercore, download
    download: object = True           # True: into the cache if no data_dir; "root": into data_dir; False
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
    precise_bn: int = 0               # >0: also evaluate with BatchNorm statistics re-estimated
                                      # on this many training images (nn.recalibrate_batchnorm)
    sync_bn: bool = False             # (mpi) data-parallel runs: BatchNorm statistics over the
                                      # global batch of all ranks instead of each rank's share

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
        pb = self.precise_bn
        if isinstance(pb, bool) or not isinstance(pb, (int, np.integer)) or pb < 0 or pb == 1:
            # one image leaves the logits' BatchNorm (1x1 maps) no variance to estimate
            raise ValueError(f"precise_bn must be 0 (off) or a number of images >= 2, got {pb!r}")
        return self

    def as_dict(self):
        return dataclasses.asdict(self)

    def describe(self):
        """``resnet20 adder (l1)`` / ``resnet20 cnn``: the norm only means something for adders."""
        return f"{self.model} {self.kind}" + (f" ({self.norm})" if self.kind == "adder" else "")
