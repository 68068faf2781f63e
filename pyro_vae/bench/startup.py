"""How long `pyro-vae --help` and an argument error take: a user waits for them on every typo.

Each is a fresh process (the installed `pyro-vae` script next to this Python, else `python -m
pyro_vae.cli`), timed by wall clock from start to exit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pyro_vae.bench.targets import TARGET_HELP_SECONDS
from pyro_vae.bench.timers import summary

__all__ = ["bench_startup", "COMMANDS"]

# name -> arguments; each must exit without running a command (and so without importing torch)
COMMANDS = {"pyro-vae --help": ["--help"], "pyro-vae train --epochs two (an argument error)": ["train", "--epochs", "two"]}


def _program() -> tuple[list[str], str]:
    script = Path(sys.executable).parent / "pyro-vae"
    if script.is_file():
        return [str(script)], str(script)
    return [sys.executable, "-m", "pyro_vae.cli"], f"{Path(sys.executable).name} -m pyro_vae.cli"


def bench_startup(repeats: int, log: Callable[[str], None]) -> dict:
    program, shown = _program()
    out = {"program": shown, "target_seconds": TARGET_HELP_SECONDS, "items": {}}
    for name, argv in COMMANDS.items():
        seconds, codes = [], set()
        for r in range(repeats):
            log(f"startup: {name} ({r + 1}/{repeats})")
            started = time.perf_counter()
            done = subprocess.run(program + argv, capture_output=True, text=True)
            seconds.append(time.perf_counter() - started)
            codes.add(done.returncode)
        s = summary(seconds)
        out["items"][name] = {**s, "exit_codes": sorted(codes), "met": s["median"] <= TARGET_HELP_SECONDS}
    return out
