"""The wheel carries what `andon` needs at run time beside its code, under `andon/_data`: the
firmware tree (flashing, the virtual line), the virtual board, the hardware profiles, the
example plant and the scenarios (the demo). A checkout uses them where they are
(`andon.firmware_build.SOURCES`); an editable install copies nothing."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RUNTIME_DATA = ("firmware", "virtual", "hardware/profiles", "examples", "scenarios")


class BuildWithRuntimeData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "andon" / "_data"
        for tree in RUNTIME_DATA:
            shutil.copytree(
                tree,
                target / tree,
                ignore=shutil.ignore_patterns("__pycache__", "*.mpy"),
                dirs_exist_ok=True,
            )


setup(cmdclass={"build_py": BuildWithRuntimeData})
