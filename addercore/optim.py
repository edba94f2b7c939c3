"""SGD with AdderNet's adaptive per-layer learning rate, and learning-rate schedules.

Adaptive scaling (method §5): an adder layer's filter gradient ``g`` is rescaled to
``g·η·sqrt(k)/max(‖g‖₂, 1e-12)`` (``k = g.size``). Two placements:

- ``"gradient"`` (default; the authors' training code, which produced their checkpoint): the raw
  gradient is rescaled first, then weight decay and momentum apply as for any parameter.
- ``"update"`` (the main paper's reading, method §5.2): the factor ``α = η·sqrt(k)/‖g‖₂`` of the raw
  gradient multiplies the layer's final SGD update (after weight decay and momentum).

A parameter is rescaled when its ``adaptive_eta`` is not None: :class:`addercore.nn.Adder2d`
keeps its filter Parameter's ``adaptive_eta`` equal to the layer's ``eta`` (at construction,
on ``layer.eta = ...`` and on ``layer.adder = Parameter(...)``), and the optimiser reads it at
every step, so the scaling follows the layer. Ordinary layers' parameters are never rescaled.
``SGD(eta=...)`` overrides every adder layer's own η (layers with ``eta=None`` stay plain).
"""
import math

import numpy as np

from .ops import adaptive_scale
from .tensor import Tensor

__all__ = ["SGD", "CosineAnnealingLR", "MultiStepLR"]

PLACEMENTS = ("gradient", "update")


class SGD:
    """Stochastic gradient descent with momentum, weight decay, Nesterov, adaptive scaling.

    Same update as ``torch.optim.SGD`` (dampening 0): ``d = g + wd·p``;
    ``buf = d`` at the first step, then ``buf = momentum·buf + d``; the step is ``buf`` or, with
    Nesterov, ``d + momentum·buf``; ``p -= lr·step``.

    ``params``: Tensors (``model.parameters()``); those with ``requires_grad=False`` (frozen)
    or without a gradient are skipped at each step. ``adaptive_scaling=False`` turns the
    scaling off for every layer; ``eta`` overrides every adder layer's own η.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                 adaptive_scaling=True, eta=None, placement="gradient"):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: pass model.parameters()")
        for index, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{index}] must be a Tensor (a Parameter), got "
                                f"{type(p).__name__}; pass model.parameters()")
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if eta is not None and not eta > 0:
            raise ValueError(f"eta must be positive or None, got {eta!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.adaptive_scaling = bool(adaptive_scaling)
        self.eta = eta  # overrides every layer's own eta when set
        self.placement = placement
        self.momentum_buffers = [None] * len(self.params)
        self.step_count = 0

    def _eta_for(self, p):
        # read at every step: the layer may have changed its eta (see the module docstring)
        layer_eta = getattr(p, "adaptive_eta", None)
        if not self.adaptive_scaling or layer_eta is None:
            return None
        return self.eta if self.eta is not None else layer_eta

    def zero_grad(self):
        """Drop every parameter's gradient."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Apply one update to every parameter that requires and has a gradient."""
        for index, p in enumerate(self.params):
            if p.grad is None or not p.requires_grad:
                continue
            grad = p.grad
            if grad.shape != p.data.shape or grad.dtype != p.data.dtype:
                raise ValueError(
                    f"parameter {index} ({p.name or 'unnamed'}) has data {p.data.shape} "
                    f"{p.data.dtype} but grad {grad.shape} {grad.dtype}"
                )
            eta = self._eta_for(p)
            update_factor = 1.0
            if eta is not None:
                if self.placement == "gradient":
                    grad = adaptive_scale(grad, eta)
                else:
                    norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))
                    update_factor = eta * math.sqrt(grad.size) / max(norm, 1e-12)
            d = grad + self.weight_decay * p.data if self.weight_decay else grad
            if self.momentum:
                buf = self.momentum_buffers[index]
                if buf is None:
                    buf = np.array(d, dtype=p.data.dtype, copy=True)
                else:
                    buf *= self.momentum
                    buf += d
                self.momentum_buffers[index] = buf
                d = d + self.momentum * buf if self.nesterov else buf
            scale = p.data.dtype.type(self.lr * update_factor)
            p.data -= scale * d
        self.step_count += 1

    def state_dict(self):
        """Dict of numpy arrays: ``lr``, ``step_count`` and ``momentum_buffer.<i>`` (param order)."""
        state = {"lr": np.array(self.lr), "step_count": np.array(self.step_count, dtype=np.int64)}
        for index, buf in enumerate(self.momentum_buffers):
            if buf is not None:
                state[f"momentum_buffer.{index}"] = buf.copy()
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (buffers must match the parameters)."""
        self.lr = float(state["lr"])
        self.step_count = int(state["step_count"])
        buffers = [None] * len(self.params)
        for key, value in state.items():
            if not key.startswith("momentum_buffer."):
                continue
            index = int(key.split(".", 1)[1])
            if index >= len(self.params) or np.shape(value) != self.params[index].data.shape:
                raise ValueError(
                    f"{key} of shape {np.shape(value)} does not match the optimiser's parameters"
                )
            buffers[index] = np.array(value, dtype=self.params[index].data.dtype, copy=True)
        self.momentum_buffers = buffers


class _EpochSchedule:
    """Sets ``optimizer.lr = lr_at(epoch)``; call :meth:`step` once at the end of each epoch."""

    def __init__(self, optimizer, base_lr=None):
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr if base_lr is None else base_lr)
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def state_dict(self):
        return {"last_epoch": np.array(self.last_epoch, dtype=np.int64),
                "base_lr": np.array(self.base_lr)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class CosineAnnealingLR(_EpochSchedule):
    """``lr(e) = eta_min + (base_lr - eta_min)·(1 + cos(π·e/T))/2`` (method §8 with T = epochs)."""

    def __init__(self, optimizer, total_epochs, eta_min=0.0, base_lr=None):
        if not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"total_epochs must be a positive int, got {total_epochs!r}")
        self.total_epochs = total_epochs
        self.eta_min = float(eta_min)
        super().__init__(optimizer, base_lr)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * epoch / self.total_epochs)) / 2


class MultiStepLR(_EpochSchedule):
    """``lr(e) = base_lr·gamma^(number of milestones <= e)``."""

    def __init__(self, optimizer, milestones, gamma=0.1, base_lr=None):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, base_lr)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if m <= epoch)
