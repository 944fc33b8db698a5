"""The `andon` command: the gateway, the virtual line, provisioning and flashing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from andon.clitools import JsonOption, emit, fail, open_store, plant_or_exit, store_or_exit
from andon.sim.cli import sim_app

app = typer.Typer(
    no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False, rich_markup_mode=None
)
app.add_typer(sim_app, name="sim")
token_app = typer.Typer(no_args_is_help=True, help="HTTP API tokens: the plant file keeps hashes.")
app.add_typer(token_app, name="token")
RoleOption = Annotated[
    str, typer.Option("--role", help="viewer (board, reports), supervisor (console), admin.")
]


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def main() -> None:
    """The console script: a usage error is one line naming what is valid, not a box."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # click's errors: a bad option, value or command
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx else "andon"
        commands = getattr(ctx.command, "list_commands", None) if ctx else None
        valid = f"; one of: {', '.join(commands(ctx))}" if commands else f"; see {where} --help"
        typer.echo(f"{where}: {exc.format_message()}{valid}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _print_version(value: bool) -> None:
    if value:
        from andon import __version__

        typer.echo(f"andon {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """The options before any command."""


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Stop after this many seconds [default: when the scenario has played].",
        ),
    ] = None,
) -> None:
    """A whole virtual line: Mosquitto, the gateway, the example plant's boards, a scenario."""
    from andon.sim.demo import run_demo

    raise typer.Exit(run_demo(duration))


@app.command()
def provision(
    config: Annotated[Path, typer.Option("--config", help="The plant configuration (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Where configs, passwords and ACL go.")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="New passwords for every account.")
    ] = False,
    broker_host: Annotated[
        str | None,
        typer.Option(
            help="The broker as boards reach it [plant's broker.host]; a name is resolved"
            " here, since boards take addresses only."
        ),
    ] = None,
    ntp: Annotated[
        str | None,
        typer.Option(help="NTP server for the boards, HOST[:PORT] [none: the gateway dates]."),
    ] = None,
    wifi_ssid: Annotated[
        str | None,
        typer.Option(help="Boards' Wi-Fi; its password is read from $ANDON_WIFI_PASSWORD."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty directory all the same.")
    ] = False,
) -> None:
    """Write every board's config.json, broker password file and ACL (secrets never printed)."""
    import os

    from andon.config import ConfigError, load_plant
    from andon.maint.provision import Network, ProvisionError, check_out_dir
    from andon.maint.provision import provision as run

    network = Network(broker_host, wifi_ssid, os.environ.get("ANDON_WIFI_PASSWORD", ""), ntp)
    try:
        check_out_dir(out, force)
        done = run(load_plant(config), out, rotate=rotate, network=network)
    except (ConfigError, ProvisionError) as exc:
        raise fail("provision", str(exc)) from None
    typer.echo(done.summary())


@app.command()
def flash(
    config: Annotated[Path, typer.Option("--config", help="The plant configuration (TOML).")],
    port: Annotated[
        list[str], typer.Option("--port", help="The board's serial port; repeat with --all.")
    ],
    board: Annotated[
        str | None, typer.Option("--board", help="The board id to flash it as (in the plant).")
    ] = None,
    provisioned: Annotated[
        Path, typer.Option("--provisioned", help="What `andon provision --out` wrote.")
    ] = Path("provisioned"),
    all_ports: Annotated[
        bool, typer.Option("--all", help="Flash every --port, each as the board it reports.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change.")] = False,
) -> None:
    """Compile the firmware, copy what changed and the board's config.json, reset, check."""
    from andon.config import ConfigError, load_plant
    from andon.maint.flash import FlashError, flash_board

    if len(port) > 1 and not all_ports:
        raise fail("flash", "several --port need --all")
    if all_ports == (board is not None):
        raise fail("flash", "give --board for one port, or --all")
    try:
        plant = load_plant(config)
    except ConfigError as exc:
        raise fail("flash", str(exc)) from None
    failed = 0
    for each in port:
        try:
            typer.echo(flash_board(plant, provisioned, each, board, dry_run).summary())
        except FlashError as exc:
            typer.echo(f"andon flash: {exc}", err=True)
            failed += 1
    if failed:
        raise typer.Exit(1)


ConfigOption = Annotated[Path, typer.Option("--config", help="The plant configuration (TOML).")]


@app.command()
def gateway(
    config: ConfigOption,
    name: Annotated[
        str | None,
        typer.Option(help="This gateway's name among several on one PostgreSQL [gateway.name]."),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", help="json: one JSON object a line, for a log collector."),
    ] = LogFormat.text,
) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (then it stops cleanly, status offline)."""
    import logging
    import signal
    import threading

    from andon.runtime.logs import configure_logging
    from andon.runtime.service import Gateway

    configure_logging(log_format.value)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plant = plant_or_exit(config)
    gw = Gateway(plant, name=name)
    gw.start()
    api = None
    try:
        if plant.gateway.http is not None:
            from andon.runtime.api import ApiServer

            api = ApiServer(plant, gw)
            try:
                api.start()
            except RuntimeError as exc:
                raise fail("gateway", str(exc)) from None
            logging.info("HTTP API on %s", api.url)
        while gw.running and not stop.is_set():
            stop.wait(0.5)
    finally:
        if api is not None:
            api.stop()
        gw.stop()
    if gw.failed is not None:
        raise typer.Exit(1)


@app.command()
def status(config: ConfigOption, as_json: JsonOption = False) -> None:
    """The plant now, from the gateway's database: lines, stations, open calls and alerts,
    kanban; times in the plant's timezone."""
    from andon.runtime.replay import plant_view

    plant = plant_or_exit(config)
    store_or_exit(plant, config)
    view = plant_view(plant)

    def tables() -> None:
        from rich.console import Console

        from andon.status import WIDTH, status_tables

        console = Console(markup=False, emoji=False)  # a name's [x] or :x: is printed as is
        console.width = min(console.width, WIDTH)  # a wider terminal gets the same tables
        for table in status_tables(view, plant.zone):
            console.print(table)

    emit(as_json, view, tables)


SinceOption = Annotated[
    str, typer.Option("--since", help="How far back: 90s, 10m, 2h, 1d, or an ISO time.")
]


def _read_since(command: str, config: Path, since: str, read: Callable) -> tuple:
    """The plant, and what `read(store, start)` finds in its store since `since`."""
    from andon.clitools import parse_since

    plant = plant_or_exit(config)
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise fail(command, str(exc)) from None
    store = open_store(plant, config)
    try:
        return plant, read(store, start)
    finally:
        store.close()


@app.command()
def events(
    config: ConfigOption,
    since: SinceOption = "1h",
    as_json: JsonOption = False,
) -> None:
    """List the event log (events, births and Wills) since a time, in the plant's timezone."""
    from andon.status import entry_json, entry_line

    plant, entries = _read_since(
        "events", config, since, lambda store, start: list(store.log(since=start))
    )

    def lines() -> None:
        for entry in entries:
            typer.echo(entry_line(entry, plant.zone))

    emit(as_json, [entry_json(e, plant.zone) for e in entries], lines)


@app.command()
def doctor(
    config: ConfigOption,
    provisioned: Annotated[
        Path | None,
        typer.Option(
            "--provisioned", help="What `andon provision --out` wrote: try a board's login."
        ),
    ] = None,
    ntp: Annotated[
        str | None, typer.Option("--ntp", help="HOST[:PORT]: compare this machine's clock with it.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a deployment: broker, logins, database, clock, boards, firmware; exit 1 on a FAIL."""
    from andon.maint.doctor import run_checks

    checks = run_checks(plant_or_exit(config), provisioned, ntp)

    def report() -> None:
        for check in checks:
            for line in check.lines():
                typer.echo(line)

    emit(as_json, [c.as_dict() for c in checks], report)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def replay(
    config: ConfigOption,
    check: Annotated[
        bool, typer.Option("--check", help="Compare the rebuilt state with the projection.")
    ] = False,
) -> None:
    """Rebuild the plant from the whole event log and compare it with the stored projections
    (on PostgreSQL, each line's latest); with --check, exit 1 if it disagrees, 2 if there is
    no projection to compare with."""
    from andon.runtime.replay import NothingToCompare, replay_check

    plant = plant_or_exit(config)
    store = open_store(plant, config)
    try:
        checked = replay_check(plant, store)
    except NothingToCompare as exc:
        typer.echo(f"andon replay: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    for line in checked.differences:
        typer.echo(line)
    if checked.unchecked:
        typer.echo(f"replay: no projection holds {', '.join(checked.unchecked)}: not checked")
    if not checked.differences:
        typer.echo(f"replay: the log rebuilds the stored projection of {', '.join(checked.lines)}")
    elif check:
        raise typer.Exit(1)


def _token_entry(name: str, role: str, token: str) -> str:
    from andon.config import ROLES, TOKEN_MIN_LENGTH, hash_token

    if role not in ROLES:
        raise typer.BadParameter(f"--role must be one of {', '.join(ROLES)}")
    if len(token) < TOKEN_MIN_LENGTH:
        raise typer.BadParameter(f"a token needs at least {TOKEN_MIN_LENGTH} characters")
    return f'[[api_tokens]]\nname = "{name}"\nrole = "{role}"\nhash = "{hash_token(token)}"'


@token_app.command("new")
def token_new(name: str, role: RoleOption = "viewer") -> None:
    """A fresh random token (shown once: give it to the client) and its plant-file entry."""
    import secrets

    token = secrets.token_urlsafe(24)
    entry = _token_entry(name, role, token)
    typer.echo(f"# token for {name!r}, shown only now: {token}\n{entry}")


@token_app.command("hash")
def token_hash(name: str, role: RoleOption = "viewer") -> None:
    """The plant-file entry for a token you have (read from stdin, or prompted for)."""
    import sys

    token = sys.stdin.readline().strip() if not sys.stdin.isatty() else ""
    token = token or typer.prompt("token", hide_input=True)
    typer.echo(_token_entry(name, role, token))


@app.command()
def rejections(
    config: ConfigOption,
    since: SinceOption = "1d",
    limit: Annotated[int, typer.Option("--limit", help="The last N rejections listed.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Rejected messages (dead letters) since a time: counts by reason, then the last ones."""
    from andon.status import iso

    plant, found = _read_since(
        "rejections", config, since, lambda store, start: store.recent_rejections(start, limit)
    )

    def lines() -> None:
        for reason, seen in found["by_reason"].items():
            typer.echo(f"{reason:<16} {seen['count']:>8}  last {iso(seen['last'], plant.zone)}")
        for r in found["recent"]:
            typer.echo(
                f"{iso(r['received'], plant.zone)}  {r['reason']:<14} {r['topic'][:80]}"
                f"  {r['size']} B  {r['detail'][:120]}"
            )

    emit(as_json, found, lines)
