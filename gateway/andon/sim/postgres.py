"""A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.

Debian's `postgresql` package (`make test` installs it, as it does Mosquitto): `initdb` and
`pg_ctl` in a temp dir of its own under the system's temp dir (the unprivileged owner must
reach it, and a test's tmp dir is private to root), removed at the end. PostgreSQL refuses to
run as root, so when we are root the cluster belongs to an unprivileged user (`postgres`, which
the package creates) and runs through `runuser`. Its unix socket stays in that dir.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from andon.sim.mosquitto import free_port

OWNER = "postgres"  # who runs the cluster when we are root


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl (the newest Debian PostgreSQL, else the PATH's)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL is not installed: run `sudo apt-get install -y postgresql` "
        "(`make test` installs it when run as root)"
    )


@dataclass
class Cluster:
    """One running cluster: `url` reaches its `andon` database as its superuser."""

    workdir: Path
    port: int
    user: str

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/andon"


def _as_owner(command: list[str]) -> list[str]:
    """`command` as the cluster's owner: ourselves, unless we are root."""
    return ["runuser", "-u", OWNER, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(command), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr}{done.stdout}")


def _stop(bin_dir: Path, cluster: Cluster) -> None:
    """Stop at once (the cluster is thrown away); kill the postmaster if it will not go."""
    pid_file = cluster.data / "postmaster.pid"
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        _run([str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"], "stop")
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), 9)


@contextlib.contextmanager
def start_postgres(port: int | None = None) -> Iterator[Cluster]:
    """A new cluster with an `andon` database; stopped and removed when the block ends."""
    bin_dir = postgres_bin()
    user = OWNER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    workdir = Path(tempfile.mkdtemp(prefix="andon-pg-"))
    cluster = Cluster(workdir, port or free_port(), user)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OWNER)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    initdb = [str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", user]
    _run([*initdb, "-A", "trust", "-E", "UTF8", "--no-sync"], "initdb")
    options = f"-h 127.0.0.1 -p {cluster.port} -k {workdir} -c fsync=on"
    log = workdir / "postgres.log"
    start = [str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-l", str(log), "-w"]
    try:
        _run([*start, "-o", options, "start"], "pg_ctl start")
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port),
              "-U", user, "andon"], "createdb")  # fmt: skip
        yield cluster
    finally:
        _stop(bin_dir, cluster)
        shutil.rmtree(workdir, ignore_errors=True)
