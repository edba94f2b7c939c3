"""Check a golden set: addercore itself (recompute every case) or a port's outputs.

Every file is read through :mod:`.files`: confined to its folder, regular files only, size
bounded before reading, the golden file's sha256 checked while it streams in. The manifest's
own digest is returned with the results and can be checked against a trusted one (the
tolerances live in the manifest: an edited tolerance changes the digest).
"""
import os
import re
import time

import numpy as np

from .cases import select_cases
from .compute import compute_case
from .files import (COMMITTED_SMALL_SET_DIGEST, MAX_FILE_BYTES, read_confined, read_manifest,
                    read_npz_bytes)

__all__ = ["compare_arrays", "CaseResult", "VerifyResults", "verify"]


def compare_arrays(golden, candidate, tol, exact=False):
    """(ok, max_abs_err, normwise_rel_err, message) for one output array."""
    golden = np.asarray(golden)
    candidate = np.asarray(candidate)
    if candidate.shape != golden.shape:
        return False, np.inf, np.inf, f"shape {candidate.shape}, expected {golden.shape}"
    if golden.dtype.kind in "iub":
        ok = np.array_equal(golden, candidate)
        return ok, 0.0 if ok else np.inf, 0.0 if ok else np.inf, "" if ok else "integers differ"
    if candidate.dtype.kind != "f":
        return False, np.inf, np.inf, f"dtype {candidate.dtype}, expected {golden.dtype}"
    if not np.all(np.isfinite(candidate)):
        return False, np.inf, np.inf, "non-finite values"
    g = golden.astype(np.float64)
    err = float(np.max(np.abs(candidate.astype(np.float64) - g))) if g.size else 0.0
    scale = float(np.max(np.abs(g))) if g.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else np.inf)
    if exact:
        ok = err == 0.0
        return ok, err, rel, "" if ok else "not bit-exact (--strict)"
    bound = tol["atol"] + tol["rtol"] * scale
    ok = err <= bound
    return ok, err, rel, "" if ok else f"error {err:.3g} > bound {bound:.3g}"


class CaseResult:
    """Outcome of one case: ``ok``, worst array, max abs/rel error, message, seconds."""

    def __init__(self, name, op, dtype, ok, worst, max_abs, max_rel, message, seconds):
        self.name, self.op, self.dtype = name, op, dtype
        self.ok, self.worst, self.max_abs, self.max_rel = ok, worst, max_abs, max_rel
        self.message, self.seconds = message, seconds

    def __repr__(self):
        return f"CaseResult({self.name!r}, ok={self.ok}, max_abs={self.max_abs:.3g})"


class VerifyResults(list):
    """The list of :class:`CaseResult` of one :func:`verify`, plus ``digest`` (sha256 hex of
    the manifest checked) and ``digest_checked`` (whether it was compared with an expected
    digest)."""

    digest = None
    digest_checked = False


def _verify_case(golden_dir, entry, candidate_dir, strict, max_file_bytes):
    t0 = time.perf_counter()

    def result(ok, worst="", max_abs=0.0, max_rel=0.0, message=""):
        return CaseResult(entry["name"], entry["op"], entry["dtype"], ok, worst, max_abs,
                          max_rel, message, time.perf_counter() - t0)

    try:
        data = read_confined(golden_dir, entry["file"], max_file_bytes, what="golden file",
                             sha256=entry["sha256"])
    except OSError as exc:
        return result(False, message=f"golden file unreadable: {exc}")
    except ValueError as exc:
        return result(False, message=f"golden file refused: {exc}")
    try:
        arrays = read_npz_bytes(data, max_file_bytes, what=f"golden file {entry['file']!r}")
        inputs = {k: arrays[k] for k in entry["inputs"]}
        golden = {k: arrays[k] for k in entry["outputs"]}
    except Exception as exc:
        return result(False, message=f"golden file {entry['file']} unusable: "
                                     f"{type(exc).__name__}: {exc}")
    if candidate_dir is None:
        try:
            got = compute_case(entry, {k: v.copy() for k, v in inputs.items()})
        except Exception as exc:  # reported per case; the summary shows it
            return result(False, message=f"{type(exc).__name__}: {exc}")
    else:
        try:
            cdata = read_confined(candidate_dir, entry["file"], max_file_bytes,
                                  what="candidate file")
        except FileNotFoundError:
            return result(False, message=f"missing candidate file {entry['file']}")
        except (OSError, ValueError) as exc:
            return result(False, message=f"candidate file refused: {exc}")
        try:
            got = read_npz_bytes(cdata, max_file_bytes, what=f"candidate file {entry['file']!r}")
        except ValueError as exc:
            return result(False, message=f"unreadable candidate file: {exc}")
    ok, worst, worst_abs, worst_rel, msgs = True, "", 0.0, 0.0, []
    exact = set(entry["tolerance"].get("exact", ())) if strict else set()
    for name in entry["outputs"]:
        if name not in got:
            ok = False
            msgs.append(f"{name}: missing")
            continue
        a_ok, a_abs, a_rel, msg = compare_arrays(golden[name], got[name], entry["tolerance"],
                                                 exact=name in exact)
        if not a_ok:
            ok = False
            msgs.append(f"{name}: {msg}")
        if a_rel > worst_rel or (a_rel == worst_rel and a_abs > worst_abs) or not worst:
            worst, worst_abs, worst_rel = name, a_abs, a_rel
    return result(ok, worst, worst_abs, worst_rel, "; ".join(msgs[:3]) +
                  (f" (+{len(msgs) - 3} more)" if len(msgs) > 3 else ""))


def _expected_digest(expect_digest):
    if expect_digest == "committed":
        return COMMITTED_SMALL_SET_DIGEST
    if not isinstance(expect_digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expect_digest):
        raise ValueError(f"expect_digest must be 64 hex digits (a sha256) or 'committed', got "
                         f"{expect_digest!r}")
    return expect_digest.lower()


def verify(golden_dir, candidate_dir=None, select=None, ops=None, strict=False, progress=None,
           expect_digest=None, max_file_bytes=MAX_FILE_BYTES):
    """Check every case of the golden set in ``golden_dir``; returns a :class:`VerifyResults`
    (a list of :class:`CaseResult` with the manifest's ``digest``).

    Without ``candidate_dir`` addercore recomputes each case on its active backend; with it,
    the arrays of ``candidate_dir/<case file>`` are compared. ``select``: fnmatch patterns on
    case names; ``ops``: op names; ``strict``: demand bit-exactness of ``tolerance.exact``.
    ``expect_digest``: a sha256 hex the manifest must have, or ``"committed"`` for the
    committed small set's; a mismatch raises ValueError before any case runs.
    ``max_file_bytes``: the size bound of every file read (and of a candidate's inflated
    arrays). A damaged manifest raises ValueError naming the file and the problem; a file
    that is refused (outside its folder, not a regular file, too large, wrong sha256) fails
    its case with the reason.
    """
    if candidate_dir is not None and not os.path.isdir(candidate_dir):
        raise FileNotFoundError(f"candidate directory {candidate_dir!r} does not exist")
    expected = None if expect_digest is None else _expected_digest(expect_digest)
    manifest, digest = read_manifest(golden_dir)
    if expected is not None and digest != expected:
        raise ValueError(f"{os.path.join(os.fspath(golden_dir), 'manifest.json')}: sha256 "
                         f"{digest} is not the expected {expected}: the cases or tolerances "
                         f"differ from the set you trust")
    entries = select_cases(manifest["cases"], select, ops)
    if not entries:
        raise ValueError("no case selected")
    results = VerifyResults()
    results.digest, results.digest_checked = digest, expected is not None
    for index, entry in enumerate(entries, 1):
        r = _verify_case(golden_dir, entry, candidate_dir, strict, max_file_bytes)
        results.append(r)
        if progress is not None:
            status = "PASS" if r.ok else "FAIL"
            progress.write(f"[{index:3d}/{len(entries)}] {r.name:<44s} {status}  "
                           f"max abs {r.max_abs:9.3g}  rel {r.max_rel:9.3g}  {r.seconds:6.2f} s"
                           + (f"  {r.message}" if r.message else "") + "\n")
            progress.flush()
    return results
