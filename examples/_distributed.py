"""Data-parallel ``train_cifar.py`` (``mpiexec -n N python examples/train_cifar.py ...``).

Every rank runs this with the same arguments. Rank 0 prints and writes; every rank computes.
Errors: one that every rank meets alike before training (bad option, folder holding a run) ends
every rank with exit status 1/2; any other error, on any rank, is printed (with the rank) and
ends the whole job through ``MPI_Abort`` (a rank that died is noticed by the launcher, a rank
that hangs by the others' ``--comm-timeout``). Checkpoints are written atomically by rank 0,
so the last complete one survives any of these ends.
"""
import dataclasses
import json
import os
import shlex
import sys

from addercore.distributed import Communicator, MissingMPIError, world_size_from_environment
from addercore.train import RunFolder, RunFolderError, TrainingInterrupted
from addercore.train.distributed import DistributedTrainer, MissingCheckpointError


def wanted(args):
    """Distributed when asked (``--distributed``) or started by an MPI launcher with more than
    one process."""
    return args.distributed or world_size_from_environment() > 1


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main(args, cli):
    """``train_cifar.main`` of one rank; ``cli``: the train_cifar module (its helpers)."""
    try:
        comm = Communicator(timeout=args.comm_timeout)
    except MissingMPIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _run(args, cli, comm)
    except TrainingInterrupted as e:  # every rank stopped after the same step; rank 0 saved
        return 128 + int(e.signum)
    except KeyboardInterrupt:
        comm.abort(f"\nrank {comm.rank}: aborted by Ctrl-C: ending all {comm.size} ranks "
                   "(the last checkpoint, if any, stays; continue with --resume)", 130)
    except BaseException as e:  # noqa: BLE001 - any error on any rank ends the whole job
        text = cli._os_error(e) if isinstance(e, OSError) else str(e)
        comm.abort(f"rank {comm.rank}/{comm.size}: error: {type(e).__name__}: {text}\n"
                   f"ending all {comm.size} ranks (MPI_Abort); the last complete checkpoint in "
                   f"{args.out} stays: continue with --resume", 1)
    return 1


def _run(args, cli, comm):
    root = comm.is_root

    def say(text):
        if root:
            print(text, file=sys.stderr)

    try:
        config = cli.config_from_args(args)
    except (ValueError, TypeError) as e:
        say(f"error: {e}")
        return 2
    if args.eval_only:
        say("error: --eval-only runs in one process: start it without mpiexec")
        return 2
    problem = cli.check_backend(args.allow_numpy_backend)
    if problem:
        say(f"error: {problem}")
        return 2
    if config.threads is None:  # the ranks on one machine share its cores
        config = dataclasses.replace(config, threads=max(1, _usable_cores() // comm.local_size()))
    problem = None
    if root:  # only rank 0 writes into --out (it need not be visible to the other ranks)
        folder = RunFolder(config.out)
        try:
            folder.check_path()
            present = folder.existing_run()
        except RunFolderError as e:
            problem, present = str(e), []
        if not (args.resume or args.overwrite) and present:
            problem = (f"--out {config.out} already holds a run ({', '.join(present)}): add "
                       "--resume to continue it, --overwrite to delete it and start over, or "
                       "choose another --out")
    problem = comm.bcast_json(problem, what="start-up check")
    if problem:
        say(f"error: {problem}")
        return 1
    trainer = DistributedTrainer(config, comm, log_interval=args.log_interval,
                                 overwrite=args.overwrite,
                                 check_memory=not args.ignore_memory_check)
    try:
        trainer.log(cli.header(trainer))
        trainer.log(cli.backend_line())
        trainer.log(f"data-parallel: {comm.size} MPI ranks × {config.threads} thread(s), about "
                    f"{config.batch_size // comm.size} images per rank per step, BatchNorm "
                    f"statistics {'over the global batch (--sync-bn)' if config.sync_bn else 'per rank'}"
                    f", a rank waits at most {comm.timeout:.0f} s for the others")
        if args.resume:
            try:
                trainer.resume()  # checks the checkpoint (on every rank) before creating anything
            except MissingCheckpointError as e:  # every rank alike: no abort needed
                say(f"error: {e}")
                return 1
        else:
            trainer.open_run()
        if root:
            with open(trainer.out / "command.txt", "a") as f:
                f.write(f"mpiexec -n {comm.size} " + shlex.join([sys.executable] + sys.argv) + "\n")
        summary = trainer.fit()
    finally:
        trainer.close()
    if root:
        best = summary["best_test_acc"]
        print(f"done: {summary['epochs']} epochs, final test accuracy "
              f"{100 * summary['final_test_acc']:.2f}%, best {100 * best:.2f}% (epoch "
              f"{summary['best_epoch']}), {summary['elapsed_s']:.0f} s on {comm.size} ranks; "
              f"outputs in {summary['out']}")
        print(json.dumps(summary))
    return 0
