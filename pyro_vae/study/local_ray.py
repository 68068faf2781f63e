"""A real Ray cluster of several nodes on this machine: for the tests and the bench.

Each node is a blocking `ray start` in its own process group (session), so stopping the cluster ends
exactly its processes and no other Ray on the machine. Ray 2.x replaces a node address of 127.0.0.1 by the machine's
own address (its one switch against that, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, refuses a second
node), so the nodes listen on that address: run this only on a machine whose network you trust.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = "Ray runtime started"


def _options(**options) -> list[str]:
    """`ray start`'s command-line options from keywords (True: a switch)."""
    return [item for key, value in options.items()
            for item in ["-" + "-" + key.replace("_", "-")] + ([] if value is True else [str(value)])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`with LocalCluster(nodes=2, cpus=1) as cluster:` ... `cluster.address`, `cluster.env`."""

    def __init__(self, nodes: int = 2, cpus: int = 1, timeout: float = 180.0):
        self.nodes, self.cpus, self.timeout = nodes, cpus, timeout
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="pvray-"))  # short: Ray's socket paths live below it
        # Worker processes inherit the nodes' environment; MARKER tells this cluster's workers from others.
        self.env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYRO_VAE_RAY_CLUSTER": str(self.temp)}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))

    def _start(self, args: list[str]) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray if os.path.exists(ray) else "ray", "start", *_options(
            block=True, num_cpus=self.cpus, object_store_memory=80 * 2**20, disable_usage_stats=True,
            dashboard_agent_listen_port=free_port()), *args]
        log = open(self.temp / f"node-{len(self.procs)}.log", "w+")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + self.timeout
        while STARTED not in Path(log.name).read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)

    def __enter__(self) -> "LocalCluster":
        try:
            self._start(_options(head=True, node_ip_address="127.0.0.1", port=self.port, include_dashboard="false",
                                 ray_client_server_port=free_port(), temp_dir=self.temp))
            for _ in range(self.nodes - 1):
                self._start(_options(address=self.address))
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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, sig)  # the node's own process group: its raylet, GCS and workers
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.stop()
