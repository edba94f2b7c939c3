"""``Module``: parameters, buffers, children, state dicts with PyTorch's naming conventions.

Registration follows PyTorch's rules, by type: assigning a :class:`Parameter` registers a
parameter, a numpy array given to :meth:`Module.register_buffer` a buffer, a ``Module`` a
child; anything else (a plain :class:`~addercore.tensor.Tensor` cached in ``forward``, a
number) is an ordinary attribute that no optimiser or state dict sees.
"""
import warnings
from collections import OrderedDict

import numpy as np

from ..tensor import Tensor

__all__ = ["Module", "Parameter", "Sequential"]

# Key mismatches listed in load_state_dict's error: the first few, then a count (a whole
# ResNet's keys would bury the message).
_SHOW_KEYS = 5


class Parameter(Tensor):
    """A module's learnable array: a leaf :class:`~addercore.tensor.Tensor` that modules
    register by type (``module.w = Parameter(array)``).

    ``data``: array-like, or a leaf Tensor; its values are copied (dtype kept). A non-leaf
    Tensor (an op's output, part of a graph) is refused with ValueError: pass
    ``tensor.detach()`` to start a new parameter from its values.
    ``requires_grad=False`` freezes it: it stays in the state dict and ``parameters()``, and
    optimisers skip it (it may also be set later: ``p.requires_grad = False``).

    ``adaptive_eta`` (None by default): η of AdderNet's adaptive per-layer scaling (method §5)
    that :class:`addercore.optim.SGD` applies to this parameter's gradient. :class:`Adder2d`
    keeps its filter's value equal to the layer's ``eta`` (construction, ``layer.eta = ...``,
    ``layer.adder = Parameter(...)``); None means plain SGD.
    """

    adaptive_eta = None

    def __init__(self, data, requires_grad=True, *, name=None):
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {requires_grad!r} (the name is "
                            "a keyword argument: Parameter(data, name=...))")
        if isinstance(data, Tensor):
            if data._parents or data._backward is not None:
                raise ValueError(
                    f"Parameter(data): data is the output of op {data._op!r}, a non-leaf tensor "
                    "of a graph; a parameter must be a leaf: pass data.detach() to make a new "
                    "parameter from its values")
            data = data.data
        super().__init__(np.array(data, copy=True), requires_grad=requires_grad)
        self.name = name

    def __repr__(self):
        grad = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{grad})"


def _is_leaf(tensor):
    return not tensor._parents and tensor._backward is None


def _key_list(keys):
    """``count`` and the first few keys (long lists are cut)."""
    shown = ", ".join(keys[:_SHOW_KEYS])
    more = f", ... ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return f"{len(keys)} ({shown}{more})"


def _prefix_hint(state_keys, model_keys):
    """Advice when every checkpoint key carries DataParallel's ``module.`` prefix (and the
    model's keys do not), else None."""
    prefix = "module."
    if state_keys and all(k.startswith(prefix) for k in state_keys) \
            and not any(k.startswith(prefix) for k in model_keys):
        return ("every checkpoint key starts with 'module.' (saved from DataParallel): load "
                "addercore.io.strip_prefix(state, 'module.') instead")
    return None


def _kind_hint(missing, unexpected):
    """Advice when the model's adder filters (``.adder``) are ``.weight`` in the checkpoint
    (a multiplication network's) or the other way round, else None."""
    unexpected = set(unexpected)
    as_weight = sum(1 for k in missing
                    if k.endswith(".adder") and k[:-len("adder")] + "weight" in unexpected)
    as_adder = sum(1 for k in missing
                   if k.endswith(".weight") and k[:-len("weight")] + "adder" in unexpected)
    if as_weight and as_weight >= as_adder:
        return (f"{as_weight} adder filters ('.adder') are '.weight' in the checkpoint: it "
                "looks like a multiplication network's; build the model with kind='cnn'")
    if as_adder:
        return (f"{as_adder} '.weight' keys are adder filters ('.adder') in the checkpoint: it "
                "looks like an adder network's; build the model with kind='adder'")
    return None


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
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
            return
        if name in self._parameters and value is not None:
            raise TypeError(
                f"cannot assign {type(value).__name__} to parameter {name!r} of "
                f"{type(self).__name__}: a Parameter or None is expected (wrap the array: "
                f"nn.Parameter(values))")
        if name in self._buffers and (value is None or isinstance(value, np.ndarray)):
            self._set_buffer(name, value)  # rebinding a buffer keeps it a buffer
            return
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        if isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a :class:`Parameter`, leaf) under ``name``, as ``self.name = param``
        does. Re-assigning a registered name keeps its place in the state dict.

        Raises TypeError for anything but a Parameter, ValueError for a non-leaf one."""
        if not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}, ...): expected a Parameter, got "
                            f"{type(param).__name__} (wrap the array: nn.Parameter(values))")
        if not _is_leaf(param):
            raise ValueError(f"parameter {name!r} of {type(self).__name__} is the output of op "
                             f"{param._op!r} (a non-leaf tensor); parameters must be leaves")
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param  # an existing key keeps its position
        object.__setattr__(self, name, param)

    def register_buffer(self, name, array):
        """A non-learnable numpy array saved in the state dict (e.g. BatchNorm running stats).

        Assigning a numpy array (or None) to a buffer's name later (``self.name = array``,
        ``setattr(module, name, array)``) rebinds the buffer."""
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

    def named_children(self):
        """Yield ``(name, module)`` for the direct children, in registration order."""
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def _named_members(self, registry, prefix, recurse):
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, value in getattr(module, registry).items():
                yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(dotted_name, parameter)`` in registration order (frozen ones included);
        ``recurse=False``: this module's own only."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        """List of the :class:`Parameter` objects, frozen ones (``requires_grad=False``)
        included; optimisers skip those."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix="", recurse=True):
        """Yield ``(dotted_name, array)`` for the buffers (None ones included) in registration
        order; ``recurse=False``: this module's own only. Rebind one with
        ``setattr(module, name, array)``."""
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        """List of the buffer arrays (as :meth:`named_buffers`)."""
        return [b for _, b in self.named_buffers(recurse=recurse)]

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
        """Convert floating parameters and buffers to ``dtype`` (float32/float64) in place (the
        Parameter objects stay, so optimisers built before keep working); returns self."""
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
        """OrderedDict of name -> numpy array copy: parameters (frozen ones too) then buffers of
        each module, in registration order (PyTorch's names and order)."""
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

        Values are cast to each target's dtype and copied into the existing Parameter objects
        (optimisers built before keep them). Shape mismatches always raise ValueError; with
        ``strict=True`` missing and unexpected keys raise too (counts and the first few keys,
        plus what to do when every key carries DataParallel's ``module.`` prefix or the
        checkpoint is of the other network kind). Returns ``(missing_keys, unexpected_keys)``.
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
        prefix_hint = _prefix_hint(list(state), list(targets))
        problems = []
        if mismatched:
            problems.append(f"shape mismatch in {len(mismatched)} keys: "
                            + "; ".join(mismatched[:_SHOW_KEYS])
                            + (" ..." if len(mismatched) > _SHOW_KEYS else ""))
        if strict and missing:
            problems.append("missing keys: " + _key_list(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + _key_list(unexpected))
        if problems:
            hints = [h for h in (prefix_hint, _kind_hint(missing, unexpected)) if h]
            raise ValueError(f"cannot load state dict into {type(self).__name__}: "
                             + " | ".join(problems + hints))
        if prefix_hint and targets:  # strict=False: no key matched, nothing will be loaded
            warnings.warn(f"load_state_dict(strict=False) loads nothing: {prefix_hint}",
                          stacklevel=2)
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
