"""The quantised AdderNet: a small graph of integer ops and the interpreter that runs it.

A :class:`QuantizedModel` is ``arrays`` (dict name -> ndarray) plus ``graph`` (JSON-able dict:
the op list in execution order). The same two objects are what the file holds
(docs/integer-format.md), so a port can run the model from the file alone. Ops:

``stem``
    The first convolution (a multiplication conv; it stays float32), its BatchNorm folded to a
    per-channel ``scale``/``shift``, ReLU, then quantised to the codes of every *view* of its
    output tensor.
``adder``
    An ℓ1 adder layer on integers: for each filter group ``g`` the exact int32 sums
    ``S = Σ|xq_g − fq|`` of the input codes at the group's view (scale ``r_g``). A grouped layer
    (``groups > 1``) also computes the int32 *excess sums* ``E_g = Σ max(xq − m_g, 0)`` on the
    base codes (scale ``r``), which restore exactly what the group's input clip at
    ``hi_g = m_g·r`` cut off: ``Σ|x − f| = Σ|min(x, hi_g) − f| + Σ max(x − hi_g, 0)`` for
    ``0 ≤ f ≤ hi_g`` (docs/integer-format.md §glue).
``glue``
    Folded BatchNorm, residual add, ReLU and requantisation in one step:
    ``u = Σ_k alpha[k]·src_k + beta`` (real units), then for every view ``v`` of the output
    tensor ``q_v = clip(round(u / scale_v), 0, vmax_v)`` (the clip at 0 is the ReLU). In fixed
    point (``glue="fixed"``, the default) the same is ``clip((Σ_k mult[v,k]·src_k + bias[v] +
    2^(shift[v]−1)) >> shift[v], 0, vmax_v)`` in int64: the whole body is integer-only.
    Views that adder layers read have ``vmax = 2^bits − 1``; the optional *residual view*
    (``residual_bits``, e.g. 16) carries the identity shortcut and the head's input at a finer
    scale, so the coarse codes' rounding does not accumulate along the skip path.
``head``
    Average pool of the last codes × scale, the final 1×1 (multiplication) conv and its
    BatchNorm, in float64: the logits.

Activations run channel-last (N, H, W, C) between ops; the file stores filters NCHW-style
(Cout, Cin, kh, kw) like the float checkpoint.
"""
import numpy as np

from .. import ops
from ..threads import get_num_threads
from .kernels import _ext as kernels_ext
from .kernels import adder2d_int_nhwc

__all__ = ["QuantizedModel", "code_dtype", "FORMAT", "VERSION"]

FORMAT = "addercore-int-adder"
VERSION = 1


def code_dtype(bits):
    """uint8 for ≤ 8-bit codes, uint16 for 9..16 bits."""
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


def view_dtype(vmax):
    """Codes of a view clipped at ``vmax``: uint8 up to 255, else uint16."""
    return np.dtype(np.uint8) if vmax <= 255 else np.dtype(np.uint16)


class QuantizedModel:
    """An integer AdderNet (see the module docstring); built by :func:`addercore.quant.quantize`
    or read by :func:`addercore.quant.load`.

    ``model(x)``: x float32 (N, 3, H, W), normalised like the float model's input -> float64
    logits (N, num_classes). ``glue`` ("fixed" or "float") chooses how the glue ops run.
    """

    def __init__(self, arrays, graph):
        self.arrays = arrays
        self.graph = graph
        self.bits = int(graph["bits"])
        self.qmax = (1 << self.bits) - 1
        self.dtype = code_dtype(self.bits)
        self.glue = graph.get("glue", "fixed")
        self._nhwc = {}

    # ---------------------------------------------------------------------------------------
    def __call__(self, x):
        return self.forward(x)

    def forward_codes(self, stem_codes, trace=None):
        """Logits from the stem's output codes, one (N, H, W, C) array per view of the stem
        tensor: the integer body and the head only, so a port can check the body exactly
        whatever its float convolution rounds to."""
        vmax = self.arrays["stem.vmax"]
        if len(stem_codes) != len(vmax):
            raise ValueError(f"forward_codes needs {len(vmax)} stem code arrays (one per view), "
                             f"got {len(stem_codes)}")
        env = {f"stem.q{v}": np.ascontiguousarray(c, dtype=view_dtype(int(vmax[v])))
               for v, c in enumerate(stem_codes)}
        for op in self.graph["ops"][1:]:
            self.run_op(op, env)
        if trace is not None:
            trace.update({k: v for k, v in env.items() if k != "logits"})
        return env["logits"]

    def forward(self, x, trace=None):
        """Logits (N, num_classes) float64 of normalised images x (N, 3, H, W) float32.

        ``trace``: an optional dict that receives every intermediate integer array (name ->
        array, channel-last): ``<tensor>.q<v>`` codes, ``<layer>.S``, ``<layer>.E``.
        """
        env = {}
        for op in self.graph["ops"]:
            self.run_op(op, env, x)
        if trace is not None:
            trace.update({k: v for k, v in env.items() if k != "logits"})
        return env["logits"]

    def run_op(self, op, env, x=None):
        kind = op["op"]
        if kind == "stem":
            self._stem(op, env, x)
        elif kind == "adder":
            self._adder(op, env)
        elif kind == "glue":
            self._glue(op, env)
        elif kind == "head":
            self._head(op, env)
        else:  # pragma: no cover - the loader checks op kinds
            raise ValueError(f"unknown op {kind!r}")

    # ---------------------------------------------------------------------------------------
    def _quantize_views(self, u, tensor, env):
        """codes_v = clip(rint(u / s_v), 0, vmax_v) of float64 u (N, H, W, C), each view in its
        own code dtype; one float64 work buffer for all views (u itself is not modified)."""
        scales, vmax = self.arrays[f"{tensor}.scales"], self.arrays[f"{tensor}.vmax"]
        work = np.empty_like(u)
        for v, (s, vm) in enumerate(zip(scales, vmax)):
            np.divide(u, s, out=work)
            np.rint(work, out=work)
            np.clip(work, 0, vm, out=work)
            env[f"{tensor}.q{v}"] = work.astype(view_dtype(int(vm)))

    def _stem(self, op, env, x):
        a = self.arrays
        w = a["stem.weight"]
        y = ops.conv2d_forward(np.ascontiguousarray(x, dtype=w.dtype), w, op["stride"],
                               op["padding"])
        n, c, h, wd = y.shape
        z = np.empty((n, h, wd, c), np.float64)  # channel-last, float64: y·scale + shift
        np.copyto(z, y.transpose(0, 2, 3, 1))
        z *= a["stem.scale"]
        z += a["stem.shift"]
        self._quantize_views(z, op["output"], env)

    def _filters_nhwc(self, name):
        """(Cout, kh, kw, Cin) codes of a layer, and per group the channel indices."""
        if name not in self._nhwc:
            a = self.arrays
            f = np.ascontiguousarray(a[f"{name}.filters"].transpose(0, 2, 3, 1))
            group = a[f"{name}.group"]
            idx = [np.flatnonzero(group == g) for g in range(len(a[f"{name}.views"]))]
            self._nhwc[name] = (f, idx)
        return self._nhwc[name]

    def _adder(self, op, env):
        a, name, tensor = self.arrays, op["name"], op["input"]
        f, idx = self._filters_nhwc(name)
        views = a[f"{name}.views"]
        s = None
        for g, (v, chans) in enumerate(zip(views, idx)):
            xq = env[f"{tensor}.q{int(v)}"]
            if len(idx) == 1:
                s = adder2d_int_nhwc(xq, f, op["stride"], op["padding"], 0)
            else:
                sg = adder2d_int_nhwc(xq, np.ascontiguousarray(f[chans]), op["stride"],
                                      op["padding"], 0)
                if s is None:
                    s = np.empty(sg.shape[:3] + (f.shape[0],), np.int32)
                s[..., chans] = sg
        env[f"{name}.S"] = s
        if len(idx) > 1:
            env[f"{name}.E"] = self._excess(op, env[f"{tensor}.q0"], f.shape[1:3],
                                            a[f"{name}.limit"])

    def _excess(self, op, xq, kernel, limits):
        """E_g = Σ_taps max(xq − m_g, 0) on the base codes, via two integer adder sums:
        max(x − m, 0) = (|x − m| + |x − 0| − m) / 2, summed over the K taps (padded taps read
        the code 0 and contribute 0)."""
        kh, kw = kernel
        c = xq.shape[3]
        const = np.empty((len(limits) + 1, kh, kw, c), dtype=self.dtype)
        const[:-1] = np.asarray(limits, dtype=self.dtype)[:, None, None, None]
        const[-1] = 0
        t = adder2d_int_nhwc(xq, const, op["stride"], op["padding"], 0)
        k = kh * kw * c
        e = t[..., :-1] + t[..., -1:] - k * np.asarray(limits, np.int32)
        return e // 2

    def _source(self, src, env):
        kind = src["kind"]
        if kind == "S":
            return env[f"{src['of']}.S"]
        if kind == "E":
            return env[f"{src['of']}.E"][..., self.arrays[f"{src['of']}.group"]]
        # "codes": a view of a tensor's codes (the identity residual)
        return env[f"{src['of']}.q{src.get('view', 0)}"]

    def _glue(self, op, env):
        a, name = self.arrays, op["name"]
        srcs = [self._source(s, env) for s in op["sources"]]
        if self.glue == "float":
            alpha, beta = a[f"{name}.alpha"], a[f"{name}.beta"]
            u = beta + sum(alpha[k] * s for k, s in enumerate(srcs))
            self._quantize_views(u, op["output"], env)
            return
        mult, bias, shift = a[f"{name}.mult"], a[f"{name}.bias"], a[f"{name}.shift"]
        vmax = a[f"{op['output']}.vmax"]
        ext = kernels_ext()
        if ext is not None and len(srcs) <= 4:
            shape = srcs[0].shape
            flat = [np.ascontiguousarray(s).reshape(-1, shape[-1]) for s in srcs]
            outs = [np.empty(shape, view_dtype(int(vm))) for vm in vmax]
            ext.glue_fixed(flat, mult, bias, shift, vmax,
                           [o.reshape(flat[0].shape) for o in outs], get_num_threads())
            for v, o in enumerate(outs):
                env[f"{op['output']}.q{v}"] = o
            return
        for v in range(mult.shape[0]):
            acc = bias[v] + sum(mult[v, k].astype(np.int64) * s for k, s in enumerate(srcs))
            sh = int(shift[v])
            q = (acc + (np.int64(1) << (sh - 1))) >> sh
            vm = int(vmax[v])
            env[f"{op['output']}.q{v}"] = np.clip(q, 0, vm).astype(view_dtype(vm))

    def _head(self, op, env):
        a = self.arrays
        tensor = op["input"]
        v = op.get("view", 0)
        q = env[f"{tensor}.q{v}"]
        pooled = q.mean(axis=(1, 2), dtype=np.float64) * a[f"{tensor}.scales"][v]
        logits = pooled @ a["head.weight"].astype(np.float64).T
        env["logits"] = logits * a["head.scale"] + a["head.shift"]
