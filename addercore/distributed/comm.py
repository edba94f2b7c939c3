"""The MPI communicator of data-parallel training: deterministic sums, timeouts, abort.

Everything goes through mpi4py (an optional dependency: ``pip install "addercore[mpi]"``).
Two rules make a distributed run reproducible and safe:

- **Fixed summation order.** No reduction is left to the MPI library (whose allreduce may add
  in an order that depends on the algorithm it picks): contributions are exchanged
  (allgather / alltoallv) and added by rank, 0 first, in float64, by exactly one rank per
  element; that rank's result is then copied bit for bit to all ranks. The sum depends only on
  the ranks' contributions, never on timing, and is identical on every rank.
- **No rank waits forever.** Every collective is non-blocking and polled against a deadline
  (:attr:`Communicator.timeout`, default :data:`DEFAULT_TIMEOUT` s). A rank that died, hangs or
  fell far behind makes its peers raise :class:`CommTimeoutError`, and the caller ends the job
  with :meth:`Communicator.abort` (``MPI_Abort``), which the launcher turns into the end of every
  rank. The longest legitimate wait is a rank waiting at the next step while rank 0 writes the
  checkpoint, best weights, metrics and plot (seconds); the default leaves a wide margin for a
  loaded machine or a slow shared file system.
"""
import json
import os
import sys
import time

import numpy as np

__all__ = ["Communicator", "CommTimeoutError", "MissingMPIError", "DEFAULT_TIMEOUT",
           "world_size_from_environment", "import_mpi", "shard_bounds"]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits in one collective before ending the job

# set by the launchers: mpiexec of MPICH/Intel MPI (PMI_SIZE), Open MPI, MVAPICH, srun (PMI/PMIx)
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")

INSTALL_HINT = ('install the MPI extra: pip install "addercore[mpi]" (mpi4py and the mpich '
                "wheel, which brings mpiexec)")


class MissingMPIError(ImportError):
    """Distributed training was asked for but mpi4py (or its MPI library) is not importable."""


class CommTimeoutError(RuntimeError):
    """A collective did not complete within the communicator's timeout."""


def world_size_from_environment(environ=None):
    """Number of processes the MPI launcher started (1 when not started by one); read from the
    launcher's environment variables, so mpi4py is not imported to find out."""
    env = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        value = env.get(name)
        if value is not None:
            try:
                return max(1, int(value))
            except ValueError:
                continue
    if "PMIX_RANK" in env or "PMI_RANK" in env:  # srun --mpi=pmix sets no size variable
        try:
            return max(1, int(env.get("SLURM_NTASKS", "1")))
        except ValueError:
            return 1
    return 1


def import_mpi():
    """``mpi4py.MPI`` (initialising MPI), or :class:`MissingMPIError` saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:  # mpi4py missing, or its MPI library cannot be loaded
        raise MissingMPIError(f"distributed training needs mpi4py and an MPI library ({e}); "
                              f"{INSTALL_HINT}") from e
    return MPI


def shard_bounds(n, rank, size):
    """``(lo, hi)``: rank ``rank``'s contiguous share of ``n`` items split over ``size`` ranks
    (shares differ by one item at most; rank order follows item order)."""
    return (n * rank) // size, (n * (rank + 1)) // size


class Communicator:
    """A world of ``size`` ranks (``mpi4py`` communicator ``comm``, default COMM_WORLD).

    ``timeout``: seconds one collective may wait for the other ranks before
    :class:`CommTimeoutError`. :attr:`seconds` accumulates the wall time spent inside
    collectives (waiting included), for benchmarks.
    """

    def __init__(self, comm=None, timeout=DEFAULT_TIMEOUT):
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)
        self.seconds = 0.0

    @property
    def is_root(self):
        return self.rank == 0

    def local_size(self):
        """Number of ranks on this machine (they share its cores)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()

    # -- waiting ---------------------------------------------------------------------------
    def _wait(self, request, what):
        """Poll ``request`` until done: spin for the first 2 ms (a fast collective answers
        within microseconds), then sleep in growing steps of at most 1 ms so that a rank
        waiting for a slower peer leaves the CPU to others."""
        t0 = time.monotonic()
        deadline, spin_until = t0 + self.timeout, t0 + 2e-3
        pause = 0.0
        try:
            while not request.Test():
                now = time.monotonic()
                if now > deadline:
                    raise CommTimeoutError(
                        f"rank {self.rank}/{self.size}: no answer from the other ranks for "
                        f"{self.timeout:.0f} s in {what} (a rank died, hangs, or fell far "
                        "behind); ending the job")
                if now > spin_until:
                    pause = min(max(2 * pause, 5e-5), 1e-3)
                    time.sleep(pause)
        finally:
            self.seconds += time.monotonic() - t0

    # -- collectives -----------------------------------------------------------------------
    def allgather_rows(self, vector, what="allgather"):
        """Every rank's float64 ``vector`` (same length on all ranks) as the rows of a
        ``(size, n)`` float64 array, row ``r`` from rank ``r``."""
        vector = np.ascontiguousarray(vector, dtype=np.float64).ravel()
        rows = np.empty((self.size, vector.size), dtype=np.float64)
        if self.size == 1:
            rows[0] = vector
            return rows
        self._wait(self.comm.Iallgather(vector, rows), what)
        return rows

    def sum_rows(self, vector, what="sum"):
        """Sum over ranks of the float64 ``vector``, added in rank order (0, 1, …) in float64:
        identical on every rank and independent of timing."""
        rows = self.allgather_rows(vector, what)
        total = rows[0].copy()
        for r in range(1, self.size):
            total += rows[r]
        return total

    def sum_ordered(self, flat, what="gradient sum"):
        """Sum over ranks of the 1-D array ``flat`` (same length and dtype on every rank), in
        ``flat``'s dtype: a reduce-scatter then allgather that moves about 2× the array per
        rank, like a ring allreduce, but with a fixed order. Element block ``r`` (``size``
        contiguous blocks) is summed by rank ``r`` alone, by rank order in float64, cast once,
        and the result is copied to all ranks."""
        flat = np.ascontiguousarray(flat).ravel()
        if self.size == 1:
            return flat.copy()
        p, size = flat.size, self.size
        displs = [(p * r) // size for r in range(size)]
        counts = [(p * (r + 1)) // size - displs[r] for r in range(size)]
        mine = counts[self.rank]
        blocks = np.empty((size, mine), dtype=flat.dtype)
        self._wait(self.comm.Ialltoallv([flat, (counts, displs)],
                                        [blocks, ([mine] * size, [mine * r for r in range(size)])]),
                   what)
        acc = blocks[0].astype(np.float64)
        for r in range(1, size):
            acc += blocks[r]
        reduced = acc.astype(flat.dtype)
        out = np.empty_like(flat)
        self._wait(self.comm.Iallgatherv(reduced, [out, (counts, displs)]), what)
        return out

    def barrier(self, what="barrier"):
        if self.size > 1:
            self._wait(self.comm.Ibarrier(), what)

    def bcast_bytes(self, data, root=0, what="broadcast"):
        """``data`` (bytes, given on ``root``) on every rank."""
        if self.size == 1:
            return data
        n = np.array([len(data) if self.rank == root else 0], dtype=np.int64)
        self._wait(self.comm.Ibcast(n, root), what)
        buf = (np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root
               else np.empty(int(n[0]), dtype=np.uint8))
        if buf.size:
            self._wait(self.comm.Ibcast(buf, root), what)
        return buf.tobytes()

    def bcast_json(self, value, root=0, what="broadcast"):
        """A JSON-serialisable ``value`` from ``root`` on every rank."""
        data = json.dumps(value).encode() if self.rank == root else b""
        return json.loads(self.bcast_bytes(data, root, what).decode())

    def bcast_arrays(self, arrays, meta, root=0, what="broadcast"):
        """``(arrays, meta)`` of ``root`` (a dict of numpy arrays and a JSON-serialisable dict)
        on every rank, sent as raw bytes plus a JSON description (nothing is unpickled)."""
        if self.rank == root:
            names = list(arrays)
            layout = [[k, str(np.asarray(arrays[k]).dtype), list(np.shape(arrays[k]))]
                      for k in names]
            payload = b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in names)
            header = {"layout": layout, "meta": meta}
        else:
            header, payload = None, b""
        header = self.bcast_json(header, root, what)
        payload = self.bcast_bytes(payload, root, what)
        if self.rank == root:
            return arrays, meta
        out, offset = {}, 0
        for name, dtype, shape in header["layout"]:
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise ValueError(f"{what}: array {name} has dtype {dtype}; only plain arrays travel")
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(payload, dtype=dt, count=count,
                                      offset=offset).reshape(shape).copy()
            offset += count * dt.itemsize
        return out, header["meta"]

    # -- failure ---------------------------------------------------------------------------
    def abort(self, message=None, code=1):
        """Print ``message`` (if any) on stderr and end every rank of the job (MPI_Abort)."""
        if message:
            try:
                sys.stderr.write(message.rstrip("\n") + "\n")
                sys.stderr.flush()
            except OSError:
                pass
        self.comm.Abort(code)
