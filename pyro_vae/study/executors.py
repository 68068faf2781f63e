"""Where a study's cells run: in this process, in N local worker processes, or on a Ray cluster.

Each executor takes the cells that need work and yields (cell, result) as each finishes; the runner
does the rest (progress, the report). `EXECUTORS` lists them, the first that applies to the options
is used. Only the standard library loads at import time: a worker process must be able to set its
OpenMP and thread settings before it imports torch.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from pyro_vae.errors import UserError

# Idle OpenMP threads that busy-wait slow small models many times over on a machine shared with
# other processes (the study's own workers among them).
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass
class Execution:
    """How to run the cells (the `pyro-vae study` flags and the study file's [resources])."""

    workers: int = 1
    threads: int | None = None  # torch threads per worker (default: the cores shared out among the workers)
    ray: str | None = None  # cluster address; "auto": RAY_ADDRESS, a running `ray start`, or a local one
    cpus: float | None = None  # per run on Ray
    gpus: float | None = None
    progress: bool = True

    def validate(self) -> "Execution":
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.ray is not None and self.workers > 1:
            raise UserError("--workers runs cells on this machine and --ray on a cluster; give one of them")
        cores = os.cpu_count() or 1
        if self.ray is None and self.workers * (self.threads or 1) > cores:
            raise UserError(f"--workers {self.workers} x --threads {self.threads or 1} exceeds the {cores} cores here; "
                            f"use fewer (at most {cores} in all)")
        return self


Log = Callable[[str], None]


class InProcess:
    """Today's behaviour: one cell after another in this process, with its log and progress bars."""

    slots = 1

    def __init__(self, execution: Execution, resources: dict, log: Log):
        self.execution, self.log = execution, log

    def describe(self) -> str:
        return "in this process" + (f", torch threads {self.execution.threads}" if self.execution.threads else "")

    def run(self, cells: list) -> Iterator[tuple]:
        from pyro_vae.study.cells import run_cell

        for cell in cells:
            self.log(f"{cell.name}: {'at most ' if cell.capped else ''}{cell.epochs_left} epochs to train" + (", then evaluation" if cell.evaluate else ""))
            yield cell, run_cell(replace(cell, threads=self.execution.threads), self.log, self.execution.progress)


def _stop_worker(signum, frame) -> None:
    """SIGTERM in a worker: free what it holds that outlives it (the named semaphores of its progress
    bars' locks, which the resource tracker would report as leaked), then exit at once. Raising would
    not do: the pool's worker loop catches every exception of a cell and takes the next one."""
    from multiprocessing import util

    util._run_finalizers(0)  # the finalizers a normal exit runs (SemLock unlinks among them)
    os._exit(128 + signum)


def _start_worker(threads: int) -> None:
    """Initialise a local worker process before anything imports torch in it."""
    signal.signal(signal.SIGTERM, _stop_worker)
    os.environ.update(WORKER_ENV)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


class LocalPool:
    """N worker processes on this machine (spawned, so none inherits the driver's torch state)."""

    def __init__(self, execution: Execution, resources: dict, log: Log):
        self.slots = execution.workers
        self.threads = execution.threads or max(1, (os.cpu_count() or 1) // execution.workers)

    def describe(self) -> str:
        return f"{self.slots} worker processes, {self.threads} thread{'s' if self.threads > 1 else ''} each"

    def run(self, cells: list) -> Iterator[tuple]:
        from concurrent.futures.process import BrokenProcessPool

        from pyro_vae.study.cells import run_cell

        pool = concurrent.futures.ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_start_worker, initargs=(self.threads,))
        try:
            futures = {pool.submit(run_cell, replace(cell, threads=self.threads)): cell for cell in cells}
            for future in concurrent.futures.as_completed(futures):
                try:
                    yield futures[future], future.result()
                except BrokenProcessPool:
                    raise UserError(f"a worker process died while running {futures[future].name}; finished runs are kept, "
                                    "run the same command again to resume the others") from None
        except BaseException:  # Ctrl-C, SIGTERM, an error: the workers stop now, not after their cells
            # (their files are written atomically: what an epoch finished is kept). Python 3.11's pool has
            # no public way to reach its workers; 3.14 adds terminate_workers().
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # joins the workers and frees the pool's semaphores


# name -> (when it applies, the executor class or "module:Class" for one whose module imports an
# optional dependency); the first that applies runs the study.
EXECUTORS: dict[str, tuple[Callable[[Execution], bool], object]] = {
    "ray": (lambda e: e.ray is not None, "pyro_vae.study.ray_executor:RayExecutor"),
    "local": (lambda e: e.workers > 1, LocalPool),
    "process": (lambda e: True, InProcess),
}


def make_executor(execution: Execution, resources: dict, log: Log):
    """The executor the options ask for."""
    import importlib

    execution.validate()
    entry = next(entry for applies, entry in EXECUTORS.values() if applies(execution))
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = getattr(importlib.import_module(module), name)
    return entry(execution, resources, log)
