"""Write a golden set: every selected case's inputs and outputs, then the manifest."""
import hashlib
import os
import time

from .. import __version__
from .cases import FORMAT_NAME, FORMAT_VERSION, SUMMATION_ORDER, cases, select_cases
from .compute import compute_case
from .files import write_manifest, write_npz
from .inputs import make_inputs

__all__ = ["generate"]


def _manifest_case(case, inputs, outputs, data):
    entry = {k: case[k] for k in ("name", "op", "dtype", "seed", "params", "tolerance")}
    entry["file"] = case["name"] + ".npz"
    entry["inputs"] = sorted(inputs)
    entry["outputs"] = sorted(outputs)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    return entry


def generate(out_dir, small=False, select=None, progress=None):
    """Write a golden set into ``out_dir`` (created if needed); returns the manifest dict.

    Outputs are computed on the numpy reference backend with one BLAS thread. ``select``: a
    list of fnmatch patterns on case names. ``progress``: a text stream for progress lines.
    Every file is written atomically (:func:`addercore.io.atomic_write_bytes`).
    """
    from threadpoolctl import threadpool_limits

    from .._backend import use_backend

    chosen = select_cases(cases(small), select, None)
    if not chosen:
        raise ValueError(f"no case matches {select!r}")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    with use_backend("numpy"), threadpool_limits(limits=1):
        for index, case in enumerate(chosen, 1):
            t0 = time.perf_counter()
            inputs = make_inputs(case)
            outputs = compute_case(case, {k: v.copy() for k, v in inputs.items()})
            overlap = set(inputs) & set(outputs)
            if overlap:
                raise RuntimeError(f"{case['name']}: array names used twice: {sorted(overlap)}")
            data = write_npz(os.path.join(out_dir, case["name"] + ".npz"), {**inputs, **outputs})
            entries.append(_manifest_case(case, inputs, outputs, data))
            if progress is not None:
                progress.write(f"[{index:3d}/{len(chosen)}] {case['name']:<44s} "
                               f"{len(data) / 1024:8.1f} KiB {time.perf_counter() - t0:6.2f} s\n")
                progress.flush()
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "addercore_version": __version__,
        "summation_order": SUMMATION_ORDER,
        "comparison": "per output array: max|candidate - golden| <= atol + rtol * max|golden| "
                      "(same shape; integer arrays exact; arrays in tolerance.exact are "
                      "bit-exact in the canonical summation order)",
        "generator": "numpy reference backend, 1 BLAS thread",
        "set": "small" if small else "full",
        "cases": entries,
    }
    write_manifest(out_dir, manifest)
    return manifest
