"""Item 4 (opt-in, --study): wall time and peak memory of a whole study, run as a child process so
that its peak RSS is its own and not the bench's."""

from __future__ import annotations

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


def bench_study(opts: Options, log: Callable[[str], None]) -> dict:
    """Run `pyro-vae study FILE --out DIR` as a child; its wall time and peak RSS (os.wait4's rusage)."""
    out_dir = Path(opts.study_out) if opts.study_out else Path(tempfile.mkdtemp(prefix="pyro-vae-bench-study-"))
    cmd = [sys.executable, "-m", "pyro_vae.cli", "study", str(opts.study), "--out", str(out_dir), "--no-progress"]
    env = dict(os.environ)
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
    if opts.study_out is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        result["out"] = str(out_dir)
    log(f"bench study: {'finished' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in {wall:.0f} s, "
        f"peak RSS {peak / 2**20:.0f} MiB")
    return result
