"""A real Ray cluster of several nodes on this machine, listening on loopback only: for the tests and
the bench.

The nodes are started by Ray's own multi-node harness (ray.cluster_utils.Cluster: a GCS, one raylet per
node, real worker processes) in a child process of its own session, so stopping the cluster ends
exactly its processes and no other Ray on the machine. `ray start` would put every node on the
machine's network address (Ray resolves 127.0.0.1 to it); with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
which the harness honours and a driver given `cluster.env` inherits, every node and the driver stay
on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyro_vae.study.ray_executor import LOOPBACK_ONLY

ADDRESS = "ADDRESS"


class LocalCluster:
    """`with LocalCluster(nodes=2, cpus=1) as cluster:` ... `cluster.address`, `cluster.env`."""

    def __init__(self, nodes: int = 2, cpus: int = 1, timeout: float = 180.0):
        self.nodes, self.cpus, self.timeout = nodes, cpus, timeout
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.temp = Path(tempfile.mkdtemp(prefix="pvray-"))  # short: Ray's socket paths live below it
        # Worker processes inherit the nodes' environment; the marker tells this cluster's workers from others.
        self.env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYRO_VAE_RAY_CLUSTER": str(self.temp),
                    LOOPBACK_ONLY: "0"}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))

    def __enter__(self) -> "LocalCluster":
        log = open(self.temp / "cluster.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "pyro_vae.study.local_ray", str(self.nodes), str(self.cpus), str(self.temp)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        try:
            while not self.address:
                text = Path(log.name).read_text()
                lines = [line for line in text.splitlines() if line.startswith(ADDRESS)]
                if lines:
                    self.address = lines[0].split()[1]
                elif self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the local Ray cluster did not start:\n{text[-3000:]}")
                else:
                    time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def worker_pids(self, task: str = "") -> list[int]:
        """Pids of this cluster's worker processes (running `task`, if named)."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if (proc.info["cmdline"] or [""])[0].startswith(f"ray::{task}") \
                        and proc.environ().get("PYRO_VAE_RAY_CLUSTER") == str(self.temp):
                    found.append(proc.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return found

    def stop(self) -> None:
        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM: the harness shuts its nodes down
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    continue
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of its session outlived it
                except ProcessLookupError:
                    pass
                break
        shutil.rmtree(self.temp, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(nodes: int, cpus: int, temp: str) -> None:
    """The child process: start the nodes, print the address, keep them until SIGTERM."""
    from ray.cluster_utils import Cluster

    # Ray's Cluster records the head's address in its default temp folder even when temp_dir is given, and
    # does not create that folder (on a fresh machine: FileNotFoundError for /tmp/ray/ray_current_cluster).
    os.makedirs(os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray"), exist_ok=True)
    memory = 80 * 2**20
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus, "object_store_memory": memory, "include_dashboard": False, "temp_dir": temp})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus, object_store_memory=memory)
    cluster.wait_for_nodes()
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # blocked only now: the nodes' processes keep the default
    print(ADDRESS, cluster.address, flush=True)
    signal.sigwait(stop)
    cluster.shutdown()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
