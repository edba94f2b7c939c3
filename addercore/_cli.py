"""Conventions shared by addercore's command-line scripts (``examples/*.py``, ``python -m addercore``).

- Errors the user can fix are one line on stderr, ``error: <what> (<what to do>)``, never a
  traceback; :func:`fail` prints it and returns the exit status.
- Exit status: 0 success, 1 the job ran and failed (a failed check, a non-finite loss),
  2 usage or input errors (bad option values, missing or wrong files, data not found),
  128 + signal number when interrupted (130 for Ctrl-C).
- The data options are the same in every script (:func:`add_data_args`): ``--data-dir``
  (default: ``$ADDERCORE_DATA``, then ``~/.cache/addercore``, then a download into the cache),
  ``--download`` (also download into an explicit ``--data-dir``) and ``--no-download``.

Private module: the scripts' shared plumbing, not part of the library API.
"""
import argparse
import sys
import time

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SIGINT", "fail", "positive_int",
           "nonneg_float", "add_data_args", "download_mode", "Progress"]


def fail(message, status=EXIT_USAGE, stream=None):
    """Print ``error: <message>`` on stderr (or ``stream``) and return ``status``."""
    print(f"error: {message}", file=stream if stream is not None else sys.stderr)
    return status


def positive_int(text):
    """argparse type: an integer >= 1 (``--limit 0`` is a usage error, not a crash)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_float(text):
    """argparse type: a finite-or-infinite number >= 0 (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def add_data_args(parser, what="CIFAR-10"):
    """Add ``--data-dir``, ``--download`` and ``--no-download`` to ``parser`` (or a group).

    Read the choice back with :func:`download_mode`."""
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help=f"{what}: the extracted batches folder (e.g. cifar-10-batches-py), its parent, or "
             "the .tar.gz archive. Default: $ADDERCORE_DATA, then ~/.cache/addercore, then "
             "download the official archive (170 MB, md5-checked) into ~/.cache/addercore")
    ex = parser.add_mutually_exclusive_group()
    ex.add_argument("--download", action="store_true",
                    help="if the data is not in --data-dir, download it into --data-dir "
                         "(created if absent); without this an explicit --data-dir is never "
                         "written into")
    ex.add_argument("--no-download", action="store_true",
                    help="never download: fail with a message saying where the data was looked for")


def download_mode(args):
    """The ``download`` argument of ``load_cifar10/100`` for parsed :func:`add_data_args`
    options: ``False`` (``--no-download``), ``"root"`` (``--download``) or ``True``
    (download into the cache only when no ``--data-dir`` is given)."""
    if args.no_download:
        return False
    return "root" if args.download else True


def eval_progress_text(done, total, t0, correct1):
    """The evaluation progress line: a bar, ``done/total``, images/s since ``t0``
    (``time.perf_counter()``) and the running top-1."""
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.perf_counter() - t0
    rate = done / elapsed if elapsed > 0 else 0.0
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done:5d}/{total} "
            f"{rate:7.1f} img/s  top-1 {100.0 * correct1 / max(done, 1):6.2f}%")


class Progress:
    """A progress line on ``stream``: redrawn in place (carriage return) on a terminal; in a
    log file or pipe one plain line each ``every`` percent (and the last), not hundreds.

    ``update(done, text)`` with ``done`` items of ``total``; ``close()`` ends the line."""

    def __init__(self, total, stream=None, every=10):
        self.total = max(int(total), 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.next_pct = every
        self.open_line = False

    def update(self, done, text):
        if self.tty:
            self.stream.write("\r" + text)
            self.open_line = True
        else:
            pct = 100 * done / self.total
            if pct < self.next_pct and done < self.total:
                return
            while self.next_pct <= pct:
                self.next_pct += self.every
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
