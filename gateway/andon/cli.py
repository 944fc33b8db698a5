"""The `andon` command: the gateway, the virtual line, provisioning and flashing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help=__doc__)


@app.command()
def demo() -> None:
    """Run a whole virtual line against a local broker and the gateway (coming: issue #5)."""
    typer.echo(
        "The demo will start Mosquitto on a free local port, the gateway with the example\n"
        "plant (examples/plant.toml), a virtual line of 8+ stations running the real firmware\n"
        "in the MicroPython VM, and a scenario: cord pull, acknowledgement, fixed-position line\n"
        "stop, resolution, kanban post and receipt, shown on a live terminal andon board.\n"
        "It is not built yet; `make test` is."
    )


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
        typer.Option(help="The broker's address as boards see it [plant's broker.host]."),
    ] = None,
    wifi_ssid: Annotated[
        str | None,
        typer.Option(help="Boards' Wi-Fi; its password is read from $ANDON_WIFI_PASSWORD."),
    ] = None,
) -> None:
    """Write every board's config.json, broker password file and ACL (secrets never printed)."""
    import os

    from andon.config import ConfigError, load_plant
    from andon.provision import Network, ProvisionError
    from andon.provision import provision as run

    network = Network(broker_host, wifi_ssid, os.environ.get("ANDON_WIFI_PASSWORD", ""))
    try:
        done = run(load_plant(config), out, rotate=rotate, network=network)
    except (ConfigError, ProvisionError) as exc:
        typer.echo(f"andon provision: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(done.summary())
