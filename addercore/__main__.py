"""Command line: ``python -m addercore ...`` (also the ``addercore`` console script).

    addercore golden generate OUT_DIR [--small] [--select PATTERN ...]
    addercore golden verify GOLDEN_DIR [--candidate PORT_DIR] [--strict]
                                       [--select PATTERN ...] [--op OP ...]
                                       [--expect-digest HEX|committed]
    addercore golden list [--small]
    addercore ops                      # the op table: compiled kernel or reference, per op
    addercore quantize CHECKPOINT --data-dir DIR --out FILE [--bits 8] ...  (addercore.quant.cli)

Exit status: 0 when everything passed, 1 when a case failed, 2 on usage or input errors.
"""
import argparse
import sys
import time


def _parser():
    parser = argparse.ArgumentParser(
        prog="addercore", description="addercore: AdderNet on CPUs (op table, golden test "
                                      "vectors, integer quantisation).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("ops", help="print the op table (which ops run compiled kernels)",
                   description="One line per public op of addercore.ops: its family, its "
                               "compiled kernel (or why there is none), what compiled and "
                               "reference agree on, its golden kind, and what runs now.")
    # listed for --help only: main() hands "quantize ..." to addercore.quant.cli before parsing
    sub.add_parser("quantize", add_help=False,
                   help="quantise a trained ResNet-20 for integer inference "
                        "(addercore quantize --help)")
    golden = sub.add_parser("golden", help="golden test vectors for other implementations",
                            description="Generate or verify golden test vectors "
                                        "(format: docs/golden-format.md).")
    gsub = golden.add_subparsers(dest="action", metavar="ACTION")
    gsub.required = True

    gen = gsub.add_parser("generate", help="write a golden set (numpy reference backend)",
                          description="Write manifest.json and one .npz per case into OUT_DIR. "
                                      "Deterministic: byte-identical on every run.")
    gen.add_argument("out_dir", metavar="OUT_DIR")
    gen.add_argument("--small", action="store_true",
                     help="the small set (whole networks as ResNet-8; what tests/golden holds)")
    gen.add_argument("--select", action="append", metavar="PATTERN",
                     help="only cases whose name matches this glob (repeatable)")

    ver = gsub.add_parser("verify", help="check addercore, or a port's outputs, against a set",
                          description="Recompute every case with addercore (active backend), "
                                      "or with --candidate compare another implementation's "
                                      ".npz files (same names) against the golden values.")
    ver.add_argument("golden_dir", metavar="GOLDEN_DIR")
    ver.add_argument("--candidate", metavar="PORT_DIR",
                     help="directory of a port's outputs, one <case>.npz per case")
    ver.add_argument("--strict", action="store_true",
                     help="demand bit-exactness for the arrays a case lists in tolerance.exact")
    ver.add_argument("--select", action="append", metavar="PATTERN",
                     help="only cases whose name matches this glob (repeatable)")
    ver.add_argument("--op", action="append", metavar="OP",
                     help="only cases of this op: adder2d, conv2d, batch_norm2d, resnet_cifar, "
                          "adder2d_int, resnet_int "
                          "(repeatable)")
    ver.add_argument("--expect-digest", metavar="HEX",
                     help="refuse (exit 2) unless manifest.json has this sha256; 'committed' "
                          "means the committed small set's (tests/golden)")
    ver.add_argument("--quiet", action="store_true", help="no per-case progress lines")

    lst = gsub.add_parser("list", help="list the cases of the full (or small) set")
    lst.add_argument("--small", action="store_true")
    return parser


def _golden(args):
    from . import golden

    if args.action == "list":
        counts = {}
        for c in golden.cases(small=args.small):
            counts[c["op"]] = counts.get(c["op"], 0) + 1
            print(f"{c['name']:<44s} {c['op']:<13s} {c['dtype']}")
        print(", ".join(f"{op}: {n}" for op, n in sorted(counts.items())),
              f"(total {sum(counts.values())})")
        return 0
    if args.action == "generate":
        t0 = time.perf_counter()
        manifest = golden.generate(args.out_dir, small=args.small, select=args.select,
                                   progress=sys.stdout)
        counts = {}
        for c in manifest["cases"]:
            counts[c["op"]] = counts.get(c["op"], 0) + 1
        print(f"wrote {len(manifest['cases'])} cases to {args.out_dir} in "
              f"{time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{op} {n}" for op, n in sorted(counts.items())))
        return 0
    from . import backend

    who = f"candidate {args.candidate}" if args.candidate else f"addercore ({backend()} backend)"
    print(f"verifying {who} against {args.golden_dir}")
    results = golden.verify(args.golden_dir, candidate_dir=args.candidate, select=args.select,
                            ops=args.op, strict=args.strict,
                            progress=None if args.quiet else sys.stdout,
                            expect_digest=args.expect_digest)
    print()
    golden.summary_table(results, sys.stdout)
    return 0 if all(r.ok for r in results) else 1


def main(argv=None):
    """Entry point; returns the exit status (0 all passed, 1 failures, 2 errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["quantize"]:
        from .quant.cli import main as quantize_main

        return quantize_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "golden":
            return _golden(args)
        if args.command == "ops":
            from . import ops

            print(ops.describe())
            return 0
    except (OSError, ValueError, TypeError) as exc:
        # one line: the message names the file and the problem
        print(f"addercore: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
