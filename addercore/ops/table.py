"""The op table: one entry per public op, the single source of truth for what an op has.

Each public function of :mod:`addercore.ops` is registered here by the ``@register`` decorator
it is defined under. Its entry names:

- ``name``: the public, validating function (``addercore.ops.<name>``); validation is that
  function's body, dispatch goes through :func:`implementation`;
- ``family``: the op it belongs to (``adder2d``, ``conv2d``, ...): forward, backward and
  helpers of one layer share a family, its test module ``tests/test_op_<family>.py`` and its
  golden kind;
- ``reference``: the numpy function in :mod:`addercore.ops.reference` (same name): the
  executable spec;
- ``compiled``: the function in :mod:`addercore.ops.fast` (same name), or None, and then
  ``no_compiled`` says why (a missing kernel is stated, never a silent fallback);
- ``agreement``: what compiled vs reference promise: ``"bit-exact"`` or ``"rounding"``
  (within floating-point tolerance), None when there is no compiled kernel;
- ``golden``: the golden kind (:mod:`addercore.golden.kinds`) whose cases cover it, or None.

From the table come ``addercore.ops.__all__``, :func:`compiled_ops`, the dispatch of every
public function, golden's per-kind registry check and the per-op test modules
(``tests/test_op_table.py`` checks they all agree). ``python -m addercore ops`` prints it.
"""
from dataclasses import dataclass

from .. import _backend
from . import reference

__all__ = ["OpEntry", "OPS", "register", "implementation", "entries", "families",
           "compiled_ops", "missing_compiled", "describe"]

AGREEMENTS = ("bit-exact", "rounding")


@dataclass(frozen=True)
class OpEntry:
    name: str
    family: str
    public: object
    reference: object
    compiled: str = None
    no_compiled: str = ""
    agreement: str = None
    golden: str = None

    @property
    def test_module(self):
        return f"tests/test_op_{self.family}.py"


#: name -> OpEntry, in definition order.
OPS = {}


def register(family, compiled=True, agreement="rounding", golden=None, no_compiled=""):
    """Decorator for a public op of :mod:`addercore.ops`: adds its entry to :data:`OPS`.

    ``compiled=True`` promises ``addercore.ops.fast.<name>`` (checked by the tests and made
    an error at call time if the compiled backend lacks it); ``compiled=False`` needs
    ``no_compiled``, the reason there is none. The reference function must exist: a missing
    one fails at import."""

    def deco(fn):
        name = fn.__name__
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        if compiled and agreement not in AGREEMENTS:
            raise ValueError(f"{name}: agreement must be one of {AGREEMENTS}")
        if not compiled and not no_compiled:
            raise ValueError(f"{name}: an op without a compiled kernel must say why")
        OPS[name] = OpEntry(name, family, fn, getattr(reference, name),
                            name if compiled else None, "" if compiled else no_compiled,
                            agreement if compiled else None, golden)
        return fn

    return deco


def implementation(name):
    """The function that runs op ``name`` now: the compiled one when the compiled backend is
    active and the table lists one, else the reference. A compiled kernel the table promises
    but the extension lacks raises (it would otherwise fall back silently and slowly)."""
    entry = OPS[name]
    fast = _backend.fast_module()
    if fast is None or entry.compiled is None:
        return entry.reference
    fn = getattr(fast, entry.compiled, None)
    if fn is None:
        raise RuntimeError(f"the op table promises a compiled {entry.compiled!r} but "
                           f"addercore.ops.fast has none: rebuild the extension or mark the "
                           f"op compiled=False in addercore/ops/__init__.py")
    return fn


def entries(family=None):
    """The table's entries (of one family), in definition order."""
    return [e for e in OPS.values() if family is None or e.family == family]


def families():
    """Op families, in definition order."""
    return list(dict.fromkeys(e.family for e in OPS.values()))


def compiled_ops():
    """Names of the ops that run a compiled kernel on the active backend (empty on numpy)."""
    fast = _backend.fast_module()
    if fast is None:
        return []
    return [e.name for e in OPS.values() if e.compiled and hasattr(fast, e.compiled)]


def missing_compiled():
    """Ops whose promised compiled kernel the loaded extension lacks (should be empty)."""
    fast = _backend.fast_module()
    if fast is None:
        return []
    return [e.name for e in OPS.values() if e.compiled and not hasattr(fast, e.compiled)]


def describe():
    """The table as text: one line per op (what ``python -m addercore ops`` prints)."""
    active = set(compiled_ops())
    rows = [("op", "family", "compiled kernel", "agreement", "golden", "active")]
    for e in OPS.values():
        kernel = f"fast.{e.compiled}" if e.compiled else f"none ({e.no_compiled})"
        rows.append((e.name, e.family, kernel, e.agreement or "-", e.golden or "-",
                     "compiled" if e.name in active else "reference"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if len(lines) == 1:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)
