"""`andon doctor`: check a deployment, and for each problem say how to fix it.

Each check is a function of the plant (and the provision dir, if given) that returns a
`Check`: OK or FAIL, what it found, and the fix. They only read: the broker logins are
made with a client id of their own, and the store (the SQLite file, or the PostgreSQL of
`[store] url`) is read on a read-only connection, or rolled back.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from andon.config import PlantConfig
from andon.firmware_build import FIRMWARE
from andon.maint.provision import GATEWAY_USER
from andon.runtime.store import Reader, read_plant

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 5.0
CLOCK_SKEW_MS = 2_000  # what a person notices on a call's timestamps
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""

    def lines(self) -> list[str]:
        head = f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.found}"
        return [head] if self.ok or not self.fix else [head, f"     fix: {self.fix}"]

    def as_dict(self) -> dict:
        return asdict(self)


def _connack(plant: PlantConfig, username: str | None, password: str | None) -> str | None:
    """Log in to the plant's broker: None if accepted, else why not (refused or unreachable)."""
    broker = plant.broker
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"andon-doctor-{os.getpid()}-{username}"
    )
    if username is not None:
        client.username_pw_set(username, password)
    if broker.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    answered = threading.Event()
    result: list[str | None] = []

    def on_connect(_c, _u, _f, reason, _p) -> None:
        result.append(str(reason) if reason.is_failure else None)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"unreachable: {exc}"
    client.loop_start()
    try:
        if not answered.wait(CONNECT_TIMEOUT_S):
            return f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()


def check_broker(plant: PlantConfig) -> Check:
    broker = plant.broker
    where = f"{broker.host}:{broker.port}" + (" (TLS)" if broker.tls else "")
    user = broker.username or GATEWAY_USER
    problem = _connack(plant, broker.username, broker.password)
    if problem is None:
        return Check("broker reachable", True, f"{where}, logged in as {user}")
    if problem.startswith(("unreachable", "no answer")):
        fix = (
            f"start Mosquitto (systemctl status mosquitto) and check that {where} is the"
            " plant's [broker] host and port, open in the firewall"
        )
        if broker.tls:
            fix += "; with TLS, this machine must trust the broker's certificate"
        return Check("broker reachable", False, f"{where} {problem}", fix)
    return Check(
        "broker reachable",
        False,
        f"{where} refused {user}: {problem}",
        f"the plant's [broker] username/password must be the account `andon provision` wrote"
        f" ({user} in secrets.json), and the broker must load its password file",
    )


def check_acl(plant: PlantConfig) -> Check:
    """Logins that must be refused: anonymous, and the gateway's account with a wrong
    password."""
    user = plant.broker.username or GATEWAY_USER
    accepted = [
        what
        for what, login in (
            ("an anonymous client", (None, None)),
            (f"{user} with a wrong password", (user, "andon-doctor-wrong-password")),
        )
        if _connack(plant, *login) is None
    ]
    if not accepted:
        return Check("logins enforced", True, "anonymous and wrong-password logins are refused")
    return Check(
        "logins enforced",
        False,
        f"the broker accepts {' and '.join(accepted)}: any client may raise calls",
        "in mosquitto.conf: allow_anonymous false, and include the andon.conf that"
        " `andon provision --out DIR` writes (its password file and ACL), then restart it",
    )


def check_board_login(plant: PlantConfig, provisioned: Path) -> Check:
    """A board account from the provision dir logs in: the broker has that password file."""
    try:
        passwords = json.loads((provisioned / "secrets.json").read_text())
    except (OSError, ValueError) as exc:
        return Check(
            "board accounts",
            False,
            f"{provisioned}/secrets.json: {exc}",
            f"andon provision --config ... --out {provisioned}",
        )
    boards = [s.board for _, s in plant.stations() if s.board in passwords]
    if not boards:
        return Check(
            "board accounts",
            False,
            f"no board of the plant in {provisioned}",
            f"andon provision --config ... --out {provisioned}",
        )
    problem = _connack(plant, boards[0], passwords[boards[0]])
    if problem is None:
        return Check("board accounts", True, f"{boards[0]} logs in with its provisioned password")
    return Check(
        "board accounts",
        False,
        f"{boards[0]} refused: {problem}",
        f"the broker must load {provisioned}/mosquitto/passwd as it is now (after a --rotate"
        " too): copy it where mosquitto.conf points, then reload Mosquitto",
    )


# The tables every gateway inserts into and updates (andon.runtime.store_pg)
PG_TABLES_WRITTEN = ("log", "progress", "record", "outbox", "projection", "lease", "member")


def check_database(plant: PlantConfig) -> Check:
    if plant.store.url:
        return check_postgres(plant.store.url)
    database = plant.gateway.database
    if not database.exists():
        # the gateway creates it, and the directories above it
        existing = next(p for p in database.parents if p.exists())
        if existing.is_dir() and os.access(existing, os.W_OK):
            return Check(
                "database writable", True, f"{database} not created yet; {existing} is writable"
            )
        return Check(
            "database writable",
            False,
            f"{database} does not exist and {existing} is not writable",
            f"create {database.parent} for the gateway's user (systemd: StateDirectory=andon)",
        )
    try:
        db = sqlite3.connect(database, timeout=2)
        try:
            db.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
            db.rollback()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return Check(
            "database writable",
            False,
            f"{database}: {exc}",
            f"the gateway's user must own {database} and its directory (-wal and -shm files)",
        )
    return Check("database writable", True, str(database))


def check_postgres(url: str) -> Check:
    """Can the gateway log in to PostgreSQL and write its tables (or create them)?"""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)  # named without its password
    where = f"PostgreSQL {info.get('dbname')} at {info.get('host')}:{info.get('port', 5432)}"
    try:
        with psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S)) as db:
            denied = _pg_denied(db)
            db.rollback()
    except psycopg.Error as exc:
        return Check(
            "database writable",
            False,
            f"{where}: {str(exc).strip()}",
            "start PostgreSQL; check [store] url: its host, port, database, user and password",
        )
    user = info.get("user", "the gateway's user")
    if denied is None:
        return Check("database writable", True, f"{where}: no tables yet; {user} may create them")
    if denied:
        return Check(
            "database writable",
            False,
            f"{where}: {user} may not write {', '.join(denied)}",
            f"GRANT CREATE ON SCHEMA public, and INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA"
            f" public, TO {user} (or make {user} the database's owner)",
        )
    return Check("database writable", True, where)


def _pg_denied(db: psycopg.Connection) -> list[str] | None:
    """What the user may not write: the gateway's tables, or before they exist (None when it
    may) the schema they are created in."""
    if db.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
        (may_create,) = db.execute("SELECT has_schema_privilege('public', 'CREATE')").fetchone()
        return None if may_create else ["schema public"]
    rows = db.execute(
        "SELECT t FROM unnest(%s::text[]) AS t"
        " WHERE NOT (has_table_privilege(t, 'INSERT') AND has_table_privilege(t, 'UPDATE'))",
        (list(PG_TABLES_WRITTEN),),
    )
    return [table for (table,) in rows]


def ntp_offset_ms(server: str, timeout: float = 3.0) -> int:
    """This machine's clock minus the NTP server's, in ms (one SNTP request)."""
    host, _, port = server.partition(":")
    request = b"\x23" + 47 * b"\0"  # version 4, client mode
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sent = time.time()
        sock.sendto(request, (host, int(port or 123)))
        reply, _ = sock.recvfrom(48)
        received = time.time()
    seconds, fraction = struct.unpack("!II", reply[40:48])  # the server's transmit time
    server_time = seconds - NTP_EPOCH_OFFSET + fraction / 2**32
    return round(((sent + received) / 2 - server_time) * 1000)


def check_clock(plant: PlantConfig, ntp: str | None) -> Check:
    if ntp is not None:
        try:
            offset = ntp_offset_ms(ntp)
        except OSError as exc:
            return Check("clock in sync", False, f"NTP {ntp}: {exc}", "check the NTP server")
        source = f"NTP {ntp}"
    else:
        last = read_plant(plant, _gateway_clock, None)
        if last is None:
            return Check("clock in sync", True, "no gateway clock yet to compare (give --ntp)")
        offset = time.time_ns() // 1_000_000 - last
        if offset >= 0:  # the gateway's last commit lies in the past, as it should
            return Check("clock in sync", True, "not behind the gateway's last clock")
        source = "the gateway's last clock"
    if abs(offset) <= CLOCK_SKEW_MS:
        return Check("clock in sync", True, f"{offset:+d} ms from {source}")
    return Check(
        "clock in sync",
        False,
        f"this machine is {offset / 1000:+.1f} s off {source}",
        "run an NTP client (timedatectl set-ntp true; chrony or systemd-timesyncd)",
    )


def _gateway_clock(db: Reader) -> int | None:
    row = db.execute("SELECT now FROM clock").fetchone()
    return row[0] if row and row[0] else None


def check_boards(plant: PlantConfig) -> Check:
    if not read_plant(plant, lambda db: True, False):
        return Check("boards online", False, "no database yet", "start the gateway first")
    from andon.runtime.replay import plant_view

    view = plant_view(plant)
    stations = [(ln["id"], s) for ln in view["lines"] for s in ln["stations"]]
    offline = [f"{line}/{s['id']}" for line, s in stations if not s["online"]]
    if not offline:
        return Check("boards online", True, f"all {len(stations)}")
    shown = ", ".join(offline[:6]) + (f" and {len(offline) - 6} more" if len(offline) > 6 else "")
    return Check(
        "boards online",
        False,
        f"{len(stations) - len(offline)} of {len(stations)}; offline: {shown}",
        "check each one's power and Wi-Fi; `andon events --since 1d` shows its last Will",
    )


def firmware_version(firmware: Path = FIRMWARE) -> str:
    """The version of the firmware tree this andon flashes."""
    for line in (firmware / "lib" / "andon" / "__init__.py").read_text().splitlines():
        if line.startswith("VERSION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise ValueError("no VERSION in the firmware tree")


def _firmware_running(db: Reader) -> dict[str, str]:
    """Each board's firmware version, as its last birth gave it."""
    births = db.execute("SELECT board, message FROM log WHERE kind='birth' ORDER BY pos")
    return {board: json.loads(message)["fw"] for board, message in births}


def check_firmware(plant: PlantConfig) -> Check:
    running = read_plant(plant, _firmware_running, None)
    if running is None:
        return Check("firmware versions", False, "no database yet", "start the gateway first")
    current = firmware_version()
    old = sorted(board for board, fw in running.items() if fw != current)
    counts = {fw: list(running.values()).count(fw) for fw in sorted(set(running.values()))}
    found = ", ".join(f"{fw} on {n}" for fw, n in counts.items()) or "no birth logged yet"
    if not old:
        return Check("firmware versions", bool(running), found, "" if running else "boot a board")
    return Check(
        "firmware versions",
        False,
        f"{found}; this andon flashes {current}",
        f"andon flash --config ... --board BOARD (boards: {', '.join(old[:6])})",
    )


def run_checks(
    plant: PlantConfig, provisioned: Path | None = None, ntp: str | None = None
) -> list[Check]:
    broker = check_broker(plant)
    checks = [broker]
    if broker.ok:
        checks.append(check_acl(plant))
        if provisioned is not None:
            checks.append(check_board_login(plant, provisioned))
    checks.append(check_database(plant))
    reads = {
        "clock in sync": lambda: check_clock(plant, ntp),
        "boards online": lambda: check_boards(plant),
        "firmware versions": lambda: check_firmware(plant),
    }
    checks += [_reading(plant, name, check) for name, check in reads.items()]
    return checks


def _reading(plant: PlantConfig, name: str, check: Callable[[], Check]) -> Check:
    """A check that reads the store; one whose store cannot be read fails, saying why."""
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    if plant.store.url:
        import psycopg

        errors += (psycopg.Error,)
    try:
        return check()
    except errors as exc:
        found = str(exc).strip().splitlines()[0]
        return Check(name, False, f"cannot read the store: {found}", "see database writable")
