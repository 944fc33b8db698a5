"""A local Mosquitto broker on a free loopback port, for the demo, the simulator and tests."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

AUTOSAVE_S = 2


def mosquitto_exe() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise RuntimeError(
            "Mosquitto is not installed: run `sudo apt-get install -y mosquitto` "
            "(`make test` installs it when run as root)"
        )
    return found


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    """One Mosquitto process; restartable on the same port and persistence directory."""

    workdir: Path
    port: int
    extra_conf: str = ""
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            f"listener {self.port} {self.host}\n"
            "user root\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            # saved every AUTOSAVE_S, not only at a clean stop: a crash keeps the sessions
            f"autosave_interval {AUTOSAVE_S}\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "set_tcp_nodelay true\n"  # a signal must not wait for Nagle's algorithm
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (self.extra_conf or "allow_anonymous true\n")
        )

    def start(self, timeout: float = 10.0) -> None:
        self.write_conf()
        self.proc = subprocess.Popen(
            [mosquitto_exe(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal is the demo's to handle
        )
        try:
            self._wait_listening(timeout)
        except BaseException:  # a failed start, or a signal meanwhile: no broker left behind
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err}{log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the broker loses what it had not saved, as after a crash."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def start_broker(workdir: Path, port: int | None = None, extra_conf: str = "") -> Iterator[Broker]:
    broker = Broker(workdir, port or free_port(), extra_conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
