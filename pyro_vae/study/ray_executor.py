"""Cells as Ray tasks: `pyro-vae study FILE --out DIR --ray [ADDRESS]`.

Each task gets its run's files as bytes, trains and evaluates in a temporary folder on whichever
node Ray picks, and returns the files; the driver writes them into DIR (each atomically), so the
nodes need no shared filesystem, only pyro-vae installed and the data reachable. A task whose worker
process dies is run again (Ray's max_retries) from the files it was given; a user error in a task
stops the study with its message.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from pyro_vae.errors import UserError
from pyro_vae.study.cells import pack, relocate, run_shipped, unpack
from pyro_vae.study.executors import WORKER_ENV, Execution

MAX_RETRIES = 3
INSTALL = 'pip install "pyro-vae[ray]"'


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs the ray package, which is not installed; install it with: {INSTALL}") from None
    return ray


class RayExecutor:
    def __init__(self, execution: Execution, resources: dict, log: Callable[[str], None]):
        self.ray = ray = import_ray()
        self.cpus = execution.cpus if execution.cpus is not None else resources.get("cpus", 1)
        self.gpus = execution.gpus if execution.gpus is not None else resources.get("gpus", 0)
        self.threads = execution.threads or max(1, int(self.cpus))
        address = None if execution.ray in ("", "auto") else execution.ray
        env = {**WORKER_ENV, "OMP_NUM_THREADS": str(self.threads)}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=True)
        except ConnectionError as e:
            raise UserError(f"cannot reach a Ray cluster at {address} ({str(e).splitlines()[0]}); give the address "
                            "the head node printed when `ray start` began, or --ray alone for a local one") from None
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if not any(n.get("CPU", 0) >= self.cpus and n.get("GPU", 0) >= self.gpus for n in nodes):
            ray.shutdown()
            raise UserError(f"no node of the Ray cluster has {self.cpus} CPUs and {self.gpus} GPUs for one run; "
                            "lower cpus/gpus in the study's [resources] or --cpus-per-run/--gpus-per-run")
        self.slots = max(1, int(sum(n.get("CPU", 0) for n in nodes) // max(self.cpus, 1e-9)))
        self.address = ray.get_runtime_context().gcs_address

    def describe(self) -> str:
        return (f"Ray cluster {self.address}: {self.cpus} CPUs, {self.gpus} GPUs and {self.threads} threads per run, "
                f"{self.slots} at a time")

    def run(self, cells: list) -> Iterator[tuple]:
        ray = self.ray
        task = ray.remote(run_shipped).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=MAX_RETRIES)
        pending = {task.remote(replace(cell, threads=self.threads), pack(Path(cell.run))): cell for cell in cells}
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    if isinstance(e.cause, UserError):
                        raise UserError(f"{cell.name}: {e.cause}") from None
                    raise
                unpack(Path(cell.run), relocate(result.pop("files"), Path(cell.run)))
                yield cell, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.shutdown()
