"""The verification report: one row per case, pass counts per op, the manifest's digest."""
import sys

from .files import COMMITTED_SMALL_SET_DIGEST

__all__ = ["summary_table"]


def summary_table(results, stream=sys.stdout):
    """Print the per-case table and the per-op counts; when ``results`` carries the
    manifest's digest (what :func:`addercore.golden.verify` returns), print it too."""
    width = max([len(r.name) for r in results] + [4])
    head = (f"{'case':<{width}}  {'op':<13} {'dtype':<8} {'result':<6} {'worst array':<28} "
            f"{'max abs err':>11} {'max rel err':>11}")
    stream.write(head + "\n" + "-" * len(head) + "\n")
    for r in results:
        stream.write(f"{r.name:<{width}}  {r.op:<13} {r.dtype:<8} {'PASS' if r.ok else 'FAIL':<6} "
                     f"{r.worst[:28]:<28} {r.max_abs:11.3g} {r.max_rel:11.3g}\n")
    stream.write("-" * len(head) + "\n")
    per_op = {}
    for r in results:
        counts = per_op.setdefault(r.op, [0, 0])
        counts[0 if r.ok else 1] += 1
    for op, (npass, nfail) in sorted(per_op.items()):
        stream.write(f"{op:<13} {npass} passed, {nfail} failed\n")
    npass = sum(r.ok for r in results)
    stream.write(f"total: {npass}/{len(results)} passed\n")
    digest = getattr(results, "digest", None)
    if digest:
        # The manifest holds the tolerances and every file's sha256: its digest names the
        # exact set that was checked (compare it with the one you trust, --expect-digest).
        known = " (the committed small set)" if digest == COMMITTED_SMALL_SET_DIGEST else ""
        checked = " (checked against --expect-digest)" if getattr(results, "digest_checked",
                                                                   False) else ""
        stream.write(f"manifest sha256: {digest}{known}{checked}\n")
