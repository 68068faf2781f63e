"""Item 4 (opt-in, --study): wall time and peak memory of a whole study, run as a child process so
that its peak RSS is its own and not the bench's."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyro_vae.bench.options import Options
from pyro_vae.bench.targets import TARGET_STUDY_BYTES, TARGET_STUDY_SECONDS


def bench_study(opts: Options, log: Callable[[str], None], flags: tuple[str, ...] = (), env: dict | None = None,
                out: Path | None = None) -> dict:
    """Run `pyro-vae study FILE --out DIR [flags]` as a child; its wall time and peak RSS (os.wait4's rusage)."""
    out_dir = out or (Path(opts.study_out) if opts.study_out else Path(tempfile.mkdtemp(prefix="pyro-vae-bench-study-")))
    cmd = [sys.executable, "-m", "pyro_vae.cli", "study", str(opts.study), "--out", str(out_dir), "--no-progress", *flags]
    env = dict(env or os.environ)
    if opts.threads:
        env["OMP_NUM_THREADS"] = str(opts.threads)
    log(f"bench study: {' '.join(cmd)} (limit {opts.study_timeout:.0f} s)")
    with tempfile.TemporaryFile() as logs:
        started = time.perf_counter()
        # Its own session, so that a timeout stops the study's workers too.
        proc = subprocess.Popen(cmd, stdout=logs, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timed_out = threading.Event()

        def stop():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

        timer = threading.Timer(opts.study_timeout, stop)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # Popen.wait would not return the rusage
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        logs.seek(0)
        tail = logs.read().decode(errors="replace")[-4000:]
    # ru_maxrss: kilobytes on Linux, bytes on macOS.
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result = {
        "study": str(opts.study), "command": cmd, "returncode": proc.returncode, "timed_out": timed_out.is_set(),
        "wall_seconds": wall, "peak_rss_bytes": peak, "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "target_seconds": TARGET_STUDY_SECONDS, "target_bytes": TARGET_STUDY_BYTES,
        "met_time": proc.returncode == 0 and wall <= TARGET_STUDY_SECONDS,
        "met_memory": peak < TARGET_STUDY_BYTES, "output_tail": tail,
    }
    if opts.study_out is None and out is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        result["out"] = str(out_dir)
    log(f"bench study: {'finished' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in {wall:.0f} s, "
        f"peak RSS {peak / 2**20:.0f} MiB")
    return result


GRID_RUNS, GRID_WORKERS = 300, (10, 100)


def bench_study_modes(opts: Options, log: Callable[[str], None]) -> dict:
    """The study with --workers 1 (2 threads), --workers 2 (1 thread each) and --ray on a local two-node
    cluster (1 CPU each), one after another into fresh folders; Ray's overhead per run, and from
    these a projection for a GRID_RUNS-run grid on two-core workers."""
    from pyro_vae.study.local_ray import LocalCluster
    from pyro_vae.study.spec import Study

    base = Path(opts.study_out) if opts.study_out else Path(tempfile.mkdtemp(prefix="pyro-vae-bench-study-"))
    modes = {"workers 1": (("--workers", "1", "--threads", "2"), None), "workers 2": (("--workers", "2"), None)}
    results = {name: bench_study(opts, log, flags, env, base / name.replace(" ", "-")) for name, (flags, env) in modes.items()}
    with LocalCluster(nodes=2, cpus=1) as cluster:
        results["ray"] = bench_study(opts, log, ("--ray", cluster.address), cluster.env, base / "ray")
    if opts.study_out is None:
        shutil.rmtree(base, ignore_errors=True)
    return summarise_modes(results, len(Study.load(opts.study).cells()))


def summarise_modes(results: dict, runs: int) -> dict:
    """The speed-up of two local workers, Ray's overhead per run and the projection, from the wall times."""
    one, two, ray = (results[k]["wall_seconds"] for k in ("workers 1", "workers 2", "ray"))
    slot_seconds = 2 * two / runs  # one run's share of a 1-thread slot, driver and report included
    overhead = 2 * (ray - two) / runs  # both use two 1-CPU slots: the difference is Ray's, per run
    projection = {w: math.ceil(GRID_RUNS / (2 * w)) * (slot_seconds + max(overhead, 0.0)) for w in GRID_WORKERS}
    return {"modes": results, "runs": runs, "speedup_workers_2": one / two, "ray_overhead_per_run": overhead,
            "run_slot_seconds": slot_seconds, "grid_runs": GRID_RUNS, "projection": projection}
