"""The `andon` command: the gateway, the virtual line, provisioning and flashing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from andon.clitools import plant_or_exit
from andon.sim.cli import sim_app

app = typer.Typer(no_args_is_help=True, help=__doc__)
app.add_typer(sim_app, name="sim")


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Stop after this many seconds (default: at Ctrl-C)."),
    ] = None,
) -> None:
    """A whole virtual line: Mosquitto, the gateway, the example plant's boards, a scenario."""
    from andon.sim.demo import run_demo

    raise typer.Exit(run_demo(duration))


@app.command()
def version() -> None:
    """Print the gateway's version."""
    from andon import __version__

    typer.echo(__version__)


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
) -> None:
    """Write every board's config.json, broker password file and ACL (secrets never printed)."""
    import os

    from andon.config import ConfigError, load_plant
    from andon.maint.provision import Network, ProvisionError
    from andon.maint.provision import provision as run

    network = Network(broker_host, wifi_ssid, os.environ.get("ANDON_WIFI_PASSWORD", ""), ntp)
    try:
        done = run(load_plant(config), out, rotate=rotate, network=network)
    except (ConfigError, ProvisionError) as exc:
        typer.echo(f"andon provision: {exc}", err=True)
        raise typer.Exit(2) from None
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
        typer.echo("andon flash: several --port need --all", err=True)
        raise typer.Exit(2)
    if all_ports == (board is not None):
        typer.echo("andon flash: give --board for one port, or --all", err=True)
        raise typer.Exit(2)
    try:
        plant = load_plant(config)
    except ConfigError as exc:
        typer.echo(f"andon flash: {exc}", err=True)
        raise typer.Exit(2) from None
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
def gateway(config: ConfigOption) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (then it stops cleanly, status offline)."""
    import logging
    import signal
    import threading

    from andon.runtime.service import Gateway

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    plant = plant_or_exit(config)
    gw = Gateway(plant)
    gw.start()
    api = None
    try:
        if plant.gateway.http is not None:
            from andon.runtime.api import ApiServer

            api = ApiServer(plant, gw)
            try:
                api.start()
            except RuntimeError as exc:
                typer.echo(f"andon gateway: {exc}", err=True)
                raise typer.Exit(2) from None
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
def status(config: ConfigOption) -> None:
    """The plant now, from the gateway's database: lines, stations, open calls, kanban."""
    from rich.console import Console

    from andon.runtime.service import plant_view, status_tables

    console = Console()
    for table in status_tables(plant_view(plant_or_exit(config))):
        console.print(table)


@app.command()
def events(
    config: ConfigOption,
    since: Annotated[
        str, typer.Option("--since", help="How far back: 90s, 10m, 2h, 1d, or an ISO time.")
    ] = "1h",
) -> None:
    """List the event log (events, births and Wills) since a time."""
    from andon.runtime.service import format_entry, parse_since
    from andon.runtime.store import SqliteStore

    plant = plant_or_exit(config)
    try:
        start = parse_since(since)
    except ValueError as exc:
        typer.echo(f"andon events: {exc}", err=True)
        raise typer.Exit(2) from None
    store = SqliteStore(plant.gateway.database)
    try:
        for entry in store.log(since=start):
            typer.echo(format_entry(entry))
    finally:
        store.close()


@app.command()
def replay(
    config: ConfigOption,
    check: Annotated[
        bool, typer.Option("--check", help="Compare the rebuilt state with the projection.")
    ] = False,
) -> None:
    """Rebuild the plant from the whole event log; with --check, exit 1 if it disagrees, 2 if
    there is no projection to compare with."""
    from andon.runtime.service import NothingToCompare, replay_check
    from andon.runtime.store import SqliteStore

    plant = plant_or_exit(config)
    store = SqliteStore(plant.gateway.database)
    try:
        differences = replay_check(plant, store)
    except NothingToCompare as exc:
        typer.echo(f"andon replay: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    for line in differences:
        typer.echo(line)
    if not differences:
        typer.echo("replay: the whole log rebuilds the stored projection")
    elif check:
        raise typer.Exit(1)


@app.command()
def rejections(
    config: ConfigOption,
    since: Annotated[
        str, typer.Option("--since", help="How far back: 90s, 10m, 2h, 1d, or an ISO time.")
    ] = "1d",
    limit: Annotated[int, typer.Option("--limit", help="The last N rejections listed.")] = 20,
) -> None:
    """Rejected messages (dead letters) since a time: counts by reason, then the last ones."""
    from andon.runtime.service import format_rejections, parse_since
    from andon.runtime.store import rejections as recent

    plant = plant_or_exit(config)
    try:
        start = parse_since(since)
    except ValueError as exc:
        typer.echo(f"andon rejections: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in format_rejections(recent(plant.gateway.database, start, limit)):
        typer.echo(line)
