"""Data-parallel training over MPI ranks (optional extra: ``pip install "addercore[mpi]"``).

:mod:`.comm` wraps the mpi4py communicator (fixed-order sums, collectives with a timeout,
abort), :mod:`.sync_bn` is BatchNorm over the global batch (``--sync-bn``), :mod:`.sharding`
gives each rank its share of every global batch. The training loop that uses them is
:class:`addercore.train.distributed.DistributedTrainer`. Importing this package does not import
mpi4py; :class:`Communicator` does (or raises :class:`MissingMPIError` saying what to install).
"""
from .comm import (DEFAULT_TIMEOUT, Communicator, CommTimeoutError, MissingMPIError,
                   shard_bounds, world_size_from_environment)
from .sharding import ShardedBatchLoader
from .sync_bn import SyncBatchNorm2d, convert_sync_batchnorm, merge_moments, sync_batch_norm2d

__all__ = ["Communicator", "CommTimeoutError", "MissingMPIError", "DEFAULT_TIMEOUT",
           "world_size_from_environment", "shard_bounds", "ShardedBatchLoader",
           "SyncBatchNorm2d", "convert_sync_batchnorm", "merge_moments", "sync_batch_norm2d"]
