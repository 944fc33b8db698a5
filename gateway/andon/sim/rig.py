"""A whole system on one machine: Mosquitto, the `andon gateway` process, a virtual line.

The demo, the end-to-end tests and bench/e2e.py all stand on this. `Rig` starts the parts in
order and stops every one of them on exit, even when something in between failed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from andon import contract
from andon.config import PlantConfig, load_plant
from andon.maint.provision import GATEWAY_USER, Network, mosquitto_hash, provision
from andon.sim.board import SIM_HEAP
from andon.sim.line import VirtualLine
from andon.sim.mosquitto import Broker, free_port
from andon.sim.observe import Observer, wait_for
from andon.sim.scenario import Runner


def andon_command(*args: str) -> list[str]:
    """The `andon` console script of this environment."""
    return [str(Path(sys.executable).with_name("andon")), *args]


def local_plant(source: Path | dict[str, Any], workdir: Path, broker: Broker) -> Path:
    """A copy of the plant (file or TOML data) pointed at `broker`, its database in `workdir`
    (and its HTTP API, if any, on a free local port)."""
    data = tomllib.loads(source.read_text()) if isinstance(source, Path) else dict(source)
    data["broker"] = {"host": broker.host, "port": broker.port}  # local: anonymous
    data["gateway"] = {**data.get("gateway", {}), "database": "andon.db"}  # beside the file
    if "http" in data["gateway"]:  # the API, if the plant has one, on a free local port
        data["gateway"]["http"] = {"host": "127.0.0.1", "port": free_port()}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "plant.toml"
    path.write_text(tomli_w.dumps(data))
    return path


class GatewayProcess:
    """`andon gateway --config ...` as its own process, its output in a log file; `name`: one
    of several gateways on a PostgreSQL store."""

    def __init__(self, config: Path, log: Path, name: str | None = None) -> None:
        self.config = config
        self.log = log
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._spawning: threading.Thread | None = None

    def start(self) -> None:
        # On a thread of its own: a signal handler that raises (the demo's, while it starts)
        # runs on the main thread, so it cannot come between the fork and `self.proc`, which
        # would leave a gateway running that nothing stops. `kill()` waits for the thread.
        self._spawning = threading.Thread(target=self._spawn, name="andon-spawn-gateway")
        self._spawning.start()
        self._spawning.join()

    def _spawn(self) -> None:
        named = ("--name", self.name) if self.name else ()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                andon_command("gateway", "--config", str(self.config), *named),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal is the demo's to handle
            )

    def kill(self) -> None:
        """kill -9: whatever was not committed is the broker's to deliver again."""
        if self._spawning is not None:
            self._spawning.join()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, as an operator stops it; its exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code, self.proc = self.proc.returncode, None
        return code


WATCHER = "andon-watcher"  # the rig's observer: reads every andon topic, writes none


@dataclass(frozen=True)
class Secured:
    """What `secure()` set up: the provision dir and the watcher's login."""

    provisioned: Path
    watcher_password: str


def secure(plant_path: Path, broker: Broker) -> Secured:
    """Lock the rig down as a plant would be: `andon provision` writes every board's account
    and the ACL beside the plant file, the broker takes them with anonymous access off, and
    the gateway logs in with its own account (written into the plant file)."""
    out = plant_path.parent / "provisioned"
    plant = load_plant(plant_path)
    provision(plant, out, network=Network(broker_host=broker.host))
    passwords = json.loads((out / "secrets.json").read_text())
    gateway_user = plant.broker.username or GATEWAY_USER
    data = tomllib.loads(plant_path.read_text())
    data["broker"] |= {"username": gateway_user, "password": passwords[gateway_user]}
    plant_path.write_text(tomli_w.dumps(data))
    watcher_password = secrets.token_urlsafe(18)
    broker.workdir.mkdir(parents=True, exist_ok=True)
    passwd, acl = broker.workdir / "passwd", broker.workdir / "acl"
    passwd.write_text(
        (out / "mosquitto" / "passwd").read_text()
        + f"{WATCHER}:{mosquitto_hash(watcher_password)}\n"
    )
    acl.write_text(
        (out / "mosquitto" / "acl").read_text()
        + f"\nuser {WATCHER}\ntopic read {contract.ROOT}/#\n"
    )
    for path in (passwd, acl):
        path.chmod(0o600)
    broker.extra_conf = (
        f"allow_anonymous false\npassword_file {passwd.resolve()}\nacl_file {acl.resolve()}\n"
    )
    return Secured(out, watcher_password)


class Rig:
    """Broker, gateway process, virtual boards and an observer, under `workdir`.

    `plant` is a plant file or its TOML data; its broker and database are replaced by the rig's.
    `stations` limits the boards started ("L1/S03"...); `gateway=False` leaves the gateway out.
    `secured`: provisioned accounts and ACL, anonymous access off (see `secure`).
    """

    def __init__(
        self,
        plant: Path | dict[str, Any],
        workdir: Path,
        stations: Iterable[str] | None = None,
        heap: str = SIM_HEAP,
        gateway: bool = True,
        secured: bool = False,
    ) -> None:
        self.workdir = workdir
        self.broker = Broker(workdir / "broker", free_port())
        self.plant_path = local_plant(plant, workdir, self.broker)
        self.secured = secure(self.plant_path, self.broker) if secured else None
        self.plant: PlantConfig = load_plant(self.plant_path)
        self.database = self.plant.gateway.database
        http = self.plant.gateway.http
        self.api_url = f"http://{http.host}:{http.port}/api/v1" if http else None
        self.gateway = GatewayProcess(self.plant_path, workdir / "gateway.log")
        self.with_gateway = gateway
        provisioned = self.secured.provisioned if self.secured else None
        self.line = VirtualLine(self.plant, workdir / "sim", stations, heap, provisioned)
        self.observer: Observer | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Rig:
        try:
            self._stack.callback(self.broker.stop)  # first: a signal may come during start
            self.broker.start()
            user, password = (
                (WATCHER, self.secured.watcher_password) if self.secured else (None, None)
            )
            self.observer = Observer(
                self.broker.host, self.broker.port, username=user, password=password
            )
            self._stack.callback(self.observer.close)
            # before the start: a signal while it waits for the gateway leaves none behind
            self._stack.callback(self.gateway.kill)  # after stop_gateway(): a no-op
            if self.with_gateway:
                self.start_gateway()
            self.line.start()
            self._stack.callback(self.line.stop)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def start_gateway(self, timeout: float = 20.0) -> None:
        """Start the gateway process and wait for its retained status to say online."""
        since = time.monotonic()
        self.gateway.start()
        wait_for("gateway online", lambda: self._gateway_online(since), timeout)

    def _gateway_online(self, since: float) -> bool:
        if self.gateway.proc is not None and self.gateway.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited; see {self.gateway.log}")
        seen = self.observer.seen(contract.GATEWAY_STATUS, since)
        return bool(seen) and bool((seen[-1].body or {}).get("online"))

    def runner(self, **kwargs: Any) -> Runner:
        return Runner(self.line, self.observer, **kwargs)

    def wait_line_up(self, timeout: float = 30.0) -> None:
        """Every board connected, with its cords' states at boot on its flash: whatever a test
        does next comes after them."""
        for sb in self.line.boards.values():
            wait_for(
                f"{sb.key} link up, its cords reported",
                lambda sb=sb: (
                    (s := self.line.do("status", sb.line, sb.station)).get("link") == "up"
                    and s["inputs_reported"]
                ),
                timeout,
            )
