"""Autograd-lite: a Tensor that records how it was made, and one backward pass over the graph.

Same idea as micrograd's ``engine.py``, at array granularity: each op in
:mod:`addercore.functional` computes its output with :mod:`addercore.ops`, then attaches a small
``_backward`` closure that turns the output's gradient into its inputs' gradients.
:meth:`Tensor.backward` sorts the graph topologically once and runs the closures in reverse.

After backward the graph is freed (closures, parent links and intermediate gradients are
dropped), so memory stays flat over thousands of steps. Gradients of leaves that require them
(parameters) accumulate in ``.grad`` until zeroed, as in PyTorch.

Recomputation (trading a cheap elementwise pass for activation memory): an op may also attach
a ``_recompute`` closure that rebuilds its output array, bit for bit, from its inputs. Then
:meth:`Tensor.release_data` drops the array once the forward no longer needs it, and the next
read of ``.data`` (typically a consumer's backward) calls ``_recompute`` and caches the result.
Closures never hold their own output Tensor strongly (a ``weakref`` at most), so a graph is freed
by reference counting alone.
"""
import contextlib

import numpy as np

__all__ = ["Tensor", "no_grad", "is_grad_enabled"]

_grad_enabled = True


def is_grad_enabled():
    """True unless inside :func:`no_grad`."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside record no graph (inference, optimiser updates)."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


class Tensor:
    """A numpy array (``.data``) with an optional gradient (``.grad``, same shape and dtype).

    ``requires_grad=True`` marks a leaf whose gradient is wanted (parameters). Tensors made by
    ops require a gradient when any input does and grad mode is on.
    """

    __array_priority__ = 100  # so ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        self.data = np.asarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._recompute = None
        self._op = ""
        self.name = None  # set by modules for their parameters (clear error messages)

    # -- construction helpers used by the ops -----------------------------------------------
    @classmethod
    def _from_op(cls, data, parents, backward, op, recompute=None):
        """Output of an op: records ``parents`` and ``backward`` (and ``recompute``, a function
        of no arguments returning ``data`` again, bit for bit) only when a gradient is needed.
        The output is a plain Tensor whatever ``cls`` is (an op's output is never a
        Parameter)."""
        out = Tensor(data)
        if _grad_enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
            out._recompute = recompute
            out._op = op
        return out

    # -- recomputation ----------------------------------------------------------------------
    # ``.data`` is a plain instance attribute (reading it costs nothing extra). Releasing deletes
    # it; Python then falls back to __getattr__ on the next read, which recomputes and stores it.
    def release_data(self):
        """Drop this op output's array until it is read again; ``.data`` then recomputes it
        (bit-identical) with the op's recompute rule and keeps it.

        Returns True when released; False (and keeps the array) when the tensor has no recompute
        rule: a leaf, an output made without a graph (``no_grad``, no input requiring a
        gradient) or of an op without one. Only consumers holding this Tensor (not its array)
        benefit; the ops of :mod:`addercore.functional` read their inputs' ``.data`` lazily in
        their backward."""
        if self._recompute is None:
            return False
        self.__dict__.pop("data", None)
        return True

    @property
    def is_released(self):
        """True while the array is released (the next ``.data`` read recomputes it)."""
        return "data" not in self.__dict__

    def __getattr__(self, name):
        # Called only when normal lookup fails: for "data", only after release_data().
        if name != "data":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        recompute = self.__dict__.get("_recompute")
        if recompute is None:
            raise RuntimeError(
                f"the data of this {self._op or 'tensor'} output was released and can no longer "
                f"be recomputed (its graph was freed by backward())")
        data = recompute()
        self.data = data
        return data

    def _accumulate(self, grad):
        """Add ``grad`` into ``self.grad`` (creating it) when this tensor wants a gradient."""
        if not self.requires_grad:
            return
        grad = np.asarray(grad, dtype=self.data.dtype)
        if grad.shape != self.data.shape:
            raise RuntimeError(
                f"internal error: gradient of shape {grad.shape} for a tensor of shape "
                f"{self.data.shape} (op {self._op or 'leaf'})"
            )
        if self.grad is None:
            # Leaves get their own copy: one array may be handed to several inputs (add), and
            # users and optimisers may modify a leaf's .grad in place. Intermediate gradients
            # are only read by the engine, so they are kept without copying.
            self.grad = grad.copy() if not self._parents else grad
        else:
            self.grad = self.grad + grad

    # -- autograd ---------------------------------------------------------------------------
    def backward(self, grad=None):
        """Back-propagate from this tensor; ``grad`` defaults to 1 for a single-element tensor.

        Runs every recorded ``_backward`` once, in reverse topological order, then frees the
        graph. Leaves keep (and accumulate) their ``.grad``; intermediate gradients are dropped.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require a gradient")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-element tensor, got shape "
                    f"{self.data.shape}"
                )
            grad = np.ones_like(self.data)
        order = self._topological_order()
        self._accumulate(grad)
        # Pop nodes child-first and release each one as soon as its backward has run: its
        # gradient is complete (every consumer ran before it), and dropping its closure and
        # parent links frees activations early, which halves a ResNet step's peak memory.
        while order:
            node = order.pop()
            if node._backward is not None and node.grad is not None:
                node._backward(node.grad)
            if node._parents:
                node.grad = None
            node._backward = None
            node._recompute = None
            node._parents = ()
        del node

    def _topological_order(self):
        """Nodes reachable from self, parents before children (iterative: deep graphs are fine)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if id(parent) not in seen:
                    stack.append((parent, False))
        return order

    def detach(self):
        """A tensor sharing this data, outside any graph."""
        return Tensor(self.data)

    def numpy(self):
        """The underlying numpy array (not a copy)."""
        return self.data

    def item(self):
        """The single element as a Python number."""
        return self.data.item()

    # -- array-like surface ------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.data.shape}, dtype={self.data.dtype}{grad})"

    # -- elementwise arithmetic (the ops live in addercore.functional) --------------------------
    # dtypes promote as numpy's do with the same operands, in either order (NEP 50): Tensors and
    # arrays keep their dtypes (float32 with float64 gives float64); a Python number is "weak"
    # and takes the Tensor's dtype when it fits (float32 Tensor * 2.0 stays float32). A - B is
    # computed as A + (-B), which is bit-identical (negation is exact).
    def __add__(self, other):
        from . import functional

        return functional.add(self, _operand(other, self))

    def __radd__(self, other):
        from . import functional

        return functional.add(_operand(other, self), self)

    def __sub__(self, other):
        from . import functional

        return functional.add(self, functional.neg(_operand(other, self)))

    def __rsub__(self, other):
        from . import functional

        return functional.add(_operand(other, self), functional.neg(self))

    def __neg__(self):
        from . import functional

        return functional.neg(self)

    def __mul__(self, other):
        from . import functional

        return functional.mul(self, _operand(other, self))

    def __rmul__(self, other):
        from . import functional

        return functional.mul(_operand(other, self), self)

    def sum(self):
        from . import functional

        return functional.sum(self)

    def mean(self):
        from . import functional

        return functional.mean(self)

    def reshape(self, *shape):
        from . import functional

        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return functional.reshape(self, shape)


# Python's own number types: "weak" operands in numpy's promotion. Exact types, because numpy's
# float64 scalar subclasses float but is a strong (float64) operand.
_PYTHON_SCALARS = (bool, int, float, complex)


def _operand(value, like):
    """``value`` as the other operand of a binary op with Tensor ``like``: a Tensor as is, a
    Python number as a 0-d array of numpy's result dtype for ``like`` and it, anything else as
    an array of its own dtype."""
    if isinstance(value, Tensor):
        return value
    if type(value) in _PYTHON_SCALARS:
        return Tensor(np.asarray(value, dtype=np.result_type(like.data, value)))
    return Tensor(np.asarray(value))
