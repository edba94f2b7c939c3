"""The quantised model file: an uncompressed ``.npz`` written atomically by
:func:`addercore.io.save` (docs/integer-format.md).

It holds every array of :class:`~.model.QuantizedModel` under its name plus the graph (format
tag, version, bits, the op list) as JSON in the ``__metadata__`` entry. :func:`load` checks the
tag and version, then every array's presence, shape and dtype against the graph, and the
integer ranges (codes ≤ 2^bits − 1, group and view indices, shifts); a truncated or edited file
raises ValueError naming the file.
"""
import os

import numpy as np

from .. import io as aio
from .model import FORMAT, VERSION, QuantizedModel, code_dtype

__all__ = ["save", "load", "expected_arrays"]

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_I32, _I64 = np.dtype(np.int32), np.dtype(np.int64)


def save(path, model, overwrite=False):
    """Write ``model`` (:class:`QuantizedModel`) to ``path`` atomically. Refuses to replace an
    existing file unless ``overwrite=True`` (FileExistsError)."""
    if not isinstance(model, QuantizedModel):
        raise TypeError(f"save: model must be a QuantizedModel, got {type(model).__name__}")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    expected_arrays(model.graph)  # a model that would not load again is not written
    aio.save(path, model.arrays, model.graph)


def _pair(v, what):
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) and i >= 0 for i in v)):
        raise ValueError(f"{what} must be a pair of non-negative ints, got {v!r}")
    return tuple(v)


def expected_arrays(graph):
    """name -> (shape, dtype) of every array a file with this graph must hold. Raises
    ValueError when the graph itself is malformed."""
    if not isinstance(graph, dict) or graph.get("format") != FORMAT:
        raise ValueError(f"not an integer AdderNet file (format tag {FORMAT!r} missing)")
    if graph.get("version") != VERSION:
        raise ValueError(f"unsupported format version {graph.get('version')!r} (this reader: "
                         f"{VERSION})")
    bits = graph.get("bits")
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    if graph.get("code_dtype") != code_dtype(bits).name:
        raise ValueError(f"code_dtype must be {code_dtype(bits).name} for {bits} bits")
    if graph.get("glue") not in ("fixed", "float"):
        raise ValueError(f"glue must be 'fixed' or 'float', got {graph.get('glue')!r}")
    tensors, ops = graph.get("tensors"), graph.get("ops")
    if not isinstance(tensors, dict) or not isinstance(ops, list) or not ops:
        raise ValueError("graph needs 'tensors' (dict) and 'ops' (non-empty list)")
    ncls = graph.get("num_classes")
    if not isinstance(ncls, int) or ncls < 1:
        raise ValueError(f"num_classes must be a positive int, got {ncls!r}")
    exp = {}
    chans = {}
    for t, info in tensors.items():
        c, v = info.get("channels"), info.get("views")
        if not (isinstance(c, int) and c >= 1 and isinstance(v, int) and v >= 1):
            raise ValueError(f"tensor {t!r}: channels and views must be positive ints")
        chans[t] = (c, v)
        exp[f"{t}.scales"] = ((v,), _F64)
        exp[f"{t}.vmax"] = ((v,), _I32)
    cd = code_dtype(bits)
    produced, layers = {}, {}

    def tensor(name, what):
        if name not in chans:
            raise ValueError(f"{what} names an unknown tensor {name!r}")
        return chans[name]

    for i, op in enumerate(ops):
        kind = op.get("op") if isinstance(op, dict) else None
        where = f"op {i} ({kind})"
        if kind == "stem":
            c, _ = tensor(op.get("output"), where)
            kh, kw = _pair(op.get("kernel"), f"{where} kernel")
            _pair(op.get("stride"), f"{where} stride")
            _pair(op.get("padding"), f"{where} padding")
            exp["stem.weight"] = ((c, op.get("in_channels"), kh, kw), _F32)
            exp["stem.scale"] = ((c,), _F64)
            exp["stem.shift"] = ((c,), _F64)
            produced[op["output"]] = True
        elif kind == "adder":
            name = op.get("name")
            cin, _ = tensor(op.get("input"), where)
            if op.get("input") not in produced:
                raise ValueError(f"{where}: input {op.get('input')!r} is used before it is made")
            cout, g = op.get("out_channels"), op.get("groups")
            if op.get("in_channels") != cin or not isinstance(cout, int) or cout < 1 \
                    or not isinstance(g, int) or g < 1:
                raise ValueError(f"{where}: bad in/out channels or groups")
            kh, kw = _pair(op.get("kernel"), f"{where} kernel")
            _pair(op.get("stride"), f"{where} stride")
            _pair(op.get("padding"), f"{where} padding")
            exp[f"{name}.filters"] = ((cout, cin, kh, kw), cd)
            exp[f"{name}.group"] = ((cout,), _I32)
            exp[f"{name}.views"] = ((g,), _I32)
            exp[f"{name}.limit"] = ((g,), _I32)
            layers[name] = (cout, g)
        elif kind == "glue":
            name = op.get("name")
            cout, v = tensor(op.get("output"), where)
            srcs = op.get("sources")
            if not isinstance(srcs, list) or not srcs:
                raise ValueError(f"{where}: sources must be a non-empty list")
            for s in srcs:
                k, of = s.get("kind"), s.get("of")
                if k in ("S", "E"):
                    if of not in layers or layers[of][0] != cout:
                        raise ValueError(f"{where}: source {s} is not an earlier layer with "
                                         f"{cout} channels")
                    if k == "E" and layers[of][1] < 2:
                        raise ValueError(f"{where}: E source of an ungrouped layer {of!r}")
                elif k == "codes":
                    if of not in produced or chans[of][0] != cout:
                        raise ValueError(f"{where}: source {s} is not an earlier tensor with "
                                         f"{cout} channels")
                    if not isinstance(s.get("view", 0), int) or not 0 <= s.get("view", 0) \
                            < chans[of][1]:
                        raise ValueError(f"{where}: source {s} names a view that {of!r} lacks")
                else:
                    raise ValueError(f"{where}: unknown source kind {k!r}")
            nk = len(srcs)
            exp[f"{name}.alpha"] = ((nk, cout), _F64)
            exp[f"{name}.beta"] = ((cout,), _F64)
            exp[f"{name}.mult"] = ((v, nk, cout), _I32)
            exp[f"{name}.bias"] = ((v, cout), _I64)
            exp[f"{name}.shift"] = ((v,), _I32)
            produced[op["output"]] = True
        elif kind == "head":
            c, nv = tensor(op.get("input"), where)
            if op.get("input") not in produced:
                raise ValueError(f"{where}: input {op.get('input')!r} is used before it is made")
            if not isinstance(op.get("view", 0), int) or not 0 <= op.get("view", 0) < nv:
                raise ValueError(f"{where}: view {op.get('view')!r} out of range")
            exp["head.weight"] = ((ncls, c), _F32)
            exp["head.scale"] = ((ncls,), _F64)
            exp["head.shift"] = ((ncls,), _F64)
        else:
            raise ValueError(f"{where}: unknown op kind {kind!r}")
    if ops[-1].get("op") != "head" or ops[0].get("op") != "stem":
        raise ValueError("ops must start with 'stem' and end with 'head'")
    return exp


def _check_values(arrays, graph):
    qmax = (1 << graph["bits"]) - 1
    views = {t: info["views"] for t, info in graph["tensors"].items()}
    for op in graph["ops"]:
        if op["op"] == "adder":
            n = op["name"]
            if arrays[f"{n}.filters"].max(initial=0) > qmax:
                raise ValueError(f"{n}.filters has codes above 2^bits - 1 = {qmax}")
            g = op["groups"]
            grp, vw, lim = arrays[f"{n}.group"], arrays[f"{n}.views"], arrays[f"{n}.limit"]
            if grp.min(initial=0) < 0 or grp.max(initial=0) >= g:
                raise ValueError(f"{n}.group has indices outside [0, {g})")
            if vw.min(initial=0) < 0 or vw.max(initial=0) >= views[op["input"]]:
                raise ValueError(f"{n}.views has indices outside the input's views")
            if np.any(arrays[f"{op['input']}.vmax"][vw] != qmax):
                raise ValueError(f"{n} reads a view of {op['input']!r} whose vmax is not "
                                 f"2^bits - 1 = {qmax}")
            if lim.min(initial=1) < 1 or lim.max(initial=1) > qmax:
                raise ValueError(f"{n}.limit outside [1, {qmax}]")
        elif op["op"] == "glue":
            sh = arrays[f"{op['name']}.shift"]
            if sh.min(initial=1) < 1 or sh.max(initial=1) > 62:
                raise ValueError(f"{op['name']}.shift outside [1, 62]")
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has non-finite values")
        if name.endswith(".scales") and not np.all(a > 0):
            raise ValueError(f"{name} must be positive")
        if name.endswith(".vmax") and (a.min(initial=1) < 1 or a.max(initial=1) > 65535):
            raise ValueError(f"{name} must lie in [1, 65535]")


def load(path):
    """Read a quantised model file -> :class:`QuantizedModel`.

    Raises FileNotFoundError when absent and ValueError naming the file when it is truncated,
    corrupt, of another format or version, or any array is missing, extra, of the wrong shape
    or dtype, or out of range.
    """
    path = os.fspath(path)
    arrays, graph = aio.load(path)  # ValueError naming the file on truncation/corruption
    try:
        exp = expected_arrays(graph)
        missing = sorted(set(exp) - set(arrays))
        extra = sorted(set(arrays) - set(exp))
        if missing or extra:
            parts = ([f"missing {missing[:5]}"] if missing else []) + \
                ([f"unexpected {extra[:5]}"] if extra else [])
            raise ValueError(f"arrays {' and '.join(parts)}")
        for name, (shape, dtype) in exp.items():
            a = arrays[name]
            if a.shape != tuple(shape) or a.dtype != dtype:
                raise ValueError(f"array {name!r} must be {dtype} {tuple(shape)}, got "
                                 f"{a.dtype} {a.shape}")
        _check_values(arrays, graph)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: not a valid quantised AdderNet file: {e}") from None
    return QuantizedModel(arrays, graph)
