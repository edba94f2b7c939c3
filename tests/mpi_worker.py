"""One rank of a small data-parallel run for tests/test_distributed.py (started by mpiexec).

    mpiexec -n 2 python tests/mpi_worker.py SPEC.json

SPEC: ``{"data": CIFAR batches folder, "train_n": int, "test_n": int, "config": TrainConfig
keyword arguments (out included), "request_stop_at": the global step after which rank 0
alone asks to stop (the ranks agree on it in the next step's collective and all stop after it),
or null, "timeout": collective timeout in s}``. Exit 0 when the
run finished or stopped as asked; any error ends the job through MPI_Abort.
"""
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from addercore.data import load_cifar10  # noqa: E402
from addercore.distributed import Communicator  # noqa: E402
from addercore.train import TrainConfig, TrainingInterrupted  # noqa: E402
from addercore.train.distributed import DistributedTrainer  # noqa: E402


def main(spec):
    comm = Communicator(timeout=spec.get("timeout", 120))
    try:
        x, y = load_cifar10(spec["data"], train=True, download=False)
        xt, yt = load_cifar10(spec["data"], train=False, download=False)
        config = TrainConfig(**spec["config"])
        trainer = DistributedTrainer(config, comm, (x[:spec["train_n"]], y[:spec["train_n"]]),
                                     (xt[:spec["test_n"]], yt[:spec["test_n"]]), overwrite=True)
        request_at = spec.get("request_stop_at")
        if request_at is not None and comm.rank == 0:
            step = trainer._train_step

            def step_then_stop(*args):
                result = step(*args)
                if trainer.global_step + 1 == request_at:  # (counted after this call returns)
                    trainer.request_stop(signal.SIGTERM)
                return result
            trainer._train_step = step_then_stop
        try:
            trainer.fit()
        except TrainingInterrupted:
            pass
        return 0
    except BaseException as e:  # noqa: BLE001
        comm.abort(f"rank {comm.rank}: {type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main(json.loads(Path(sys.argv[1]).read_text())))
