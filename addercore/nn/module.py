"""``Module``: parameters, buffers, children, state dicts with PyTorch's naming conventions."""
from collections import OrderedDict

import numpy as np

from ..tensor import Tensor

__all__ = ["Module", "Parameter", "Sequential"]


def Parameter(data, name=None):
    """A leaf Tensor that requires a gradient (a module's learnable array)."""
    t = Tensor(np.array(data, copy=True), requires_grad=True)
    t.name = name
    return t


class Module:
    """Base class: assign Parameters, buffers (numpy arrays, via :meth:`register_buffer`) and
    sub-modules as attributes; they are found by name, in assignment order, like PyTorch's."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -----------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() in {type(self).__name__}.__init__ first")
        if name in self._buffers and (value is None or isinstance(value, np.ndarray)):
            self._set_buffer(name, value)  # rebinding a buffer keeps it a buffer
            return
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Tensor) and value.requires_grad:
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A non-learnable numpy array saved in the state dict (e.g. BatchNorm running stats)."""
        self._set_buffer(name, array)

    def _set_buffer(self, name, array):
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    # -- traversal --------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """Yield ``(name, module)`` for self and every descendant, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        """Yield ``(dotted_name, parameter)`` in registration order."""
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        """List of the learnable Tensors (``requires_grad=True``)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for mod_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    # -- modes, gradients, dtype ------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (BatchNorm uses batch statistics); returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode (BatchNorm uses running statistics); returns self."""
        return self.train(False)

    def zero_grad(self):
        """Drop every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Convert floating parameters and buffers to ``dtype`` (float32/float64); returns self."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = None if p.grad is None else p.grad.astype(dtype)
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f":
                    m._set_buffer(name, b.astype(dtype))
        return self

    @property
    def dtype(self):
        """dtype of the first parameter (float32 by default)."""
        for p in self.parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    # -- state dicts ------------------------------------------------------------------------
    def state_dict(self):
        """OrderedDict of name -> numpy array copy: parameters then buffers of each module, in
        registration order (PyTorch's names and order)."""
        state = OrderedDict()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                state[prefix + name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None:
                    state[prefix + name] = np.array(b, copy=True)
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (name -> numpy array) into parameters and buffers.

        Values are cast to each target's dtype. Shape mismatches always raise; with
        ``strict=True`` missing and unexpected keys raise too (all of them listed).
        Returns ``(missing_keys, unexpected_keys)``.
        """
        targets = OrderedDict()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name in module._parameters:
                targets[prefix + name] = (module, name, "param")
            for name in module._buffers:
                targets[prefix + name] = (module, name, "buffer")
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        mismatched = []
        for key, (module, name, kind) in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            current = module._parameters[name].data if kind == "param" else module._buffers[name]
            if value.shape != current.shape:
                mismatched.append(f"{key}: expected {current.shape}, got {value.shape}")
        problems = []
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ValueError(
                f"cannot load state dict into {type(self).__name__}: " + " | ".join(problems)
            )
        for key, (module, name, kind) in targets.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            if kind == "param":
                p = module._parameters[name]
                p.data = value.astype(p.data.dtype, copy=True)
            else:
                current = module._buffers[name]
                module._set_buffer(name, value.astype(current.dtype, copy=True))
        return missing, unexpected

    # -- calling ----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def _check_input(self, x):
        """Hook: layers check their input Tensor here (rank, channels, dtype) and raise an error
        that names the layer; the default accepts anything."""

    def __call__(self, x, *args, **kwargs):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        self._check_input(x)
        return self.forward(x, *args, **kwargs)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Children named "0", "1", ... called in order."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
