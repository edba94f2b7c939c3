"""Data location and download: cache directory, md5-checked archive download with progress.

Search order for a data set when no root is given: ``$ADDERCORE_DATA``, then the cache
directory ``~/.cache/addercore``, then (if allowed) a download into the cache directory. An
explicit root is only searched; it is downloaded into only when the caller asks for that
(``download="root"``, the scripts' ``--download``): see :mod:`addercore.data.cifar`.
Only the downloaded archive is md5-checked (against the published sum): extracted batch files
re-made from other sources are legitimate and differ byte-wise.
"""
import hashlib
import os
import sys
import time
from pathlib import Path

__all__ = ["DataNotFoundError", "DownloadError", "default_cache_dir", "search_dirs", "download_url"]


class DataNotFoundError(FileNotFoundError):
    """The data set is not where addercore looked, and could not (or may not) be downloaded.

    The message lists the places searched and how to provide the data; it is meant to be
    printed as is (``str(e)``), without a traceback.
    """

    def __str__(self):  # FileNotFoundError(msg) would otherwise show "[Errno ...]" noise
        return self.args[0] if self.args else ""


class DownloadError(OSError):
    """A download failed or its md5 did not match (the partial file was removed)."""


def default_cache_dir():
    """``~/.cache/addercore`` (where downloads go and are looked for)."""
    return Path(os.path.expanduser("~")) / ".cache" / "addercore"


def search_dirs(root=None):
    """Directories searched, in order: ``[root]`` if given, else ``$ADDERCORE_DATA`` (if set)
    and the cache directory."""
    if root is not None:
        return [Path(os.fspath(root)).expanduser()]
    dirs = []
    env = os.environ.get("ADDERCORE_DATA")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(default_cache_dir())
    return dirs


def _fmt_mb(n):
    return f"{n / 1e6:.1f} MB"


class _Progress:
    """A one-line progress bar on stderr (redrawn in place on terminals, sparse otherwise)."""

    def __init__(self, name, total, stream=None):
        self.name, self.total = name, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.monotonic()
        self.last = -1.0
        self.last_pct = -10

    def update(self, done, final=False):
        now = time.monotonic()
        pct = int(100 * done / self.total) if self.total else -1
        if not final:
            if self.tty and now - self.last < 0.1:
                return
            if not self.tty and (pct < 0 or pct - self.last_pct < 10):
                return
        self.last, self.last_pct = now, pct
        rate = done / max(now - self.t0, 1e-9)
        if self.total:
            width = 30
            fill = int(width * done / self.total)
            bar = f"[{'#' * fill}{'.' * (width - fill)}] {pct:3d}% {_fmt_mb(done)}/{_fmt_mb(self.total)}"
        else:
            bar = _fmt_mb(done)
        line = f"downloading {self.name} {bar} {_fmt_mb(rate)}/s"
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if final or not self.tty else ""))
        self.stream.flush()


def _md5(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_url(url, dest, md5=None, progress=True, timeout=60, opener=None):
    """Download ``url`` to ``dest`` (a file path), checking ``md5`` if given.

    Writes ``dest + '.part'`` then renames it, so an interrupted download never leaves a file
    that looks complete. On md5 mismatch the partial file is removed and
    :class:`DownloadError` is raised. ``opener(url, timeout=...)`` defaults to
    ``urllib.request.urlopen`` (``file://`` URLs work, which the tests use).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if opener is None:
        import urllib.request  # lazily: ~0.1 s of imports (ssl, http) only when downloading
        opener = urllib.request.urlopen
    h = hashlib.md5()
    try:
        with opener(url, timeout=timeout) as resp, open(part, "wb") as f:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            bar = _Progress(dest.name, int(total) if total else 0) if progress else None
            done = 0
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                f.write(block)
                h.update(block)
                done += len(block)
                if bar:
                    bar.update(done)
            if bar:
                bar.update(done, final=True)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = h.hexdigest()
    if md5 is not None and got != md5:
        part.unlink(missing_ok=True)
        raise DownloadError(f"md5 mismatch for {url}: expected {md5}, got {got} "
                            f"(the download is corrupt or not the official archive; removed)")
    os.replace(part, dest)
    return dest

