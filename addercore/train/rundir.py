"""The output folder of a run: one run per folder, locked while it trains, no stale files.

- A new run never mixes with an old one: :meth:`RunFolder.open` refuses a folder that holds a
  run (``checkpoint.npz``, ``best.npz``, ``metrics.*``, ``command.txt``) unless the run is
  resumed or ``overwrite`` is asked for (then the old run's files are removed first, so the
  metrics never read ``1, 2, 3, 1``).
- Two processes never train into one folder: an exclusive ``fcntl.flock`` on ``.lock`` is held
  from :meth:`open` to :meth:`close` (released by the OS when the process dies, even by SIGKILL).
- A process killed during an atomic write leaves ``.<name>.<random>.tmp``
  (:func:`addercore.io.atomic_open`); the next :meth:`open` removes them (under the lock, so no
  live writer owns them).
"""
import errno
import os
import re
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the folder is not locked
    fcntl = None

__all__ = ["RunFolder", "RunFolderError", "RunFolderBusyError", "RunExistsError", "RUN_FILES"]

# Files that make up a run; any of the first five present means the folder holds a run.
RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "metrics.csv", "command.txt",
             "curves.png")
_HOLDS_RUN = RUN_FILES[:5]
_LOCK_NAME = ".lock"
# addercore.io.atomic_open's temporary names: ".<target>.<12 hex digits>.tmp"
_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


class RunFolderError(ValueError):
    """The output folder cannot be used (message: the path, the reason, what to do)."""


class RunExistsError(RunFolderError):
    """The output folder already holds a run and neither resume nor overwrite was asked for."""


class RunFolderBusyError(RunFolderError):
    """Another process is training into the output folder."""


def _reason(exc):
    return exc.strerror or str(exc)


class RunFolder:
    """The output folder ``path`` of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock_fd = None

    def check_path(self):
        """RunFolderError when ``path`` (or a parent) is a file."""
        for p in (self.path, *self.path.parents):
            if p.exists():
                if not p.is_dir():
                    raise RunFolderError(f"--out {self.path}: {p} is a file, not a directory; "
                                         "choose another --out")
                return

    def existing_run(self):
        """Names of the run files present in the folder (empty: no run there)."""
        return [n for n in _HOLDS_RUN if (self.path / n).exists()]

    @property
    def locked(self):
        return self._lock_fd is not None

    def open(self, resume=False, overwrite=False):
        """Create (if needed) and lock the folder, remove stale temporary files, and refuse to
        start a new run over an old one. Returns the names of the removed temporary files.

        Raises :class:`RunFolderError` (a file in the way, not writable),
        :class:`RunFolderBusyError` (another process holds the lock), :class:`RunExistsError`
        (a run is there, ``resume`` and ``overwrite`` are both false)."""
        self.check_path()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"--out {self.path}: cannot create the folder ({_reason(e)}); "
                                 "choose another --out") from None
        self._lock()
        try:
            self._check_writable()
            removed = self._remove_stale_tmp()
            if not resume:
                present = self.existing_run()
                if present and not overwrite:
                    raise RunExistsError(
                        f"--out {self.path} already holds a run ({', '.join(present)}): add "
                        "--resume to continue it, --overwrite to delete it and start over, or "
                        "choose another --out")
                if present:
                    self.remove_run()
        except BaseException:
            self.close()
            raise
        return removed

    def close(self):
        """Release the lock (idempotent)."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def remove_run(self):
        """Delete the run files (never anything else the user put in the folder)."""
        for name in RUN_FILES:
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass

    # -- internals ---------------------------------------------------------------------------
    def _lock(self):
        if self._lock_fd is not None:
            return
        lock_path = self.path / _LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunFolderError(f"--out {self.path}: not writable ({_reason(e)}); choose "
                                 "another --out") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunFolderBusyError(
                    f"--out {self.path} is in use by another training run (it holds "
                    f"{lock_path}); wait for it to finish or choose another --out") from None
        self._lock_fd = fd

    def _check_writable(self):
        probe = self.path / f".write-test.{os.getpid()}"
        try:
            with open(probe, "wb"):
                pass
            probe.unlink()
        except OSError as e:
            raise RunFolderError(f"--out {self.path}: not writable ({_reason(e)}); choose "
                                 "another --out") from None

    def _remove_stale_tmp(self):
        removed = []
        for p in self.path.iterdir():
            if _TMP.match(p.name) and p.is_file():
                try:
                    p.unlink()
                    removed.append(p.name)
                except FileNotFoundError:
                    pass
        return sorted(removed)
